// MyBN's training forward and backward on the CPU as loops over memory: MyBN(backend="cpp").
//
// The same math as batchnorm_forward and batchnorm_backward in my_bn/reference.py, with the same names, in
// the shape that PyTorch's own CPU kernel has: one pass over x for the statistics, one that writes
// y; one pass over (x, dy) for the two per-channel sums of the backward, one that writes dx. Built
// on first use by my_bn/cpp.py; nothing here calls ATen's batch-norm or reduction kernels.
//
// Layout. x is read as (N, C, L) with strides (C·L, L, 1): L = 1 for (N, C), H·W for (N, C, H, W).
// A channels-last tensor is read as (N·H·W, C) rows and a transposed (N, C) one as (1, C, N), where
// they lie; any other layout is copied first (see dense). The loops run along contiguous memory,
// which the compiler vectorises: along the channels when L = 1, else along the L values of one
// (n, c).
//
// Threads. The rows are cut into blocks of about BLOCK_ELEMS values and the blocks into at most
// ROW_GROUPS groups, both by shape alone. Each group's sums are taken by one thread and the groups
// are combined in order, so a sum is the same number whatever the number of threads: reruns are
// bit-identical. Channel ranges split the work further where there are few groups; channels are
// independent, so that split does not change any result.

#include <torch/extension.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include <algorithm>
#include <type_traits>
#include <cmath>
#include <tuple>
#include <vector>

namespace my_bn_cpp {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t BLOCK_ELEMS = 1 << 15;  // a block (128 KiB of float32) stays in cache for its second pass
constexpr int64_t ROW_GROUPS = 64;        // the most partial sums per channel
constexpr int64_t SERIAL_ELEMS = 1 << 15; // below this, starting threads costs more than it saves
constexpr int64_t STREAM_BYTES = 1 << 24;  // outputs from 16 MiB are written past the cache (see stream_run)

// Arithmetic on the values of x runs in Op: float, or double for double input. That includes the
// sums within a block of rows, whose values are few and are centred before they are squared. The
// per-channel results of the blocks are combined in Acc: double for float and double input, as
// ATen's CPU kernels accumulate, float for half and bfloat16, as the Python backend does.
template <typename T> struct Acc { using type = double; };
template <> struct Acc<at::Half> { using type = float; };
template <> struct Acc<at::BFloat16> { using type = float; };
template <typename T> struct Op { using type = float; };
template <> struct Op<double> { using type = double; };

// How the work is cut: see the header.
struct Split {
  int64_t n, c, l;           // x as (N, C, L)
  int64_t rows_per_block, blocks, groups, ranges;

  Split(int64_t n_, int64_t c_, int64_t l_) : n(n_), c(c_), l(l_) {
    rows_per_block = std::max<int64_t>(1, BLOCK_ELEMS / std::max<int64_t>(1, c * l));
    blocks = (n + rows_per_block - 1) / rows_per_block;
    groups = std::min(blocks, ROW_GROUPS);
    int64_t threads = n * c * l < SERIAL_ELEMS ? 1 : at::get_num_threads();
    int64_t min_range = l == 1 ? 16 : 1; // a channel range of (N, C) rows is still a vector
    ranges = std::max<int64_t>(1, std::min((2 * threads + groups - 1) / groups, c / min_range));
  }
  int64_t tasks() const { return groups * ranges; }
  int64_t first_row(int64_t group) const { return std::min(n, group * blocks / groups * rows_per_block); }
  int64_t first_channel(int64_t range) const { return range * c / ranges; }
  bool parallel() const { return tasks() > 1 && n * c * l >= SERIAL_ELEMS; }
};

// Runs f(group, first channel, last channel) for every task, on at::get_num_threads() threads.
template <typename F>
void for_each_task(const Split& s, const F& f) {
  const int64_t tasks = s.tasks();
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if (s.parallel())
  for (int64_t t = 0; t < tasks; ++t) {
    f(t / s.ranges, s.first_channel(t % s.ranges), s.first_channel(t % s.ranges + 1));
  }
}

// Runs f(i, k) for each value x[i] of rows [r0, r1) in channels [c0, c1), with k = c - c0, along
// contiguous memory in the innermost loop, which the compiler vectorises.
template <typename F>
inline void for_each_value(const Split& s, int64_t r0, int64_t r1, int64_t c0, int64_t c1, const F& f) {
  const int64_t channels = s.c, l = s.l;
  for (int64_t r = r0; r < r1; ++r) {
    if (l == 1) {
      const int64_t row = r * channels;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) f(row + c, c - c0);
    } else {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t run = (r * channels + c) * l;
#pragma omp simd
        for (int64_t i = run; i < run + l; ++i) f(i, c - c0);
      }
    }
  }
}

