#pragma once
// Tensor: a cheap handle (no heap allocation of its own) to contiguous row-major storage.
// Copies share storage. Views along leading dimensions (x[t] of a [T, B, F] tensor) share storage too;
// anything else that rearranges elements (transpose, narrow on an inner dim) copies.
// A Tensor also carries its autograd identity: a leaf that requires grad owns a gradient record,
// the output of a recorded op names its slot on the thread's tape (see autograd/tape.hpp).
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "allocator.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "shape.hpp"

namespace unroll {

class Tensor;
namespace detail {
struct LeafMeta;  // gradient record of a leaf that requires grad
void retain(LeafMeta*);
void release(LeafMeta*);
// Engine-only access (ops and autograd; not user API), defined below the class.
Tensor view_range(const Tensor& t, std::int64_t element_offset, const Shape& shape);
void set_tape_ref(Tensor& t, std::uint64_t key, std::uint32_t slot);
/// The MemoryError of a tensor whose storage could not be allocated (tensor.cpp).
[[noreturn]] [[gnu::cold]] void throw_out_of_memory(const Shape& shape, Dtype dtype);
}  // namespace detail

namespace detail {
/// While a cell is traced for fusion (ops/trace.hpp): counts item() and to_vector() reads of tensors that
/// require grad, i.e. a step that branches on its values (a trace records one path). Null otherwise.
inline constinit thread_local std::int64_t* tls_value_reads = nullptr;
}  // namespace detail

class Tensor {
 public:
  Tensor() = default;  ///< an undefined tensor: defined() == false
  Tensor(const Tensor& o)
      : storage_(o.storage_),
        leaf_(o.leaf_),
        tape_key_(o.tape_key_),
        offset_(o.offset_),
        shape_(o.shape_),
        slot_(o.slot_),
        dtype_(o.dtype_) {
    if (storage_) storage_->retain();
    if (leaf_) detail::retain(leaf_);
  }
  Tensor(Tensor&& o) noexcept
      : storage_(std::exchange(o.storage_, nullptr)),
        leaf_(std::exchange(o.leaf_, nullptr)),
        tape_key_(std::exchange(o.tape_key_, 0)),
        offset_(o.offset_),
        shape_(o.shape_),
        slot_(o.slot_),
        dtype_(o.dtype_) {}
  Tensor& operator=(const Tensor& o) {
    if (this != &o) *this = Tensor(o);
    return *this;
  }
  Tensor& operator=(Tensor&& o) noexcept {
    if (this != &o) {
      reset();
      storage_ = std::exchange(o.storage_, nullptr);
      leaf_ = std::exchange(o.leaf_, nullptr);
      tape_key_ = std::exchange(o.tape_key_, 0);
      offset_ = o.offset_;
      shape_ = o.shape_;
      slot_ = o.slot_;
      dtype_ = o.dtype_;
    }
    return *this;
  }
  ~Tensor() {
    if (storage_ != nullptr || leaf_ != nullptr) drop_refs();  // inline: most handles destroyed were moved from
  }
  /// Makes this handle undefined, dropping its references (cheaper than assigning Tensor()).
  void reset() {
    if (storage_ != nullptr || leaf_ != nullptr) drop_refs();
    tape_key_ = 0;
  }

  /// A new tensor with uninitialised contents (use zeros() when the contents matter).
  /// Uninitialised storage; MemoryError (naming the running op, see detail::OpScope) if it does not fit.
  static Tensor empty(const Shape& shape, Dtype dtype = Dtype::float32) {
    detail::Storage* s = detail::storage_allocate(static_cast<std::size_t>(shape.numel()) * dtype_size(dtype));
    if (s == nullptr) [[unlikely]]
      detail::throw_out_of_memory(shape, dtype);
    return Tensor(s, 0, shape, dtype);
  }

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int dim() const { return shape_.dim(); }
  /// Size of dimension d (negative d counts from the end).
  std::int64_t size(std::int64_t d) const { return shape_[wrap_dim("size", d, dim())]; }
  std::int64_t numel() const { return shape_.numel(); }
  Dtype dtype() const { return dtype_; }

