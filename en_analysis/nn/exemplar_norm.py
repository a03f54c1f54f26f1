"""Exemplar Normalization (Zhang et al., CVPR 2020): a learned, per-sample mixture of normalizers.

Every statistic comes from one pass over the input (mean and mean of squares over H, W); LN, BN
and GN statistics are derived from the per-(sample, channel) ones, as Switchable Normalization
does. The output ``gamma * sum_k lam_k (x - m_k) / s_k + beta`` is applied as one fused
``x * A + B`` with per-(sample, channel) ``A`` and ``B``, so no normalized copies are built.

One layer, one maths, these code paths (``ExemplarNorm2d.code_path`` says which a call takes;
``PATHS`` is the list, tests/test_exemplar_norm.py checks that they agree):

- ``kernel``: ``exemplar_norm.cpp`` (``cpu_kernel``), the maths of ``_layer_forward`` /
  ``_layer_backward`` below written as loops in C++ with its own backward - on CPU in
  float32/64, BN statistics not all-reduced, not inside ``torch.compile``, the kernel built
  and switched on (``cpu_kernel.use``);
- ``python``: elsewhere, when a gradient is needed, ``_ExemplarNormFunction``, whose backward is
  written out by hand for the whole layer: the small graph (statistics -> descriptors -> FC ->
  ReLU -> FC -> softmax -> scale and shift) works on the K normalizers stacked as (N, K, C)
  tensors, so each step is one tensor operation whatever K is, and no autograd graph is built
  or walked inside the layer;
- ``python-no-grad``: elsewhere, without a gradient (evaluation, extraction on a GPU), the
  statistics alone (``coefficients``) and one ``x * A + B``;
- ``compiled``: ``python`` or ``python-no-grad`` with each function compiled once per layer
  configuration (``compile_layers``, ``train.compile_en_layers``);
- ``synced``: ``python`` or ``python-no-grad`` with BN's statistics all-reduced across
  processes (``model.sync_bn_stats`` under torchrun): never the kernel, never compiled;
- ``traced``: inside ``torch.compile`` (``train.compile``): the Python functions traced with
  the model.

``reference_forward`` is the textbook formula written independently with autograd, for tests
and benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import UserError
from ..settings.choices import DEFAULT_NORMALIZERS, NORMALIZERS
from . import cpu_kernel

MIN_HIDDEN = 8
PATHS = ("kernel", "python", "python-no-grad", "compiled", "synced", "traced")  # see above


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


class _Small(NamedTuple):
    """The layer's small (N, K, C) graph from the moments to the output's scale and shift,
    with what its backward needs. Row ``k < K`` of the stacks is normalizer k; one more row
    holds the IN statistics when IN is not one of the normalizers (the descriptors use them)."""

    m: Tensor  # (N, C) per-(sample, channel) mean
    means: Tensor  # (N, R, C) each row's mean, broadcast to (N, C)
    var: Tensor  # (N, R, C) each row's variance, clamped at 0
    var_mask: Tensor  # (N, R, C) bool: where the variance has a gradient (not clamped, not running)
    inv_std: Tensor  # (N, R, C) 1 / sqrt(var + eps)
    lam: Tensor  # (N, K) ratios
    lam_inv_std: Tensor  # (N, K, C) lam_k / s_k
    descriptors: Tensor | None  # (N, K, 2C) [(m - m_k) / s_k, log(s_in / s_k)]; None if fixed
    hidden: Tensor | None  # (N, K, h) first FC before the ReLU
    scale: Tensor  # (N, C) before the affine
    shift: Tensor  # (N, C) before the affine
    batch_stats: Tensor  # (2, C): BN's batch mean and unbiased variance (training), else empty
    bn_count: int  # samples in BN's batch statistics (all processes)
    synced: bool  # BN statistics all-reduced across processes


class _KernelArgs(NamedTuple):
    """The arguments of ``torch.ops.en_layer.exemplar_norm``, named and ordered as its schema
    in ``exemplar_norm.cpp`` (a test compares the two)."""

    x: Tensor
    weight: Tensor | None
    bias: Tensor | None
    fc1_w: Tensor
    fc1_b: Tensor
    fc2_w: Tensor
    fc2_b: Tensor
    ratio_bias: Tensor
    running_mean: Tensor | None  # these three are updated in place in training mode
    running_var: Tensor | None
    num_batches_tracked: Tensor | None
    fixed_ratios: Tensor | None
    rows: list[int]  # cpu_kernel.ROW_CODES of ``_stats_rows``
    k: int
    training: bool
    eps: float
    momentum: float
    gn_groups: int


# where the compiled functions, which pass the small graph as a plain tuple, find its fields
_SCALE, _SHIFT, _BACKWARD = (_Small._fields.index(f) for f in ("scale", "shift", "batch_stats"))


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
        *,
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
        unknown = [n for n in normalizers if n not in NORMALIZERS]
        if unknown or not normalizers or len(set(normalizers)) != len(normalizers):
            raise UserError(
                f"normalizers must be distinct names from {NORMALIZERS}, got {normalizers}"
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
        self._row_codes = [cpu_kernel.ROW_CODES[r] for r in self._stats_rows()]

    def fix_ratios(self, ratios: Sequence[float] | Tensor | None) -> None:
        """Use these K ratios for every sample, or (N, K) ones per sample of the batches of N
        that follow (for ablations); ``None`` returns to learned ratios."""
        if ratios is None:
            self.fixed_ratios = None
            return
        r = torch.as_tensor(ratios, dtype=torch.float32)
        r = r.flatten() if r.dim() < 2 else r
        k = len(self.normalizers)
        if r.shape[-1] != k or r.dim() > 2 or (r < 0).any() or (r.sum(-1) - 1).abs().max() > 1e-5:
            raise UserError(f"need {k} non-negative ratios summing to 1 (per sample: N x {k})")
        self.fixed_ratios = r

    def _params(self) -> tuple[Tensor | None, ...]:
        """The parameters in ``_ExemplarNormFunction``'s order."""
        fc1, fc2 = self.ratio_fc1, self.ratio_fc2
        return (self.weight, self.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias, self.ratio_bias)

    def _stats_rows(self) -> tuple[str, ...]:
        """The rows of the stacked statistics: the normalizers, then IN if it is not one."""
        return self.normalizers if "in" in self.normalizers else (*self.normalizers, "in")

    def _synced(self) -> bool:
        """Whether BN's statistics are all-reduced across processes in this call."""
        return bool(self.sync_bn_stats and dist.is_available() and dist.is_initialized())

    def _graph(self) -> _Graph:
        return _Graph(
            self._stats_rows(),
            len(self.normalizers),
            self.training,
            self.fixed_ratios is not None,
            self.eps,
            self.gn_groups,
            self.affine,
            self._synced(),
        )

    def _state(self) -> tuple[Tensor | None, ...]:
        """The buffers the small graph reads: running mean and variance, fixed ratios."""
        bn = "bn" in self.normalizers
        return (
            self.running_mean if bn else None,
            self.running_var if bn else None,
            self.fixed_ratios,
        )

    def _small_forward(self, m: Tensor, q: Tensor, hw: int) -> _Small:
        """From the IN moments (N, C) to the ratios and the output's scale and shift, with what
        the backward needs and BN's batch statistics for the running ones (a pure function:
        ``_update_running_stats`` applies them)."""
        graph = self._graph()
        fc1, fc2 = self.ratio_fc1, self.ratio_fc2
        params = (fc1.weight, fc1.bias, fc2.weight, fc2.bias, self.ratio_bias)
        return _Small(*_kernel(_graph_forward, graph)(graph, m, q, hw, *self._state(), *params))

    @torch.no_grad()
    def _update_running_stats(self, batch_stats: Tensor) -> None:
        """Move the running mean and variance towards BN's batch ones (``momentum``)."""
        if batch_stats.numel():
            self.running_mean.lerp_(batch_stats[0].to(self.running_mean), self.momentum)
            self.running_var.lerp_(batch_stats[1].to(self.running_var), self.momentum)
            self.num_batches_tracked += 1

    def coefficients(self, m_in: Tensor, ex2: Tensor, hw: int) -> tuple[Tensor, Tensor, Tensor]:
        """From the IN moments (N, C): the output's scale and shift (N, C) after the affine, and
        the ratios (N, K). Training mode updates the BN running statistics."""
        s = self._small_forward(m_in, ex2, hw)
        self._update_running_stats(s.batch_stats)
        return (*_affine(self.affine, s.scale, s.shift, self.weight, self.bias), s.lam)

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``x`` (N, C, H, W) with each sample's mixture of the normalizers; the
        ratios used stay in ``last_ratios`` (N, K). Runs the C++ kernel on CPU where it is
        available, else the Python implementation (``code_path(x)`` says which)."""
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise UserError(
                f"ExemplarNorm2d({self.num_features}) expects (N, {self.num_features}, H, W), "
                f"got {tuple(x.shape)}"
            )
        fixed = self.fixed_ratios
        if fixed is not None and fixed.dim() == 2 and len(fixed) != len(x):
            raise UserError(
                f"{len(fixed)} fixed per-sample ratios for a batch of {len(x)} (fix_ratios)"
            )
        params = self._params()
        if self._runs_cpu_kernel(x):
            return self._kernel_forward(x)
        if self._needs_grad(x, params):
            y, lam, batch_stats = _ExemplarNormFunction.apply(x, self, *params)
            self._update_running_stats(batch_stats)
            self.last_ratios = lam
            return y
        m, q = _moments(x)
        with torch.autocast(x.device.type, enabled=False):  # statistics stay float32
            scale, shift, lam = self.coefficients(m, q, x.shape[2] * x.shape[3])
        self.last_ratios = lam.detach()
        return _scale_shift(x, scale, shift)

    def _kernel_forward(self, x: Tensor) -> Tensor:
        """The ``kernel`` path: ``torch.ops.en_layer.exemplar_norm``, every argument named as
        the operator's schema names it (``_KernelArgs``)."""
        running_mean, running_var, fixed_ratios = self._state()
        fc1, fc2 = self.ratio_fc1, self.ratio_fc2
        args = _KernelArgs(
            x=x,
            weight=self.weight,
            bias=self.bias,
            fc1_w=fc1.weight,
            fc1_b=fc1.bias,
            fc2_w=fc2.weight,
            fc2_b=fc2.bias,
            ratio_bias=self.ratio_bias,
            running_mean=running_mean,
            running_var=running_var,
            num_batches_tracked=getattr(self, "num_batches_tracked", None),
            fixed_ratios=fixed_ratios,
            rows=self._row_codes,
            k=len(self.normalizers),
            training=self.training,
            eps=self.eps,
            momentum=self.momentum,
            gn_groups=self.gn_groups,
        )
        # positional: keywords cost the dispatcher 8 us a call, a fifth of the call's own cost
        y, self.last_ratios = torch.ops.en_layer.exemplar_norm(*args)
        return y

    def _needs_grad(self, x: Tensor, params: tuple[Tensor | None, ...]) -> bool:
        return torch.is_grad_enabled() and (
            x.requires_grad or any(p is not None and p.requires_grad for p in params)
        )

    def code_path(self, x: Tensor) -> str:
        """The code path (``PATHS``, the module's docstring) a forward pass of ``x`` takes now."""
        if self._runs_cpu_kernel(x):
            return "kernel"
        if torch.compiler.is_compiling():
            return "traced"
        if self._synced():
            return "synced"
        if COMPILE["enabled"]:
            return "compiled"
        return "python" if self._needs_grad(x, self._params()) else "python-no-grad"

    def _runs_cpu_kernel(self, x: Tensor) -> bool:
        """Whether this call runs the C++ kernel (``exemplar_norm.cpp``, the same maths as
        ``_layer_forward``/``_layer_backward``, in x's dtype like them): x float32/64 on CPU,
        BN statistics not all-reduced, not inside ``torch.compile``, and the kernel built
        (``cpu_kernel.available``)."""
        return (
            x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and not self._synced()
            and not torch.compiler.is_compiling()
            and cpu_kernel.available()
        )

    def reference_forward(self, x: Tensor) -> Tensor:
        """The textbook formula, written apart from the fast path: each normalizer's statistics
        from x by ``Tensor.mean``/``Tensor.var``, its descriptors, the ratio MLP through the
        ``nn.Linear`` modules, K normalized copies of x, autograd for every gradient. Slow; for
        tests and benchmarks. Updates the BN running statistics like ``forward``."""
        n, c, h, w = x.shape
        dims = {"in": (2, 3), "ln": (1, 2, 3), "bn": (0, 2, 3)}

        def stats(name: str) -> tuple[Tensor, Tensor]:
            if name == "gn":
                g = x.reshape(n, self.gn_groups, -1)
                mean, var = g.mean(2), g.var(2, unbiased=False)
                rep = c // self.gn_groups
                return (
                    mean.repeat_interleave(rep, 1)[:, :, None, None],
                    var.repeat_interleave(rep, 1)[:, :, None, None],
                )
            if name == "bn" and not self.training:
                return self.running_mean[None, :, None, None], self.running_var[None, :, None, None]
            mean = x.mean(dims[name], keepdim=True)
            var = x.var(dims[name], unbiased=False, keepdim=True)
            if name == "bn":
                with torch.no_grad():
                    count = n * h * w
                    unbiased = var.flatten() * (count / max(count - 1, 1))
                    self.running_mean.lerp_(mean.flatten(), self.momentum)
                    self.running_var.lerp_(unbiased, self.momentum)
                    self.num_batches_tracked += 1
            return mean, var

        moments = {name: stats(name) for name in self.normalizers}
        mean_in, var_in = moments["in"] if "in" in moments else stats("in")
        if self.fixed_ratios is not None:
            fixed = self.fixed_ratios.to(x)
            lam = fixed if fixed.dim() == 2 else fixed[None].expand(n, -1)
        else:
            logits = []
            for k, (mean, var) in enumerate(moments.values()):
                offset = ((mean_in - mean) / torch.sqrt(var + self.eps)).expand(n, c, 1, 1)
                spread = torch.log(torch.sqrt(var_in + self.eps) / torch.sqrt(var + self.eps))
                d = torch.cat([offset.flatten(1), spread.expand(n, c, 1, 1).flatten(1)], 1)
                a = F.relu(self.ratio_fc1(d))
                logits.append(self.ratio_fc2(a)[:, 0] + self.ratio_bias[k])
            lam = torch.softmax(torch.stack(logits, 1), 1)
        self.last_ratios = lam.detach()
        y = sum(
            lam[:, k, None, None, None] * (x - mean) / torch.sqrt(var + self.eps)
            for k, (mean, var) in enumerate(moments.values())
        )
        if self.affine:
            y = y * self.weight[:, None, None] + self.bias[:, None, None]
        return y

    def reset_running_stats(self) -> None:
        """Running mean 0, variance 1, batch count 0 (as ``BatchNorm2d``); no-op without BN."""
        if "bn" in self.normalizers:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def extra_repr(self) -> str:
        """The layer's arguments, as ``BatchNorm2d`` shows its own in ``repr(model)``."""
        return (
            f"{self.num_features}, normalizers={self.normalizers}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}, "
            f"hidden={self.ratio_fc1.out_features}, sync_bn_stats={self.sync_bn_stats}"
        )