// Adds to sums[q][c - c0] the sum over rows [r0, r1) of term_q(x, dy, c), for each channel c in
// [c0, c1) and each of the K terms given, x and dy being the values at one index of x and dy (pass
// x again where there is no dy): K sums in one pass. Rows of channels (L = 1) are added along the
// channels, four rows at a time; the run of one channel (L > 1) is summed as a vectorised
// reduction. The order of every sum is fixed by the shape alone.
constexpr int64_t ROWS = 4;

template <typename T, typename scalar_t, typename... Term>
inline void add_sums(const Split& s, int64_t r0, int64_t r1, int64_t c0, int64_t c1, T* const (&sums)[sizeof...(Term)],
                     const scalar_t* x, const scalar_t* dy, const Term&... term) {
  constexpr int K = sizeof...(Term);
  static_assert(K == 1 || K == 2, "one or two sums per pass");
  const int64_t channels = s.c, l = s.l;
  if (l == 1) {
    T* __restrict out[K];
    for (int q = 0; q < K; ++q) out[q] = sums[q] - c0;  // indexed by channel
    for (int64_t r = r0; r < r1; r += ROWS) {
      const scalar_t *xr = x + r * channels, *dr = dy + r * channels;
      if (r + ROWS <= r1) {
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) {
          T total[K] = {};
#pragma GCC unroll 4
          for (int64_t k = 0; k < ROWS; ++k) {
            const T xv = T(xr[k * channels + c]), dv = T(dr[k * channels + c]);
            int q = 0;
            ((total[q++] += term(xv, dv, c)), ...);
          }
          for (int q = 0; q < K; ++q) out[q][c] += total[q];
        }
      } else {
        for (int64_t k = 0; r + k < r1; ++k) {
#pragma omp simd
          for (int64_t c = c0; c < c1; ++c) {
            const T xv = T(xr[k * channels + c]), dv = T(dr[k * channels + c]);
            int q = 0;
            ((out[q++][c] += term(xv, dv, c)), ...);
          }
        }
      }
    }
    return;
  }
  const auto terms = std::forward_as_tuple(term...);
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t *xp = x + (r * channels + c) * l, *dp = dy + (r * channels + c) * l;
      T t0 = 0, t1 = 0;  // scalars, which omp simd reduces in vector lanes
      if constexpr (K == 1) {
#pragma omp simd reduction(+ : t0)
        for (int64_t j = 0; j < l; ++j) t0 += std::get<0>(terms)(T(xp[j]), T(dp[j]), c);
      } else {
#pragma omp simd reduction(+ : t0, t1)
        for (int64_t j = 0; j < l; ++j) {
          const T xv = T(xp[j]), dv = T(dp[j]);
          t0 += std::get<0>(terms)(xv, dv, c);
          t1 += std::get<1>(terms)(xv, dv, c);
        }
      }
      sums[0][c - c0] += t0;
      if constexpr (K == 2) sums[1][c - c0] += t1;
    }
  }
}

// Runs f(r0, r1) for each block of rows [r0, r1) of row group g, in order.
template <typename F>
inline void for_each_block(const Split& s, int64_t g, const F& f) {
  const int64_t end = s.first_row(g + 1);
  for (int64_t r0 = s.first_row(g); r0 < end; r0 += s.rows_per_block) f(r0, std::min(r0 + s.rows_per_block, end));
}

