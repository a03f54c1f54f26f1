"""Exemplar Normalization (Zhang et al., CVPR 2020): a learned, per-sample mixture of normalizers.

Every statistic comes from one pass over the input (mean and mean of squares over H, W); LN, BN
and GN statistics are derived from the per-(sample, channel) ones, as Switchable Normalization
does. The output ``gamma * sum_k lam_k (x - m_k) / s_k + beta`` is applied as one fused
``x * A + B`` with per-(sample, channel) ``A`` and ``B``, so no normalized copies are built.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

KNOWN_NORMALIZERS = ("in", "ln", "bn", "gn")
DEFAULT_NORMALIZERS = ("in", "ln", "bn")
MIN_HIDDEN = 8


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


class ExemplarNorm2d(nn.Module):
    """Drop-in ``norm_layer`` (``ExemplarNorm2d(C)``) mixing its normalizers per sample.

    After each forward pass ``last_ratios`` holds the (N, K) ratios the layer used (detached), in
    the order of ``normalizers``; ``fix_ratios`` forces given ratios (for ablations and tests).
    The ratio sub-network's parameters are named ``ratio_*`` so optimizers can give them their own
    learning rate and weight decay.
    """

    def __init__(
        self,
        num_features: int,
        normalizers: Sequence[str] = DEFAULT_NORMALIZERS,
        eps: float = 1e-5,
        momentum: float = 0.1,
        reduction: int = 16,
        gn_groups: int = 32,
        affine: bool = True,
        sync_bn_stats: bool = False,
    ) -> None:
        super().__init__()
        normalizers = tuple(normalizers)
        unknown = [n for n in normalizers if n not in KNOWN_NORMALIZERS]
        if unknown or not normalizers or len(set(normalizers)) != len(normalizers):
            raise ValueError(
                f"normalizers must be distinct names from {KNOWN_NORMALIZERS}, got {normalizers}"
            )
        self.num_features = num_features
        self.normalizers = normalizers
        self.eps = eps
        self.momentum = momentum
        self.reduction = reduction
        self.gn_groups = _largest_divisor_at_most(num_features, gn_groups)
        self.sync_bn_stats = sync_bn_stats
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if "bn" in normalizers:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        # at least MIN_HIDDEN units: a 1-unit ReLU layer (C = 16) died in training and left
        # that layer's ratios identical for every sample
        hidden = max(MIN_HIDDEN, num_features // reduction)
        # Shared across normalizers: (mean offset, log-spread ratio) per channel -> one logit.
        self.ratio_fc1 = nn.Linear(2 * num_features, hidden)
        self.ratio_fc2 = nn.Linear(hidden, 1)
        self.ratio_bias = nn.Parameter(torch.zeros(len(normalizers)))
        nn.init.zeros_(self.ratio_fc2.weight)  # every sample starts at uniform ratios 1/K
        nn.init.zeros_(self.ratio_fc2.bias)
        self.last_ratios: Tensor | None = None
        self.fixed_ratios: Tensor | None = None

    def fix_ratios(self, ratios: Sequence[float] | Tensor | None) -> None:
        """Use these K ratios for every sample (``None`` returns to learned ratios)."""
        if ratios is None:
            self.fixed_ratios = None
            return
        r = torch.as_tensor(ratios, dtype=torch.float32).flatten()
        if r.numel() != len(self.normalizers) or (r < 0).any() or abs(float(r.sum()) - 1) > 1e-6:
            raise ValueError(f"need {len(self.normalizers)} non-negative ratios summing to 1")
        self.fixed_ratios = r

    def _batch_stats(self, m_in: Tensor, ex2: Tensor) -> tuple[Tensor, Tensor, int]:
        """BN mean and E[x^2] (1, C) over the batch and its size, across processes if
        ``sync_bn_stats`` is on (two (C,) sums and a count: one small all-reduce)."""
        if self.sync_bn_stats and dist.is_available() and dist.is_initialized():
            with warnings.catch_warnings():  # its successor is not differentiable yet
                warnings.simplefilter("ignore", FutureWarning)
                from torch.distributed.nn.functional import all_reduce

                n = torch.full((1,), m_in.shape[0], dtype=m_in.dtype, device=m_in.device)
                total = all_reduce(torch.cat([m_in.sum(0), ex2.sum(0), n]))
            c = self.num_features
            count = int(total[-1].item())
            return (total[:c] / total[-1])[None], (total[c : 2 * c] / total[-1])[None], count
        return m_in.mean(0, keepdim=True), ex2.mean(0, keepdim=True), m_in.shape[0]

    def statistics(self, m_in: Tensor, ex2: Tensor, hw: int) -> list[tuple[Tensor, Tensor]]:
        """Each normalizer's (mean, variance), from the IN moments (N, C), at its natural shape.

        IN and GN give (N, C), LN (N, 1), BN (1, C): they broadcast to (N, C), and keeping LN and
        BN small keeps the ratio sub-network cheap. Training mode updates the BN running statistics
        (``hw`` = H * W counts the BN samples).
        """
        n, c = m_in.shape
        stats = []
        for name in self.normalizers:
            if name == "in":
                m, e2 = m_in, ex2
            elif name == "ln":
                m, e2 = m_in.mean(1, keepdim=True), ex2.mean(1, keepdim=True)
            elif name == "gn":
                g = self.gn_groups
                m = m_in.view(n, g, c // g).mean(2).repeat_interleave(c // g, 1)
                e2 = ex2.view(n, g, c // g).mean(2).repeat_interleave(c // g, 1)
            elif self.training:  # bn: batch statistics
                m, e2, batch = self._batch_stats(m_in, ex2)
                self._update_running_stats(m, (e2 - m.square()).clamp_min(0), batch * hw)
            else:  # bn: running statistics
                stats.append((self.running_mean[None].to(m_in), self.running_var[None].to(m_in)))
                continue
            stats.append((m, (e2 - m.square()).clamp_min(0)))
        return stats

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, count: int) -> None:
        unbiased = var * (count / max(count - 1, 1))
        self.running_mean.lerp_(mean[0].to(self.running_mean.dtype), self.momentum)
        self.running_var.lerp_(unbiased[0].to(self.running_var.dtype), self.momentum)
        self.num_batches_tracked += 1

    def coefficients(self, m_in: Tensor, ex2: Tensor, hw: int) -> tuple[Tensor, Tensor, Tensor]:
        """From the IN moments (N, C): the output's scale and shift (N, C) and the ratios (N, K).

        Descriptor of normalizer k, per channel: the pooled normalized response (m_in - m_k) / s_k
        and the log spread log(sqrt(v_in + eps) / s_k); a shared FC -> ReLU -> FC maps it to one
        logit, a per-normalizer bias is added and a softmax over K gives the ratios. The first FC
        is applied to the two halves separately so LN's and BN's small statistics are never
        expanded to (N, C); IN's descriptor is identically zero.
        """
        stats = self.statistics(m_in, ex2, hw)
        log_vs = [torch.log(v + self.eps) for _, v in stats]
        inv_ss = [torch.exp(-0.5 * log_v) for log_v in log_vs]
        lam = self._mixture(m_in, ex2, stats, log_vs, inv_ss)
        scale = shift = None
        for k, ((m, _), inv_s) in enumerate(zip(stats, inv_ss)):
            w = lam[:, k : k + 1] * inv_s
            scale = w if scale is None else scale + w
            shift = w * m if shift is None else torch.addcmul(shift, w, m)
        scale, shift = scale.expand_as(m_in), -shift.expand_as(m_in)
        if self.affine:
            shift = torch.addcmul(self.bias, shift, self.weight)
            scale = scale * self.weight
        return scale, shift, lam

    def _mixture(self, m_in, ex2, stats, log_vs, inv_ss) -> Tensor:
        """The (N, K) ratios: the fixed ones if set, else the sub-network's."""
        if self.fixed_ratios is not None:
            return self.fixed_ratios.to(m_in)[None].expand(m_in.shape[0], -1)
        return self._ratios(m_in, ex2, stats, log_vs, inv_ss)

    def _ratios(self, m_in, ex2, stats, log_vs, inv_ss) -> Tensor:
        c = self.num_features
        w_offset, w_spread = self.ratio_fc1.weight[:, :c], self.ratio_fc1.weight[:, c:]
        log_v_in = torch.log((ex2 - m_in.square()).clamp_min(0) + self.eps)
        spread_in = F.linear(log_v_in, 0.5 * w_spread, self.ratio_fc1.bias)  # (N, h)
        hidden = []
        for name, (m, _), log_v, inv_s in zip(self.normalizers, stats, log_vs, inv_ss):
            if name == "in":  # both descriptor halves are exactly zero
                hidden.append(self.ratio_fc1.bias.expand_as(spread_in))
                continue
            offset = _project((m_in - m) * inv_s, w_offset)
            hidden.append(offset + spread_in - _project(0.5 * log_v, w_spread))
        h = F.relu(torch.stack(hidden, 1))  # (N, K, hidden)
        return (self.ratio_fc2(h).squeeze(2) + self.ratio_bias).softmax(1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"ExemplarNorm2d({self.num_features}) expects (N, {self.num_features}, H, W), "
                f"got {tuple(x.shape)}"
            )
        params = [p for p in self.parameters() if p.requires_grad]
        if torch.is_grad_enabled() and (x.requires_grad or params):
            return _FusedExemplarNorm.apply(x, self, *params)
        m_in, ex2 = _moments(x)
        with torch.autocast(x.device.type, enabled=False):  # statistics stay float32
            scale, shift, lam = self.coefficients(m_in, ex2, x.shape[2] * x.shape[3])
        self.last_ratios = lam.detach()
        return _scale_shift(x, scale, shift)

    def reference_forward(self, x: Tensor) -> Tensor:
        """The textbook formula with K normalized copies of x: slow, for tests and benchmarks."""
        m_in, ex2 = _moments(x)
        stats = self.statistics(m_in, ex2, x.shape[2] * x.shape[3])  # BN running stats: once
        log_vs = [torch.log(v + self.eps) for _, v in stats]
        lam = self._mixture(m_in, ex2, stats, log_vs, [torch.exp(-0.5 * lv) for lv in log_vs])
        self.last_ratios = lam.detach()
        y = sum(
            lam[:, k, None, None, None]
            * (x - m[:, :, None, None])
            / torch.sqrt(v[:, :, None, None] + self.eps)
            for k, (m, v) in enumerate(stats)
        )
        if self.affine:
            y = y * self.weight[:, None, None] + self.bias[:, None, None]
        return y


