// The strided elementwise, copy, conversion, fill and reduction kernels of kernels/cuda/elementwise.cuh against
// plain host loops. The elementwise references evaluate the SAME scalar functions (ew_unary<Op> / ew_binary<Op>
// of kernels/common/elementwise_math.hpp) through an independent, unsimplified index walk, for every EwOp, over
// layouts that reach each kernel path: contiguous odd sizes (flat path), broadcast (stride 0), transposed
// inputs and outputs, strided outputs with gaps (gap elements must stay untouched), a 0-d layout, size-1 dims
// with junk strides, rank 8, in-place calls, more work than one grid covers, and the 64-bit index path.
// Reductions are checked against a float64 host reference over every dim subset of a padded, permuted 4-D
// input, on each reduction path (thread / warp per output, one block per output, two-level with workspace),
// with NaN propagation, scale, the empty / copy corner cases and bit-for-bit determinism. Outputs start as NaN
// garbage. The host-side validation tests need no GPU: every launcher validates before its first CUDA call,
// so they pass dummy non-null pointers that are never dereferenced.
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "arclight/cuda/dnn.hpp"  // arclight::cuda::float_to_bf16_bits (the host side of the same conversion)
#include "cuda_test_util.hpp"
#include "harness.hpp"
#include "kernels/common/bf16_math.hpp"
#include "kernels/common/elementwise_math.hpp"
#include "kernels/cuda/launchers_ops.hpp"

namespace kc = arclight::kernels::cuda;
namespace ak = arclight::kernels;
using namespace arclight::testing::cuda;
using arclight::cuda::DeviceBuffer;
using ak::EwOp;
using ak::EwParams;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- op tables: every EwOp, its name, and the host evaluation of the shared scalar math ----------------------

struct OpInfo {
  EwOp op;
  const char* name;
};

const std::vector<OpInfo>& unary_ops() {
  static const std::vector<OpInfo> v = {
      {EwOp::kCopy, "kCopy"}, {EwOp::kNeg, "kNeg"},   {EwOp::kExp, "kExp"},   {EwOp::kLog, "kLog"},
      {EwOp::kSqrt, "kSqrt"}, {EwOp::kRsqrt, "kRsqrt"}, {EwOp::kAbs, "kAbs"}, {EwOp::kSign, "kSign"},
      {EwOp::kPowScalar, "kPowScalar"}, {EwOp::kClamp, "kClamp"}, {EwOp::kClampPass, "kClampPass"}};
  return v;
}

const std::vector<OpInfo>& binary_ops() {
  static const std::vector<OpInfo> v = {
      {EwOp::kAdd, "kAdd"},         {EwOp::kSub, "kSub"},         {EwOp::kMul, "kMul"},
      {EwOp::kDiv, "kDiv"},         {EwOp::kPow, "kPow"},         {EwOp::kMaximum, "kMaximum"},
      {EwOp::kMinimum, "kMinimum"}, {EwOp::kMaxShare, "kMaxShare"}, {EwOp::kMinShare, "kMinShare"},
      {EwOp::kGt, "kGt"},           {EwOp::kGe, "kGe"},           {EwOp::kLt, "kLt"},
      {EwOp::kLe, "kLe"},           {EwOp::kEq, "kEq"},           {EwOp::kNe, "kNe"},
      {EwOp::kPowZeroBase, "kPowZeroBase"}};
  return v;
}

float host_unary(EwOp op, float x, EwParams p) {
  switch (op) {
    case EwOp::kCopy: return ak::ew_unary<EwOp::kCopy>(x, p);
    case EwOp::kNeg: return ak::ew_unary<EwOp::kNeg>(x, p);
    case EwOp::kExp: return ak::ew_unary<EwOp::kExp>(x, p);
    case EwOp::kLog: return ak::ew_unary<EwOp::kLog>(x, p);
    case EwOp::kSqrt: return ak::ew_unary<EwOp::kSqrt>(x, p);
    case EwOp::kRsqrt: return ak::ew_unary<EwOp::kRsqrt>(x, p);
    case EwOp::kAbs: return ak::ew_unary<EwOp::kAbs>(x, p);
    case EwOp::kSign: return ak::ew_unary<EwOp::kSign>(x, p);
    case EwOp::kPowScalar: return ak::ew_unary<EwOp::kPowScalar>(x, p);
    case EwOp::kClamp: return ak::ew_unary<EwOp::kClamp>(x, p);
    case EwOp::kClampPass: return ak::ew_unary<EwOp::kClampPass>(x, p);
    default: ADD_FAILURE() << "host_unary: op " << int(op) << " is not unary"; return kNaN;
  }
}

float host_binary(EwOp op, float x, float y) {
  switch (op) {
    case EwOp::kAdd: return ak::ew_binary<EwOp::kAdd>(x, y);
    case EwOp::kSub: return ak::ew_binary<EwOp::kSub>(x, y);
    case EwOp::kMul: return ak::ew_binary<EwOp::kMul>(x, y);
    case EwOp::kDiv: return ak::ew_binary<EwOp::kDiv>(x, y);
    case EwOp::kPow: return ak::ew_binary<EwOp::kPow>(x, y);
    case EwOp::kMaximum: return ak::ew_binary<EwOp::kMaximum>(x, y);
    case EwOp::kMinimum: return ak::ew_binary<EwOp::kMinimum>(x, y);
    case EwOp::kMaxShare: return ak::ew_binary<EwOp::kMaxShare>(x, y);
    case EwOp::kMinShare: return ak::ew_binary<EwOp::kMinShare>(x, y);
    case EwOp::kGt: return ak::ew_binary<EwOp::kGt>(x, y);
    case EwOp::kGe: return ak::ew_binary<EwOp::kGe>(x, y);
    case EwOp::kLt: return ak::ew_binary<EwOp::kLt>(x, y);
    case EwOp::kLe: return ak::ew_binary<EwOp::kLe>(x, y);
    case EwOp::kEq: return ak::ew_binary<EwOp::kEq>(x, y);
    case EwOp::kNe: return ak::ew_binary<EwOp::kNe>(x, y);
    case EwOp::kPowZeroBase: return ak::ew_binary<EwOp::kPowZeroBase>(x, y);
    default: ADD_FAILURE() << "host_binary: op " << int(op) << " is not binary"; return kNaN;
  }
}

// Host libm and CUDA's expf / logf / powf / rsqrt differ by a few ulp; everything else is IEEE-exact on both.
bool inexact(EwOp op) {
  return op == EwOp::kExp || op == EwOp::kLog || op == EwOp::kRsqrt || op == EwOp::kPowScalar || op == EwOp::kPow;
}
constexpr double kUlpRtol = 4e-6, kUlpAtol = 1e-30;
constexpr double kSqrtRtol = 1.2e-7;  // 1 ulp (IEEE sqrt on both sides; kept 1-ulp loose)

// ---- layouts --------------------------------------------------------------------------------------------------

// A layout with strides for up to four operand slots (tests with N operands use the first N; unused slots may be
// left empty).
struct TestLayout {
  std::string name;
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> strides[4];

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto s : sizes) n *= s;
    return n;
  }
  // Element offset of operand k for row-major linear index i (independent of the kernels' simplification).
  std::int64_t offset(int k, std::int64_t i) const {
    std::int64_t off = 0;
    for (int d = int(sizes.size()) - 1; d >= 0; --d) {
      off += (i % sizes[std::size_t(d)]) * strides[k][std::size_t(d)];
      i /= sizes[std::size_t(d)];
    }
    return off;
  }
  // Elements operand k's buffer needs.
  std::size_t extent(int k) const {
    if (numel() == 0) return 1;
    std::int64_t m = 0;
    for (std::size_t d = 0; d < sizes.size(); ++d) m += (sizes[d] - 1) * strides[k][d];
    return std::size_t(m + 1);
  }
  kc::EwLayout dev() const {
    kc::EwLayout l;
    l.ndim = int(sizes.size());
    for (std::size_t d = 0; d < sizes.size(); ++d) {
      l.sizes[d] = sizes[d];
      for (int k = 0; k < 4; ++k)  // unused (empty) slots become 0
        l.strides[k][d] = strides[k].size() == sizes.size() ? strides[k][d] : 0;
    }
    return l;
  }
};

std::vector<std::int64_t> row_major(const std::vector<std::int64_t>& sizes) {
  std::vector<std::int64_t> s(sizes.size());
  std::int64_t acc = 1;
  for (int d = int(sizes.size()) - 1; d >= 0; --d) {
    s[std::size_t(d)] = acc;
    acc *= sizes[std::size_t(d)];
  }
  return s;
}

std::vector<std::int64_t> col_major(const std::vector<std::int64_t>& sizes) {
  std::vector<std::int64_t> s(sizes.size());
  std::int64_t acc = 1;
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    s[d] = acc;
    acc *= sizes[d];
  }
  return s;
}