// Merges a block's mean and m2 over block_count values into a running mean and m2 over count
// values (the parallel formula of Chan, Golub & LeVeque): the counts weight the means, and m2 gains
// the spread between them.
template <typename acc_t>
inline void merge(acc_t& mean, acc_t& m2, int64_t count, acc_t block_mean, acc_t block_m2, int64_t block_count) {
  const acc_t share = acc_t(block_count) / acc_t(count + block_count);
  const acc_t delta = block_mean - mean;
  // An infinite mean (an inf in x) merges as Σx/M does, to inf or NaN as PyTorch's; delta would be NaN
  mean = std::isfinite(delta) ? mean + delta * share : mean * (acc_t(1) - share) + block_mean * share;
  m2 += block_m2 + delta * delta * acc_t(count) * share;
}

// Channel c's (mean, m2) over rows [r0, r1) by the two-pass algorithm, value by value in acc_t: for
// the rare block whose sums in op_t overflowed (values near ±3e38, or a constant channel above about
// 1e19, whose rounded mean leaves residuals that square to inf), which double holds. Leaves mean and m2
// as they were where these are not finite either (an inf or NaN in x: the fast path's result stands, as
// PyTorch's).
template <typename scalar_t, typename acc_t>
void block_stats_exact(const scalar_t* x, const Split& s, int64_t r0, int64_t r1, int64_t c, acc_t& mean, acc_t& m2) {
  const int64_t k = (r1 - r0) * s.l;
  acc_t total = 0, sum = 0;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t j = 0; j < s.l; ++j) total += acc_t(x[(r * s.c + c) * s.l + j]);
  if (!std::isfinite(total)) return;
  const acc_t exact_mean = total / acc_t(k);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t j = 0; j < s.l; ++j) {
      const acc_t d = acc_t(x[(r * s.c + c) * s.l + j]) - exact_mean;
      sum += d * d;
    }
  if (!std::isfinite(sum)) return;
  mean = exact_mean;
  m2 = sum;
}

// Per-channel mean and m2 = Σ(x - mean)² of x, in one pass over memory. Each block of rows is read
// twice while it is in cache, by the reference's corrected two-pass algorithm: total = Σx first,
// then the residuals xc = x - total/k, whose mean err corrects the mean and whose squares give m2.
// Within a block the sums run in x's precision (float for half and bfloat16); blocks merge into
// their group, and groups into the batch, in acc_t.
template <typename scalar_t, typename acc_t>
void batch_stats(const scalar_t* x, const Split& s, acc_t* mean, acc_t* m2) {
  using op_t = typename Op<scalar_t>::type;
  std::vector<acc_t> group_mean(s.groups * s.c, 0), group_m2(s.groups * s.c, 0);
  for_each_task(s, [&](int64_t g, int64_t c0, int64_t c1) {
    const int64_t width = c1 - c0;
    std::vector<op_t> total(width), residual(width), square(width);
    int64_t count = 0;
    for_each_block(s, g, [&](int64_t r0, int64_t r1) {
      const int64_t k = (r1 - r0) * s.l;  // values per channel in this block
      std::fill(total.begin(), total.end(), op_t(0));
      std::fill(residual.begin(), residual.end(), op_t(0));
      std::fill(square.begin(), square.end(), op_t(0));
      op_t* const sums[1] = {total.data()};
      add_sums(s, r0, r1, c0, c1, sums, x, x, [](op_t xv, op_t, int64_t) { return xv; });
      for (auto& t : total) t /= op_t(k);  // the block's first mean, total/k
      const op_t* first = total.data() - c0;  // indexed by channel
      op_t* const residuals[2] = {residual.data(), square.data()};
      add_sums(s, r0, r1, c0, c1, residuals, x, x, [first](op_t xv, op_t, int64_t c) { return xv - first[c]; },
               [first](op_t xv, op_t, int64_t c) { return (xv - first[c]) * (xv - first[c]); });
      for (int64_t c = c0; c < c1; ++c) {
        acc_t err = acc_t(residual[c - c0]) / acc_t(k);  // mean(x - total/k): 0 in exact arithmetic
        if (!std::isfinite(err)) err = 0;  // an inf in x: no correction, the mean is total/k (inf, as PyTorch's)
        acc_t block_mean = acc_t(first[c]) + err, block_m2 = acc_t(square[c - c0]) - acc_t(k) * err * err;
        if (!std::isfinite(first[c]) || !std::isfinite(square[c - c0]))
          block_stats_exact(x, s, r0, r1, c, block_mean, block_m2);  // in acc_t, where x is finite
        merge(group_mean[g * s.c + c], group_m2[g * s.c + c], count, block_mean, block_m2, k);
      }
      count += k;
    });
  });
  for (int64_t c = 0; c < s.c; ++c) {  // the groups, in order
    mean[c] = m2[c] = 0;
    for (int64_t g = 0, count = 0; g < s.groups; ++g) {
      const int64_t values = (s.first_row(g + 1) - s.first_row(g)) * s.l;
      merge(mean[c], m2[c], count, group_mean[g * s.c + c], group_m2[g * s.c + c], values);
      count += values;
    }
  }
}