  /// Typed pointer to the first element; DtypeError if T does not match dtype().
  template <class T>
  T* data() const {
    UNROLL_CHECK(dtype_of<T>() == dtype_, DtypeError, "Tensor::data: element type differs; got {}, expected {}",
                 dtype_of<T>(), dtype_);
    return static_cast<T*>(raw());
  }
  void* raw() const {
    return static_cast<char*>(storage_->data()) + offset_ * static_cast<std::int64_t>(dtype_size(dtype_));
  }
  /// The single value of a one-element tensor, as double.
  double item() const;
  /// All elements in row-major order, converted to T.
  template <class T = double>
  std::vector<T> to_vector() const;

  /// View of element i along dim 0 ([T, B, F] -> [B, F]); shares storage, differentiable.
  Tensor operator[](std::int64_t i) const;

  // ---- autograd (defined in autograd/) ----
  /// True for a leaf that requires grad and for the output of a recorded op.
  bool requires_grad() const { return leaf_ != nullptr || tape_key_ != 0; }
  /// Marks this tensor as a leaf whose gradient is accumulated by backward(). StateError on a non-leaf.
  Tensor& requires_grad_(bool on = true);
  bool is_leaf() const { return tape_key_ == 0; }
  /// The accumulated gradient of a leaf (undefined before the first backward or after zero_grad()).
  Tensor grad() const;
  /// Drops the accumulated gradient of a leaf (like PyTorch's zero_grad(set_to_none=True)).
  void zero_grad();
  /// Same storage, cut from the graph: no gradient flows through the result.
  Tensor detach() const { return defined() ? detail::view_range(*this, 0, shape_) : Tensor(); }
  /// Runs backpropagation from this one-element tensor (the loss), then frees the tape.
  void backward() const;
  /// Runs backpropagation with `seed` = d(loss)/d(this), a gradient of this tensor's shape.
  void backward(const Tensor& seed) const;

  // ---- low-level access for ops and the engine ----
  /// True when both handles read the same elements (same storage and offset): a view or a copy of the handle.
  bool same_data(const Tensor& o) const { return storage_ == o.storage_ && offset_ == o.offset_; }
  /// Offset of the first element in the storage, in elements (as PyTorch's storage_offset()).
  std::int64_t storage_offset() const { return offset_; }
  /// True when both handles share one storage block (views of different ranges included).
  bool shares_storage(const Tensor& o) const { return storage_ != nullptr && storage_ == o.storage_; }
  /// True when no other handle shares this storage (so writing in place is invisible to others).
  bool unique_storage() const { return storage_ && storage_->refs.load(std::memory_order_acquire) == 1; }
  /// A handle to the same storage with another shape of equal numel (no autograd identity).
  Tensor view_as_shape(const Shape& shape) const;
  detail::LeafMeta* leaf() const { return leaf_; }
  std::uint64_t tape_key() const { return tape_key_; }
  std::uint32_t slot() const { return slot_; }

 private:
  friend Tensor detail::view_range(const Tensor&, std::int64_t, const Shape&);
  friend void detail::set_tape_ref(Tensor&, std::uint64_t, std::uint32_t);
  void drop_refs() {
    if (storage_) storage_->release();
    if (leaf_) detail::release(leaf_);
    storage_ = nullptr;
    leaf_ = nullptr;
  }
  // Builds the handle in one go: default-constructing and then assigning would zero the whole Shape first.
  Tensor(detail::Storage* storage, std::int64_t offset, const Shape& shape, Dtype dtype)
      : storage_(storage), offset_(offset), shape_(shape), dtype_(dtype) {}

