// The EN layer on CPU as one operator with its own backward, en_layer::exemplar_norm: the maths
// of _layer_forward / _layer_backward in exemplar_norm.py written as loops, so that a layer is a
// few passes over memory instead of ~75 (forward) and ~120 (backward) tensor operations.
//
// Passes over the full-size (N, C, H*W) tensors, each one read of the activation:
//   forward  2: the moments (sum x, sum x^2 in one read), then y = x * A + B;
//   backward 2: sum(dy * x) and sum(dy) in one read, then dx = dy * A + x * P + Q.
// Everything else works on (N, R, C) statistics (R: the normalizers, plus an IN row when IN is
// not one of them: the descriptors use it), sample by sample in parallel, with sums over the
// samples only where the maths has them (BN's statistics, the parameters' gradients); the ratio
// network's FCs go through at::addmm and at::mm. Rows are coded IN = 0, LN = 1, BN = 2, GN = 3
// (cpu_kernel.ROW_CODES).
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

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The small (N, R, C) graph as forward_impl leaves it for backward_impl, by name: A (the
// output's scale after the affine), the IN mean m, each row's mean, variance, gradient mask and
// 1 / std, the ratios and lam_k / s_k, the descriptors and FC1's output (both empty when the
// ratios are fixed), and the output's scale and shift before the affine. The one list of them:
#define EN_SMALL(X) \
  X(a) X(m) X(means) X(var) X(mask) X(inv_std) X(lam) X(lam_inv_std) X(descriptors) X(hidden) \
      X(scale) X(shift)
#define EN_FIELD(name) at::Tensor name;
struct Small {
  EN_SMALL(EN_FIELD)
};

// What forward_impl computes: the output, the small graph, BN's batch statistics (2, C) in
// training mode (else empty).
struct Forward {
  at::Tensor y;
  Small small;
  at::Tensor batch_stats;
};

// What the autograd node keeps for the backward: the input, the small graph and the weights the
// backward multiplies by. The node stores tensors as a list: `list` and `from` are the one place
// that knows their order.
struct Saved {
  at::Tensor x;
  Small small;
  at::Tensor weight, fc1_w, fc2_w;

  variable_list list() const {
    variable_list out{x};
#define EN_PUSH(name) out.push_back(small.name);
    EN_SMALL(EN_PUSH)
#undef EN_PUSH
    out.insert(out.end(), {weight, fc1_w, fc2_w});
    return out;
  }

  static Saved from(const variable_list& list) {
    Saved saved;
    size_t i = 0;
    saved.x = list[i++];
#define EN_TAKE(name) saved.small.name = list[i++];
    EN_SMALL(EN_TAKE)
#undef EN_TAKE
    saved.weight = list[i++];
    saved.fc1_w = list[i++];
    saved.fc2_w = list[i++];
    return saved;
  }
};

// The gradients backward_impl computes, one per differentiable input of en_layer::exemplar_norm
// (an empty tensor: none), named as the schema names those inputs, in its order.
#define EN_GRADS(X) X(x) X(weight) X(bias) X(fc1_w) X(fc1_b) X(fc2_w) X(fc2_b) X(ratio_bias)
struct Grads {
  EN_GRADS(EN_FIELD)
};
#undef EN_FIELD

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

// f(n) for every sample n, in parallel: `work` is about the number of values f(n) touches
template <typename F>
void per_sample(int64_t N, int64_t work, const F& f) {
  at::parallel_for(0, N, grain(work), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) f(n);
  });
}