// Per-channel (Σdy, Σ dy·(x - mean)) in one pass over (x, dy), summed by blocks as batch_stats
// does. x - mean is taken as (x - pivot) - (mean - pivot), pivot being the mean rounded to x's
// precision: x - pivot is exact for x near the mean, which keeps the digits when |mean| >> std.
template <typename scalar_t, typename acc_t>
void grad_sums(const scalar_t* dy, const scalar_t* x, const Split& s, const acc_t* mean, acc_t* sum_dy,
               acc_t* sum_dy_xc) {
  using op_t = typename Op<scalar_t>::type;
  std::vector<acc_t> group_dy(s.groups * s.c, 0), group_dy_xc(s.groups * s.c, 0);
  std::vector<op_t> pivot(mean, mean + s.c);
  for_each_task(s, [&](int64_t g, int64_t c0, int64_t c1) {
    const op_t* p = pivot.data();
    std::vector<op_t> block_dy(c1 - c0), block_dy_xc(c1 - c0);
    for_each_block(s, g, [&](int64_t r0, int64_t r1) {
      std::fill(block_dy.begin(), block_dy.end(), op_t(0));
      std::fill(block_dy_xc.begin(), block_dy_xc.end(), op_t(0));
      op_t* const sums[2] = {block_dy.data(), block_dy_xc.data()};
      add_sums(s, r0, r1, c0, c1, sums, x, dy, [](op_t, op_t dv, int64_t) { return dv; },
               [p](op_t xv, op_t dv, int64_t c) { return dv * (xv - p[c]); });
      for (int64_t c = c0; c < c1; ++c) {
        group_dy[g * s.c + c] += acc_t(block_dy[c - c0]);
        group_dy_xc[g * s.c + c] += acc_t(block_dy_xc[c - c0]);
      }
    });
  });
  for (int64_t c = 0; c < s.c; ++c) {  // the groups, in order
    sum_dy[c] = sum_dy_xc[c] = 0;
    for (int64_t g = 0; g < s.groups; ++g) {
      sum_dy[c] += group_dy[g * s.c + c];
      sum_dy_xc[c] += group_dy_xc[g * s.c + c];
    }
    sum_dy_xc[c] -= (mean[c] - acc_t(pivot[c])) * sum_dy[c];
  }
}