TestLayout make_layout(std::string name, std::vector<std::int64_t> sizes, std::vector<std::int64_t> s0,
                       std::vector<std::int64_t> s1, std::vector<std::int64_t> s2, std::vector<std::int64_t> s3) {
  TestLayout l;
  l.name = std::move(name);
  l.sizes = std::move(sizes);
  l.strides[0] = std::move(s0);
  l.strides[1] = std::move(s1);
  l.strides[2] = std::move(s2);
  l.strides[3] = std::move(s3);
  return l;
}

// Small layouts covering every path and corner (operand 0 is the output).
std::vector<TestLayout> test_layouts() {
  std::vector<TestLayout> v;
  const std::vector<std::int64_t> a = {5, 7, 33};
  v.push_back(make_layout("contiguous_odd", a, row_major(a), row_major(a), row_major(a), row_major(a)));
  v.push_back(make_layout("broadcast", a, row_major(a), {33, 0, 1}, {0, 1, 0}, {0, 0, 1}));
  const std::vector<std::int64_t> b = {6, 9, 13};
  v.push_back(make_layout("transposed_inputs", b, row_major(b), {9, 1, 54}, {1, 78, 6}, {1, 6, 54}));
  v.push_back(make_layout("transposed_output", b, col_major(b), row_major(b), {0, 13, 1}, {9, 1, 54}));
  v.push_back(make_layout("strided_output_rows", {4, 10}, {16, 1}, {1, 4}, {10, 1}, {0, 1}));
  v.push_back(make_layout("strided_output_gaps", {4, 10}, {1, 8}, {10, 1}, {1, 0}, {10, 1}));
  v.push_back(make_layout("scalar_0d", {}, {}, {}, {}, {}));
  v.push_back(make_layout("size1_dims_junk_strides", {1, 37, 1, 3}, {999, 3, 5, 1}, {7, 1, 123, 37}, {0, 3, 0, 1},
                          {1, 0, 1, 1}));
  const std::vector<std::int64_t> r8 = {2, 1, 3, 2, 1, 2, 3, 2};
  std::vector<std::int64_t> r8_bcast = row_major(r8);
  r8_bcast[2] = 0;
  r8_bcast[6] = 0;
  std::vector<std::int64_t> r8_col_bcast = col_major(r8);
  r8_col_bcast[0] = 0;
  v.push_back(make_layout("rank8", r8, row_major(r8), col_major(r8), r8_bcast, r8_col_bcast));
  v.push_back(make_layout("scalar_inputs_broadcast", {3, 50}, {50, 1}, {0, 0}, {0, 0}, {0, 0}));
  v.push_back(make_layout("outer_stride_only", {300}, {1}, {3}, {7}, {2}));
  return v;
}

// Which output elements a layout addresses (gap elements must keep their garbage).
std::vector<bool> addressed(const TestLayout& l, std::size_t out_extent) {
  std::vector<bool> hit(out_extent, false);
  for (std::int64_t i = 0; i < l.numel(); ++i) hit[std::size_t(l.offset(0, i))] = true;
  return hit;
}

// Inputs mixing continuous values, a small discrete set (so binary ops see ties), special values and positives.
std::vector<float> test_values(std::size_t n, std::mt19937_64& g) {
  static const float discrete[] = {-2.f, -1.f, -0.5f, -0.f, 0.f, 0.5f, 1.f, 2.f, 3.f};
  static const float special[] = {kNaN, kInf, -kInf, 1e-30f, -1e-30f, 1e-40f};
  std::uniform_int_distribution<int> kind(0, 9);
  std::uniform_real_distribution<float> cont(-3.f, 3.f), pos(0.01f, 4.f);
  std::vector<float> v(n);
  for (auto& x : v) {
    const int k = kind(g);
    if (k <= 4) x = cont(g);
    else if (k <= 7) x = discrete[std::uniform_int_distribution<int>(0, 8)(g)];
    else if (k == 8) x = special[std::uniform_int_distribution<int>(0, 5)(g)];
    else x = pos(g);
  }
  return v;
}

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Output elements outside the layout must still hold the 0xFF garbage bytes.
template <typename T>
::testing::AssertionResult gaps_untouched(const std::vector<T>& got, const std::vector<bool>& hit) {
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (hit[i]) continue;
    T garbage_value;
    std::memset(&garbage_value, 0xFF, sizeof(T));
    if (std::memcmp(&got[i], &garbage_value, sizeof(T)) != 0)
      return ::testing::AssertionFailure() << "output element " << i
                                           << " is outside the layout but was overwritten (value " << double(got[i])
                                           << ")";
  }
  return ::testing::AssertionSuccess();
}

template <typename T>
DeviceBuffer<T> filled(std::size_t n, int byte) {
  DeviceBuffer<T> b(n == 0 ? 1 : n);
  b.fill_bytes(byte);
  return b;
}

// ---- unary ------------------------------------------------------------------------------------------------------

struct UnaryCase {
  EwOp op;
  const char* name;
  EwParams p;
};

std::vector<UnaryCase> unary_cases() {
  std::vector<UnaryCase> v;
  for (const OpInfo& o : unary_ops()) {
    if (o.op == EwOp::kPowScalar) {
      v.push_back({o.op, o.name, {3.f, 0.f}});
      v.push_back({o.op, o.name, {0.5f, 0.f}});
      v.push_back({o.op, o.name, {-1.5f, 0.f}});
    } else if (o.op == EwOp::kClamp) {
      v.push_back({o.op, o.name, {-0.5f, 1.5f}});
      v.push_back({o.op, o.name, {-kInf, 0.25f}});
      v.push_back({o.op, o.name, {-1.f, kInf}});
    } else if (o.op == EwOp::kClampPass) {
      v.push_back({o.op, o.name, {-0.5f, 1.5f}});
      v.push_back({o.op, o.name, {-kInf, 0.f}});
    } else {
      v.push_back({o.op, o.name, {}});
    }
  }
  return v;
}

double unary_rtol(EwOp op) { return inexact(op) ? kUlpRtol : (op == EwOp::kSqrt ? kSqrtRtol : 0.0); }

// Runs one unary op over one layout (optionally in place: out == a) and compares with the host loop.
void check_unary(const UnaryCase& c, const TestLayout& l, bool in_place, std::mt19937_64& g) {
  SCOPED_TRACE(std::string("op ") + c.name + " p0=" + std::to_string(c.p.p0) + " p1=" + std::to_string(c.p.p1) +
               ", layout " + l.name + (in_place ? ", in place" : ""));
  const std::size_t n_out = l.extent(0), n_a = in_place ? n_out : l.extent(1);
  std::vector<float> a = test_values(n_a, g);
  std::vector<float> want(n_out, 0.f);
  std::memset(want.data(), 0xFF, n_out * 4);
  for (std::int64_t i = 0; i < l.numel(); ++i)
    want[std::size_t(l.offset(0, i))] = host_unary(c.op, a[std::size_t(l.offset(in_place ? 0 : 1, i))], c.p);
  std::vector<float> got;
  if (in_place) {
    TestLayout li = l;
    li.strides[1] = li.strides[0];
    DeviceBuffer<float> da(a);
    kc::ew_unary(c.op, c.p, li.dev(), da.data(), da.data(), nullptr);
    got = da.download();
    // Gap elements of an in-place call keep their input values.
    const std::vector<bool> hit = addressed(l, n_out);
    for (std::size_t i = 0; i < n_out; ++i)
      if (!hit[i]) want[i] = a[i];
  } else {
    DeviceBuffer<float> da(a);
    DeviceBuffer<float> dout = garbage(n_out);
    kc::ew_unary(c.op, c.p, l.dev(), dout.data(), da.data(), nullptr);
    got = dout.download();
    EXPECT_TRUE(gaps_untouched(got, addressed(l, n_out)));
  }
  EXPECT_TRUE(near_all(got, want, unary_rtol(c.op), inexact(c.op) ? kUlpAtol : 0.0, c.name));
}

// ---- binary -----------------------------------------------------------------------------------------------------