def _moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(sample, channel) mean and mean of squares in float32: one read of x each.

    Not ``torch.var_mean``: on CPU it is 10-25x slower at these shapes.
    """
    xf = (x if x.dtype in (torch.float32, torch.float64) else x.float()).flatten(2)
    return xf.mean(2), torch.linalg.vecdot(xf, xf) / xf.shape[2]


def _project(t: Tensor, weight: Tensor) -> Tensor:
    """``t @ weight.T`` for t of shape (N, C), (1, C) or (N, 1) (a per-sample constant)."""
    return t * weight.sum(1) if t.shape[1] == 1 else F.linear(t, weight)


def _scale_shift(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    return torch.addcmul(
        shift.to(x.dtype)[:, :, None, None], x, scale.to(x.dtype)[:, :, None, None]
    )


class _FusedExemplarNorm(torch.autograd.Function):
    """EN with hand-written gradients for the full-size passes.

    Autograd only sees the small (N, C) graph from the moments to (scale, shift); the passes over
    x (moments, x * A + B and their gradients) are done here in four fused reads instead of the
    dozen autograd would make.
    """

    @staticmethod
    def forward(ctx, x: Tensor, layer: ExemplarNorm2d, *params: Tensor) -> Tensor:
        m_in, ex2 = _moments(x)
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            m_in.requires_grad_()
            ex2.requires_grad_()
            scale, shift, lam = layer.coefficients(m_in, ex2, x.shape[2] * x.shape[3])
        layer.last_ratios = lam.detach()
        ctx.save_for_backward(x)
        ctx.graph = (m_in, ex2, scale, shift, params)
        return _scale_shift(x, scale.detach(), shift.detach())

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        m_in, ex2, scale, shift, params = ctx.graph
        dtype = torch.promote_types(x.dtype, torch.float32)
        g = grad.to(dtype).flatten(2)
        xf = x.to(dtype).flatten(2)
        grad_scale = torch.linalg.vecdot(g, xf)
        grad_shift = g.sum(2)
        grads = torch.autograd.grad(
            (scale, shift),
            (m_in, ex2, *params),
            (grad_scale, grad_shift),
            allow_unused=True,
            retain_graph=True,  # freed with ctx; lets gradcheck call backward twice
        )
        grad_m, grad_ex2 = grads[0], grads[1]
        hw = xf.shape[2]
        zeros = torch.zeros_like(grad_scale)
        grad_m = zeros if grad_m is None else grad_m
        grad_ex2 = zeros if grad_ex2 is None else grad_ex2
        grad_x = torch.addcmul((grad_m / hw)[:, :, None], xf, (2 * grad_ex2 / hw)[:, :, None])
        grad_x.addcmul_(g, scale.detach()[:, :, None])
        return (grad_x.view_as(x).to(x.dtype), None, *grads[2:])