#ifdef __AVX512F__
// out[j] = (x[j] - p)·a + dy[j]·b + shift for j < n, with non-temporal stores: an ordinary store
// first reads the cache line it is about to overwrite (write-allocate), a third more memory traffic
// for a pass that reads x and writes out. The coefficients are per value (rows of channels) or one
// for the whole run. For float32 outputs too large to stay in cache.
template <bool per_value>
inline void stream_run(float* out, const float* x, const float* dy, const float* p, const float* a, const float* b,
                       const float* shift, int64_t n) {
  auto one = [&](int64_t j) {
    const int64_t k = per_value ? j : 0;
    out[j] = (x[j] - p[k]) * a[k] + (dy ? dy[j] * b[k] : 0.f) + shift[k];
  };
  int64_t j = 0;
  for (; j < n && reinterpret_cast<uintptr_t>(out + j) % 64 != 0; ++j) one(j);  // up to a cache line
  const __m512 P = _mm512_set1_ps(p[0]), A = _mm512_set1_ps(a[0]), B = _mm512_set1_ps(b[0]),
               S = _mm512_set1_ps(shift[0]);
  for (; j + 16 <= n; j += 16) {
    const bool v = per_value;
    __m512 y = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), v ? _mm512_loadu_ps(p + j) : P),
                             v ? _mm512_loadu_ps(a + j) : A);
    if (dy) y = _mm512_fmadd_ps(_mm512_loadu_ps(dy + j), v ? _mm512_loadu_ps(b + j) : B, y);
    _mm512_stream_ps(out + j, _mm512_add_ps(y, v ? _mm512_loadu_ps(shift + j) : S));
  }
  for (; j < n; ++j) one(j);
}
#endif

// out = a·(x - pivot) + b·dy + shift, per channel coefficients: y (b = 0) and dx in one pass each.
template <typename scalar_t>
void affine_pass(scalar_t* out, const scalar_t* x, const scalar_t* dy, const Split& s,
                 const std::vector<typename Op<scalar_t>::type>& pivot, const std::vector<typename Op<scalar_t>::type>& a,
                 const std::vector<typename Op<scalar_t>::type>& b, const std::vector<typename Op<scalar_t>::type>& shift) {
  using op_t = typename Op<scalar_t>::type;
#ifdef __AVX512F__
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (s.n * s.c * s.l * int64_t(sizeof(float)) >= STREAM_BYTES) {
      for_each_task(s, [&](int64_t g, int64_t c0, int64_t c1) {
        for (int64_t r = s.first_row(g); r < s.first_row(g + 1); ++r) {
          if (s.l == 1) {
            const int64_t i = r * s.c + c0;
            stream_run<true>(out + i, x + i, dy ? dy + i : nullptr, &pivot[c0], &a[c0], &b[c0], &shift[c0], c1 - c0);
          } else {
            for (int64_t c = c0; c < c1; ++c) {
              const int64_t i = (r * s.c + c) * s.l;
              stream_run<false>(out + i, x + i, dy ? dy + i : nullptr, &pivot[c], &a[c], &b[c], &shift[c], s.l);
            }
          }
        }
        _mm_sfence();  // the streamed stores are complete before another thread may read them
      });
      return;
    }
  }
#endif
  for_each_task(s, [&](int64_t g, int64_t c0, int64_t c1) {
    const op_t *p = pivot.data() + c0, *pa = a.data() + c0, *pb = b.data() + c0, *ps = shift.data() + c0;
    if (dy == nullptr) {
      for_each_value(s, s.first_row(g), s.first_row(g + 1), c0, c1, [=](int64_t i, int64_t k) {
        out[i] = scalar_t((op_t(x[i]) - p[k]) * pa[k] + ps[k]);
      });
    } else {
      for_each_value(s, s.first_row(g), s.first_row(g + 1), c0, c1, [=](int64_t i, int64_t k) {
        out[i] = scalar_t((op_t(x[i]) - p[k]) * pa[k] + op_t(dy[i]) * pb[k] + ps[k]);
      });
    }
  });
}

// A (C,) parameter or running estimate as numbers of type T, or `otherwise` for each channel where it
// is absent. Read through its stride, whatever it is: a slice with a step, or an expanded scalar
// (stride 0), as a parametrization or torch.func.functional_call may pass.
template <typename T>
std::vector<T> per_channel(const Tensor& t, int64_t channels, T otherwise) {
  std::vector<T> v(channels, otherwise);
  if (t.defined()) {
    const Tensor flat = t.resolve_neg().reshape({-1});  // a view for any (C,) tensor
    TORCH_CHECK(flat.numel() == channels, "MyBN: expected ", channels, " values per channel, got ", flat.numel());
    const int64_t stride = flat.stride(0);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, flat.scalar_type(), "per_channel", [&] {
      const scalar_t* p = flat.const_data_ptr<scalar_t>();
      for (int64_t c = 0; c < channels; ++c) v[c] = T(p[c * stride]);
    });
  }
  return v;
}