template <typename Out>
void check_binary_typed(const OpInfo& o, const TestLayout& l, int in_place_operand, std::mt19937_64& g) {
  const std::size_t n_out = l.extent(0);
  TestLayout li = l;
  if (in_place_operand > 0) li.strides[in_place_operand] = li.strides[0];
  std::vector<float> a = test_values(li.extent(1), g), b = test_values(li.extent(2), g);
  // Make a share values with b at the same logical positions sometimes, so ties (share ops, kEq, kGe) occur.
  for (std::int64_t i = 0; i < li.numel(); i += 3) a[std::size_t(li.offset(1, i))] = b[std::size_t(li.offset(2, i))];
  std::vector<Out> want(n_out);
  std::memset(want.data(), 0xFF, n_out * sizeof(Out));
  if (in_place_operand == 1) std::memcpy(want.data(), a.data(), n_out * sizeof(Out));
  if (in_place_operand == 2) std::memcpy(want.data(), b.data(), n_out * sizeof(Out));
  for (std::int64_t i = 0; i < li.numel(); ++i)
    want[std::size_t(li.offset(0, i))] =
        Out(host_binary(o.op, a[std::size_t(li.offset(1, i))], b[std::size_t(li.offset(2, i))]));
  DeviceBuffer<float> da(a), db(b);
  std::vector<Out> got;
  if (in_place_operand > 0) {
    DeviceBuffer<float>& target = in_place_operand == 1 ? da : db;
    kc::ew_binary(o.op, li.dev(), target.data(), da.data(), db.data(), nullptr);
    std::vector<float> all = target.download();
    got.assign(all.begin(), all.begin() + std::ptrdiff_t(n_out));
  } else {
    DeviceBuffer<Out> dout = filled<Out>(n_out, 0xFF);
    kc::ew_binary(o.op, li.dev(), dout.data(), da.data(), db.data(), nullptr);
    got = dout.download();
    EXPECT_TRUE(gaps_untouched(got, addressed(li, n_out)));
  }
  if constexpr (std::is_same_v<Out, std::uint8_t>) {
    for (std::size_t i = 0; i < n_out; ++i)
      if (got[i] != want[i]) {
        ADD_FAILURE() << o.name << ": mask element " << i << " is " << int(got[i]) << ", want " << int(want[i]);
        break;
      }
  } else {
    EXPECT_TRUE(near_all(got, want, inexact(o.op) ? kUlpRtol : 0.0, inexact(o.op) ? kUlpAtol : 0.0, o.name));
  }
}

void check_binary(const OpInfo& o, const TestLayout& l, int in_place_operand, std::mt19937_64& g) {
  SCOPED_TRACE(std::string("op ") + o.name + ", layout " + l.name +
               (in_place_operand ? ", in place on operand " + std::to_string(in_place_operand) : std::string()));
  if (ak::ew_writes_mask(o.op)) {
    ASSERT_EQ(in_place_operand, 0) << "mask ops write u8: no in-place form";
    check_binary_typed<std::uint8_t>(o, l, 0, g);
  } else {
    check_binary_typed<float>(o, l, in_place_operand, g);
  }
}

// ---- reductions: float64 host reference ---------------------------------------------------------------------

struct ReduceRef {
  std::vector<double> value, abs_sum;
};

ReduceRef reduce_reference(kc::ReduceOp op, const kc::ReduceLayoutDev& L, const std::vector<float>& in) {
  std::int64_t n_out = 1, n_red = 1;
  for (int d = 0; d < L.n_keep; ++d) n_out *= L.keep_sizes[d];
  for (int d = 0; d < L.n_red; ++d) n_red *= L.red_sizes[d];
  ReduceRef r;
  r.value.assign(std::size_t(n_out), 0.0);
  r.abs_sum.assign(std::size_t(n_out), 0.0);
  for (std::int64_t k = 0; k < n_out; ++k) {
    std::int64_t base = 0, rem = k;
    for (int d = L.n_keep - 1; d >= 0; --d) {
      base += (rem % L.keep_sizes[d]) * L.keep_strides[d];
      rem /= L.keep_sizes[d];
    }
    double acc = op == kc::ReduceOp::kSum ? 0.0 : (op == kc::ReduceOp::kMax ? -INFINITY : INFINITY), abs = 0;
    bool nan = false;
    for (std::int64_t j = 0; j < n_red; ++j) {
      std::int64_t off = base, jr = j;
      for (int d = L.n_red - 1; d >= 0; --d) {
        off += (jr % L.red_sizes[d]) * L.red_strides[d];
        jr /= L.red_sizes[d];
      }
      const double x = in[std::size_t(off)];
      nan |= std::isnan(x);
      abs += std::abs(x);
      if (op == kc::ReduceOp::kSum) acc += x;
      else if (op == kc::ReduceOp::kMax) acc = std::max(acc, x);
      else acc = std::min(acc, x);
    }
    r.value[std::size_t(k)] = nan ? NAN : acc;
    r.abs_sum[std::size_t(k)] = abs;
  }
  return r;
}

// Sums: |got − scale·want| <= 1e-5·|scale|·Σ|x| (cancellation-safe); max / min: exact (scale a power of two).
::testing::AssertionResult reduce_matches(const std::vector<float>& got, const ReduceRef& ref, kc::ReduceOp op,
                                          float scale) {
  if (got.size() < ref.value.size())
    return ::testing::AssertionFailure() << "got " << got.size() << " outputs, want " << ref.value.size();
  for (std::size_t k = 0; k < ref.value.size(); ++k) {
    const double want = ref.value[k] * double(scale), g = got[k];
    if (std::isnan(want) || std::isnan(g)) {
      if (std::isnan(want) && std::isnan(g)) continue;
      return ::testing::AssertionFailure() << "output " << k << ": got " << g << ", want " << want;
    }
    const double tol = op == kc::ReduceOp::kSum ? 1e-5 * std::abs(double(scale)) * ref.abs_sum[k] + 1e-30 : 0.0;
    if (!(std::abs(g - want) <= tol) && !(g == want))
      return ::testing::AssertionFailure() << "output " << k << " of " << ref.value.size() << ": got " << g
                                           << ", want " << want << " (tolerance " << tol << ")";
  }
  return ::testing::AssertionSuccess();
}

const char* reduce_name(kc::ReduceOp op) {
  return op == kc::ReduceOp::kSum ? "kSum" : (op == kc::ReduceOp::kMax ? "kMax" : "kMin");
}

// Runs reduce with a NaN-garbage output (and workspace when one is needed) and returns the output.
std::vector<float> run_reduce(kc::ReduceOp op, const kc::ReduceLayoutDev& L, const DeviceBuffer<float>& in,
                              float scale, std::size_t n_out, int workspace_fill = 0xFF) {
  const std::int64_t ws = kc::reduce_workspace_floats(L);
  EXPECT_GE(ws, 0);
  DeviceBuffer<float> dws = filled<float>(std::size_t(ws), workspace_fill);
  DeviceBuffer<float> dout = garbage(n_out);
  kc::reduce(op, L, in.data(), scale, dout.data(), ws > 0 ? dws.data() : nullptr, nullptr);
  return dout.download();
}

// A [keep..., red...] description over a 2-D contiguous matrix [rows, cols] reducing one of its dims.
kc::ReduceLayoutDev matrix_reduce(std::int64_t rows, std::int64_t cols, int reduce_dim) {
  kc::ReduceLayoutDev L;
  L.n_keep = 1;
  L.n_red = 1;
  if (reduce_dim == 1) {
    L.keep_sizes[0] = rows, L.keep_strides[0] = cols;
    L.red_sizes[0] = cols, L.red_strides[0] = 1;
  } else {
    L.keep_sizes[0] = cols, L.keep_strides[0] = 1;
    L.red_sizes[0] = rows, L.red_strides[0] = cols;
  }
  return L;
}

const float* dummy_f() { return reinterpret_cast<const float*>(std::uintptr_t(16)); }
float* dummy_out() { return reinterpret_cast<float*>(std::uintptr_t(32)); }

}  // namespace

// =================================================================================================================
// Host-only tests (no GPU needed)
// =================================================================================================================

TEST(Bf16Math, KnownBitPatternsRoundToNearestEven) {
  struct Case {
    std::uint32_t in;
    std::uint16_t want;
    const char* what;
  };
  const Case cases[] = {
      {0x3F800000u, 0x3F80, "1.0"},
      {0x3F808000u, 0x3F80, "tie, kept lsb even: down"},
      {0x3F818000u, 0x3F82, "tie, kept lsb odd: up"},
      {0x3F808001u, 0x3F81, "just above the tie: up"},
      {0x3F807FFFu, 0x3F80, "just below the tie: down"},
      {0xBF818000u, 0xBF82, "negative tie, odd: away from zero"},
      {0x7F800000u, 0x7F80, "+inf"},
      {0xFF800000u, 0xFF80, "-inf"},
      {0x7FC00000u, 0x7FC0, "quiet NaN"},
      {0x7F800001u, 0x7FC0, "signalling NaN with a low payload -> quiet NaN"},
      {0xFF800001u, 0xFFC0, "negative signalling NaN keeps its sign"},
      {0x7FFFFFFFu, 0x7FFF, "NaN with every mantissa bit: no wrap into the sign"},
      {0x7F7FFFFFu, 0x7F80, "FLT_MAX rounds up to +inf"},
      {0x7F7F7FFFu, 0x7F7F, "largest value that stays finite"},
      {0x80000000u, 0x8000, "-0"},
      {0x00000001u, 0x0000, "smallest denormal -> +0"},
      {0x00008000u, 0x0000, "denormal tie, even: down"},
      {0x00018000u, 0x0002, "denormal tie, odd: up"},
      {0x80000001u, 0x8000, "negative denormal -> -0"},
  };
  for (const Case& c : cases) {
    float f;
    std::memcpy(&f, &c.in, 4);
    EXPECT_EQ(ak::float_to_bf16_bits(f), c.want) << c.what << " (input bits 0x" << std::hex << c.in << ")";
    EXPECT_EQ(ak::float_to_bits(f), c.in);
  }
  EXPECT_EQ(ak::bf16_bits_to_float(0x3F80), 1.0f);
  EXPECT_EQ(ak::bf16_bits_to_float(0xC040), -3.0f);
  EXPECT_TRUE(std::isnan(ak::bf16_bits_to_float(0x7FC0)));
  EXPECT_EQ(ak::bf16_bits_to_float(0xFF80), -kInf);
}

