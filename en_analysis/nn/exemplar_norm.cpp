// The EN layer on CPU as one operator with its own backward, en_layer::exemplar_norm: the maths
// of _layer_forward / _layer_backward in exemplar_norm.py written as loops, so that a layer is a
// few passes over memory instead of ~75 (forward) and ~120 (backward) tensor operations.
//
// Passes over the full-size (N, C, H*W) tensors, each one read of the activation:
//   forward  2: the moments (sum x, sum x^2 in one read), then y = x * A + B;
//   backward 2: sum(dy * x) and sum(dy) in one read, then dx = dy * A + x * P + Q.
// Everything else works on (N, R, C) statistics (R: the normalizers, plus an IN row when IN is
// not one of them: the descriptors use it); the ratio network's first FC goes through at::addmm
// and at::mm. Rows are coded IN = 0, LN = 1, BN = 2, GN = 3 (cpu_kernel.ROW_CODES).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

enum Row : int64_t { IN = 0, LN = 1, BN = 2, GN = 3 };

// The full-size tensors are (N, C, H*W) in either memory layout: NCHW (contiguous, a plane of
// H*W values per (sample, channel)) or NHWC (channels_last, a row of C values per position).
struct Shape {
  int64_t n, c, hw;
  bool nhwc;
};

Shape shape_of(const at::Tensor& x) {
  // a tensor that is both (C == 1 or H * W == 1) takes the NCHW loops
  const bool nhwc = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  return {x.size(0), x.size(1), x.size(2) * x.size(3), nhwc};
}

// the tensor in the layout of `s` (a copy only when it has another one)
at::Tensor in_layout(const at::Tensor& t, const Shape& s) {
  return t.contiguous(s.nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

// parallel tasks of about ATen's grain (32768 values) of units of `size` values
int64_t grain(int64_t size) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(size, 1)); }

// per (sample, channel), over the H*W positions: dot = sum(a * b), sum = sum(a)
// (b == nullptr: dot = sum(a * a)); one read of a and b
template <typename T>
void channel_sums(const T* a, const T* b, const Shape& s, T* dot, T* sum) {
  if (!b) b = a;
  const int64_t C = s.c, HW = s.hw;
  if (!s.nhwc) {
    at::parallel_for(0, s.n * C, grain(HW), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const T *pa = a + i * HW, *pb = b + i * HW;
        T sa = 0, sd = 0;
#pragma omp simd reduction(+ : sa, sd)
        for (int64_t j = 0; j < HW; ++j) {
          sa += pa[j];
          sd += pa[j] * pb[j];
        }
        dot[i] = sd;
        sum[i] = sa;
      }
    });
    return;
  }
  at::parallel_for(0, s.n, grain(HW * C), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      T *sd = dot + n * C, *sa = sum + n * C;
      std::fill(sd, sd + C, T(0));
      std::fill(sa, sa + C, T(0));
      for (int64_t p = 0; p < HW; ++p) {
        const T *pa = a + (n * HW + p) * C, *pb = b + (n * HW + p) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          sa[c] += pa[c];
          sd[c] += pa[c] * pb[c];
        }
      }
    }
  });
}

// out = a * u + b * v + w with per-(sample, channel) u, v, w (b == nullptr: out = a * u + w);
// one read of a and b, one write of out
template <typename T>
void channel_affine(
    const T* a, const T* u, const T* b, const T* v, const T* w, const Shape& s, T* out) {
  const int64_t C = s.c, HW = s.hw;
  if (!s.nhwc) {
    at::parallel_for(0, s.n * C, grain(HW), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const T *pa = a + i * HW, ui = u[i], wi = w[i];
        T* po = out + i * HW;
        if (b) {
          const T *pb = b + i * HW, vi = v[i];
#pragma omp simd
          for (int64_t j = 0; j < HW; ++j) po[j] = pa[j] * ui + pb[j] * vi + wi;
        } else {
#pragma omp simd
          for (int64_t j = 0; j < HW; ++j) po[j] = pa[j] * ui + wi;
        }
      }
    });
    return;
  }
  at::parallel_for(0, s.n, grain(HW * C), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const T *un = u + n * C, *wn = w + n * C, *vn = v ? v + n * C : nullptr;
      for (int64_t p = 0; p < HW; ++p) {
        const int64_t o = (n * HW + p) * C;
        const T* pa = a + o;
        T* po = out + o;
        if (b) {
          const T* pb = b + o;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) po[c] = pa[c] * un[c] + pb[c] * vn[c] + wn[c];
        } else {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) po[c] = pa[c] * un[c] + wn[c];
        }
      }
    }
  });
}

