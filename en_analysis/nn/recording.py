"""Collecting EN importance ratios: forward hooks (``RatioRecorder``) and one pass of images
through a model recording them with what the heads read (``forward_subset``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..analysis.controls import HeadInputs
from ..core.errors import UserError
from . import en_layers
from .exemplar_norm import _moments


class RatioRecorder:
    """Context manager: hooks every EN layer and gathers the ratios each forward pass used.

    The hook reads the layer's ``last_ratios`` (set during its forward), so nothing is recomputed.
    With ``features=True`` it also keeps the input of the model's ``fc`` (the penultimate
    features); with ``inputs=True`` what each layer's head read (``head_inputs``: the per-channel
    mean and log-std of the layer's input). Each ``with`` block starts a new recording; hooks
    are removed on exit, also on error (and if entering fails half-way).
    """

    def __init__(self, model: nn.Module, features: bool = False, inputs: bool = False) -> None:
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
        self.inputs = inputs
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.clear()

    def clear(self) -> None:
        self._ratios: list[list[torch.Tensor]] = [[] for _ in self.layers]
        self._inputs: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in self.layers]
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
            if self.inputs:  # the statistics the head read: IN mean and log-std per channel
                m, q = _moments(inputs[0].detach())
                logstd = 0.5 * torch.log((q - m * m).clamp_min(0) + module.eps)
                self._inputs[i].append((m.float().cpu(), logstd.float().cpu()))

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

    def head_inputs(self) -> HeadInputs:
        """What every layer's head read (``HeadInputs``), samples in the order they were seen."""
        if not self.inputs:
            raise RuntimeError("RatioRecorder(inputs=True) records the head inputs")
        layers = [layer for _, layer in self.layers]
        bn = [
            (layer.running_mean, layer.running_var)
            if "bn" in layer.normalizers
            else (torch.zeros(layer.num_features), torch.ones(layer.num_features))
            for layer in layers
        ]
        return HeadInputs(
            mean=torch.cat([torch.cat([m for m, _ in r]) for r in self._inputs], 1).numpy(),
            logstd=torch.cat([torch.cat([s for _, s in r]) for r in self._inputs], 1).numpy(),
            channels=np.array([layer.num_features for layer in layers]),
            hidden=np.array([layer.ratio_fc1.out_features for layer in layers]),
            gn_groups=np.array([layer.gn_groups for layer in layers]),
            running_mean=torch.cat([m for m, _ in bn]).float().cpu().numpy(),
            running_var=torch.cat([v for _, v in bn]).float().cpu().numpy(),
            normalizers=list(self.normalizers),
            eps=float(layers[0].eps),
        )

    def penultimate(self) -> np.ndarray:
        return torch.cat(self._features).numpy() if self._features else np.zeros((0, 0), np.float32)


def forward_subset(
    model: nn.Module, images: DataLoader, device: torch.device, features: bool = True
) -> dict[str, np.ndarray]:
    """Run images through ``model`` in eval mode, recording ratios, what the heads read
    (``HeadInputs``, for the controls), features and predictions."""
    model.eval().to(device)
    preds = []
    with RatioRecorder(model, features=features, inputs=True) as rec, torch.no_grad():
        for x, _ in images:
            preds.append(model(x.to(device)).argmax(1).cpu())
    out = dict(
        ratios=rec.ratios(),
        predictions=torch.cat(preds).numpy(),
        layer_names=np.array(rec.layer_names),
        normalizers=np.array(rec.normalizers),
        **rec.head_inputs().arrays(),
    )
    if features:
        out["features"] = rec.penultimate()
    return out
