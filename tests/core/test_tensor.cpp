// Tensor basics: dtypes, factories, views sharing storage, contiguity, conversion, printing, the Philox
// RNG's reproducibility across thread counts, and the caching allocator's steady state.
#include <omp.h>

#include <sstream>

#include "harness.hpp"

namespace {

using namespace arclight;
using arclight::testing::all_close;

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::f64), 8u);
  EXPECT_EQ(dtype_size(DType::i32), 4u);
  EXPECT_EQ(dtype_size(DType::i64), 8u);
  EXPECT_EQ(dtype_size(DType::u8), 1u);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_STREQ(dtype_name(DType::f16), "f16");
  EXPECT_TRUE(is_floating(DType::f64));
  EXPECT_FALSE(is_floating(DType::i64));
}

TEST(Tensor, FactoriesFillValues) {
  Tensor z = zeros({2, 3});
  Tensor o = ones({2, 3}, DType::f64);
  Tensor f = full({4}, 2.5, DType::f32);
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.strides(), (Strides{3, 1}));
  EXPECT_EQ(o.dtype(), DType::f64);
  for (double v : z.to_vector<double>()) EXPECT_EQ(v, 0.0);
  for (double v : o.to_vector<double>()) EXPECT_EQ(v, 1.0);
  for (double v : f.to_vector<double>()) EXPECT_EQ(v, 2.5);
  EXPECT_EQ(arange(5).to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(arange(1.0, 2.0, 0.25, DType::f64).to_vector<double>(), (std::vector<double>{1.0, 1.25, 1.5, 1.75}));
  EXPECT_EQ(arange(3.0, 0.0, -1.0).to_vector<int>(), (std::vector<int>{3, 2, 1}));
  Tensor v = from_vector<int>({1, 2, 3, 4, 5, 6}, {2, 3}, DType::i32);
  EXPECT_EQ(v.dtype(), DType::i32);
  EXPECT_EQ(v.to_vector<int>(), (std::vector<int>{1, 2, 3, 4, 5, 6}));
  EXPECT_DOUBLE_EQ(scalar_tensor(4.5).item(), 4.5);
  EXPECT_EQ(scalar_tensor(4.5).dim(), 0);
}

TEST(Tensor, StorageIsAlignedTo64Bytes) {
  for (std::int64_t n : {1, 7, 100, 1000, 100000}) {
    Tensor t = empty({n});
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.raw_data()) % 64, 0u) << n;
  }
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor tr = ops::transpose(t, 0, 1);
  Tensor sl = ops::narrow(t, 1, 1, 2);
  Tensor rs = ops::reshape(t, {3, 2});
  Tensor ex = ops::expand(ops::narrow(t, 0, 0, 1), {4, 3});
  Tensor sq = ops::unsqueeze(t, 0);
  for (const Tensor* v : {&tr, &sl, &rs, &ex, &sq}) EXPECT_EQ(v->storage().get(), t.storage().get());
  EXPECT_FALSE(tr.is_contiguous());
  EXPECT_FALSE(sl.is_contiguous());
  EXPECT_TRUE(rs.is_contiguous());
  EXPECT_EQ(ex.strides()[0], 0);
  EXPECT_EQ(tr.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(sl.to_vector<float>(), (std::vector<float>{1, 2, 4, 5}));
  EXPECT_EQ(ex.to_vector<float>(), (std::vector<float>{0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2}));
  // a write through a view is visible through the base
  t.data_ptr<float>()[4] = 40;
  EXPECT_EQ(tr.to_vector<float>()[3], 40.0f);
  // contiguous() copies a non-contiguous view and returns a contiguous one as is
  Tensor c = ops::contiguous(tr);
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage().get(), t.storage().get());
  EXPECT_TRUE(ops::contiguous(t).is_same(t));
  EXPECT_EQ(c.to_vector<float>(), tr.to_vector<float>());
}