// per (sample, channel), over the H*W positions: dot = sum(a * b) * scale, sum = sum(a) * scale
// (b == nullptr: dot = sum(a * a) * scale); one read of a and b
template <typename T>
void channel_sums(const T* a, const T* b, const Shape& s, T scale, T* dot, T* sum) {
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
        dot[i] = sd * scale;
        sum[i] = sa * scale;
      }
    });
    return;
  }
  // NHWC: the column sums of each sample's (H*W, C) matrix, a block of B channels at a time in
  // local accumulators (which the compiler keeps in registers)
  constexpr int64_t B = 16;
  per_sample(s.n, HW * C, [&](int64_t n) {
    const T *an = a + n * HW * C, *bn = b + n * HW * C;
    for (int64_t c0 = 0; c0 < C; c0 += B) {
      const int64_t width = std::min(B, C - c0);
      T sa[B] = {}, sd[B] = {};
      for (int64_t p = 0; p < HW; ++p) {
        const T *pa = an + p * C + c0, *pb = bn + p * C + c0;
        if (width == B) {
#pragma omp simd
          for (int64_t c = 0; c < B; ++c) {
            sa[c] += pa[c];
            sd[c] += pa[c] * pb[c];
          }
        } else {
          for (int64_t c = 0; c < width; ++c) {
            sa[c] += pa[c];
            sd[c] += pa[c] * pb[c];
          }
        }
      }
      for (int64_t c = 0; c < width; ++c) {
        dot[n * C + c0 + c] = sd[c] * scale;
        sum[n * C + c0 + c] = sa[c] * scale;
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
  per_sample(s.n, HW * C, [&](int64_t n) {
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
  });
}

// LN and GN statistics of one sample: per group of `size` consecutive channels [c0, c1), the
// means of the two values `get(c)` returns, handed to `use(c0, c1, mean_a, mean_b)`
template <typename T, typename Get, typename Use>
void group_means(int64_t C, int64_t size, const Get& get, const Use& use) {
  for (int64_t c0 = 0; c0 < C; c0 += size) {
    T sa = 0, sb = 0;
    for (int64_t c = c0; c < c0 + size; ++c) {
      const auto [a, b] = get(c);
      sa += a;
      sb += b;
    }
    use(c0, c0 + size, sa / size, sb / size);
  }
}

// per channel, the sums over the samples of the (N, C) values a and b (BN's statistics and
// their adjoint)
template <typename T>
void sample_sums(const T* a, const T* b, int64_t N, int64_t C, int64_t stride, T* sa, T* sb) {
  std::fill(sa, sa + C, T(0));
  std::fill(sb, sb + C, T(0));
  for (int64_t n = 0; n < N; ++n) {
    const T *an = a + n * stride, *bn = b + n * stride;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      sa[c] += an[c];
      sb[c] += bn[c];
    }
  }
}

int64_t index_of(const std::vector<int64_t>& rows, int64_t code) {
  return std::find(rows.begin(), rows.end(), code) - rows.begin();
}

template <typename T>
Forward forward_impl(
    const at::Tensor& x_in, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, const std::optional<at::Tensor>& fixed_ratios,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& fc1_w, const at::Tensor& fc1_b, const at::Tensor& fc2_w,
    const at::Tensor& fc2_b, const at::Tensor& ratio_bias, const std::vector<int64_t>& rows,
    int64_t K, bool training, double eps_, int64_t groups) {
  const Shape shape = shape_of(x_in);
  const at::Tensor x = in_layout(x_in, shape);
  const int64_t N = shape.n, C = shape.c, HW = shape.hw;
  const int64_t R = rows.size();
  const T eps = static_cast<T>(eps_);
  const auto opts = x.options();

  // the IN moments: mean and mean of squares per (sample, channel)
  at::Tensor m = at::empty({N, C}, opts), q = at::empty({N, C}, opts);
  T *pm = m.data_ptr<T>(), *pq = q.data_ptr<T>();
  channel_sums<T>(x.data_ptr<T>(), nullptr, shape, T(1) / HW, pq, pm);

  // each row's mean, variance, 1 / std (N, R, C) and, for the descriptors, log(var + eps):
  // computed once per distinct statistic (per sample for LN, per channel for BN)
  const bool learned = !fixed_ratios;
  at::Tensor means = at::empty({N, R, C}, opts), var = at::empty({N, R, C}, opts);
  at::Tensor inv_std = at::empty({N, R, C}, opts);
  at::Tensor mask = at::empty({N, R, C}, opts.dtype(at::kBool));
  at::Tensor log_var = at::empty({learned ? N * R * C : 0}, opts);
  at::Tensor batch_stats = at::empty({0}, opts);
  T *pmeans = means.data_ptr<T>(), *pvar = var.data_ptr<T>(), *pinv = inv_std.data_ptr<T>();
  T* plog = log_var.data_ptr<T>();
  bool* pmask = mask.data_ptr<bool>();
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

  // BN's per-channel statistics: the batch's (training) or the running ones
  std::vector<Stat> per_channel;
  if (index_of(rows, BN) < R) {
    per_channel.resize(C);
    if (training) {
      std::vector<T> sm(C), sq(C);
      sample_sums<T>(pm, pq, N, C, C, sm.data(), sq.data());
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
  }

  // per sample: each row's statistics, then the descriptors (N * K, 2C):
  // offset_k = (m - m_k) / s_k, spread_k = (log v_in - log v_k) / 2
  at::Tensor descriptors = at::empty({learned ? N * K : 0, 2 * C}, opts);
  T* pd = descriptors.data_ptr<T>();
  const int64_t k_in = index_of(rows, IN);
  per_sample(N, R * C * (learned ? 3 : 1), [&](int64_t n) {
    const T *mn = pm + n * C, *qn = pq + n * C;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t o = (n * R + r) * C;
      auto put = [&](int64_t c, const Stat& s) {
        pmeans[o + c] = s.mean;
        pvar[o + c] = s.var;
        pinv[o + c] = s.inv;
        pmask[o + c] = s.mask;
        if (learned) plog[o + c] = s.log_var;
      };
      switch (rows[r]) {
        case IN:
          for (int64_t c = 0; c < C; ++c) put(c, from_moments(mn[c], qn[c]));
          break;
        case LN:
        case GN:
          group_means<T>(
              C, rows[r] == LN ? C : C / groups,
              [&](int64_t c) { return std::pair(mn[c], qn[c]); },
              [&](int64_t c0, int64_t c1, T mean, T e2) {
                const Stat s = from_moments(mean, e2);
                for (int64_t c = c0; c < c1; ++c) put(c, s);
              });
          break;
        case BN:
          for (int64_t c = 0; c < C; ++c) put(c, per_channel[c]);
          break;
        default:
          TORCH_CHECK(false, "en_layer: unknown row code ", rows[r]);
      }
    }
    if (!learned) return;
    const T* log_in = plog + (n * R + k_in) * C;
    for (int64_t k = 0; k < K; ++k) {
      T* d = pd + (n * K + k) * 2 * C;
      const int64_t o = (n * R + k) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        d[c] = (mn[c] - pmeans[o + c]) * pinv[o + c];
        d[C + c] = T(0.5) * (log_in[c] - plog[o + c]);
      }
    }
  });

  // the ratio network's first FC (N * K, H)
  at::Tensor hidden = at::empty({0}, opts);
  if (learned) hidden = at::addmm(fc1_b.to(opts.dtype()), descriptors, fc1_w.to(opts.dtype()).t());
  const int64_t H = learned ? hidden.size(1) : 0;
  const at::Tensor w2 = learned ? fc2_w.to(opts.dtype()).contiguous() : at::Tensor();
  const at::Tensor rb = learned ? ratio_bias.to(opts.dtype()).contiguous() : at::Tensor();
  // fixed ratios: (K,) for every sample or (N, K) one row per sample
  const at::Tensor f = learned ? at::Tensor() : fixed_ratios->to(opts.dtype()).contiguous();
  TORCH_CHECK(learned || (f.dim() == 1 && f.size(0) == K) ||
                  (f.dim() == 2 && f.size(0) == N && f.size(1) == K),
              "en_layer: fixed ratios must be (K,) or (N, K)");
  const int64_t f_stride = learned || f.dim() == 1 ? 0 : K;
  const T b2 = learned ? fc2_b.to(opts.dtype()).item<T>() : T(0);
  const T* ph = learned ? hidden.data_ptr<T>() : nullptr;
  const T* pw2 = learned ? w2.data_ptr<T>() : nullptr;
  const T* prb = learned ? rb.data_ptr<T>() : nullptr;
  const T* pf = learned ? nullptr : f.data_ptr<T>();

  // per sample: the ratios (ReLU, FC2, softmax), then
  // scale = sum_k lam_k / s_k, shift = -sum_k lam_k m_k / s_k and the affine: A, B
  at::Tensor lam = at::empty({N, K}, opts), lam_inv_std = at::empty({N, K, C}, opts);
  at::Tensor scale = at::empty({N, C}, opts), shift = at::empty({N, C}, opts);
  at::Tensor a = at::empty({N, C}, opts), b = at::empty({N, C}, opts);
  T *plam = lam.data_ptr<T>(), *plis = lam_inv_std.data_ptr<T>();
  T *ps = scale.data_ptr<T>(), *pt = shift.data_ptr<T>();
  T *pa = a.data_ptr<T>(), *pb = b.data_ptr<T>();
  const at::Tensor w = weight ? weight->to(opts.dtype()).contiguous() : at::Tensor();
  const at::Tensor bb = bias ? bias->to(opts.dtype()).contiguous() : at::Tensor();
  const T* pw = w.defined() ? w.data_ptr<T>() : nullptr;
  const T* pbias = bb.defined() ? bb.data_ptr<T>() : nullptr;
  per_sample(N, K * (C + H) + 4 * C, [&](int64_t n) {
    T* l = plam + n * K;
    if (!learned) {
      std::copy(pf + n * f_stride, pf + n * f_stride + K, l);
    } else {
      for (int64_t k = 0; k < K; ++k) {
        const T* hk = ph + (n * K + k) * H;
        T z = b2 + prb[k];
        for (int64_t j = 0; j < H; ++j) z += std::max<T>(hk[j], 0) * pw2[j];
        l[k] = z;
      }
      const T top = *std::max_element(l, l + K);
      T total = 0;
      for (int64_t k = 0; k < K; ++k) total += (l[k] = std::exp(l[k] - top));
      for (int64_t k = 0; k < K; ++k) l[k] /= total;
    }
    T *sn = ps + n * C, *tn = pt + n * C;
    std::fill(sn, sn + C, T(0));
    std::fill(tn, tn + C, T(0));
    for (int64_t k = 0; k < K; ++k) {
      const int64_t o = (n * R + k) * C;
      T* li = plis + (n * K + k) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        li[c] = l[k] * pinv[o + c];
        sn[c] += li[c];
        tn[c] -= li[c] * pmeans[o + c];
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      pa[n * C + c] = pw ? sn[c] * pw[c] : sn[c];
      pb[n * C + c] = pw ? pbias[c] + tn[c] * pw[c] : tn[c];
    }
  });
  at::Tensor y = at::empty_like(x);
  channel_affine<T>(x.data_ptr<T>(), pa, nullptr, nullptr, pb, shape, y.data_ptr<T>());
  Forward out{y, {}, batch_stats};
#define EN_KEEP(name) out.small.name = name;
  EN_SMALL(EN_KEEP)
#undef EN_KEEP
  return out;
}

template <typename T>
Grads backward_impl(
    const at::Tensor& grad_in, const at::Tensor& x_in, const Small& small,
    const std::optional<at::Tensor>& weight, const at::Tensor& fc1_w, const at::Tensor& fc2_w,
    const std::vector<int64_t>& rows, int64_t K, bool training, double eps_, int64_t groups) {
  const Shape shape = shape_of(x_in);
  const at::Tensor x = in_layout(x_in, shape);
  const at::Tensor grad = in_layout(grad_in.to(x.scalar_type()), shape);
  const at::Tensor &a = small.a, &m = small.m, &means = small.means, &var = small.var;
  const at::Tensor &mask = small.mask, &inv_std = small.inv_std, &lam = small.lam;
  const at::Tensor &lis = small.lam_inv_std, &descriptors = small.descriptors;
  const at::Tensor &hidden = small.hidden, &scale = small.scale, &shift = small.shift;
  const int64_t N = shape.n, C = shape.c, HW = shape.hw;
  const int64_t R = rows.size(), NC = N * C;
  const T eps = static_cast<T>(eps_);
  const auto opts = x.options();
  const bool learned = descriptors.numel() > 0;
  const int64_t H = learned ? hidden.size(1) : 0, k_in = index_of(rows, IN);
  const T *pm = m.data_ptr<T>(), *pmeans = means.data_ptr<T>(), *pvar = var.data_ptr<T>();
  const T *pinv = inv_std.data_ptr<T>(), *plam = lam.data_ptr<T>(), *plis = lis.data_ptr<T>();
  const bool* pmask = mask.data_ptr<bool>();

  // d loss / d A and d loss / d B (N, C): one read of dy and x
  at::Tensor g_a = at::empty({N, C}, opts), g_b = at::empty({N, C}, opts);
  T *pga = g_a.data_ptr<T>(), *pgb = g_b.data_ptr<T>();
  channel_sums<T>(grad.data_ptr<T>(), x.data_ptr<T>(), shape, T(1), pga, pgb);

  // the affine: A = scale * w, B = bias + shift * w
  at::Tensor g_weight = at::empty({0}, opts), g_bias = at::empty({0}, opts);
  const at::Tensor w = weight ? weight->to(opts.dtype()).contiguous() : at::Tensor();
  const T* pw = weight ? w.data_ptr<T>() : nullptr;
  if (weight) {
    const T *ps = scale.data_ptr<T>(), *pt = shift.data_ptr<T>();
    at::Tensor terms = at::empty({N, C}, opts);
    T* pterms = terms.data_ptr<T>();
    for (int64_t i = 0; i < NC; ++i) pterms[i] = pga[i] * ps[i] + pgb[i] * pt[i];
    g_weight = at::empty({C}, opts);
    g_bias = at::empty({C}, opts);
    sample_sums<T>(pterms, pgb, N, C, C, g_weight.data_ptr<T>(), g_bias.data_ptr<T>());
  }

  // per sample: scale = sum_k lam_k u_k, shift = -sum_k lam_k u_k m_k (u_k = 1 / s_k), then the
  // softmax and FC2 (ReLU): the gradients of the means, the u_k, the ratios' logits and FC1's
  // output
  at::Tensor g_means = at::empty({N, R, C}, opts), g_inv = at::empty({N, R, C}, opts);
  at::Tensor g_log_var = at::zeros({N, R, C}, opts), g_logits = at::empty({N, K}, opts);
  at::Tensor g_hidden = at::empty({N * K, H}, opts);
  T *pg_means = g_means.data_ptr<T>(), *pg_inv = g_inv.data_ptr<T>();
  T *pg_log = g_log_var.data_ptr<T>(), *pg_logits = g_logits.data_ptr<T>();
  T* pgh = g_hidden.data_ptr<T>();
  const at::Tensor w2 = learned ? fc2_w.to(opts.dtype()).contiguous() : at::Tensor();
  const T* ph = learned ? hidden.data_ptr<T>() : nullptr;
  const T* pw2 = learned ? w2.data_ptr<T>() : nullptr;
  per_sample(N, K * (3 * C + H), [&](int64_t n) {
    std::vector<T> g_lam(K);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t o = (n * R + k) * C;
      const T *ga = pga + n * C, *gb = pgb + n * C, *li = plis + (n * K + k) * C;
      const T l = plam[n * K + k];
      T g = 0;
#pragma omp simd reduction(+ : g)
      for (int64_t c = 0; c < C; ++c) {
        const T wc = pw ? pw[c] : T(1);
        const T g_mix = (ga[c] - gb[c] * pmeans[o + c]) * wc;
        pg_means[o + c] = -li[c] * gb[c] * wc;
        pg_inv[o + c] = g_mix * l;
        g += g_mix * pinv[o + c];
      }
      g_lam[k] = g;
    }
    // a row after the K normalizers (the descriptors' IN) is not in the mixture
    std::fill(pg_means + (n * R + K) * C, pg_means + (n + 1) * R * C, T(0));
    std::fill(pg_inv + (n * R + K) * C, pg_inv + (n + 1) * R * C, T(0));
    if (!learned) return;
    T mean_g = 0;
    for (int64_t k = 0; k < K; ++k) mean_g += plam[n * K + k] * g_lam[k];
    for (int64_t k = 0; k < K; ++k) {
      const T g_logit = plam[n * K + k] * (g_lam[k] - mean_g);
      pg_logits[n * K + k] = g_logit;
      const T* hk = ph + (n * K + k) * H;
      T* ghk = pgh + (n * K + k) * H;
      for (int64_t j = 0; j < H; ++j) ghk[j] = hk[j] > 0 ? g_logit * pw2[j] : T(0);
    }
  });

  // the ratio network's parameters (sums over the samples), then the descriptors' gradient
  at::Tensor g_fc1_w = at::empty({0}, opts), g_fc1_b = at::empty({0}, opts);
  at::Tensor g_fc2_w = at::empty({0}, opts), g_fc2_b = at::empty({0}, opts);
  at::Tensor g_ratio_bias = at::empty({0}, opts), g_desc = at::empty({0}, opts);
  if (learned) {
    g_fc2_w = at::mm(g_logits.view({1, N * K}), hidden.relu());
    g_fc2_b = g_logits.sum().view({1});
    g_ratio_bias = g_logits.sum(0);
    g_fc1_b = g_hidden.sum(0);
    g_fc1_w = at::mm(g_hidden.t(), descriptors);
    g_desc = at::mm(g_hidden, fc1_w.to(opts.dtype()));
  }
  const T* pgd = g_desc.data_ptr<T>();

  // per sample: the descriptors' gradient onto m and each row's mean, u and log(v + eps); then
  // u = (v + eps)^(-1/2), log(v + eps), v = max(E[x^2] - m^2, 0): each row's gradient w.r.t. its
  // E[x^2] (g_var) and mean (g_means), summed back onto the IN moments it was derived from
  // (BN's rows below: they need the whole batch)
  at::Tensor g_m = at::empty({N, C}, opts), g_q = at::empty({N, C}, opts);
  T *pg_m = g_m.data_ptr<T>(), *pg_q = g_q.data_ptr<T>();
  T* pg_var = pg_log;
  per_sample(N, R * C * 4, [&](int64_t n) {
    T *gm = pg_m + n * C, *gq = pg_q + n * C;
    std::fill(gm, gm + C, T(0));
    std::fill(gq, gq + C, T(0));
    if (learned) {
      const T* mn = pm + n * C;
      std::vector<T> spread(C, 0);  // the spreads' sum, onto IN's log(v + eps)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t o = (n * R + k) * C;
        const T* gd = pgd + (n * K + k) * 2 * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const T g_offset_u = gd[c] * pinv[o + c];
          gm[c] += g_offset_u;
          pg_means[o + c] -= g_offset_u;
          pg_inv[o + c] += gd[c] * (mn[c] - pmeans[o + c]);
          pg_log[o + c] -= T(0.5) * gd[C + c];
          spread[c] += T(0.5) * gd[C + c];
        }
      }
      T* glog_in = pg_log + (n * R + k_in) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) glog_in[c] += spread[c];
    }