// LN and GN statistics: per sample, per group of `size` consecutive channels [c0, c1), the
// means of the two values `get(n, c)` returns, handed to `use(n, c0, c1, mean_a, mean_b)`
template <typename T, typename Get, typename Use>
void group_means(int64_t N, int64_t C, int64_t size, Get get, Use use) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c0 = 0; c0 < C; c0 += size) {
      T sa = 0, sb = 0;
      for (int64_t c = c0; c < c0 + size; ++c) {
        const auto [a, b] = get(n, c);
        sa += a;
        sb += b;
      }
      use(n, c0, c0 + size, sa / size, sb / size);
    }
}

int64_t index_of(const std::vector<int64_t>& rows, int64_t code) {
  return std::find(rows.begin(), rows.end(), code) - rows.begin();
}

template <typename T>
std::vector<at::Tensor> forward_impl(
    const at::Tensor& x_in, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, const std::optional<at::Tensor>& fixed_ratios,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& fc1_w, const at::Tensor& fc1_b, const at::Tensor& fc2_w,
    const at::Tensor& fc2_b, const at::Tensor& ratio_bias, const std::vector<int64_t>& rows,
    int64_t K, bool training, double eps_, int64_t groups) {
  const Shape shape = shape_of(x_in);
  const at::Tensor x = in_layout(x_in, shape);
  const int64_t N = shape.n, C = shape.c, HW = shape.hw;
  const int64_t R = rows.size(), NC = N * C;
  const T eps = static_cast<T>(eps_);
  const auto opts = x.options();

  // the IN moments: mean and mean of squares per (sample, channel)
  at::Tensor m = at::empty({N, C}, opts), q = at::empty({N, C}, opts);
  T *pm = m.data_ptr<T>(), *pq = q.data_ptr<T>();
  channel_sums<T>(x.data_ptr<T>(), nullptr, shape, pq, pm);
  for (int64_t i = 0; i < NC; ++i) {
    pm[i] /= HW;
    pq[i] /= HW;
  }

  // each row's mean, variance, 1 / std (N, R, C) and, for the descriptors, log(var + eps):
  // computed once per distinct statistic (per sample for LN, per channel for BN)
  const bool learned = !fixed_ratios;
  at::Tensor means = at::empty({N, R, C}, opts), var = at::empty({N, R, C}, opts);
  at::Tensor inv_std = at::empty({N, R, C}, opts);
  at::Tensor mask = at::empty({N, R, C}, opts.dtype(at::kBool));
  at::Tensor batch_stats = at::empty({0}, opts);
  T *pmeans = means.data_ptr<T>(), *pvar = var.data_ptr<T>(), *pinv = inv_std.data_ptr<T>();
  bool* pmask = mask.data_ptr<bool>();
  std::vector<T> log_var(learned ? N * R * C : 0);
  struct Stat {
    T mean, var, inv, log_var;
    bool mask;  // the variance has a gradient: not clamped at 0, not a running one
  };
  auto stat = [&](T mean, T var_, bool has_grad) -> Stat {
    const T v = std::max<T>(var_, 0);
    return {mean, v, T(1) / std::sqrt(v + eps), learned ? std::log(v + eps) : T(0),
            has_grad && var_ >= 0};
  };
  auto from_moments = [&](T mean, T e2) { return stat(mean, e2 - mean * mean, true); };
  std::vector<Stat> per_channel(C);
  for (int64_t r = 0; r < R; ++r) {
    auto put = [&](int64_t n, int64_t c, const Stat& s) {
      const int64_t i = (n * R + r) * C + c;
      pmeans[i] = s.mean;
      pvar[i] = s.var;
      pinv[i] = s.inv;
      pmask[i] = s.mask;
      if (learned) log_var[i] = s.log_var;
    };
    switch (rows[r]) {
      case IN:
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < C; ++c) put(n, c, from_moments(pm[n * C + c], pq[n * C + c]));
        break;
      case LN:
      case GN:
        group_means<T>(
            N, C, rows[r] == LN ? C : C / groups,
            [&](int64_t n, int64_t c) { return std::pair(pm[n * C + c], pq[n * C + c]); },
            [&](int64_t n, int64_t c0, int64_t c1, T mean, T e2) {
              const Stat s = from_moments(mean, e2);
              for (int64_t c = c0; c < c1; ++c) put(n, c, s);
            });
        break;
      case BN:
        if (training) {
          std::vector<T> sm(C, 0), sq(C, 0);
          for (int64_t n = 0; n < N; ++n)
            for (int64_t c = 0; c < C; ++c) {
              sm[c] += pm[n * C + c];
              sq[c] += pq[n * C + c];
            }
          batch_stats = at::empty({2, C}, opts);
          T* pb = batch_stats.data_ptr<T>();
          const double count = static_cast<double>(N) * HW;
          const T unbias = static_cast<T>(count / std::max(count - 1, 1.0));
          for (int64_t c = 0; c < C; ++c) {
            per_channel[c] = from_moments(sm[c] / N, sq[c] / N);
            pb[c] = per_channel[c].mean;
            pb[C + c] = per_channel[c].var * unbias;
          }
        } else {  // the running statistics: no gradient
          const at::Tensor rmean = running_mean->to(opts.dtype()).contiguous();
          const at::Tensor rvar = running_var->to(opts.dtype()).contiguous();
          const T *pr = rmean.data_ptr<T>(), *pv = rvar.data_ptr<T>();
          for (int64_t c = 0; c < C; ++c) per_channel[c] = stat(pr[c], pv[c], false);
        }
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < C; ++c) put(n, c, per_channel[c]);
        break;
      default:
        TORCH_CHECK(false, "en_layer: unknown row code ", rows[r]);
    }
  }

  // the ratios (N, K)
  at::Tensor lam = at::empty({N, K}, opts), descriptors = at::empty({0}, opts);
  at::Tensor hidden = at::empty({0}, opts);
  T* plam = lam.data_ptr<T>();
  if (!learned) {
    const at::Tensor f = fixed_ratios->to(opts.dtype()).contiguous();
    const T* pf = f.data_ptr<T>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) plam[n * K + k] = pf[k];
  } else {
    const int64_t k_in = index_of(rows, IN);
    descriptors = at::empty({N * K, 2 * C}, opts);
    T* pd = descriptors.data_ptr<T>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        T* d = pd + (n * K + k) * 2 * C;
        const int64_t i = (n * R + k) * C, i_in = (n * R + k_in) * C;
        for (int64_t c = 0; c < C; ++c) {
          d[c] = (pm[n * C + c] - pmeans[i + c]) * pinv[i + c];
          d[C + c] = T(0.5) * (log_var[i_in + c] - log_var[i + c]);
        }
      }
    hidden = at::addmm(fc1_b.to(opts.dtype()), descriptors, fc1_w.to(opts.dtype()).t());
    const at::Tensor w2 = fc2_w.to(opts.dtype()).contiguous();
    const at::Tensor rb = ratio_bias.to(opts.dtype()).contiguous();
    const T b2 = fc2_b.to(opts.dtype()).item<T>();
    const int64_t H = hidden.size(1);
    const T *ph = hidden.data_ptr<T>(), *pw2 = w2.data_ptr<T>(), *prb = rb.data_ptr<T>();
    for (int64_t n = 0; n < N; ++n) {
      T* l = plam + n * K;
      for (int64_t k = 0; k < K; ++k) {
        T z = b2 + prb[k];
        for (int64_t j = 0; j < H; ++j) z += std::max<T>(ph[(n * K + k) * H + j], 0) * pw2[j];
        l[k] = z;
      }
      const T top = *std::max_element(l, l + K);
      T total = 0;
      for (int64_t k = 0; k < K; ++k) total += (l[k] = std::exp(l[k] - top));
      for (int64_t k = 0; k < K; ++k) l[k] /= total;
    }
  }

  // scale = sum_k lam_k / s_k, shift = -sum_k lam_k m_k / s_k; then the affine: A, B
  at::Tensor lam_inv_std = at::empty({N, K, C}, opts);
  at::Tensor scale = at::empty({N, C}, opts), shift = at::empty({N, C}, opts);
  at::Tensor a = at::empty({N, C}, opts), b = at::empty({N, C}, opts);
  T *plis = lam_inv_std.data_ptr<T>(), *ps = scale.data_ptr<T>(), *pt = shift.data_ptr<T>();
  T *pa = a.data_ptr<T>(), *pb = b.data_ptr<T>();
  const at::Tensor w = weight ? weight->to(opts.dtype()).contiguous() : at::Tensor();
  const at::Tensor bb = bias ? bias->to(opts.dtype()).contiguous() : at::Tensor();
  const T* pw = w.defined() ? w.data_ptr<T>() : nullptr;
  const T* pbias = bb.defined() ? bb.data_ptr<T>() : nullptr;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      T s = 0, t = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t i = (n * R + k) * C + c;
        const T li = plam[n * K + k] * pinv[i];
        plis[(n * K + k) * C + c] = li;
        s += li;
        t -= li * pmeans[i];
      }
      ps[n * C + c] = s;
      pt[n * C + c] = t;
      pa[n * C + c] = pw ? s * pw[c] : s;
      pb[n * C + c] = pw ? pbias[c] + t * pw[c] : t;
    }
  at::Tensor y = at::empty_like(x);
  channel_affine<T>(x.data_ptr<T>(), pa, nullptr, nullptr, pb, shape, y.data_ptr<T>());
  return {y,   a,           m,   means,       var,   mask,  inv_std,
          lam, lam_inv_std, descriptors, hidden, scale, shift, batch_stats};
}