TEST(Tensor, ReshapeOfTransposedCopiesOnlyWhenNeeded) {
  Tensor t = randn({4, 6});
  Tensor tr = ops::transpose(t, 0, 1);  // [6, 4], not contiguous
  Tensor r1 = ops::reshape(tr, {6, 2, 2});  // splits the last dim: still a view
  EXPECT_EQ(r1.storage().get(), t.storage().get());
  Tensor r2 = ops::reshape(tr, {24});  // needs a copy
  EXPECT_NE(r2.storage().get(), t.storage().get());
  EXPECT_EQ(r2.to_vector<float>(), tr.to_vector<float>());
  EXPECT_ERROR_WITH(ops::view(tr, {24}), "view", "without a copy");
  EXPECT_EQ(ops::reshape(t, {-1, 3}).shape(), (Shape{8, 3}));
  EXPECT_ERROR_WITH(ops::reshape(t, {5, -1}), "reshape", "[5, -1]");
}

TEST(Tensor, SliceSqueezeSelectFlatten) {
  Tensor t = arange(0.0, 24.0, 1.0, DType::f32);
  Tensor m = ops::reshape(t, {2, 3, 4});
  EXPECT_EQ(ops::slice(m, 2, 1, 4, 2).to_vector<int>(), (std::vector<int>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23}));
  EXPECT_EQ(ops::slice(m, 1, -2, 100).shape(), (Shape{2, 2, 4}));
  EXPECT_EQ(ops::select(m, 1, 2).to_vector<int>(), (std::vector<int>{8, 9, 10, 11, 20, 21, 22, 23}));
  EXPECT_EQ(ops::squeeze(ops::reshape(t, {1, 24, 1})).shape(), (Shape{24}));
  EXPECT_EQ(ops::squeeze(ops::reshape(t, {1, 24, 1}), 2).shape(), (Shape{1, 24}));
  EXPECT_EQ(ops::flatten(m, 0, 1).shape(), (Shape{6, 4}));
  EXPECT_EQ(ops::permute(m, {2, 0, 1}).shape(), (Shape{4, 2, 3}));
  EXPECT_ERROR_WITH(ops::narrow(m, 2, 3, 2), "narrow", "[3, 5)", "size 4");
  EXPECT_ERROR_WITH(ops::permute(m, {0, 0, 1}), "permute", "repeated");
  EXPECT_ERROR_WITH(ops::expand(m, {2, 5, 4}), "expand", "[2, 3, 4]", "[2, 5, 4]");
  EXPECT_ERROR_WITH(ops::sum(m, {3}), "sum", "dim 3 out of range", "rank 3");
}

TEST(Tensor, ToDtypeAndItem) {
  Tensor t = from_vector<double>({1.5, -2.25, 3.0}, {3}, DType::f64);
  Tensor i = ops::to(t, DType::i32);
  EXPECT_EQ(i.dtype(), DType::i32);
  EXPECT_EQ(i.to_vector<int>(), (std::vector<int>{1, -2, 3}));
  Tensor f = ops::to(t, DType::f32);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{1.5f, -2.25f, 3.0f}));
  EXPECT_TRUE(ops::to(t, DType::f64).is_same(t));
  EXPECT_DOUBLE_EQ(ops::select(t, 0, 1).item(), -2.25);
  EXPECT_ERROR_WITH(t.item(), "item", "one element", "[3]");
  EXPECT_ERROR_WITH(t.data_ptr<float>(), "data_ptr", "f32", "f64");
}

TEST(Tensor, PrintingIsReadable) {
  std::ostringstream os;
  os << from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(os.str(), "Tensor(f32, [2, 3])\n[[1, 2, 3],\n [4, 5, 6]]");
  std::ostringstream big;
  big << arange(100);
  EXPECT_EQ(big.str(), "Tensor(i64, [100])\n[0, 1, 2, ..., 97, 98, 99]");
  std::ostringstream g;
  g << ones({2}).set_requires_grad();
  EXPECT_NE(g.str().find("requires_grad"), std::string::npos);
}

