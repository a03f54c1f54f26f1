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
from typing import TYPE_CHECKING

import numpy as np

from ..nn.recording import HeadInputs
from ..run.tables import Space
from .spaces import scale_ratios, standardize

if TYPE_CHECKING:
    from ..run.folder import Ratios

MAX_COMPONENTS = 512  # the statistics space keeps at most this many principal components


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


# the spaces compared, in the verdict's order
SPACES = (Space.RATIOS, Space.PIXELS, Space.FEATURES, Space.STATISTICS, Space.RANDOM_HEAD)
# what the learned ratios are read against, in the tables' order
CONTROLS = (Space.RANDOM_HEAD, Space.STATISTICS, Space.FEATURES, Space.PIXELS)


def space_vectors(
    r: Ratios, pixels: np.ndarray | None, scaling: str, control_seed: int, names=SPACES
) -> dict[str, np.ndarray]:
    """The feature spaces of one epoch's evaluation images, each as (N, D) vectors: the ratios
    (``scaling``), the raw pixels, the penultimate features and the statistics (z-scored), and
    ``random-head``: the first random head's ratios (head 0 of ``analysis.control_seed``), as
    the ratios are scaled. A space the ratio file (or ``pixels``, None when not read) cannot
    give is left out."""
    out = {}
    for name in names:
        if name == Space.RATIOS:
            out[name] = scale_ratios(r.ratios, scaling)
        elif name == Space.PIXELS and pixels is not None:
            out[name] = standardize(pixels)
        elif name == Space.FEATURES and r.features is not None and r.features.size:
            out[name] = standardize(r.features)
        elif name == Space.STATISTICS and r.head_inputs is not None:
            out[name] = statistics_space(r.head_inputs)
        elif name == Space.RANDOM_HEAD and r.head_inputs is not None:
            heads = random_head_ratios(r.head_inputs, r.ratios, range(1), control_seed)
            out[name] = scale_ratios(heads[0], scaling)
    return out
