"""Collecting EN importance ratios: forward hooks (``RatioRecorder``), the random-head control
(``RandomHeads``) and one pass of images through a model recording both (``forward_subset``).
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .errors import UserError
from .nn import en_layers
from .nn.exemplar_norm import _moments


class RatioRecorder:
    """Context manager: hooks every EN layer and gathers the ratios each forward pass used.

    The hook reads the layer's ``last_ratios`` (set during its forward), so nothing is recomputed.
    With ``features=True`` it also keeps the input of the model's ``fc`` (the penultimate
    features). Each ``with`` block starts a new recording; hooks are removed on exit, also on
    error (and if entering fails half-way).
    """

    def __init__(self, model: nn.Module, features: bool = False) -> None:
        self.layers = en_layers(model)
        if not self.layers:
            raise UserError("the model has no ExemplarNorm2d layers: there are no ratios to record")
        pools = {tuple(layer.normalizers) for _, layer in self.layers}
        if len(pools) != 1:
            raise UserError(f"EN layers use different normalizer pools: {sorted(pools)}")
        self.layer_names = [name for name, _ in self.layers]
        self.normalizers = list(pools.pop())
        self.model = model
        self.features = features
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.clear()

    def clear(self) -> None:
        self._ratios: list[list[torch.Tensor]] = [[] for _ in self.layers]
        self._features: list[torch.Tensor] = []

    def __enter__(self) -> RatioRecorder:
        """Start a new recording: what an earlier ``with`` block recorded is cleared."""
        if self._handles:
            raise RuntimeError("this RatioRecorder is already recording (nested `with`)")
        fc = getattr(self.model, "fc", None)
        if self.features and not isinstance(fc, nn.Module):
            raise UserError("features=True needs a model with an `fc` classifier")
        self.clear()
        try:
            for i, (_, layer) in enumerate(self.layers):
                self._handles.append(layer.register_forward_hook(self._hook(i)))
            if self.features:
                self._handles.append(fc.register_forward_pre_hook(self._feature_hook))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, i: int):
        def hook(module, inputs, output) -> None:
            self._ratios[i].append(module.last_ratios.float().cpu())

        return hook

    def _feature_hook(self, module, inputs) -> None:
        self._features.append(inputs[0].detach().float().cpu())

    def ratios(self) -> np.ndarray:
        """All recorded ratios as (N, L, K) float32, samples in the order they were seen."""
        counts = {sum(len(t) for t in per_layer) for per_layer in self._ratios}
        if len(counts) != 1:
            raise RuntimeError("EN layers saw different numbers of samples; call clear() first")
        if not self._ratios[0]:
            return np.zeros((0, len(self.layers), len(self.normalizers)), np.float32)
        return torch.stack([torch.cat(r) for r in self._ratios], 1).numpy()

    def penultimate(self) -> np.ndarray:
        return torch.cat(self._features).numpy() if self._features else np.zeros((0, 0), np.float32)


def log_ratio_spread(ratios: np.ndarray) -> np.ndarray:
    """(L,) per layer, the standard deviation of the centred log-ratios over samples and
    normalizers: the spread of the logits that the softmax saw (it ignores a shared shift)."""
    logs = np.log(np.clip(ratios.astype(np.float64), 1e-12, None))
    return (logs - logs.mean(2, keepdims=True)).std((0, 2))


class RandomHeads:
    """Context manager: the control for what EN learned. During each forward pass it computes,
    at every EN layer and from that layer's own input statistics, the ratios that a randomly
    re-initialised ratio sub-network would give (PyTorch's default ``Linear`` initialisation,
    seeded, the last layer not zero, no per-normalizer bias). The forward pass itself is the
    model's: the statistics are exactly those the learned ratios came from."""

    def __init__(self, model: nn.Module, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.pairs = []
        for _, layer in en_layers(model):
            head = copy.deepcopy(layer).eval()
            head.fixed_ratios = None
            with torch.no_grad():
                for fc in (head.ratio_fc1, head.ratio_fc2):
                    bound = fc.in_features**-0.5
                    for p in (fc.weight, fc.bias):
                        p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
                head.ratio_bias.zero_()
            self.pairs.append((layer, head))
        self._ratios: list[list[torch.Tensor]] = [[] for _ in self.pairs]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> RandomHeads:
        for i, (layer, head) in enumerate(self.pairs):

            def hook(module, inputs, output, i=i, head=head) -> None:
                x = inputs[0]
                m, q = _moments(x)
                with torch.autocast(x.device.type, enabled=False):
                    lam = head.coefficients(m, q, x.shape[2] * x.shape[3])[2]
                self._ratios[i].append(lam.float().cpu())

            self._handles.append(layer.register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def ratios(self, learned: np.ndarray) -> np.ndarray:
        """(N, L, K) random-head ratios, each layer's logits scaled so that the spread of its
        log-ratios matches the learned ratios' (``log_ratio_spread``)."""
        raw = torch.stack([torch.cat(r) for r in self._ratios], 1).numpy().astype(np.float64)
        logs = np.log(np.clip(raw, 1e-300, None))
        logs -= logs.mean(2, keepdims=True)
        scale = log_ratio_spread(learned) / np.maximum(log_ratio_spread(raw), 1e-12)
        scaled = np.exp(logs * scale[None, :, None])
        return (scaled / scaled.sum(2, keepdims=True)).astype(np.float32)


def forward_subset(
    model: nn.Module,
    images: DataLoader,
    device: torch.device,
    features: bool = True,
    control_seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Run images through ``model`` in eval mode, recording ratios, features and predictions,
    and with ``control_seed`` the random-head control (``RandomHeads``) in the same pass."""
    model.eval().to(device)
    preds = []
    control = RandomHeads(model, control_seed) if control_seed is not None else nullcontext()
    with RatioRecorder(model, features=features) as rec, control as heads, torch.no_grad():
        for x, _ in images:
            preds.append(model(x.to(device)).argmax(1).cpu())
    out = dict(
        ratios=rec.ratios(),
        predictions=torch.cat(preds).numpy(),
        layer_names=np.array(rec.layer_names),
        normalizers=np.array(rec.normalizers),
    )
    if features:
        out["features"] = rec.penultimate()
    if heads is not None:
        out["random_head"] = heads.ratios(out["ratios"])
    return out