def _moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(sample, channel) mean and mean of squares in float32: one read of x each.

    Not ``torch.var_mean``: on CPU it is 10-25x slower at these shapes.
    """
    xf = (x if x.dtype in (torch.float32, torch.float64) else x.float()).flatten(2)
    return xf.mean(2), torch.linalg.vecdot(xf, xf) / xf.shape[2]


def _scale_shift(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    return torch.addcmul(
        shift.to(x.dtype)[:, :, None, None], x, scale.to(x.dtype)[:, :, None, None]
    )


def _param_grad(grad: Tensor, like: Tensor | None) -> Tensor | None:
    """The gradient of a parameter, in its dtype, or None if it takes none."""
    return grad.to(like.dtype) if like is not None and like.requires_grad else None


class _Graph(NamedTuple):
    """What the code of a layer's small graph depends on besides its tensors. Layers of one
    configuration share it, so one compiled graph (dynamic shapes) serves all of them."""

    rows: tuple[str, ...]  # ``_stats_rows``
    k: int  # normalizers
    training: bool
    fixed: bool  # ``fix_ratios`` in use
    eps: float
    gn_groups: int
    affine: bool
    synced: bool  # BN statistics all-reduced (never compiled: the all-reduce stays eager)


_COMPILED: dict = {}  # eager function -> its torch.compile'd twin
COMPILE = {"enabled": False}  # ``compile_layers`` switches it


def compile_layers(enabled: bool = True) -> None:
    """Run every EN layer - its full-size passes and its small (N, K, C) graph, forward and
    backward - as one compiled graph each way per layer configuration (``torch.compile``,
    dynamic shapes, no graph break; one compilation serves all layers of a configuration)
    instead of ~75 / ~120 separate operations. The first step compiles (~50 s on 2 CPU cores)
    and needs a C++ compiler. Layers whose BN statistics are all-reduced stay eager; on CPU in
    float32/64 the C++ kernel (``cpu_kernel``) takes precedence."""
    COMPILE["enabled"] = enabled


def _kernel(fn, graph: _Graph):
    """``fn`` itself, or its compiled twin when ``compile_layers`` is on. Every size is
    dynamic (parameters are passed as plain tensors: torch.compile takes a Parameter's sizes
    as constants), so one graph serves every layer of a configuration; the compiler still
    splits on a size range (reductions over more than 4096 elements are compiled apart).
    Measured: one graph per layer shape instead compiles 20 times per function for about the
    same speed."""
    if not COMPILE["enabled"] or graph.synced:
        return fn
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
    compiled = _COMPILED[fn]

    def plain(t):
        return t.detach() if isinstance(t, nn.Parameter) else t

    def call(*args):
        return compiled(*(tuple(map(plain, a)) if type(a) is tuple else plain(a) for a in args))

    return call


def _batch_moments(m: Tensor, q: Tensor, synced: bool) -> tuple[Tensor, Tensor, int]:
    """BN mean and E[x^2] (1, C) over the batch and its size; ``synced``: over every process
    (two (C,) sums and a count in one all-reduce)."""
    if synced:
        n = torch.full((1,), m.shape[0], dtype=m.dtype, device=m.device)
        total = torch.cat([m.sum(0), q.sum(0), n])
        dist.all_reduce(total)
        c, count = m.shape[1], total[-1]
        return (total[:c] / count)[None], (total[c : 2 * c] / count)[None], int(count)
    return m.mean(0, keepdim=True), q.mean(0, keepdim=True), m.shape[0]


def _affine(
    affine: bool, scale: Tensor, shift: Tensor, weight: Tensor | None, bias: Tensor | None
) -> tuple[Tensor, Tensor]:
    if not affine:
        return scale, shift
    w, b = weight.to(scale), bias.to(scale)
    return scale * w, torch.addcmul(b, shift, w)


def _layer_forward(
    g: _Graph,
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    fixed_ratios: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    *ratio_params: Tensor,
) -> tuple:
    """The whole layer forward: (output, scale after the affine, the fields of ``_Small``)."""
    m, q = _moments(x)
    with torch.autocast(x.device.type, enabled=False):  # statistics stay float32
        small = _graph_forward(
            g, m, q, x.shape[2] * x.shape[3], running_mean, running_var, fixed_ratios, *ratio_params
        )
        scale, shift = _affine(g.affine, small[_SCALE], small[_SHIFT], weight, bias)
    return (_scale_shift(x, scale, shift), scale, *small)


def _layer_backward(
    g: _Graph,
    grad: Tensor,
    x: Tensor,
    scale_out: Tensor,
    bn_count: int,
    small: tuple,
    weight: Tensor | None,
    fc1_w: Tensor,
    fc2_w: Tensor,
) -> tuple:
    """The whole layer backward: the input gradient and the parameters' (``_params`` order,
    None where there is none)."""
    dtype = small[0].dtype
    gf = grad.to(dtype).flatten(2)
    xf = x.to(dtype).flatten(2)
    hw = gf.shape[2]
    g_a = torch.linalg.vecdot(gf, xf)  # d loss / d scale_out   (N, C)
    g_b = gf.sum(2)  # d loss / d shift_out   (N, C)
    g_m, g_q, *grads = _graph_backward(
        g,
        hw,
        bn_count,
        g_a,
        g_b,
        *small,
        None if weight is None else weight.to(dtype),
        fc1_w.to(dtype),
        fc2_w.to(dtype),
    )
    grad_x = torch.addcmul((g_m / hw)[:, :, None], xf, (2 * g_q / hw)[:, :, None])
    grad_x.addcmul_(gf, scale_out[:, :, None])
    return (grad_x.view_as(x).to(x.dtype), *grads)


def _graph_forward(
    g: _Graph,
    m: Tensor,
    q: Tensor,
    hw: int,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    fixed_ratios: Tensor | None,
    fc1_w: Tensor,
    fc1_b: Tensor,
    fc2_w: Tensor,
    fc2_b: Tensor,
    ratio_bias: Tensor,
) -> tuple:
    """The small forward graph: the fields of ``_Small`` from the IN moments (N, C)."""
    bn_m = bn_q = None
    bn_count = m.shape[0]
    if g.training and "bn" in g.rows:
        bn_m, bn_q, bn_count = _batch_moments(m, q, g.synced)
    fc1_w, fc1_b, fc2_w, fc2_b, ratio_bias = (
        t.to(m) for t in (fc1_w, fc1_b, fc2_w, fc2_b, ratio_bias)
    )
    n, c = m.shape
    means, e2s, running = [], [], []
    batch_stats = m.new_empty(0)
    for name in g.rows:
        if name == "in":
            mk, ek = m, q
        elif name == "ln":
            mk, ek = m.mean(1, keepdim=True), q.mean(1, keepdim=True)
        elif name == "gn":
            size = c // g.gn_groups
            mk = m.view(n, g.gn_groups, size).mean(2).repeat_interleave(size, 1)
            ek = q.view(n, g.gn_groups, size).mean(2).repeat_interleave(size, 1)
        elif g.training:  # bn: batch statistics
            mk, ek = bn_m, bn_q
            count = bn_count * hw
            unbiased = (ek - mk.square()).clamp_min(0) * (count / max(count - 1, 1))
            batch_stats = torch.cat([mk, unbiased])
        else:  # bn: running statistics, no gradient
            mk = running_mean[None].to(m)
            ek = running_var[None].to(m) + mk.square()
            running.append(len(means))
        means.append(mk.expand(n, c))
        e2s.append(ek.expand(n, c))
    means_t, e2_t = torch.stack(means, 1), torch.stack(e2s, 1)  # (N, R, C)
    raw_var = e2_t - means_t.square()
    var = raw_var.clamp_min(0)
    if running:  # the running variance itself, not E[x^2] - m^2 of it
        var[:, running] = running_var.to(m)
    inv_std = (var + g.eps).rsqrt()
    k = g.k
    descriptors = hidden = None
    if g.fixed:
        fixed = fixed_ratios.to(m)
        lam = fixed if fixed.dim() == 2 else fixed[None].expand(n, k)
    else:
        k_in = g.rows.index("in")
        log_var = torch.log(var + g.eps)
        offset = (m[:, None] - means_t[:, :k]) * inv_std[:, :k]
        spread = 0.5 * (log_var[:, k_in : k_in + 1] - log_var[:, :k])
        descriptors = torch.cat([offset, spread], 2)  # (N, K, 2C)
        hidden = F.linear(descriptors, fc1_w, fc1_b)
        logits = F.linear(hidden.relu(), fc2_w).squeeze(2)
        lam = (logits + (fc2_b + ratio_bias)).softmax(1)
    lam_inv_std = lam[:, :, None] * inv_std[:, :k]
    scale = lam_inv_std.sum(1)
    shift = -(lam_inv_std * means_t[:, :k]).sum(1)
    mask = raw_var >= 0
    if running:
        mask[:, running] = False
    return (
        m,
        means_t,
        var,
        mask,
        inv_std,
        lam,
        lam_inv_std,
        descriptors,
        hidden,
        scale,
        shift,
        batch_stats,
        bn_count,
        g.synced,
    )


class _ExemplarNormFunction(torch.autograd.Function):
    """The whole EN layer with a hand-written backward.

    Passes over the full-size tensors (each one a read of the whole activation): forward 3
    (mean, mean of squares, ``x * A + B``), backward 3 (``sum(dy * x)``, ``sum(dy)``,
    ``dx = dy * A + x * P + Q``). Everything else is on (N, K, C) tensors.
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, layer: ExemplarNorm2d, *params: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The output, the (N, K) ratios and BN's batch statistics (no gradient flows back
        through the last two). Nothing is mutated here: the caller updates the running
        statistics (``torch.compile`` traces the function only without side effects)."""
        graph = layer._graph()
        weight, bias, *ratio_params = params
        y, scale, *small = _kernel(_layer_forward, graph)(
            graph, x, *layer._state(), weight, bias, *ratio_params
        )
        s = _Small(*small)
        ctx.save_for_backward(x)
        ctx.small, ctx.graph, ctx.params, ctx.scale = s, graph, params, scale
        lam, batch_stats = s.lam.clone(), s.batch_stats.clone()
        ctx.mark_non_differentiable(lam, batch_stats)
        return y, lam, batch_stats

    @staticmethod
    def backward(ctx, grad: Tensor, *_: Tensor | None) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        s, graph, params = ctx.small, ctx.graph, ctx.params
        weight, _, fc1_w, _, fc2_w, _, _ = params
        grad_x, *grads = _kernel(_layer_backward, graph)(
            graph, grad, x, ctx.scale, s.bn_count, tuple(s[:_BACKWARD]), weight, fc1_w, fc2_w
        )
        grads = [None if gr is None else _param_grad(gr, p) for gr, p in zip(grads, params)]
        return (grad_x, None, *grads)


def _graph_backward(
    g: _Graph,
    hw: int,
    bn_count: int,
    g_a: Tensor,
    g_b: Tensor,
    m: Tensor,
    all_means: Tensor,
    all_var: Tensor,
    var_mask: Tensor,
    all_inv_std: Tensor,
    lam: Tensor,
    lam_inv_std: Tensor,
    descriptors: Tensor | None,
    hidden: Tensor | None,
    scale: Tensor,
    shift: Tensor,
    weight: Tensor | None,
    fc1_w: Tensor,
    fc2_w: Tensor,
) -> tuple:
    """The small backward graph: from the gradients w.r.t. the output's scale and shift (before
    the affine: ``g_a``, ``g_b``) to those w.r.t. the IN moments and every parameter (in
    ``_params`` order; None where there is none)."""
    n, c = m.shape
    k = g.k
    g_weight = g_bias = None
    if g.affine:
        g_weight = (g_a * scale + g_b * shift).sum(0)
        g_bias = g_b.sum(0)
        g_a, g_b = g_a * weight, g_b * weight
    # scale = sum_k lam_k u_k, shift = -sum_k lam_k u_k m_k   (u_k = 1 / s_k)
    means, inv_std = all_means[:, :k], all_inv_std[:, :k]
    g_mix = g_a[:, None] - g_b[:, None] * means  # d loss / d (lam_k u_k)   (N, K, C)
    g_means = -lam_inv_std * g_b[:, None]
    g_inv_std = g_mix * lam[:, :, None]
    g_m = torch.zeros_like(m)
    g_log_var = g_spread = None
    ratio_grads = [None] * 5
    if descriptors is not None:
        g_lam = (g_mix * inv_std).sum(2)
        g_logits = lam * (g_lam - (lam * g_lam).sum(1, keepdim=True))  # softmax backward
        g_hidden = g_logits[:, :, None] * fc2_w * (hidden > 0)  # (N, K, h)
        flat_g_hidden = g_hidden.flatten(0, 1)
        g_desc = (flat_g_hidden @ fc1_w).view(n, k, 2 * c)
        ratio_grads = [
            flat_g_hidden.T @ descriptors.flatten(0, 1),
            flat_g_hidden.sum(0),
            g_logits.flatten()[None] @ hidden.relu().flatten(0, 1),
            g_logits.sum().reshape(1),
            g_logits.sum(0),
        ]
        g_offset, g_spread = g_desc[:, :, :c], g_desc[:, :, c:]
        # offset_k = (m - m_k) u_k, spread_k = (log v_in - log v_k) / 2
        g_offset_u = g_offset * inv_std
        g_m = g_m + g_offset_u.sum(1)
        g_means = g_means - g_offset_u
        g_inv_std = g_inv_std + g_offset * (m[:, None] - means)
        g_log_var = -0.5 * g_spread
    rows = all_means.shape[1]
    if rows > k:  # the extra IN row: used by the descriptors only
        pad = (0, 0, 0, rows - k)
        g_means, g_inv_std = F.pad(g_means, pad), F.pad(g_inv_std, pad)
        g_log_var = None if g_log_var is None else F.pad(g_log_var, pad)
    # u = exp(-log(v + eps) / 2)
    g_var = -0.5 * g_inv_std * all_inv_std
    if g_log_var is not None:
        k_in = g.rows.index("in")
        g_log_var[:, k_in] += 0.5 * g_spread.sum(1)
        g_var = g_var + g_log_var
    # then v = max(E[x^2] - m^2, 0): the gradient w.r.t. E[x^2], and m_k's share
    g_var = torch.where(var_mask, g_var / (all_var + g.eps), 0)
    g_means = g_means - 2 * all_means * g_var
    g_m, g_q = _reduce_to_moments(g, bn_count, g_means, g_var, g_m)
    return (g_m, g_q, g_weight, g_bias, *ratio_grads)


def _reduce_to_moments(
    g: _Graph, bn_count: int, g_means: Tensor, g_e2: Tensor, g_m: Tensor
) -> tuple[Tensor, Tensor]:
    """Each row's gradients w.r.t. its (mean, E[x^2]) (N, R, C), summed back onto the IN
    moments (N, C) they were derived from."""
    n, c = g_m.shape
    g_q = torch.zeros_like(g_m)
    for row, name in enumerate(g.rows):
        gm, ge = g_means[:, row], g_e2[:, row]
        if name == "in":
            g_m = g_m + gm
            g_q = g_q + ge
        elif name == "ln":
            g_m = g_m + gm.sum(1, keepdim=True) / c
            g_q = g_q + ge.sum(1, keepdim=True) / c
        elif name == "gn":
            size = c // g.gn_groups
            g_m = g_m + (gm.view(n, -1, size).sum(2) / size).repeat_interleave(size, 1)
            g_q = g_q + (ge.view(n, -1, size).sum(2) / size).repeat_interleave(size, 1)
        elif g.training:  # bn: batch statistics (running ones take no gradient)
            both = torch.cat([gm.sum(0), ge.sum(0)])
            if g.synced:
                dist.all_reduce(both)
            g_m = g_m + both[:c] / bn_count
            g_q = g_q + both[c:] / bn_count
    return g_m, g_q