TEST(Bf16Math, AgreesWithTheIndependentHostConversionAndRoundTrips) {
  // Every bf16 pattern widens exactly and narrows back to itself (NaNs to a NaN).
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = ak::bf16_bits_to_float(std::uint16_t(b));
    ASSERT_EQ(bits_of(f), b << 16) << "pattern 0x" << std::hex << b;
    const std::uint16_t back = ak::float_to_bf16_bits(f);
    if (std::isnan(f)) ASSERT_TRUE(std::isnan(ak::bf16_bits_to_float(back))) << "pattern 0x" << std::hex << b;
    else ASSERT_EQ(back, b) << "pattern 0x" << std::hex << b;
  }
  // A spread of 2^24 float bit patterns (odd step: every exponent, many mantissas) against an independent
  // reference written here on integers: add 0x7FFF plus the kept lowest bit (ties to even), keep the top half.
  for (std::uint64_t u = 0; u < (std::uint64_t(1) << 32); u += 257) {
    float f;
    const std::uint32_t u32 = std::uint32_t(u);
    std::memcpy(&f, &u32, 4);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(ak::bf16_bits_to_float(ak::float_to_bf16_bits(f)))) << "bits 0x" << std::hex << u32;
      continue;
    }
    const std::uint16_t want = std::uint16_t((u32 + 0x7FFFu + ((u32 >> 16) & 1u)) >> 16);
    ASSERT_EQ(ak::float_to_bf16_bits(f), want) << "bits 0x" << std::hex << u32;
  }
}

TEST(CudaEwValidation, ArityAndUnknownOpsAreRefused) {
  const auto l = make_layout("l", {4}, {1}, {1}, {1}, {1}).dev();
  EXPECT_ERROR_WITH(kc::ew_unary(EwOp::kAdd, {}, l, dummy_out(), dummy_f(), nullptr), "ew_unary", "kAdd", "binary");
  EXPECT_ERROR_WITH(kc::ew_binary(EwOp::kExp, l, dummy_out(), dummy_f(), dummy_f(), nullptr), "ew_binary", "kExp",
                    "unary");
  EXPECT_ERROR_WITH(kc::ew_unary(EwOp(20), {}, l, dummy_out(), dummy_f(), nullptr), "ew_unary",
                    "unknown EwOp code 20");
  EXPECT_ERROR_WITH(kc::ew_binary(EwOp(99), l, dummy_out(), dummy_f(), dummy_f(), nullptr), "ew_binary",
                    "unknown EwOp code 99");
}

TEST(CudaEwValidation, BadLayoutsAreRefused) {
  kc::EwLayout l = make_layout("l", {4, 6}, {6, 1}, {6, 1}, {6, 1}, {6, 1}).dev();
  kc::EwLayout bad = l;
  bad.ndim = kc::kMaxEwDims + 1;
  EXPECT_ERROR_WITH(kc::ew_unary(EwOp::kNeg, {}, bad, dummy_out(), dummy_f(), nullptr), "ew_unary", "ndim is 9",
                    "0..8");
  bad.ndim = -1;
  EXPECT_ERROR_WITH(kc::ew_binary(EwOp::kAdd, bad, dummy_out(), dummy_f(), dummy_f(), nullptr), "ew_binary",
                    "ndim is -1");
  bad = l;
  bad.sizes[1] = -2;
  EXPECT_ERROR_WITH(kc::ew_copy(bad, dummy_out(), dummy_f(), 4, nullptr), "ew_copy", "sizes[1] is -2");
  bad = l;
  bad.strides[2][0] = -6;
  EXPECT_ERROR_WITH(kc::ew_binary(EwOp::kMul, bad, dummy_out(), dummy_f(), dummy_f(), nullptr), "ew_binary",
                    "operand 2 (b)", "negative strides");
  bad = l;
  bad.strides[0][1] = 0;  // output broadcast: several lanes would write one element
  EXPECT_ERROR_WITH(kc::ew_unary(EwOp::kExp, {}, bad, dummy_out(), dummy_f(), nullptr), "ew_unary", "stride 0",
                    "dim 1");
}

TEST(CudaEwValidation, PointersAreChecked) {
  const kc::EwLayout l = make_layout("l", {4, 6}, {6, 1}, {6, 1}, {6, 1}, {6, 1}).dev();
  EXPECT_ERROR_WITH(kc::ew_unary(EwOp::kNeg, {}, l, dummy_out(), nullptr, nullptr), "ew_unary", "operand 1 (a)",
                    "null");
  EXPECT_ERROR_WITH(kc::ew_binary(EwOp::kAdd, l, nullptr, dummy_f(), dummy_f(), nullptr), "ew_binary",
                    "operand 0 (out)", "null");
  EXPECT_ERROR_WITH(kc::ew_where(l, dummy_out(), nullptr, dummy_f(), dummy_f(), nullptr), "ew_where",
                    "operand 1 (cond)", "null");
  EXPECT_ERROR_WITH(
      kc::ew_unary(EwOp::kNeg, {}, l, dummy_out(), reinterpret_cast<const float*>(std::uintptr_t(18)), nullptr),
      "ew_unary", "operand 1 (a)", "not aligned", "4 bytes");
  EXPECT_ERROR_WITH(kc::ew_copy(l, reinterpret_cast<void*>(std::uintptr_t(36)), dummy_f(), 8, nullptr), "ew_copy",
                    "operand 0 (out)", "not aligned", "8 bytes");
  // A mask output is u8: no alignment requirement, so only the (dummy) float inputs are checked — an odd output
  // address must pass validation. That call would launch, so it only runs with a GPU (see CudaEwBinary).
  // Same base pointer, different layout: a partial overlap.
  kc::EwLayout overlap = l;
  overlap.strides[1][0] = 1;
  overlap.strides[1][1] = 4;
  EXPECT_ERROR_WITH(kc::ew_unary(EwOp::kNeg, {}, overlap, dummy_out(), dummy_out(), nullptr), "ew_unary",
                    "operand 1 (a)", "in-place");
}

TEST(CudaEwValidation, CopyConvertFillArguments) {
  const kc::EwLayout l = make_layout("l", {4}, {1}, {1}, {1}, {1}).dev();
  EXPECT_ERROR_WITH(kc::ew_copy(l, dummy_out(), dummy_f(), 3, nullptr), "ew_copy", "elem_bytes is 3",
                    "1, 2, 4 or 8");
  EXPECT_ERROR_WITH(kc::ew_convert(0, 2, 4, dummy_out(), dummy_f(), nullptr), "ew_convert",
                    "unsupported conversion i32 -> f32");
  EXPECT_ERROR_WITH(kc::ew_convert(6, 1, 4, dummy_out(), dummy_f(), nullptr), "ew_convert",
                    "unsupported conversion f64 -> bf16");
  EXPECT_ERROR_WITH(kc::ew_convert(0, 42, 4, dummy_out(), dummy_f(), nullptr), "ew_convert", "code 42");
  EXPECT_ERROR_WITH(kc::ew_convert(0, 6, -1, dummy_out(), dummy_f(), nullptr), "ew_convert", "count is -1");
  EXPECT_ERROR_WITH(kc::ew_convert(0, 6, 4, dummy_out(), nullptr, nullptr), "ew_convert", "null");
  EXPECT_ERROR_WITH(kc::ew_convert(1, 0, 4, reinterpret_cast<void*>(std::uintptr_t(12)), dummy_f(), nullptr),
                    "ew_convert", "not aligned");
  EXPECT_ERROR_WITH(kc::ew_fill(dummy_out(), 4, 16, 0, nullptr), "ew_fill", "elem_bytes is 16");
  EXPECT_ERROR_WITH(kc::ew_fill(dummy_out(), -3, 4, 0, nullptr), "ew_fill", "count is -3");
  EXPECT_ERROR_WITH(kc::ew_fill(nullptr, 3, 4, 0, nullptr), "ew_fill", "null");
}

