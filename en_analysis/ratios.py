"""Collecting EN importance ratios: forward hooks (``RatioRecorder``) and per-checkpoint extraction.

``extract`` runs the evaluation subset (the same images for every epoch) through each checkpoint
in eval mode and writes ``ratios/epoch-XXX.npz``: ratios (N, L, K), labels, sample indices,
layer and normalizer names, category names and synsets, the penultimate features, predictions.
"""

from __future__ import annotations

import copy
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from .checkpoints import list_checkpoints, load_checkpoint, model_from_checkpoint
from .config import Config, read_config
from .data import Datasets, build_datasets, evaluation_subset
from .errors import UserError
from .io import npz_up_to_date, save_npz
from .nn import en_layers
from .nn.exemplar_norm import _moments

PIXEL_SIDE = 32  # raw-pixel baseline: images are average-pooled to at most 32 x 32


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


@dataclass
class Extraction:
    """What ``extract`` did: epochs written, skipped as up to date, and failures (path: message)."""

    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def ratios_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / "ratios" / f"epoch-{epoch:03d}.npz"


def _subset_settings(config: Config) -> dict:
    a = config.analysis
    return dict(
        categories=list(a.categories),
        per_category=a.per_category,
        subset_seed=a.subset_seed,
        dataset=config.data.dataset,
        root=config.data.root,
    )


def select_epochs(available: list[int], wanted: list[int] | None, what: str) -> list[int]:
    """The wanted epochs (all if None/empty), each of which must be available."""
    if not wanted:
        return available
    missing = [e for e in wanted if e not in available]
    if missing:
        raise UserError(
            f"epoch(s) {', '.join(map(str, missing))} have no {what}; available: "
            f"{', '.join(map(str, available)) or 'none'}"
        )
    return list(wanted)


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


def evaluation_images(config: Config, data: Datasets | None = None) -> tuple[Datasets, np.ndarray]:
    """The run's datasets and the evaluation subset (held-out indices, category-grouped)."""
    data = data or build_datasets(config.data)
    a = config.analysis
    idx = evaluation_subset(
        data.heldout_labels, data.classes, a.categories, a.per_category, a.subset_seed
    )
    return data, idx


def save_pixels(run_dir: Path, data: Datasets, idx: np.ndarray, settings: str) -> Path:
    """The evaluation images' raw pixels (pooled to <= 32 x 32), the input baseline for metrics."""
    path = Path(run_dir) / "ratios" / "pixels.npz"
    images = torch.stack([data.heldout[int(i)][0] for i in idx])
    if images.shape[-1] > PIXEL_SIDE:
        images = F.adaptive_avg_pool2d(images, PIXEL_SIDE)
    return save_npz(
        path,
        pixels=images.flatten(1).numpy().astype(np.float32),
        labels=data.heldout_labels[idx],
        sample_index=idx,
        settings=settings,
    )


def _gather_shards(out: dict[str, np.ndarray], world: int) -> dict[str, np.ndarray]:
    """Put the per-sample arrays of every process back into the subset's order."""
    import torch.distributed as dist

    shards: list[dict | None] = [None] * world
    dist.all_gather_object(shards, out)
    merged = dict(out)
    for key in ("ratios", "random_head", "predictions", "features"):
        n = sum(len(sh[key]) for sh in shards)
        full = np.empty((n, *out[key].shape[1:]), out[key].dtype)
        for rank, sh in enumerate(shards):
            full[rank::world] = sh[key]
        merged[key] = full
    return merged


def extract(
    run_dir: Path | str,
    epochs: list[int] | None = None,
    config: Config | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> Extraction:
    """Write ``ratios/epoch-XXX.npz`` for each checkpoint of a run (skipping up-to-date ones).

    A checkpoint that cannot be read or does not fit is recorded in ``failed`` and the others
    are still extracted.
    """
    run_dir = Path(run_dir)
    config = config or read_config(run_dir / "config.toml")
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise UserError(f"{run_dir} has no checkpoints (run `en-analysis train` first)")
    chosen = select_epochs(list(checkpoints), epochs or config.analysis.epochs, "checkpoint")
    settings = json.dumps(_subset_settings(config), sort_keys=True)
    result = Extraction()
    todo = []
    for epoch in chosen:
        if not force and npz_up_to_date(ratios_path(run_dir, epoch), checkpoints[epoch], settings):
            result.skipped.append(epoch)
        else:
            todo.append(epoch)
    if not todo:
        return result
    from .train import setup_process

    proc = setup_process(device)
    data, idx = evaluation_images(config)
    pixels = Path(run_dir) / "ratios" / "pixels.npz"
    if proc.main and (force or not npz_up_to_date(pixels, run_dir / "config.toml", settings)):
        save_pixels(run_dir, data, idx, settings)
    # under torchrun each process takes every world-th sample: no padding, no duplicates
    loader = DataLoader(
        Subset(data.heldout, idx[proc.rank :: proc.world].tolist()),
        batch_size or config.analysis.batch_size,
        shuffle=False,
    )
    bar = tqdm(todo, desc="extract", unit="epoch", disable=not (progress and proc.main))
    for epoch in bar:
        path = checkpoints[epoch]
        try:
            state = load_checkpoint(path)
            if state["in_channels"] != data.in_channels:
                raise UserError(
                    f"{path} expects {state['in_channels']}-channel images but the data has "
                    f"{data.in_channels} (grayscale vs RGB?)"
                )
            if list(state["classes"]) != data.classes:
                raise UserError(f"{path} was trained on other classes than {config.data.dataset}")
            seed = np.random.SeedSequence([config.analysis.tsne_seed, epoch]).generate_state(1)
            model = model_from_checkpoint(state, path)
            out = forward_subset(model, loader, proc.device, control_seed=int(seed[0]))
        except UserError as e:
            result.failed[str(path)] = str(e)
            continue
        if proc.world > 1:
            out = _gather_shards(out, proc.world)
        if not proc.main:
            continue
        save_npz(
            ratios_path(run_dir, epoch),
            **out,
            labels=data.heldout_labels[idx],
            sample_index=idx,
            categories=np.array(data.classes),
            synsets=np.array(data.synsets),
            epoch=epoch,
            settings=settings,
        )
        result.written.append(epoch)
    return result
