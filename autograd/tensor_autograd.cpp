// The autograd members of Tensor (declared in core/tensor.hpp, defined here so core does not depend on
// the engine).
#include "tape.hpp"

namespace unroll {

Tensor& Tensor::requires_grad_(bool on) {
  UNROLL_CHECK(defined(), StateError, "requires_grad_: tensor is undefined; got an undefined tensor, expected a leaf");
  UNROLL_CHECK(is_leaf(), StateError,
               "requires_grad_: only leaf tensors can be marked; got the output of an op, expected a leaf (use "
               "detach() first)");
  UNROLL_CHECK(!on || is_floating(dtype_), DtypeError,
               "requires_grad_: only floating-point tensors can require gradients; got {}, expected float32 or float64",
               dtype_);
  if (on && leaf_ == nullptr) {
    leaf_ = new detail::LeafMeta();
    leaf_->shape = shape_;
    leaf_->dtype = dtype_;
  }
  if (!on && leaf_ != nullptr) {
    detail::release(leaf_);
    leaf_ = nullptr;
  }
  return *this;
}

Tensor Tensor::grad() const { return leaf_ ? leaf_->grad : Tensor(); }

void Tensor::zero_grad() {
  if (leaf_) leaf_->grad = Tensor();
}

void Tensor::backward() const { autograd::Tape::current().backward(*this, Tensor()); }
void Tensor::backward(const Tensor& seed) const { autograd::Tape::current().backward(*this, seed); }

}  // namespace unroll