TEST(CudaEwValidation, EmptyWorkLaunchesNothingAndNeedsNoPointers) {
  // No GPU is touched: these return before any CUDA call, so they pass on a GPU-less machine too.
  const kc::EwLayout empty = make_layout("e", {3, 0, 4}, {0, 4, 1}, {0, 4, 1}, {0, 4, 1}, {0, 4, 1}).dev();
  EXPECT_NO_THROW(kc::ew_unary(EwOp::kExp, {}, empty, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(kc::ew_binary(EwOp::kGt, empty, nullptr, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(kc::ew_where(empty, nullptr, nullptr, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(kc::ew_copy(empty, nullptr, nullptr, 2, nullptr));
  EXPECT_NO_THROW(kc::ew_convert(6, 0, 0, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(kc::ew_fill(nullptr, 0, 8, 0, nullptr));
  kc::ReduceLayoutDev r;
  r.n_keep = 1;
  r.keep_sizes[0] = 0;
  r.keep_strides[0] = 1;
  r.n_red = 1;
  r.red_sizes[0] = 5;
  r.red_strides[0] = 1;
  EXPECT_NO_THROW(kc::reduce(kc::ReduceOp::kMax, r, nullptr, 1.f, nullptr, nullptr, nullptr));
  EXPECT_EQ(kc::reduce_workspace_floats(r), 0);
}

TEST(CudaReduceValidation, BadLayoutsAndEmptyMaxMinAreRefused) {
  kc::ReduceLayoutDev l = matrix_reduce(4, 6, 1);
  kc::ReduceLayoutDev bad = l;
  bad.n_keep = 9;
  EXPECT_ERROR_WITH(kc::reduce(kc::ReduceOp::kSum, bad, dummy_f(), 1.f, dummy_out(), nullptr, nullptr), "reduce",
                    "n_keep is 9");
  EXPECT_ERROR_WITH(kc::reduce_workspace_floats(bad), "reduce_workspace_floats", "n_keep is 9");
  bad = l;
  bad.n_red = -1;
  EXPECT_ERROR_WITH(kc::reduce(kc::ReduceOp::kSum, bad, dummy_f(), 1.f, dummy_out(), nullptr, nullptr), "reduce",
                    "n_red is -1");
  bad = l;
  bad.red_sizes[0] = -4;
  EXPECT_ERROR_WITH(kc::reduce(kc::ReduceOp::kSum, bad, dummy_f(), 1.f, dummy_out(), nullptr, nullptr), "reduce",
                    "red_sizes[0] is -4");
  bad = l;
  bad.keep_strides[0] = -6;
  EXPECT_ERROR_WITH(kc::reduce(kc::ReduceOp::kSum, bad, dummy_f(), 1.f, dummy_out(), nullptr, nullptr), "reduce",
                    "keep_strides[0]", "negative");
  EXPECT_ERROR_WITH(kc::reduce(kc::ReduceOp(7), l, dummy_f(), 1.f, dummy_out(), nullptr, nullptr), "reduce",
                    "unknown ReduceOp code 7");
  bad = l;
  bad.red_sizes[0] = 0;
  EXPECT_ERROR_WITH(kc::reduce(kc::ReduceOp::kMax, bad, dummy_f(), 1.f, dummy_out(), nullptr, nullptr), "reduce",
                    "kMax", "empty reduced set");
  EXPECT_ERROR_WITH(kc::reduce(kc::ReduceOp::kMin, bad, dummy_f(), 1.f, dummy_out(), nullptr, nullptr), "reduce",
                    "kMin", "empty reduced set");
  EXPECT_ERROR_WITH(kc::reduce(kc::ReduceOp::kSum, l, nullptr, 1.f, dummy_out(), nullptr, nullptr), "reduce",
                    "in is null");
  EXPECT_ERROR_WITH(kc::reduce(kc::ReduceOp::kSum, l, dummy_f(), 1.f, nullptr, nullptr, nullptr), "reduce",
                    "out is null");
  // A two-level reduction needs its workspace.
  const kc::ReduceLayoutDev big = matrix_reduce(2, 1 << 20, 1);
  ASSERT_GT(kc::reduce_workspace_floats(big), 0);
  EXPECT_ERROR_WITH(kc::reduce(kc::ReduceOp::kSum, big, dummy_f(), 1.f, dummy_out(), nullptr, nullptr), "reduce",
                    "workspace is null", std::to_string(kc::reduce_workspace_floats(big)));
}

TEST(CudaReduceValidation, WorkspaceOnlyForFewOutputsOverManyElements) {
  // Few outputs over >1M elements: at least two partials per output.
  const kc::ReduceLayoutDev few = matrix_reduce(3, 1200000, 1);
  EXPECT_GE(kc::reduce_workspace_floats(few), 3 * 2);
  kc::ReduceLayoutDev full;
  full.n_red = 1;
  full.red_sizes[0] = 1100000;
  full.red_strides[0] = 1;
  EXPECT_GE(kc::reduce_workspace_floats(full), 2);
  // Many outputs, or small reduced sets: one thread / warp / block per output, no workspace.
  EXPECT_EQ(kc::reduce_workspace_floats(matrix_reduce(64, 8192, 0)), 0);
  EXPECT_EQ(kc::reduce_workspace_floats(matrix_reduce(4096, 100, 1)), 0);
  EXPECT_EQ(kc::reduce_workspace_floats(matrix_reduce(10, 3000, 1)), 0);
  kc::ReduceLayoutDev copy;
  copy.n_keep = 1;
  copy.keep_sizes[0] = 10;
  copy.keep_strides[0] = 1;
  EXPECT_EQ(kc::reduce_workspace_floats(copy), 0);
}

// =================================================================================================================
// GPU tests
// =================================================================================================================

TEST(CudaEwUnary, EveryOpEveryLayoutMatchesHost) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  for (const UnaryCase& c : unary_cases())
    for (const TestLayout& l : test_layouts()) {
      check_unary(c, l, false, g);
      check_unary(c, l, true, g);
    }
}

TEST(CudaEwBinary, EveryOpEveryLayoutMatchesHost) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  for (const OpInfo& o : binary_ops())
    for (const TestLayout& l : test_layouts()) {
      check_binary(o, l, 0, g);
      if (!ak::ew_writes_mask(o.op)) {
        check_binary(o, l, 1, g);
        check_binary(o, l, 2, g);
      }
    }
}

TEST(CudaEwBinary, MaskOutputAtAnOddAddress) {
  ARCLIGHT_REQUIRE_GPU();
  const TestLayout l = make_layout("flat", {37}, {1}, {1}, {1}, {1});
  std::vector<float> a(37), b(37);
  for (int i = 0; i < 37; ++i) a[std::size_t(i)] = float(i % 5), b[std::size_t(i)] = float(i % 3);
  DeviceBuffer<float> da(a), db(b);
  DeviceBuffer<std::uint8_t> dout = filled<std::uint8_t>(40, 0xFF);
  kc::ew_binary(EwOp::kGe, l.dev(), dout.data() + 1, da.data(), db.data(), nullptr);
  const std::vector<std::uint8_t> got = dout.download();
  EXPECT_EQ(got[0], 0xFF) << "byte before the output was written";
  for (int i = 0; i < 37; ++i)
    EXPECT_EQ(int(got[std::size_t(i) + 1]), a[std::size_t(i)] >= b[std::size_t(i)] ? 1 : 0) << "element " << i;
  EXPECT_EQ(got[38], 0xFF) << "byte after the output was written";
}

TEST(CudaEwLarge, MoreWorkThanOneGridFlatAndStrided) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  // The grid is capped at 65536 blocks of 256 threads = 2^24 elements per sweep; these need two sweeps.
  const std::int64_t n = (std::int64_t(1) << 24) + 12345;
  {
    SCOPED_TRACE("flat kAdd with a scalar-broadcast b");
    const TestLayout l = make_layout("flat", {n}, {1}, {1}, {0}, {1});
    std::vector<float> a = uniform(std::size_t(n), g, -4.f, 4.f), b = {1.25f};
    DeviceBuffer<float> da(a), db(b);
    DeviceBuffer<float> dout = garbage(std::size_t(n));
    kc::ew_binary(EwOp::kAdd, l.dev(), dout.data(), da.data(), db.data(), nullptr);
    std::vector<float> want(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < want.size(); ++i) want[i] = a[i] + 1.25f;
    EXPECT_TRUE(near_all(dout.download(), want, 0.0, 0.0, "flat kAdd"));
  }
  {
    SCOPED_TRACE("strided kNeg from a transposed input");
    const std::int64_t r = 4099, c = 4097;  // r·c > 2^24
    const TestLayout l = make_layout("transposed", {r, c}, {c, 1}, {1, r}, {}, {});
    std::vector<float> a = uniform(std::size_t(r * c), g, -4.f, 4.f);
    DeviceBuffer<float> da(a);
    DeviceBuffer<float> dout = garbage(std::size_t(r * c));
    kc::ew_unary(EwOp::kNeg, {}, l.dev(), dout.data(), da.data(), nullptr);
    std::vector<float> want(static_cast<std::size_t>(r * c));
    for (std::int64_t i = 0; i < r; ++i)
      for (std::int64_t j = 0; j < c; ++j) want[std::size_t(i * c + j)] = -a[std::size_t(j * r + i)];
    EXPECT_TRUE(near_all(dout.download(), want, 0.0, 0.0, "strided kNeg"));
  }
}

TEST(CudaEwLarge, SixtyFourBitIndexPaths) {
  ARCLIGHT_REQUIRE_GPU();
  const char* op = "test SixtyFourBitIndexPaths";
  const std::int64_t two31 = std::int64_t(1) << 31;
  // (1) Offsets beyond 2^31 with a small numel: sizes {2, 5}, source row stride 2^31 bytes.
  {
    DeviceBuffer<std::uint8_t> src(static_cast<std::size_t>(two31 + 64));
    src.fill_bytes(0x11);
    const std::uint8_t row0[5] = {1, 2, 3, 4, 5}, row1[5] = {6, 7, 8, 9, 10};
    kc::memcpy_host_to_device(src.data(), row0, 5, nullptr, op);
    kc::memcpy_host_to_device(src.data() + two31, row1, 5, nullptr, op);
    const TestLayout l = make_layout("far", {2, 5}, {5, 1}, {two31, 1}, {}, {});
    DeviceBuffer<std::uint8_t> dst = filled<std::uint8_t>(10, 0xFF);
    kc::ew_copy(l.dev(), dst.data(), src.data(), 1, nullptr);
    const std::vector<std::uint8_t> got = dst.download();
    for (int i = 0; i < 10; ++i) EXPECT_EQ(int(got[std::size_t(i)]), i + 1) << "element " << i;
  }
  // (2) numel >= 2^31: a contiguous byte copy and a byte fill of 2^31 + 7 elements.
  {
    const std::int64_t n = two31 + 7;
    DeviceBuffer<std::uint8_t> src(static_cast<std::size_t>(n));
    kc::ew_fill(src.data(), n, 1, 0x5A, nullptr);
    const std::uint8_t tail_mark[3] = {0xC1, 0xC2, 0xC3};
    kc::memcpy_host_to_device(src.data() + n - 3, tail_mark, 3, nullptr, op);
    DeviceBuffer<std::uint8_t> dst = filled<std::uint8_t>(std::size_t(n + 16), 0xFF);
    const TestLayout l = make_layout("huge", {n}, {1}, {1}, {}, {});
    kc::ew_copy(l.dev(), dst.data(), src.data(), 1, nullptr);
    kc::synchronize(nullptr, op);
    // head, the 64 bytes below 2^31, and the last 16 bytes (which straddle 2^31) plus 16 past the end.
    std::vector<std::uint8_t> head(64), mid(64), tail(32);
    kc::memcpy_device_to_host(head.data(), dst.data(), 64, nullptr, op);
    kc::memcpy_device_to_host(mid.data(), dst.data() + two31 - 64, 64, nullptr, op);
    kc::memcpy_device_to_host(tail.data(), dst.data() + n - 16, 32, nullptr, op);
    for (int i = 0; i < 64; ++i) EXPECT_EQ(int(head[std::size_t(i)]), 0x5A) << "head byte " << i;
    for (int i = 0; i < 64; ++i) EXPECT_EQ(int(mid[std::size_t(i)]), 0x5A) << "byte 2^31 - 64 + " << i;
    for (int i = 0; i < 13; ++i) EXPECT_EQ(int(tail[std::size_t(i)]), 0x5A) << "byte n - 16 + " << i;
    for (int i = 13; i < 16; ++i) EXPECT_EQ(int(tail[std::size_t(i)]), 0xC1 + i - 13) << "last bytes, " << i;
    for (int i = 16; i < 32; ++i) EXPECT_EQ(int(tail[std::size_t(i)]), 0xFF) << "byte past the end, " << i - 16;
  }
}

TEST(CudaEwWhere, EveryLayoutMatchesHost) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  for (const TestLayout& l : test_layouts()) {
    SCOPED_TRACE("layout " + l.name);
    std::vector<std::uint8_t> cond(l.extent(1));
    for (auto& c : cond) c = std::uint8_t(std::uniform_int_distribution<int>(0, 2)(g) * 7 / 2);  // 0, 3 or 7
    std::vector<float> a = test_values(l.extent(2), g), b = test_values(l.extent(3), g);
    const std::size_t n_out = l.extent(0);
    std::vector<float> want(n_out);
    std::memset(want.data(), 0xFF, n_out * 4);
    for (std::int64_t i = 0; i < l.numel(); ++i)
      want[std::size_t(l.offset(0, i))] = cond[std::size_t(l.offset(1, i))] != 0 ? a[std::size_t(l.offset(2, i))]
                                                                                 : b[std::size_t(l.offset(3, i))];
    DeviceBuffer<std::uint8_t> dc(cond);
    DeviceBuffer<float> da(a), db(b);
    DeviceBuffer<float> dout = garbage(n_out);
    kc::ew_where(l.dev(), dout.data(), dc.data(), da.data(), db.data(), nullptr);
    const std::vector<float> got = dout.download();
    for (std::size_t i = 0; i < n_out; ++i)
      ASSERT_EQ(bits_of(got[i]), bits_of(want[i])) << "element " << i << ": got " << got[i] << ", want " << want[i];
  }
}

namespace {

template <typename T>
void check_copy(const TestLayout& l, std::mt19937_64& g) {
  SCOPED_TRACE("layout " + l.name + ", " + std::to_string(sizeof(T)) + "-byte elements");
  std::vector<T> src(l.extent(1));
  for (auto& x : src) x = T(g());  // random bits
  const std::size_t n_out = l.extent(0);
  // Destination pre-filled with a recognisable pattern; elements outside the layout must keep it.
  std::vector<T> dst(n_out);
  for (std::size_t i = 0; i < n_out; ++i) dst[i] = T(0xA5A5A5A5A5A5A5A5ull ^ (i * 0x9E3779B97F4A7C15ull));
  std::vector<T> want = dst;
  for (std::int64_t i = 0; i < l.numel(); ++i) want[std::size_t(l.offset(0, i))] = src[std::size_t(l.offset(1, i))];
  DeviceBuffer<T> dsrc(src), ddst(dst);
  kc::ew_copy(l.dev(), ddst.data(), dsrc.data(), int(sizeof(T)), nullptr);
  const std::vector<T> got = ddst.download();
  const std::vector<bool> hit = addressed(l, n_out);
  for (std::size_t i = 0; i < n_out; ++i)
    ASSERT_EQ(got[i], want[i]) << "element " << i
                               << (hit[i] ? " (addressed)" : " (outside the layout: must be untouched)");
}

}  // namespace

TEST(CudaEwCopy, EveryElementSizeEveryLayoutIncludingStridedDestinations) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  for (const TestLayout& l : test_layouts()) {
    check_copy<std::uint8_t>(l, g);
    check_copy<std::uint16_t>(l, g);
    check_copy<std::uint32_t>(l, g);
    check_copy<std::uint64_t>(l, g);
  }
}

TEST(CudaEwConvert, F32ToBf16ExactBitPatterns) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const std::vector<std::uint32_t> special = {0x3F800000u, 0x3F808000u, 0x3F818000u, 0x3F808001u, 0x3F807FFFu,
                                              0xBF818000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0x7F800001u,
                                              0xFF800001u, 0x7FFFFFFFu, 0x7F7FFFFFu, 0x7F7F7FFFu, 0x80000000u,
                                              0x00000001u, 0x00008000u, 0x00018000u, 0x80000001u};
  const std::vector<std::uint16_t> special_want = {0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x3F80, 0xBF82, 0x7F80,
                                                   0xFF80, 0x7FC0, 0x7FC0, 0xFFC0, 0x7FFF, 0x7F80, 0x7F7F,
                                                   0x8000, 0x0000, 0x0000, 0x0002, 0x8000};
  std::vector<float> in(special.size() + 100003);
  for (std::size_t i = 0; i < special.size(); ++i) std::memcpy(&in[i], &special[i], 4);
  for (std::size_t i = special.size(); i < in.size(); ++i) {
    const std::uint32_t u = std::uint32_t(g());
    std::memcpy(&in[i], &u, 4);  // random bit patterns: every class of float, NaNs included
  }
  DeviceBuffer<float> din(in);
  DeviceBuffer<std::uint16_t> dout = filled<std::uint16_t>(in.size(), 0xFF);
  kc::ew_convert(int(arclight::DType::bf16), int(arclight::DType::f32), std::int64_t(in.size()), dout.data(),
                 din.data(), nullptr);
  const std::vector<std::uint16_t> got = dout.download();
  for (std::size_t i = 0; i < special.size(); ++i)
    EXPECT_EQ(got[i], special_want[i]) << "input bits 0x" << std::hex << special[i];
  for (std::size_t i = 0; i < in.size(); ++i)
    ASSERT_EQ(got[i], arclight::cuda::float_to_bf16_bits(in[i])) << "element " << i << ", input bits 0x" << std::hex
                                                                  << bits_of(in[i]);
}

TEST(CudaEwConvert, Bf16ToF32EveryPatternExact) {
  ARCLIGHT_REQUIRE_GPU();
  std::vector<std::uint16_t> in(65536);
  for (std::uint32_t b = 0; b < 65536; ++b) in[b] = std::uint16_t(b);
  DeviceBuffer<std::uint16_t> din(in);
  DeviceBuffer<float> dout = garbage(in.size());
  kc::ew_convert(int(arclight::DType::f32), int(arclight::DType::bf16), 65536, dout.data(), din.data(), nullptr);
  const std::vector<float> got = dout.download();
  for (std::uint32_t b = 0; b < 65536; ++b)
    ASSERT_EQ(bits_of(got[b]), b << 16) << "bf16 pattern 0x" << std::hex << b;
}

TEST(CudaEwConvert, F32F64RoundTripAndI64) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const std::int64_t n = 70001;
  std::vector<float> f = test_values(std::size_t(n), g);
  DeviceBuffer<float> df(f);
  DeviceBuffer<double> dd = filled<double>(std::size_t(n), 0xFF);
  DeviceBuffer<float> dback = garbage(std::size_t(n));
  kc::ew_convert(int(arclight::DType::f64), int(arclight::DType::f32), n, dd.data(), df.data(), nullptr);
  kc::ew_convert(int(arclight::DType::f32), int(arclight::DType::f64), n, dback.data(), dd.data(), nullptr);
  const std::vector<double> wide = dd.download();
  const std::vector<float> back = dback.download();
  for (std::size_t i = 0; i < std::size_t(n); ++i) {
    if (std::isnan(f[i])) {
      ASSERT_TRUE(std::isnan(wide[i]) && std::isnan(back[i])) << "element " << i;
      continue;
    }
    ASSERT_EQ(wide[i], double(f[i])) << "f32 -> f64, element " << i;
    ASSERT_EQ(bits_of(back[i]), bits_of(f[i])) << "f64 -> f32 round trip, element " << i;
  }
  // f64 values needing rounding (ties included) narrow exactly as the host rounds.
  std::vector<double> d(static_cast<std::size_t>(n));
  std::uniform_real_distribution<double> u(-1e3, 1e3);
  for (auto& x : d) x = u(g);
  d[0] = 1.0 + std::ldexp(1.0, -24);          // tie: to even (1.0)
  d[1] = 1.0 + 3 * std::ldexp(1.0, -24);      // tie: to even (up)
  d[2] = 1e300;                               // overflow: +inf
  d[3] = -1e-300;                             // underflow: -0
  DeviceBuffer<double> dd2(d);
  DeviceBuffer<float> dn = garbage(std::size_t(n));
  kc::ew_convert(int(arclight::DType::f32), int(arclight::DType::f64), n, dn.data(), dd2.data(), nullptr);
  const std::vector<float> narrowed = dn.download();
  for (std::size_t i = 0; i < std::size_t(n); ++i)
    ASSERT_EQ(bits_of(narrowed[i]), bits_of(float(d[i]))) << "f64 -> f32, element " << i << " (" << d[i] << ")";
  // i64 -> f32: round to nearest as the host's conversion.
  std::vector<std::int64_t> iv(static_cast<std::size_t>(n));
  for (auto& x : iv) x = std::int64_t(g()) >> std::uniform_int_distribution<int>(0, 62)(g);
  iv[0] = 0, iv[1] = -1, iv[2] = (std::int64_t(1) << 24) + 1, iv[3] = (std::int64_t(1) << 53) + 1;
  iv[4] = std::numeric_limits<std::int64_t>::max(), iv[5] = std::numeric_limits<std::int64_t>::min();
  DeviceBuffer<std::int64_t> di(iv);
  DeviceBuffer<float> dfi = garbage(std::size_t(n));
  kc::ew_convert(int(arclight::DType::f32), int(arclight::DType::i64), n, dfi.data(), di.data(), nullptr);
  const std::vector<float> fi = dfi.download();
  for (std::size_t i = 0; i < std::size_t(n); ++i)
    ASSERT_EQ(bits_of(fi[i]), bits_of(float(iv[i]))) << "i64 -> f32, element " << i << " (" << iv[i] << ")";
}

// u8 -> f32 (what ops::to does to a comparison mask on the device): every byte value, exact.
TEST(CudaEwConvert, U8ToF32EveryByteValue) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const std::int64_t n = 70001;
  std::vector<std::uint8_t> in(static_cast<std::size_t>(n));
  for (auto& x : in) x = std::uint8_t(g());
  for (int v = 0; v < 256; ++v) in[std::size_t(v)] = std::uint8_t(v);
  DeviceBuffer<std::uint8_t> din(in);
  DeviceBuffer<float> dout = garbage(std::size_t(n));
  kc::ew_convert(int(arclight::DType::f32), int(arclight::DType::u8), n, dout.data(), din.data(), nullptr);
  const std::vector<float> out = dout.download();
  for (std::size_t i = 0; i < std::size_t(n); ++i)
    ASSERT_EQ(bits_of(out[i]), bits_of(float(in[i]))) << "u8 -> f32, element " << i << " (" << int(in[i]) << ")";
}