template <typename T>
std::vector<at::Tensor> backward_impl(
    const at::Tensor& grad_in, const at::Tensor& x_in, at::TensorList saved,
    const std::optional<at::Tensor>& weight, const at::Tensor& fc1_w, const at::Tensor& fc2_w,
    const std::vector<int64_t>& rows, int64_t K, bool training, double eps_, int64_t groups) {
  const Shape shape = shape_of(x_in);
  const at::Tensor x = in_layout(x_in, shape);
  const at::Tensor grad = in_layout(grad_in.to(x.scalar_type()), shape);
  const at::Tensor &a = saved[0], &m = saved[1], &means = saved[2], &var = saved[3];
  const at::Tensor &mask = saved[4], &inv_std = saved[5], &lam = saved[6], &lis = saved[7];
  const at::Tensor &descriptors = saved[8], &hidden = saved[9], &scale = saved[10];
  const at::Tensor& shift = saved[11];
  const int64_t N = shape.n, C = shape.c, HW = shape.hw;
  const int64_t R = rows.size(), NC = N * C;
  const T eps = static_cast<T>(eps_);
  const auto opts = x.options();
  const bool learned = descriptors.numel() > 0;
  const T *pm = m.data_ptr<T>(), *pmeans = means.data_ptr<T>(), *pvar = var.data_ptr<T>();
  const T *pinv = inv_std.data_ptr<T>(), *plam = lam.data_ptr<T>(), *plis = lis.data_ptr<T>();
  const bool* pmask = mask.data_ptr<bool>();

  // d loss / d A and d loss / d B (N, C): one read of dy and x
  at::Tensor g_a = at::empty({N, C}, opts), g_b = at::empty({N, C}, opts);
  T *pga = g_a.data_ptr<T>(), *pgb = g_b.data_ptr<T>();
  channel_sums<T>(grad.data_ptr<T>(), x.data_ptr<T>(), shape, pga, pgb);

  at::Tensor g_weight = at::empty({0}, opts), g_bias = at::empty({0}, opts);
  if (weight) {
    const at::Tensor w = weight->to(opts.dtype()).contiguous();
    const T *pw = w.data_ptr<T>(), *ps = scale.data_ptr<T>(), *pt = shift.data_ptr<T>();
    g_weight = at::zeros({C}, opts);
    g_bias = at::zeros({C}, opts);
    T *pgw = g_weight.data_ptr<T>(), *pgbias = g_bias.data_ptr<T>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = n * C + c;
        pgw[c] += pga[i] * ps[i] + pgb[i] * pt[i];
        pgbias[c] += pgb[i];
        pga[i] *= pw[c];
        pgb[i] *= pw[c];
      }
  }

  // scale = sum_k lam_k u_k, shift = -sum_k lam_k u_k m_k   (u_k = 1 / s_k)
  std::vector<T> g_m(NC, 0), g_q(NC, 0), g_means(N * R * C, 0), g_inv(N * R * C, 0);
  std::vector<T> g_log_var(N * R * C, 0), g_lam(N * K, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t i = (n * R + k) * C;
      const T *ga = pga + n * C, *gb = pgb + n * C, *li = plis + (n * K + k) * C;
      const T l = plam[n * K + k];
      T g = 0;
#pragma omp simd reduction(+ : g)
      for (int64_t c = 0; c < C; ++c) {
        const T g_mix = ga[c] - gb[c] * pmeans[i + c];
        g_means[i + c] = -li[c] * gb[c];
        g_inv[i + c] = g_mix * l;
        g += g_mix * pinv[i + c];
      }
      g_lam[n * K + k] = g;
    }

  // the ratio network: softmax, FC2, ReLU, FC1, then the descriptors
  at::Tensor g_fc1_w = at::empty({0}, opts), g_fc1_b = at::empty({0}, opts);
  at::Tensor g_fc2_w = at::empty({0}, opts), g_fc2_b = at::empty({0}, opts);
  at::Tensor g_ratio_bias = at::empty({0}, opts);
  if (learned) {
    const int64_t H = hidden.size(1), k_in = index_of(rows, IN);
    const at::Tensor w2 = fc2_w.to(opts.dtype()).contiguous();
    const T *ph = hidden.data_ptr<T>(), *pw2 = w2.data_ptr<T>();
    at::Tensor g_hidden = at::empty({N * K, H}, opts);
    g_fc2_w = at::zeros({1, H}, opts);
    g_fc2_b = at::zeros({1}, opts);
    g_ratio_bias = at::zeros({K}, opts);
    T *pgh = g_hidden.data_ptr<T>(), *pgw2 = g_fc2_w.data_ptr<T>();
    T *pgb2 = g_fc2_b.data_ptr<T>(), *pgrb = g_ratio_bias.data_ptr<T>();
    for (int64_t n = 0; n < N; ++n) {
      T mean_g = 0;
      for (int64_t k = 0; k < K; ++k) mean_g += plam[n * K + k] * g_lam[n * K + k];
      for (int64_t k = 0; k < K; ++k) {
        const T g_logit = plam[n * K + k] * (g_lam[n * K + k] - mean_g);
        pgb2[0] += g_logit;
        pgrb[k] += g_logit;
        for (int64_t j = 0; j < H; ++j) {
          const T h = ph[(n * K + k) * H + j];
          pgw2[j] += g_logit * std::max<T>(h, 0);
          pgh[(n * K + k) * H + j] = h > 0 ? g_logit * pw2[j] : T(0);
        }
      }
    }
    g_fc1_b = g_hidden.sum(0);
    g_fc1_w = at::mm(g_hidden.t(), descriptors);
    const at::Tensor g_desc = at::mm(g_hidden, fc1_w.to(opts.dtype()));
    const T* pgd = g_desc.data_ptr<T>();
    // offset_k = (m - m_k) u_k, spread_k = (log v_in - log v_k) / 2
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = (n * R + k) * C + c, nc = n * C + c;
          const T g_offset = pgd[(n * K + k) * 2 * C + c];
          const T g_spread = pgd[(n * K + k) * 2 * C + C + c];
          const T g_offset_u = g_offset * pinv[i];
          g_m[nc] += g_offset_u;
          g_means[i] -= g_offset_u;
          g_inv[i] += g_offset * (pm[nc] - pmeans[i]);
          g_log_var[i] -= T(0.5) * g_spread;
          g_log_var[(n * R + k_in) * C + c] += T(0.5) * g_spread;
        }
  }

  // u = (v + eps)^(-1/2) and log(v + eps); v = max(E[x^2] - m^2, 0): the gradients w.r.t.
  // each row's E[x^2] (in g_var) and mean (in g_means)
  std::vector<T>& g_var = g_log_var;
  for (int64_t i = 0; i < N * R * C; ++i) {
    const T g = pmask[i] ? (T(-0.5) * g_inv[i] * pinv[i] + g_log_var[i]) / (pvar[i] + eps) : T(0);
    g_var[i] = g;
    g_means[i] -= 2 * pmeans[i] * g;
  }

  // each row's gradients summed back onto the IN moments it was derived from
  for (int64_t r = 0; r < R; ++r) {
    auto at_ = [&](const std::vector<T>& v, int64_t n, int64_t c) { return v[(n * R + r) * C + c]; };
    switch (rows[r]) {
      case IN:
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < C; ++c) {
            g_m[n * C + c] += at_(g_means, n, c);
            g_q[n * C + c] += at_(g_var, n, c);
          }
        break;
      case LN:
      case GN:  // the adjoint of the forward's group means: each channel gets the group's mean
        group_means<T>(
            N, C, rows[r] == LN ? C : C / groups,
            [&](int64_t n, int64_t c) { return std::pair(at_(g_means, n, c), at_(g_var, n, c)); },
            [&](int64_t n, int64_t c0, int64_t c1, T gm, T gq) {
              for (int64_t c = c0; c < c1; ++c) {
                g_m[n * C + c] += gm;
                g_q[n * C + c] += gq;
              }
            });
        break;
      case BN:
        if (training) {  // running statistics take no gradient
          std::vector<T> sm(C, 0), sq(C, 0);
          for (int64_t n = 0; n < N; ++n)
            for (int64_t c = 0; c < C; ++c) {
              sm[c] += at_(g_means, n, c);
              sq[c] += at_(g_var, n, c);
            }
          for (int64_t n = 0; n < N; ++n)
            for (int64_t c = 0; c < C; ++c) {
              g_m[n * C + c] += sm[c] / N;
              g_q[n * C + c] += sq[c] / N;
            }
        }
        break;
      default:
        TORCH_CHECK(false, "en_layer: unknown row code ", rows[r]);
    }
  }

  // dx = dy * A + x * (2 g_q / HW) + g_m / HW: one read of dy and x
  std::vector<T> p(NC), q(NC);
  for (int64_t i = 0; i < NC; ++i) {
    p[i] = 2 * g_q[i] / HW;
    q[i] = g_m[i] / HW;
  }
  at::Tensor grad_x = at::empty_like(x);
  channel_affine<T>(
      grad.data_ptr<T>(), a.data_ptr<T>(), x.data_ptr<T>(), p.data(), q.data(), shape,
      grad_x.data_ptr<T>());
  return {grad_x, g_weight, g_bias, g_fc1_w, g_fc1_b, g_fc2_w, g_fc2_b, g_ratio_bias};
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The whole layer as one autograd function: forward_impl saves what backward_impl reads, and
// BN's running statistics move towards the batch ones (as BatchNorm2d's do, in place).
class ExemplarNormFunction : public torch::autograd::Function<ExemplarNormFunction> {
 public:
  static variable_list forward(
      AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& weight,
      const std::optional<at::Tensor>& bias, const at::Tensor& fc1_w, const at::Tensor& fc1_b,
      const at::Tensor& fc2_w, const at::Tensor& fc2_b, const at::Tensor& ratio_bias,
      const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
      const std::optional<at::Tensor>& num_batches_tracked,
      const std::optional<at::Tensor>& fixed_ratios, const std::vector<int64_t>& rows, int64_t k,
      bool training, double eps, double momentum, int64_t groups) {
    // [y, A, m, means, var, mask, inv_std, lam, lam_inv_std, descriptors, hidden, scale, shift,
    //  batch_stats]
    const std::vector<at::Tensor> out =
        AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "en_layer_forward", [&] {
          return forward_impl<scalar_t>(
              x, running_mean, running_var, fixed_ratios, weight, bias, fc1_w, fc1_b, fc2_w,
              fc2_b, ratio_bias, rows, k, training, eps, groups);
        });
    const at::Tensor& batch_stats = out[13];
    if (batch_stats.numel()) {
      running_mean->lerp_(batch_stats[0].to(running_mean->scalar_type()), momentum);
      running_var->lerp_(batch_stats[1].to(running_var->scalar_type()), momentum);
      num_batches_tracked->add_(1);
    }
    std::vector<at::Tensor> saved{x};
    saved.insert(saved.end(), out.begin() + 1, out.begin() + 13);
    saved.insert(saved.end(), {weight.value_or(at::Tensor()), fc1_w, fc2_w});
    ctx->save_for_backward(saved);
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["k"] = k;
    ctx->saved_data["training"] = training;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["groups"] = groups;
    at::Tensor lam = out[7].clone();
    ctx->mark_non_differentiable({lam});
    return {out[0], lam};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const std::vector<at::Tensor> state(saved.begin() + 1, saved.begin() + 13);
    const at::Tensor &weight = saved[13], &fc1_w = saved[14], &fc2_w = saved[15];
    const std::optional<at::Tensor> w = weight.defined() ? std::optional(weight) : std::nullopt;
    const std::vector<int64_t> rows = ctx->saved_data["rows"].toIntVector();
    const int64_t k = ctx->saved_data["k"].toInt(), groups = ctx->saved_data["groups"].toInt();
    const bool training = ctx->saved_data["training"].toBool();
    const double eps = ctx->saved_data["eps"].toDouble();
    const std::vector<at::Tensor> grads =
        AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "en_layer_backward", [&] {
          return backward_impl<scalar_t>(
              grad_outputs[0], x, state, w, fc1_w, fc2_w, rows, k, training, eps, groups);
        });
    // one gradient per forward input: x, then the 7 parameters (an empty one: none)
    variable_list result(18);
    for (size_t i = 0; i < grads.size(); ++i)
      if (grads[i].numel()) result[i] = grads[i];
    return result;
  }
};