// A new (C,) tensor with options holding the numbers of v.
template <typename T>
Tensor as_tensor(const std::vector<T>& v, const at::TensorOptions& options) {
  Tensor t = at::empty({int64_t(v.size())}, options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "as_tensor", [&] {
    scalar_t* p = t.data_ptr<scalar_t>();
    for (size_t c = 0; c < v.size(); ++c) p[c] = scalar_t(v[c]);
  });
  return t;
}

// running <- (1 - factor)·running + factor·batch, as PyTorch writes it (an infinite estimate stays inf,
// where torch.lerp's running + factor·(batch - running) is NaN), in the batch's dtype.
// Written in place where running is contiguous; otherwise through copy_, which takes any strides
// (and refuses, as lerp_ would, a tensor whose elements share memory).
template <typename run_t, typename acc_t>
void update_running(Tensor& running, const acc_t* batch, double factor) {
  const bool in_place = running.is_contiguous() && !running.is_neg();
  Tensor target = in_place ? running : at::empty({running.numel()}, running.options());
  const auto old = per_channel<acc_t>(running, target.numel(), 0);
  run_t* r = target.data_ptr<run_t>();
  const acc_t w = acc_t(factor);
  for (int64_t c = 0; c < target.numel(); ++c) {
    r[c] = run_t((acc_t(1) - w) * old[c] + w * batch[c]);
  }
  if (in_place) torch::autograd::impl::bump_version(running);  // an in-place update, as lerp_ would count it
  else running.copy_(target.view(running.sizes()));
}

// x as the loops read it (see the header): itself where it is laid out as (N, C, L) with L = 1
// (rows of channels, as a channels-last tensor is) or with L = N (a transposed (N, C) tensor), else
// a contiguous copy. A view with the negative bit set is resolved first: its memory holds -x.
Tensor dense(const Tensor& x_) {
  const Tensor x = x_.resolve_neg();
  std::vector<int64_t> last{0};
  for (int64_t d = 2; d < x.dim(); ++d) last.push_back(d);
  last.push_back(1);
  const bool ok = x.is_contiguous() || x.permute(last).is_contiguous() || (x.dim() == 2 && x.t().is_contiguous());
  return ok ? x : x.contiguous();
}

Split split_of(const Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), l = x.numel() / std::max<int64_t>(1, n * c);
  if (x.is_contiguous()) return Split(n, c, l);
  if (x.dim() == 2) return Split(1, c, n);  // transposed: each channel's values are one run
  return Split(n * l, c, 1);                // channels last: rows of C
}

// Training forward: y, and (mean, invstd) for the backward; updates the running estimates.
std::vector<Tensor> forward_kernel(const Tensor& x_, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                                   Tensor running_var, double factor, double eps) {
  const Tensor x = dense(x_);
  Tensor y = at::empty_like(x), mean, invstd;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "my_bn_cpp_forward", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    using op_t = typename Op<scalar_t>::type;
    const Split s = split_of(x);
    const auto options = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    mean = at::empty({s.c}, options);
    invstd = at::empty({s.c}, options);
    acc_t *mu = mean.data_ptr<acc_t>(), *is = invstd.data_ptr<acc_t>();
    std::vector<acc_t> m2(s.c), unbiased(s.c);
    batch_stats(x.const_data_ptr<scalar_t>(), s, mu, m2.data());
    const acc_t m = acc_t(s.n * s.l);  // M values per channel
    const auto gamma = per_channel<acc_t>(weight, s.c, 1), beta = per_channel<acc_t>(bias, s.c, 0);
    std::vector<op_t> pivot(s.c), scale(s.c), zero(s.c, 0), shift(s.c);
    for (int64_t c = 0; c < s.c; ++c) {
      const acc_t var = m2[c] / m;  // biased, for normalising; the running estimate takes the unbiased one
      unbiased[c] = m2[c] / (m - 1);
      is[c] = acc_t(1) / std::sqrt(var + acc_t(eps));
      // y = (x - mean)·scale + beta = (x - pivot)·scale + (beta - (mean - pivot)·scale), scale = gamma·invstd
      const acc_t sc = is[c] * gamma[c];
      pivot[c] = op_t(mu[c]);
      scale[c] = op_t(sc);
      shift[c] = op_t(beta[c] - (mu[c] - acc_t(pivot[c])) * sc);
    }
    affine_pass<scalar_t>(y.data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), nullptr, s, pivot, scale, zero, shift);
    for (auto [running, batch] : {std::pair<Tensor*, const acc_t*>{&running_mean, mu}, {&running_var, unbiased.data()}}) {
      if (!running->defined()) continue;
      if (running->scalar_type() == x.scalar_type()) update_running<scalar_t>(*running, batch, factor);
      else update_running<float>(*running, batch, factor);  // float32 buffers of half/bfloat16 input
    }
  });
  return {y, mean, invstd};
}