namespace {

template <typename T>
void check_fill(std::int64_t count) {
  SCOPED_TRACE(std::to_string(sizeof(T)) + "-byte elements, count " + std::to_string(count));
  const std::uint64_t bits = 0x0123456789ABCDEFull;
  DeviceBuffer<T> d = filled<T>(std::size_t(count + 3), 0x5A);
  kc::ew_fill(d.data(), count, int(sizeof(T)), bits, nullptr);
  const std::vector<T> got = d.download();
  T sentinel;
  std::memset(&sentinel, 0x5A, sizeof(T));
  for (std::int64_t i = 0; i < count; ++i)
    ASSERT_EQ(got[std::size_t(i)], T(bits)) << "element " << i;
  for (std::int64_t i = count; i < count + 3; ++i)
    ASSERT_EQ(got[std::size_t(i)], sentinel) << "element " << i << " past the end was written";
}

}  // namespace

TEST(CudaEwFill, EveryElementSize) {
  ARCLIGHT_REQUIRE_GPU();
  for (std::int64_t count : {std::int64_t(1), std::int64_t(1000003)}) {
    check_fill<std::uint8_t>(count);
    check_fill<std::uint16_t>(count);
    check_fill<std::uint32_t>(count);
    check_fill<std::uint64_t>(count);
  }
  // A float value through its bit pattern.
  const float v = -2.75f;
  DeviceBuffer<float> d = garbage(17);
  kc::ew_fill(d.data(), 17, 4, bits_of(v), nullptr);
  for (float x : d.download()) EXPECT_EQ(x, v);
}

