// Fits y = 3x - 1 with one weight and one bias by gradient descent, using arclight's tensors and autograd.
#include <arclight/arclight.hpp>
#include <cstdio>

int main() {
  using namespace arclight;
  Generator gen(0);
  Tensor x = randn({64, 1}, DType::f32, gen);
  Tensor y = ops::sub(ops::mul(x, 3.0), 1.0);
  Tensor w = zeros({1, 1}).set_requires_grad(), b = zeros({1}).set_requires_grad();
  for (int step = 0; step < 200; ++step) {
    Tensor err = ops::sub(ops::linear(x, w, b), y);
    Tensor loss = ops::mean(ops::mul(err, err));
    loss.backward();
    NoGradGuard no_grad;  // the update itself is not recorded
    ops::sub_(w, ops::mul(w.grad(), 0.1)), ops::sub_(b, ops::mul(b.grad(), 0.1));
    w.zero_grad(), b.zero_grad();
  }
  std::printf("w = %.4f, b = %.4f  (%s)\n", w.item(), b.item(), backend_info().c_str());
  return (w.item() > 2.99 && w.item() < 3.01 && b.item() > -1.01 && b.item() < -0.99) ? 0 : 1;
}
