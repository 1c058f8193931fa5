#pragma once
// Optimizer: the base of SGD, Adam, AdamW, RMSprop and Adagrad. It holds handles to the parameters (they
// share storage and gradient record with the model's, so an update written into the storage is the model's
// update), their per-parameter state, and one parameter group's hyper-parameters: one group is all unroll
// has (a second learning rate for some parameters is a second optimizer).
//
// Updates follow PyTorch 1.13 exactly (the single-tensor code path, which is its CPU default) and are
// written as one fused loop per parameter over the raw data, with gradient recording off: nothing is
// recorded on the tape.
//
// state_dict() flattens PyTorch's optimizer state dict into named tensors:
//   "state.<i>.<key>"        per-parameter state (exp_avg, momentum_buffer, ...; parameter's dtype, same shape)
//   "state.<i>.step"         the parameter's update count, 0-d int64 (PyTorch keeps a float32 tensor)
//   "param_groups.0.<name>"  hyper-parameters, 0-d float64 (integers and flags: 0-d int64), "betas.0" for tuples
//   "param_groups.0.params"  the parameter indices 0..n-1, int64 [n]
// A parameter that has never had a gradient has no state (except Adagrad's, made at construction).
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/state_dict.hpp"
#include "../core/tensor.hpp"

namespace unroll::optim {

/// One hyper-parameter as saved in a state dict: "param_groups.0.<name>" (optimizers) or "<name>" (schedules).
struct HyperParam {
  enum class Kind : std::uint8_t { real, integer, flag };  ///< saved as float64, int64, int64 0/1
  const char* name;
  double value;
  Kind kind = Kind::real;
};

/// Which per-parameter state entries an optimizer keeps (depends on its hyper-parameters, e.g. amsgrad).
struct StateLayout {
  bool step = false;                 ///< "state.<i>.step"
  std::vector<const char*> buffers;  ///< "state.<i>.<buffer>", in this order
  bool eager = false;                ///< state exists for every parameter from construction (Adagrad)
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// Applies one update to every parameter that has a gradient; parameters whose grad() is undefined are
  /// skipped and keep their state (as PyTorch).
  virtual void step() = 0;
  /// Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)).
  void zero_grad();
  /// The learning rate of the (single) parameter group.
  double lr() const { return lr_; }
  /// Sets the learning rate (schedules call this); ValueError unless lr >= 0.
  void set_lr(double lr);
  /// PyTorch's param_groups[0]['initial_lr']: set by the first schedule attached, so schedules chained on
  /// one optimizer share one base learning rate. Empty until then.
  std::optional<double> initial_lr() const { return initial_lr_; }
  /// Sets initial_lr if it is not set yet (PyTorch's setdefault); returns its value.
  double default_initial_lr(double lr);
  /// The parameters, in the order given (state entry i belongs to params()[i]).
  const std::vector<Tensor>& params() const { return params_; }
  /// "SGD", "Adam", ... (the prefix of this optimizer's error messages).
  const std::string& name() const { return name_; }

  /// Per-parameter state and hyper-parameters as named tensors (see the header comment). The tensors share
  /// storage with the live state; later steps copy before writing, so a saved dict never changes.
  StateDict state_dict() const;
  /// Restores state and hyper-parameters saved by state_dict() of the same optimizer type over parameters
  /// of the same shapes and dtypes. ValueError naming the entry for a missing, unexpected, misshapen or
  /// mistyped entry, an invalid hyper-parameter, or a dict from another optimizer type. All-or-nothing:
  /// on error nothing changes.
  void load_state_dict(const StateDict& dict);

 protected:
  /// Checks the parameter list (ValueError: empty, undefined, not floating-point, not requiring grad, not
  /// a leaf, repeated) and the learning rate; `name` prefixes error messages.
  Optimizer(std::string name, std::vector<Tensor> params, double lr);

  /// Per-parameter state: buffers in the order of layout().buffers, undefined until `started`.
  struct ParamState {
    bool started = false;
    std::int64_t step = 0;
    std::vector<Tensor> buffers;
  };

  /// Hyper-parameters other than lr, in the order they are saved.
  virtual std::vector<HyperParam> hyper_params() const = 0;
  /// Validates hyper-parameter values (lr first, then hyper_params() order) without changing anything
  /// (ValueError naming the bad one) and returns the state layout they imply.
  virtual StateLayout check_hyper_params(std::span<const double> values) const = 0;
  /// Adopts values that check_hyper_params accepted (must not throw).
  virtual void set_hyper_params(std::span<const double> values) noexcept = 0;

  /// The gradient of parameter i as the leaf record holds it (undefined: skip the parameter). Read it only:
  /// others may hold the same storage. StateError if its shape or dtype differs from the parameter's.
  const Tensor& grad_of(std::size_t i) const;
  /// Makes state buffers safe to write: a buffer whose storage someone else holds (a saved state dict)
  /// is copied first, so saving never needs a deep copy and a saved dict never changes.
  static void make_writable(ParamState& s);
  /// Allocates state buffers of zeros like parameter i (the usual first-step initialisation).
  void start_zeros(std::size_t i, std::size_t n_buffers);

  std::vector<ParamState> state_;

 private:
  std::string name_;
  std::vector<Tensor> params_;
  double lr_;
  std::optional<double> initial_lr_;
};

namespace detail {
/// ValueError "<where>: invalid <name>; got <value>, expected <expected>" unless ok.
void check_hyper(bool ok, std::string_view where, std::string_view name, double value, std::string_view expected);
/// v as int64, saturating at the int64 range (NaN -> 0): integers travel through HyperParam as doubles, and
/// a cast of an out-of-range double is undefined.
std::int64_t to_int64(double v);
/// A 0-d tensor holding a hyper-parameter (float64, or int64 for integers and flags).
Tensor hyper_tensor(const HyperParam& h);
/// Reads entry `key` as a hyper-parameter of the given kind: ValueError naming it if absent, undefined,
/// not 0-d, of the wrong dtype, or (flags) not 0/1. Adds `key` to `used`.
double read_hyper(std::string_view where, const StateDict& dict, const std::string& key, HyperParam::Kind kind,
                  std::vector<std::string>& used);
/// ValueError naming the first entry of `dict` that is not in `used` (a dict from another type).
void check_no_extra(std::string_view where, const StateDict& dict, const std::vector<std::string>& used);
}  // namespace detail

}  // namespace unroll::optim