// ---- reductions ---------------------------------------------------------------------------------------------------

TEST(CudaReduce, EveryDimSubsetOfAPaddedPermuted4dInput) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  // Logical [3, 5, 7, 11] stored in physical order (d2, d0, d3, d1) with padding: innermost stride 2, each
  // outer stride = inner extent + 3.
  const std::int64_t sizes[4] = {3, 5, 7, 11};
  const int phys[4] = {2, 0, 3, 1};
  std::int64_t strides[4];
  std::int64_t s = 2;
  for (int p = 3; p >= 0; --p) {
    strides[phys[p]] = s;
    s = s * sizes[phys[p]] + 3;
  }
  std::int64_t extent = 1;
  for (int d = 0; d < 4; ++d) extent += (sizes[d] - 1) * strides[d];
  std::vector<float> x = normal(std::size_t(extent), g);
  std::vector<float> x_nan = x;
  for (std::size_t i = 0; i < x_nan.size(); i += 97) x_nan[i] = kNaN;  // max / min must propagate these
  DeviceBuffer<float> dx(x), dx_nan(x_nan);

  for (int mask = 0; mask < 16; ++mask) {
    kc::ReduceLayoutDev L;
    for (int d = 0; d < 4; ++d) {
      if (mask & (1 << d)) {
        L.red_sizes[L.n_red] = sizes[d], L.red_strides[L.n_red] = strides[d], ++L.n_red;
      } else {
        L.keep_sizes[L.n_keep] = sizes[d], L.keep_strides[L.n_keep] = strides[d], ++L.n_keep;
      }
    }
    std::size_t n_out = 1;
    for (int d = 0; d < L.n_keep; ++d) n_out *= std::size_t(L.keep_sizes[d]);
    for (kc::ReduceOp op : {kc::ReduceOp::kSum, kc::ReduceOp::kMax, kc::ReduceOp::kMin}) {
      for (bool with_nan : {false, true}) {
        if (op == kc::ReduceOp::kSum && with_nan) continue;
        const float scale = op == kc::ReduceOp::kSum ? 1.f / 7.f : (mask % 2 ? -2.f : 1.f);
        SCOPED_TRACE(std::string(reduce_name(op)) + " reducing dims mask " + std::to_string(mask) +
                     (with_nan ? " with NaNs" : "") + ", scale " + std::to_string(scale));
        const std::vector<float>& host = with_nan ? x_nan : x;
        const ReduceRef ref = reduce_reference(op, L, host);
        const std::vector<float> got = run_reduce(op, L, with_nan ? dx_nan : dx, scale, n_out);
        EXPECT_TRUE(reduce_matches(got, ref, op, scale));
        if (with_nan) {
          bool any_nan = false;
          for (double v : ref.value) any_nan |= std::isnan(v);
          EXPECT_TRUE(any_nan) << "the NaN case must actually contain NaN outputs";
        }
      }
    }
  }
  // Kept dims in a non-ascending order: the output is row-major over keep_sizes as given.
  kc::ReduceLayoutDev L;
  L.n_keep = 2;
  L.keep_sizes[0] = sizes[3], L.keep_strides[0] = strides[3];
  L.keep_sizes[1] = sizes[1], L.keep_strides[1] = strides[1];
  L.n_red = 2;
  L.red_sizes[0] = sizes[2], L.red_strides[0] = strides[2];
  L.red_sizes[1] = sizes[0], L.red_strides[1] = strides[0];
  const ReduceRef ref = reduce_reference(kc::ReduceOp::kSum, L, x);
  EXPECT_TRUE(reduce_matches(run_reduce(kc::ReduceOp::kSum, L, dx, 1.f, 55), ref, kc::ReduceOp::kSum, 1.f))
      << "permuted kept dims";
}