// Training backward: (dx, or undefined without need_dx; dgamma, dbeta in param_dtype).
std::vector<Tensor> backward_kernel(const Tensor& dy_, const Tensor& x_, const Tensor& weight, const Tensor& mean,
                                    const Tensor& invstd, bool need_dx, at::ScalarType param_dtype) {
  const Tensor x = dense(x_);
  const Tensor dy = dy_.strides() == x.strides() && !dy_.is_neg() ? dy_ : at::empty_like(x).copy_(dy_);  // as x
  Tensor dx = need_dx ? at::empty_like(x) : Tensor();
  Tensor dgamma, dbeta;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "my_bn_cpp_backward", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    using op_t = typename Op<scalar_t>::type;
    const Split s = split_of(x);
    const acc_t *mu = mean.const_data_ptr<acc_t>(), *is = invstd.const_data_ptr<acc_t>();
    std::vector<acc_t> sum_dy(s.c), dg(s.c);
    grad_sums(dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), s, mu, sum_dy.data(), dg.data());
    for (int64_t c = 0; c < s.c; ++c) dg[c] *= is[c];  // dgamma = Σ dy·x̂ = Σ dy·(x - mean) · invstd
    dgamma = as_tensor(dg, x.options().dtype(param_dtype));
    dbeta = as_tensor(sum_dy, x.options().dtype(param_dtype));  // dbeta = Σdy
    if (!need_dx) return;
    // dx = scale·(dy - (Σdy + x̂·Σ dy·x̂) / M) = dy·k1 + (x - mean)·k2 + k3, with scale = gamma·invstd,
    // k1 = scale, k2 = -scale·invstd·dgamma / M, k3 = -scale·Σdy / M
    const acc_t m = acc_t(s.n * s.l);
    const auto gamma = per_channel<acc_t>(weight, s.c, 1);
    std::vector<op_t> pivot(s.c), k1(s.c), k2(s.c), k3(s.c);
    for (int64_t c = 0; c < s.c; ++c) {
      const acc_t scale = gamma[c] * is[c], slope = -scale * is[c] * dg[c] / m;
      pivot[c] = op_t(mu[c]);  // (x - mean) = (x - pivot) - (mean - pivot), as in the forward
      k1[c] = op_t(scale);
      k2[c] = op_t(slope);
      k3[c] = op_t(-scale * sum_dy[c] / m - (mu[c] - acc_t(pivot[c])) * slope);
    }
    affine_pass<scalar_t>(dx.data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(), s,
                          pivot, k2, k1, k3);
  });
  return {dx, dgamma, dbeta};
}

// The backward under create_graph=True: my_bn/reference.py's reference, differentiable (set by my_bn/cpp.py).
py::object* differentiable_backward = nullptr;

// Whether the loops can read t: a CPU tensor with memory of its own, not a torch.func wrapper (which
// has none) nor a subclass that dispatches its operations to Python.
bool readable(const Tensor& t) {
  return t.device().is_cpu() && t.layout() == at::kStrided && t.has_storage() &&
         !t.key_set().has(c10::DispatchKey::Python);
}