TEST(Random, SameSeedSameNumbersOnAnyThreadCount) {
  const int saved = omp_get_max_threads();
  std::vector<std::vector<float>> runs;
  for (int threads : {1, 2, 4}) {
    omp_set_num_threads(threads);
    Generator g(42);
    Tensor a = randn({100003}, DType::f32, g);  // big enough to be split across threads
    Tensor b = rand({70001}, DType::f32, g);
    std::vector<float> v = a.to_vector<float>();
    auto vb = b.to_vector<float>();
    v.insert(v.end(), vb.begin(), vb.end());
    runs.push_back(v);
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_EQ(runs[0], runs[2]);
  Generator other(43);
  EXPECT_NE(randn({16}, DType::f32, other).to_vector<float>(),
            std::vector<float>(runs[0].begin(), runs[0].begin() + 16));
}

TEST(Random, GeneratorStateResumesTheStream) {
  Generator g(7);
  (void)randn({10}, DType::f64, g);
  const auto offset = g.offset();
  Tensor next = randn({10}, DType::f64, g);
  Generator resumed(0);
  resumed.set_state(7, offset);
  EXPECT_EQ(randn({10}, DType::f64, resumed).to_vector<double>(), next.to_vector<double>());
}

TEST(Random, DistributionsHaveTheRightMoments) {
  Generator g(1);
  const auto n = std::int64_t{200000};
  auto u = rand({n}, DType::f64, g, -1.0, 3.0).to_vector<double>();
  auto z = randn({n}, DType::f64, g).to_vector<double>();
  auto k = randint(-3, 4, {n}, DType::i64, g).to_vector<std::int64_t>();
  double su = 0, sz = 0, sz2 = 0;
  std::vector<int> counts(7, 0);
  for (std::int64_t i = 0; i < n; ++i) {
    EXPECT_TRUE(u[i] >= -1.0 && u[i] < 3.0);
    su += u[i];
    sz += z[i];
    sz2 += z[i] * z[i];
    ASSERT_TRUE(k[i] >= -3 && k[i] < 4) << k[i];
    ++counts[static_cast<std::size_t>(k[i] + 3)];
  }
  EXPECT_NEAR(su / n, 1.0, 0.02);
  EXPECT_NEAR(sz / n, 0.0, 0.01);
  EXPECT_NEAR(sz2 / n, 1.0, 0.02);
  for (int c : counts) EXPECT_NEAR(c / static_cast<double>(n), 1.0 / 7, 0.01);
}

TEST(Allocator, SizeClassesBoundTheWaste) {
  for (std::size_t n : {1ul, 63ul, 64ul, 65ul, 257ul, 1000ul, 4097ul, 1ul << 20, (1ul << 20) + 1, 123456789ul}) {
    const std::size_t c = CachingHostAllocator::size_class(n);
    EXPECT_GE(c, n);
    EXPECT_EQ(c % 64, 0u) << n;
    if (n > 256) EXPECT_LE(static_cast<double>(c), 1.25 * static_cast<double>(n) + 64) << n;
  }
}

TEST(Allocator, TrainingLoopReachesAMallocFreeSteadyState) {
  // A small "training step" (forward + backward + update) repeated: after warm-up, no system allocation.
  Tensor w = randn({64, 32}).set_requires_grad();
  Tensor x = randn({16, 64});
  auto step = [&] {
    Tensor y = ops::softmax(ops::matmul(x, w), 1);
    Tensor loss = ops::mean(ops::mul(y, y));
    loss.backward();
    NoGradGuard ng;
    Tensor upd = ops::mul(w.grad(), -0.1);
    ops::add_(w, upd);
    w.zero_grad();
  };
  for (int i = 0; i < 3; ++i) step();
  const auto before = host_allocator().stats();
  for (int i = 0; i < 10; ++i) step();
  const auto after = host_allocator().stats();
  EXPECT_GT(after.requests, before.requests + 100);  // the loop does allocate tensors...
  EXPECT_EQ(after.system_allocs, before.system_allocs);  // ...all served from the cache
}

TEST(Tensor, BackendInfoNamesTheBackend) {
  const std::string info = backend_info();
  EXPECT_NE(info.find("CPU"), std::string::npos);
  EXPECT_NE(info.find(built_with_cuda() ? "CUDA compiled in" : "CUDA: not compiled in"), std::string::npos);
}

}  // namespace