TEST(CudaReduce, EachPathMatchesHostAndIsDeterministic) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  struct PathCase {
    const char* name;
    std::int64_t rows, cols;
    int reduce_dim;
  };
  const PathCase cases[] = {
      {"thread per output (reduce outer dim, many outputs)", 64, 8192, 0},
      {"warp per output (reduce inner dim, many outputs)", 4096, 100, 1},
      {"warp per output (few outputs, small set)", 10, 1000, 1},
      {"one block per output (few outputs, one chunk)", 10, 3000, 1},
      {"two-level (3 outputs over 1.2M contiguous elements)", 3, 1200000, 1},
      {"two-level (3 outputs over 1.2M strided elements)", 1200000, 3, 0},
      {"two-level (one output, not a chunk multiple)", 1, 1048576 + 4097, 1},
  };
  for (const PathCase& c : cases) {
    const kc::ReduceLayoutDev L = matrix_reduce(c.rows, c.cols, c.reduce_dim);
    const std::size_t n_out = std::size_t(c.reduce_dim == 1 ? c.rows : c.cols);
    std::vector<float> x = normal(std::size_t(c.rows * c.cols), g);
    for (std::size_t i = 0; i < x.size(); i += 4) x[i] += 0.75f;  // a non-zero mean, so sums are not ~0
    DeviceBuffer<float> dx(x);
    for (kc::ReduceOp op : {kc::ReduceOp::kSum, kc::ReduceOp::kMax, kc::ReduceOp::kMin}) {
      const float scale = op == kc::ReduceOp::kSum ? 0.5f : 1.f;
      SCOPED_TRACE(std::string(c.name) + ", " + reduce_name(op) + ", workspace floats " +
                   std::to_string(kc::reduce_workspace_floats(L)));
      const ReduceRef ref = reduce_reference(op, L, x);
      const std::vector<float> first = run_reduce(op, L, dx, scale, n_out, 0xFF);
      EXPECT_TRUE(reduce_matches(first, ref, op, scale));
      // Same call again with different workspace garbage: identical bits.
      const std::vector<float> second = run_reduce(op, L, dx, scale, n_out, 0x00);
      ASSERT_EQ(first.size(), second.size());
      EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * 4), 0) << "two calls differ in their bits";
    }
  }
}

TEST(CudaReduce, NaNPropagationAndInfinities) {
  ARCLIGHT_REQUIRE_GPU();
  // Rows of 3000 (one block per output, one chunk), 1.2M (two-level) and 40 (warp per output): a single NaN
  // anywhere wins over any value including ±inf; rows of only -inf give max and min -inf.
  for (std::int64_t cols : {std::int64_t(3000), std::int64_t(1200000), std::int64_t(40)}) {
    SCOPED_TRACE("row length " + std::to_string(cols));
    const std::int64_t rows = 4;
    std::vector<float> x(static_cast<std::size_t>(rows * cols));
    for (std::int64_t j = 0; j < cols; ++j) {
      x[std::size_t(j)] = float(j % 13) - 6.f;                        // row 0: finite, then a NaN at the end
      x[std::size_t(cols + j)] = j == cols / 2 ? kNaN : kInf;          // row 1: +inf and one NaN in the middle
      x[std::size_t(2 * cols + j)] = -kInf;                            // row 2: only -inf
      x[std::size_t(3 * cols + j)] = j == 0 ? kNaN : -kInf;            // row 3: NaN first
    }
    x[std::size_t(cols - 1)] = kNaN;
    DeviceBuffer<float> dx(x);
    const kc::ReduceLayoutDev L = matrix_reduce(rows, cols, 1);
    const std::vector<float> mx = run_reduce(kc::ReduceOp::kMax, L, dx, 1.f, 4);
    const std::vector<float> mn = run_reduce(kc::ReduceOp::kMin, L, dx, 1.f, 4);
    EXPECT_TRUE(std::isnan(mx[0]) && std::isnan(mn[0])) << "row 0: " << mx[0] << ", " << mn[0];
    EXPECT_TRUE(std::isnan(mx[1]) && std::isnan(mn[1])) << "row 1: " << mx[1] << ", " << mn[1];
    EXPECT_EQ(mx[2], -kInf);
    EXPECT_EQ(mn[2], -kInf);
    EXPECT_TRUE(std::isnan(mx[3]) && std::isnan(mn[3])) << "row 3: " << mx[3] << ", " << mn[3];
  }
}

TEST(CudaReduce, CopyEmptySetAndNoOutputs) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  // n_red == 0: out = scale · in, gathered from a transposed [4, 6] view.
  std::vector<float> x = normal(24, g);
  DeviceBuffer<float> dx(x);
  kc::ReduceLayoutDev copy;
  copy.n_keep = 2;
  copy.keep_sizes[0] = 4, copy.keep_strides[0] = 1;
  copy.keep_sizes[1] = 6, copy.keep_strides[1] = 4;
  for (kc::ReduceOp op : {kc::ReduceOp::kSum, kc::ReduceOp::kMax, kc::ReduceOp::kMin}) {
    SCOPED_TRACE(reduce_name(op));
    const std::vector<float> got = run_reduce(op, copy, dx, -0.5f, 24);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 6; ++j)
        EXPECT_EQ(got[std::size_t(i * 6 + j)], -0.5f * x[std::size_t(j * 4 + i)]) << "element " << i << ", " << j;
  }
  // kSum over an empty reduced set: zeros (the garbage is overwritten).
  kc::ReduceLayoutDev empty = matrix_reduce(5, 0, 1);
  const std::vector<float> zeros = run_reduce(kc::ReduceOp::kSum, empty, dx, 3.f, 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(zeros[std::size_t(i)], 0.f) << "output " << i;
  // No outputs: nothing written (the 1-float garbage buffer keeps its 0xFF bytes).
  kc::ReduceLayoutDev none = matrix_reduce(0, 7, 1);
  const std::vector<float> untouched = run_reduce(kc::ReduceOp::kMax, none, dx, 1.f, 1);
  EXPECT_EQ(bits_of(untouched[0]), 0xFFFFFFFFu);
  // A full reduction (n_keep == 0) of a strided view.
  kc::ReduceLayoutDev full;
  full.n_red = 2;
  full.red_sizes[0] = 6, full.red_strides[0] = 4;
  full.red_sizes[1] = 4, full.red_strides[1] = 1;
  const ReduceRef ref = reduce_reference(kc::ReduceOp::kSum, full, x);
  EXPECT_TRUE(reduce_matches(run_reduce(kc::ReduceOp::kSum, full, dx, 0.25f, 1), ref, kc::ReduceOp::kSum, 0.25f));
}