// en_layer::exemplar_norm: the layer's output and its (N, K) ratios
std::tuple<at::Tensor, at::Tensor> exemplar_norm(
    const at::Tensor& x, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& fc1_w, const at::Tensor& fc1_b,
    const at::Tensor& fc2_w, const at::Tensor& fc2_b, const at::Tensor& ratio_bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& num_batches_tracked,
    const std::optional<at::Tensor>& fixed_ratios, at::IntArrayRef rows, int64_t k, bool training,
    double eps, double momentum, int64_t groups) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu(), "en_layer: a 4-D CPU tensor");
  const variable_list out = ExemplarNormFunction::apply(
      x, weight, bias, fc1_w, fc1_b, fc2_w, fc2_b, ratio_bias, running_mean, running_var,
      num_batches_tracked, fixed_ratios, std::vector<int64_t>(rows.begin(), rows.end()), k,
      training, eps, momentum, groups);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY(en_layer, m) {
  m.def(
      "exemplar_norm(Tensor x, Tensor? weight, Tensor? bias, Tensor fc1_w, Tensor fc1_b, "
      "Tensor fc2_w, Tensor fc2_b, Tensor ratio_bias, Tensor(a!)? running_mean, "
      "Tensor(b!)? running_var, Tensor(c!)? num_batches_tracked, Tensor? fixed_ratios, "
      "int[] rows, int k, bool training, float eps, float momentum, int gn_groups) "
      "-> (Tensor, Tensor)",
      &exemplar_norm);
}