#pragma omp simd
    for (int64_t i = n * R * C; i < (n + 1) * R * C; ++i) {
      const T g = pmask[i] ? (T(-0.5) * pg_inv[i] * pinv[i] + pg_log[i]) / (pvar[i] + eps) : T(0);
      pg_var[i] = g;
      pg_means[i] -= 2 * pmeans[i] * g;
    }
    for (int64_t r = 0; r < R; ++r) {
      const T *gmr = pg_means + (n * R + r) * C, *gvr = pg_var + (n * R + r) * C;
      switch (rows[r]) {
        case IN:
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            gm[c] += gmr[c];
            gq[c] += gvr[c];
          }
          break;
        case LN:
        case GN:  // the adjoint of the forward's group means: each channel gets the group's mean
          group_means<T>(
              C, rows[r] == LN ? C : C / groups,
              [&](int64_t c) { return std::pair(gmr[c], gvr[c]); },
              [&](int64_t c0, int64_t c1, T g_mean, T g_e2) {
                for (int64_t c = c0; c < c1; ++c) {
                  gm[c] += g_mean;
                  gq[c] += g_e2;
                }
              });
          break;
        default:  // BN: below; running statistics (eval) take no gradient
          break;
      }
    }
  });

  // BN: the batch's mean and E[x^2] are means over the samples, so every sample gets the mean of
  // the gradients; then dx = dy * A + x * (2 g_q / HW) + g_m / HW, one read of dy and x
  std::vector<T> bn_m(C, 0), bn_q(C, 0);
  for (int64_t r = 0; r < R; ++r)
    if (rows[r] == BN && training) {
      std::vector<T> sm(C), sq(C);
      sample_sums<T>(pg_means + r * C, pg_var + r * C, N, C, R * C, sm.data(), sq.data());
      for (int64_t c = 0; c < C; ++c) {
        bn_m[c] += sm[c] / N;
        bn_q[c] += sq[c] / N;
      }
    }
  per_sample(N, C, [&](int64_t n) {
    T *gm = pg_m + n * C, *gq = pg_q + n * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      gq[c] = 2 * (gq[c] + bn_q[c]) / HW;
      gm[c] = (gm[c] + bn_m[c]) / HW;
    }
  });
  at::Tensor grad_x = at::empty_like(x);
  channel_affine<T>(
      grad.data_ptr<T>(), a.data_ptr<T>(), x.data_ptr<T>(), pg_q, pg_m, shape,
      grad_x.data_ptr<T>());
  Grads grads;
  grads.x = grad_x;
  grads.weight = g_weight;
  grads.bias = g_bias;
  grads.fc1_w = g_fc1_w;
  grads.fc1_b = g_fc1_b;
  grads.fc2_w = g_fc2_w;
  grads.fc2_b = g_fc2_b;
  grads.ratio_bias = g_ratio_bias;
  return grads;
}