  detail::Storage* storage_ = nullptr;
  detail::LeafMeta* leaf_ = nullptr;
  std::uint64_t tape_key_ = 0;  ///< tape + epoch that recorded this tensor; 0 = not an op output
  std::int64_t offset_ = 0;     ///< in elements
  Shape shape_;
  std::uint32_t slot_ = 0;  ///< gradient slot on that tape
  Dtype dtype_ = Dtype::float32;
};

namespace detail {
struct LeafMeta {
  std::atomic<std::int32_t> refs{1};
  /// Key of a tape that holds a reference to this leaf until its next clear (autograd::Tape keeps one per
  /// leaf, not one per recorded use). Only a hint: a stale value just means one more reference is taken.
  std::atomic<std::uint64_t> tape_mark{0};
  Tensor grad;
  Shape shape;  ///< of the leaf (a handle's shape never changes), for the engine's gradient checks
  Dtype dtype;
};
/// A handle to `shape` starting `element_offset` elements into t (no autograd identity; not bounds-checked).
inline Tensor view_range(const Tensor& t, std::int64_t element_offset, const Shape& shape) {
  t.storage_->retain();
  return Tensor(t.storage_, t.offset_ + element_offset, shape, t.dtype_);
}
/// Makes t the output in `slot` of the tape with `key` (autograd::Tape, when it records an op).
inline void set_tape_ref(Tensor& t, std::uint64_t key, std::uint32_t slot) {
  t.tape_key_ = key;
  t.slot_ = slot;
}
inline void retain(LeafMeta* m) { m->refs.fetch_add(1, std::memory_order_relaxed); }
inline void release(LeafMeta* m) {
  if (m->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete m;
}
}  // namespace detail

// ---- factories ----
/// Shape -> tensor of zeros.
Tensor zeros(const Shape& shape, Dtype dtype = Dtype::float32);
/// Shape -> tensor of ones.
Tensor ones(const Shape& shape, Dtype dtype = Dtype::float32);
/// Shape -> tensor filled with `value`.
Tensor full(const Shape& shape, double value, Dtype dtype = Dtype::float32);
/// zeros/ones with the shape and dtype of `like`.
Tensor zeros_like(const Tensor& like);
Tensor ones_like(const Tensor& like);
/// Values (row-major) -> tensor of `shape`; ValueError if the counts differ.
Tensor tensor(std::span<const double> values, const Shape& shape, Dtype dtype = Dtype::float32);
Tensor tensor(std::initializer_list<double> values, const Shape& shape, Dtype dtype = Dtype::float32);
/// 1-D index tensor (int64) from integers.
Tensor index_tensor(std::span<const std::int64_t> values, const Shape& shape);
Tensor index_tensor(std::initializer_list<std::int64_t> values);
/// [0, 1, ..., n-1].
Tensor arange(std::int64_t n, Dtype dtype = Dtype::float32);

/// Element-by-element copy into a new tensor of `dtype` (not recorded: use ops `to()` for a differentiable cast).
Tensor convert(const Tensor& x, Dtype dtype);
/// A deep copy with fresh storage (not recorded).
Tensor copy_of(const Tensor& x);

/// Calls f with a typed null pointer (float*, double* or int64_t*) for the dtype: the one place a dtype
/// becomes a C++ type. `where` names the caller for the error on an unsupported dtype.
template <class F>
decltype(auto) dispatch(Dtype d, F&& f) {
  switch (d) {
    case Dtype::float32:
      return f(static_cast<float*>(nullptr));
    case Dtype::float64:
      return f(static_cast<double*>(nullptr));
    case Dtype::int64:
      return f(static_cast<std::int64_t*>(nullptr));
  }
  return f(static_cast<float*>(nullptr));
}
/// Like dispatch, but only float32/float64; DtypeError naming `where` for int64.
template <class F>
decltype(auto) dispatch_floating(const char* where, Dtype d, F&& f) {
  UNROLL_CHECK(is_floating(d), DtypeError, "{}: expected a floating-point tensor; got {}, expected float32 or float64",
               where, d);
  if (d == Dtype::float64) return f(static_cast<double*>(nullptr));
  return f(static_cast<float*>(nullptr));
}

}  // namespace unroll