using MaybeTensor = std::optional<Tensor>;  // None from Python: no edge in the graph

struct BatchNormCpp : public torch::autograd::Function<BatchNormCpp> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const MaybeTensor& weight, const MaybeTensor& bias,
                        const MaybeTensor& running_mean, const MaybeTensor& running_var, double factor, double eps) {
    const Tensor w = weight.value_or(Tensor());
    auto out = forward_kernel(x, w, bias.value_or(Tensor()), running_mean.value_or(Tensor()),
                              running_var.value_or(Tensor()), factor, eps);
    ctx->save_for_backward({x, w, out[1], out[2]});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["bias_dtype"] = bias ? int64_t(bias->scalar_type()) : int64_t(-1);
    ctx->set_materialize_grads(false);
    return out[0];
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor& dy = grads[0];
    variable_list result(7);  // one per argument of forward; undefined: no gradient
    if (!dy.defined()) return result;
    auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1];
    const int64_t bias_dtype = ctx->saved_data["bias_dtype"].toInt();
    // needs_input_grad counts the tensors that were given: x, then weight and bias where present
    const bool need_dx = ctx->needs_input_grad(0), need_dweight = weight.defined() && ctx->needs_input_grad(1);
    const bool need_dbias = bias_dtype >= 0 && ctx->needs_input_grad(weight.defined() ? 2 : 1);
    Tensor dx, dgamma, dbeta;
    // The reference, in Python, where the loops cannot run: under double backward, whose operations
    // autograd must record; and where dy is not memory they can read (vmap over the backward, as
    // torch.autograd.grad(..., is_grads_batched=True) does, or a tensor subclass).
    if (at::GradMode::is_enabled() || !readable(dy)) {
      py::gil_scoped_acquire gil;
      auto out = (*differentiable_backward)(dy, x, weight.defined() ? py::cast(weight) : py::none(),
                                            ctx->saved_data["eps"].toDouble());
      std::tie(dx, dgamma, dbeta) = out.cast<std::tuple<Tensor, Tensor, Tensor>>();
    } else {
      const auto param_dtype = weight.defined() ? weight.scalar_type()
                                : bias_dtype >= 0 ? at::ScalarType(bias_dtype) : saved[2].scalar_type();
      auto out = backward_kernel(dy, x, weight, saved[2], saved[3], need_dx, param_dtype);
      dx = out[0], dgamma = out[1], dbeta = out[2];
    }
    auto as = [](const Tensor& t, at::ScalarType dtype) { return t.scalar_type() == dtype ? t : t.to(dtype); };
    if (need_dx) result[0] = as(dx, x.scalar_type());
    if (need_dweight) result[1] = as(dgamma, weight.scalar_type());
    if (need_dbias) result[2] = as(dbeta, at::ScalarType(bias_dtype));
    return result;
  }
};

Tensor train(const Tensor& x, const MaybeTensor& weight, const MaybeTensor& bias, const MaybeTensor& running_mean,
             const MaybeTensor& running_var, double factor, double eps) {
  return BatchNormCpp::apply(x, weight, bias, running_mean, running_var, factor, eps);
}

}  // namespace my_bn_cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "MyBN's training forward and backward as hand-written CPU loops (see my_bn/cpp.cpp)";
  using namespace my_bn_cpp;
  m.def("train", &train, "Training-mode batch norm of x (N, C, *), with autograd; updates the running estimates "
        "in place", py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("running_mean"),
        py::arg("running_var"), py::arg("factor"), py::arg("eps"));
  m.def("set_differentiable_backward", [](py::object f) {
    differentiable_backward = new py::object(std::move(f));  // never freed: it may be called until exit
  });
  m.def("forward_kernel", &forward_kernel, "The forward alone, no autograd: (y, mean, invstd)");
  m.def("backward_kernel", &backward_kernel, "The backward alone: (dx, dgamma, dbeta)");
}