// The inputs of en_layer::exemplar_norm (and of the autograd function's forward): x, the 7
// parameters, running_mean, running_var, num_batches_tracked, fixed_ratios, rows, k, training,
// eps, momentum, gn_groups.
constexpr size_t kInputs = 18;

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
    const Forward out = AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "en_layer_forward", [&] {
          return forward_impl<scalar_t>(
              x, running_mean, running_var, fixed_ratios, weight, bias, fc1_w, fc1_b, fc2_w,
              fc2_b, ratio_bias, rows, k, training, eps, groups);
        });
    const at::Tensor& batch_stats = out.batch_stats;
    if (batch_stats.numel()) {
      running_mean->lerp_(batch_stats[0].to(running_mean->scalar_type()), momentum);
      running_var->lerp_(batch_stats[1].to(running_var->scalar_type()), momentum);
      num_batches_tracked->add_(1);
    }
    ctx->save_for_backward(Saved{x, out.small, weight.value_or(at::Tensor()), fc1_w, fc2_w}.list());
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["k"] = k;
    ctx->saved_data["training"] = training;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["groups"] = groups;
    at::Tensor lam = out.small.lam.clone();
    ctx->mark_non_differentiable({lam});
    return {out.y, lam};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const Saved saved = Saved::from(ctx->get_saved_variables());
    const std::optional<at::Tensor> w =
        saved.weight.defined() ? std::optional(saved.weight) : std::nullopt;
    const std::vector<int64_t> rows = ctx->saved_data["rows"].toIntVector();
    const int64_t k = ctx->saved_data["k"].toInt(), groups = ctx->saved_data["groups"].toInt();
    const bool training = ctx->saved_data["training"].toBool();
    const double eps = ctx->saved_data["eps"].toDouble();
    const Grads grads = AT_DISPATCH_FLOATING_TYPES(saved.x.scalar_type(), "en_layer_backward", [&] {
      return backward_impl<scalar_t>(
          grad_outputs[0], saved.x, saved.small, w, saved.fc1_w, saved.fc2_w, rows, k, training,
          eps, groups);
    });
    // one gradient per input of forward: the differentiable ones first, as the schema orders
    // them (Grads), then none for the buffers and options
    variable_list result;
#define EN_GRAD(name) result.push_back(grads.name.numel() ? grads.name : at::Tensor());
    EN_GRADS(EN_GRAD)
#undef EN_GRAD
    result.resize(kInputs);
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
  return {out[0], out[1]};  // the output and the ratios
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
