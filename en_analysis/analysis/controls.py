"""The controls for what EN learned, from the head inputs stored with every ratio file.

Each EN layer's ratios are a function (the learned *head*: FC -> ReLU -> FC -> softmax) of the
per-channel statistics of that layer's input. ``extract`` stores those statistics for every
image - the IN mean and log standard deviation of every channel of every EN layer
(``HeadInputs``), recorded in the checkpoint's own forward pass - so that, at analysis time:

- ``random_head_ratios``: the ratios that *random* heads would give on exactly those inputs
  (the same downstream activations; only the head differs): PyTorch's default ``Linear``
  initialisation, seeded per head (``analysis.control_seed``), no per-normalizer bias, and each
  layer's logits scaled so that the spread of its log-ratios matches the learned ratios'. If
  the learned ratios cluster no better than random heads do, the category structure comes
  from the statistics any head reads, not from what EN learned.
- ``statistics_space``: the head inputs themselves as a feature space (z-scored), what any
  function of the statistics could reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .spaces import scale_ratios, standardize

if TYPE_CHECKING:
    from ..run.folder import Ratios

MAX_COMPONENTS = 512  # the statistics space keeps at most this many principal components
# The stored statistics' type. Measured on the default run's last checkpoint: ratios recomputed
# from float16 statistics differ from the recorded ones by at most 0.9% (median 0.3%) of a
# layer's spread across images, and the statistics space's distances by at most 6e-5
# (relative); the values lie within +-6, far inside float16's range. Half of float32's disk:
# 26.6 KB per image at width 16 (13,280 values), 175 MB for the default's 13 epochs x 500
# images, 3.5 GB for 13 epochs x 10,000 images.
STORED = np.float16


@dataclass
class HeadInputs:
    """What every EN layer's head reads, for N images: per channel, the IN mean and log
    standard deviation ``0.5 log(var + eps)`` (N, C_total, layers concatenated in forward
    order), and per layer what turns them into the head's descriptors in eval mode."""

    mean: np.ndarray  # (N, C_total)
    logstd: np.ndarray  # (N, C_total)
    channels: np.ndarray  # (L,) channels of each layer
    hidden: np.ndarray  # (L,) hidden units of each layer's head
    gn_groups: np.ndarray  # (L,) GN groups of each layer
    running_mean: np.ndarray  # (C_total,) BN running statistics (0 / 1 without BN)
    running_var: np.ndarray  # (C_total,)
    normalizers: list[str]
    eps: float

    @property
    def offsets(self) -> np.ndarray:
        """(L + 1,) where each layer's channels start (and the total)."""
        return np.concatenate([[0], np.cumsum(self.channels)])

    def layer(self, j: int) -> slice:
        start, stop = self.offsets[j : j + 2]
        return slice(int(start), int(stop))

    def descriptors(self, j: int) -> np.ndarray:
        """(N, K, 2C) float32: layer j's head input in eval mode, as ``ExemplarNorm2d``
        computes it - per normalizer k, the offset ``(m - m_k) / s_k`` and the log spread
        ``log(s_in / s_k)`` of every channel."""
        s = self.layer(j)
        m = self.mean[:, s].astype(np.float64)
        log_var_in = 2 * self.logstd[:, s].astype(np.float64)
        var_in = np.maximum(np.exp(log_var_in) - self.eps, 0)
        q = var_in + m**2  # E[x^2] per channel
        n, c = m.shape
        rows = []
        for name in self.normalizers:
            if name == "in":
                mk, var = m, var_in
            elif name == "ln":
                mk = m.mean(1, keepdims=True)
                var = np.maximum(q.mean(1, keepdims=True) - mk**2, 0)
            elif name == "gn":
                g = int(self.gn_groups[j])
                mk = m.reshape(n, g, -1).mean(2).repeat(c // g, 1)
                var = np.maximum(q.reshape(n, g, -1).mean(2).repeat(c // g, 1) - mk**2, 0)
            else:  # bn in eval mode: the running statistics
                mk = self.running_mean[s][None].astype(np.float64)
                var = self.running_var[s][None].astype(np.float64)
            log_var = np.log(var + self.eps)
            offset = (m - mk) * np.exp(-0.5 * log_var)
            spread = 0.5 * (log_var_in - log_var)
            rows.append(np.concatenate(np.broadcast_arrays(offset, spread), 1))
        return np.stack(rows, 1).astype(np.float32)

    @classmethod
    def from_arrays(cls, d: dict) -> HeadInputs | None:
        """From a ratio file's arrays (None when it has no head inputs)."""
        if "input_mean" not in d:
            return None
        return cls(
            mean=d["input_mean"].astype(np.float32),
            logstd=d["input_logstd"].astype(np.float32),
            channels=d["layer_channels"],
            hidden=d["head_hidden"],
            gn_groups=d["head_gn_groups"],
            running_mean=d["bn_running_mean"],
            running_var=d["bn_running_var"],
            normalizers=[str(n) for n in d["normalizers"]],
            eps=float(d["head_eps"]),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays ``from_arrays`` reads back (the per-image statistics as ``STORED``)."""
        return dict(
            input_mean=self.mean.astype(STORED),
            input_logstd=self.logstd.astype(STORED),
            layer_channels=self.channels,
            head_hidden=self.hidden,
            head_gn_groups=self.gn_groups,
            bn_running_mean=self.running_mean,
            bn_running_var=self.running_var,
            head_eps=np.float64(self.eps),
        )


def log_ratio_spread(ratios: np.ndarray) -> np.ndarray:
    """(L,) per layer, the standard deviation of the centred log-ratios over samples and
    normalizers: the spread of the logits that the softmax saw (it ignores a shared shift)."""
    logs = np.log(np.clip(ratios.astype(np.float64), 1e-12, None))
    return (logs - logs.mean(2, keepdims=True)).std((0, 2))


def head_weights(
    seed: int, layer: int, heads: range, channels: int, hidden: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The random heads' weights of one layer: fc1 (H, hidden, 2C), its bias (H, hidden) and
    fc2 (H, hidden), PyTorch's default ``Linear`` initialisation U(-1/sqrt(fan_in),
    1/sqrt(fan_in)). Head h's weights are the h-th block of one stream per (seed, layer), so a
    head is the same whichever others are drawn with it (the stream is advanced to the first)."""
    per_head = hidden * 2 * channels + 2 * hidden
    generator = np.random.PCG64([seed, layer])
    generator.advance(heads.start * per_head)
    u = np.random.Generator(generator).random((len(heads), per_head)) * 2 - 1
    fc1 = u[:, : hidden * 2 * channels].reshape(len(heads), hidden, 2 * channels)
    bias = u[:, hidden * 2 * channels : -hidden]
    fc2 = u[:, -hidden:]
    fan1, fan2 = (2 * channels) ** -0.5, hidden**-0.5
    return (fc1 * fan1).astype(np.float32), (bias * fan1).astype(np.float32), fc2 * fan2


def head_logits(inputs: HeadInputs, heads: range, seed: int) -> list[np.ndarray]:
    """Per layer, (H, N, K) logits of the random heads ``heads`` (``head_weights``; the last
    FC's bias is shared by every normalizer and cancels in the softmax, so it is left out)."""
    out = []
    for j, (c, h) in enumerate(zip(inputs.channels.tolist(), inputs.hidden.tolist())):
        fc1, bias, fc2 = head_weights(seed, j, heads, c, h)
        d = inputs.descriptors(j)  # (N, K, 2C)
        hidden = d.reshape(-1, 2 * c) @ fc1.reshape(-1, 2 * c).T + bias.reshape(-1)
        hidden = np.maximum(hidden, 0).reshape(*d.shape[:2], len(heads), h)
        logits = np.einsum("nkhj,hj->hnk", hidden, fc2.astype(np.float32))
        out.append(logits)
    return out


def random_head_ratios(
    inputs: HeadInputs, learned: np.ndarray, heads: range, seed: int
) -> np.ndarray:
    """(H, N, L, K) float32 ratios of the random heads ``heads`` on ``inputs``, each layer's
    centred logits scaled so that their spread matches the learned ratios'
    (``log_ratio_spread`` of ``learned``, (N, L, K)). Where the learned ratios do not vary
    (epoch 0: uniform) the random ones are uniform too."""
    target = log_ratio_spread(learned)
    ratios = []
    for j, logits in enumerate(head_logits(inputs, heads, seed)):
        centred = logits.astype(np.float64) - logits.mean(2, keepdims=True)
        spread = centred.std((1, 2))  # (H,)
        scaled = centred * (target[j] / np.maximum(spread, 1e-12))[:, None, None]
        scaled = np.exp(scaled - scaled.max(2, keepdims=True))
        ratios.append(scaled / scaled.sum(2, keepdims=True))
    return np.stack(ratios, 2).astype(np.float32)


def head_chunks(
    inputs: HeadInputs, learned: np.ndarray, n_heads: int, seed: int, chunk: int = 32
) -> Iterator[np.ndarray]:
    """``random_head_ratios`` of heads 0 .. n_heads - 1, ``chunk`` heads at a time."""
    for start in range(0, n_heads, chunk):
        yield random_head_ratios(inputs, learned, range(start, min(start + chunk, n_heads)), seed)


def statistics_space(inputs: HeadInputs) -> np.ndarray:
    """(N, D) the head inputs as a feature space: every channel's mean and log-std z-scored
    across images (as the ratios are), projected on their first ``MAX_COMPONENTS`` principal
    components. Distances are exact while N <= ``MAX_COMPONENTS`` (N images span at most N - 1
    dimensions); beyond, the projection keeps the largest variance."""
    x = standardize(np.concatenate([inputs.mean, inputs.logstd], 1))
    x -= x.mean(0)
    rank = min(len(x) - 1, x.shape[1], MAX_COMPONENTS)
    if rank < 1:
        return x[:, :0]
    if len(x) <= 4 * MAX_COMPONENTS:  # the principal components from the N x N Gram matrix
        values, vectors = np.linalg.eigh(x @ x.T)
        top = np.argsort(values)[::-1][:rank]
        return vectors[:, top] * np.sqrt(np.maximum(values[top], 0))
    from sklearn.utils.extmath import randomized_svd  # many images: only the leading ones

    u, s, _ = randomized_svd(x, rank, random_state=0)
    return u * s


SPACES = ("ratios", "pixels", "features", "statistics", "random-head")  # the spaces compared
CONTROLS = SPACES[1:]  # what the learned ratios are read against


def space_vectors(
    r: Ratios, pixels: np.ndarray, scaling: str, control_seed: int, names=SPACES
) -> dict[str, np.ndarray]:
    """The feature spaces of one epoch's evaluation images, each as (N, D) vectors: the ratios
    (``scaling``), the raw pixels, the penultimate features and the statistics (z-scored), and
    ``random-head``: the first random head's ratios (head 0 of ``analysis.control_seed``), as
    the ratios are scaled. A space the ratio file cannot give is left out."""
    out = {}
    for name in names:
        if name == "ratios":
            out[name] = scale_ratios(r.ratios, scaling)
        elif name == "pixels":
            out[name] = standardize(pixels)
        elif name == "features" and r.features is not None and r.features.size:
            out[name] = standardize(r.features)
        elif name == "statistics" and r.head_inputs is not None:
            out[name] = statistics_space(r.head_inputs)
        elif name == "random-head" and r.head_inputs is not None:
            heads = random_head_ratios(r.head_inputs, r.ratios, range(1), control_seed)
            out[name] = scale_ratios(heads[0], scaling)
    return out
