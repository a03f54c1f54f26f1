"""Training with per-epoch checkpoints, exact resume, and torchrun/DDP when launched by it.

Every source of randomness is re-seeded from (seed, epoch) at the start of each epoch, and the
checkpoint holds the weights, BN statistics and optimizer state, so a resumed run ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
import uuid
import warnings
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from ..core.errors import UserError
from ..core.io import atomic_write_text, read_csv, run_lock, write_csv
from ..core.layout import RunLayout, epoch_files
from ..data import Datasets, balanced_subset, build_datasets
from ..nn import cpu_kernel
from ..nn.exemplar_norm import compile_layers
from ..settings.config import Config, TrainConfig, read_config, save_config
from ..steps.changes import Changes
from .checkpoints import build_model, check_owner, load_checkpoint, run_identity, save_checkpoint
from .distributed import Process, all_sum, setup_process

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]


def lr_at(cfg: TrainConfig, epoch: int, progress: float = 1.0) -> float:
    """Step schedule: x lr_gamma after each epoch in lr_drops; linear warm-up (progress 0..1)."""
    lr = cfg.lr * cfg.lr_gamma ** sum(d < epoch for d in cfg.lr_drops)
    done = epoch - 1 + progress
    if cfg.warmup_epochs and done < cfg.warmup_epochs:
        lr *= max(done, 1e-3) / cfg.warmup_epochs
    return lr


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD; the EN ratio sub-network gets ``ratio_lr_mult`` x lr and its own weight decay.
    Fused (one kernel for every parameter): the optimizer's time per default epoch went from
    1.2 s to 0.35 s (benchmarks/epoch.py)."""
    ratio, rest = [], []
    for name, p in model.named_parameters():
        (ratio if ".ratio_" in f".{name}" else rest).append(p)
    groups = [{"params": rest, "lr_mult": 1.0, "weight_decay": cfg.weight_decay}]
    if ratio:
        groups.append(
            {"params": ratio, "lr_mult": cfg.ratio_lr_mult, "weight_decay": cfg.ratio_weight_decay}
        )
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=True)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    torch.manual_seed(seed * 1_000_003 + epoch * 7_919 + rank)


def _autocast(cfg: TrainConfig, device: torch.device):
    if not cfg.amp:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def evaluate(
    model: nn.Module, loader: DataLoader, proc: Process, cfg: TrainConfig
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the loader's samples, summed across processes."""
    model.eval()
    loss_sum = correct = count = 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(proc.device), y.to(proc.device)
            if cfg.channels_last:
                x = x.to(memory_format=torch.channels_last)
            with _autocast(cfg, proc.device):
                logits = model(x)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += float((logits.argmax(1) == y).sum())
            count += len(y)
    loss_sum, correct, count = all_sum([loss_sum, correct, count], proc)
    return loss_sum / max(count, 1), correct / max(count, 1)


def _build_cpu_kernel(report: bool) -> None:
    """Build the EN layer's C++ kernel before the first step (once per machine, cached), so
    that the pause is explained; without a compiler the Python layer runs (one warning)."""
    start = time.perf_counter()
    if cpu_kernel.available() and report and time.perf_counter() - start > 2:
        seconds = time.perf_counter() - start
        tqdm.write(f"built the EN layer's C++ kernel in {seconds:.0f} s (cached for later runs)")


def _loaders(
    data: Datasets, config: Config, proc: Process
) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Training batches, the per-epoch validation subset, and the whole held-out split."""
    t = config.train
    per_process = t.batch_size // proc.world
    if per_process < 2:
        raise UserError(f"train.batch_size {t.batch_size} is too small for {proc.world} processes")
    if len(data.train) < per_process:
        raise UserError(
            f"the training split has {len(data.train)} samples, fewer than one batch "
            f"({per_process}); lower train.batch_size"
        )
    sampler = DistributedSampler(
        data.train,
        num_replicas=proc.world,
        rank=proc.rank,
        shuffle=True,
        seed=t.seed,
        drop_last=True,
    )
    cuda = proc.device.type == "cuda"
    common = dict(
        num_workers=config.data.num_workers,
        pin_memory=cuda,
        persistent_workers=config.data.num_workers > 0,
    )
    train = DataLoader(data.train, per_process, sampler=sampler, drop_last=True, **common)

    def held_out(n: int) -> DataLoader:
        idx = balanced_subset(data.heldout_labels, n, 1)[proc.rank :: proc.world]
        return DataLoader(
            Subset(data.heldout, idx.tolist()), max(per_process, 64), shuffle=False, **common
        )

    return train, held_out(config.data.val_samples), held_out(0)


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    epoch: int,
    proc: Process,
    progress: bool,
) -> tuple[float, float]:
    model.train()
    loader.sampler.set_epoch(epoch)
    loss_sum = correct = count = 0.0
    steps = len(loader)
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}/{cfg.epochs}",
        leave=False,
        disable=not (progress and proc.main),
        unit="batch",
    )
    for step, (x, y) in enumerate(bar):
        _set_lr(optimizer, lr_at(cfg, epoch, step / steps))
        x, y = x.to(proc.device, non_blocking=True), y.to(proc.device, non_blocking=True)
        if cfg.channels_last:
            x = x.to(memory_format=torch.channels_last)
        with _autocast(cfg, proc.device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        if not torch.isfinite(loss):
            raise UserError(
                f"the loss became {loss.item()} at epoch {epoch}, step {step + 1}; the checkpoints "
                f"of earlier epochs are kept. Lower train.lr or add train.warmup_epochs, then "
                f"rerun with --resume"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += float((logits.argmax(1) == y).sum())
        count += len(y)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}")
    loss_sum, correct, count = all_sum([loss_sum, correct, count], proc)
    return loss_sum / count, correct / count


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """The training log ``metrics.csv`` of the run in ``run_dir`` (an empty table with its
    columns when there is none yet)."""
    path = RunLayout(Path(run_dir)).metrics
    if not path.exists():
        return pd.DataFrame(columns=METRIC_COLUMNS)
    return read_csv(path)


def metrics_rows(run_dir: Path, last: int | None = None) -> list[dict]:
    """The rows of metrics.csv up to epoch ``last`` (default: the last checkpoint's), in epoch
    order, with the row of a checkpoint that metrics.csv lacks taken from the checkpoint, which
    holds it too (a process killed between writing the two loses it from metrics.csv only)."""
    checkpoints = epoch_files(RunLayout(Path(run_dir)).checkpoints, ".pt")
    rows = {int(r["epoch"]): r for r in read_metrics(run_dir).to_dict("records")}
    if last is None:
        last = max(checkpoints) if checkpoints else max(rows, default=-1)
    for epoch, path in checkpoints.items():
        if epoch <= last and epoch not in rows:
            row = load_checkpoint(path).get("metrics") or {}
            if row.get("epoch") == epoch:  # (checkpoints of early versions held none)
                rows[epoch] = {k: row.get(k, math.nan) for k in METRIC_COLUMNS}
    return [rows[e] for e in sorted(rows) if e <= last]


def repair_metrics(run_dir: Path) -> None:
    """Write metrics.csv again when a checkpoint's row is missing from it (``metrics_rows``)."""
    rows = metrics_rows(run_dir)
    if {r["epoch"] for r in rows} - set(read_metrics(run_dir).epoch):
        write_csv(RunLayout(Path(run_dir)).metrics, pd.DataFrame(rows, columns=METRIC_COLUMNS))


def _check_fresh_folder(run_dir: Path, config: Config) -> None:
    """A new run goes into a new or empty folder, or one holding only the start of this same run
    (a run stopped before its first checkpoint); anything else would be overwritten or, like
    another run's ratios, analysed as this run's."""
    if not run_dir.is_dir():
        return
    layout = RunLayout(run_dir)
    names = {p.name for p in run_dir.iterdir()}
    foreign = sorted(names - set(RunLayout.TRAINING))
    if foreign:
        raise UserError(
            f"{run_dir} already holds {', '.join(foreign[:4])}{', ...' if len(foreign) > 4 else ''}"
            ": a new run needs a new or empty folder; choose another --out"
        )
    if layout.config.exists():
        try:
            conflict = Changes(read_config(layout.config), config).retraining
        except UserError:
            conflict = "a file that is not an en-analysis config"
        if conflict:
            raise UserError(
                f"{run_dir} holds the config.toml of another run ({conflict}); a new run needs "
                "a new or empty folder: choose another --out"
            )


def _resolve_resume(
    config: Config, run_dir: Path, resume: bool
) -> tuple[Config, int | None, dict[str, list]]:
    """The config to train with, the last complete epoch to continue from (None: fresh) and
    the settings this resume changes."""
    layout = RunLayout(run_dir)
    checkpoints = epoch_files(layout.checkpoints, ".pt")
    if not resume:
        if checkpoints:
            raise UserError(
                f"{run_dir} already holds checkpoints; continue it with --resume or choose "
                f"another --out"
            )
        _check_fresh_folder(run_dir, config)
        return config, None, {}
    if not checkpoints:
        _check_fresh_folder(run_dir, config)
        return config, None, {}  # nothing to resume: start fresh
    if not layout.config.is_file():
        raise UserError(
            f"{layout.config} is missing, but {run_dir} holds checkpoints: restore it (each "
            "checkpoint holds the settings it was trained with) or choose another --out"
        )
    stored = read_config(layout.config)
    last = max(checkpoints)
    Changes(stored, config).refuse_on_trained_run(stored, config, run_dir, last)
    resumed = Config.from_dict(config.to_dict())
    resumed.train.epochs = max(stored.train.epochs, config.train.epochs)
    resumed.analysis = stored.analysis  # the run's analysis settings are the analysis's
    return resumed, last, Changes(stored, resumed).schedule


def _identity(
    run_dir: Path, last: int | None, changes: dict[str, list], carried: str, train_images: int
) -> str:
    """The run's id (a new one for a new run; for a resumed run whose run.json is gone, the id
    ``carried`` by its checkpoints) and the number of images it trains on; a resume's changes
    are recorded with the epoch they take effect from. Returns the id."""
    path = RunLayout(run_dir).identity
    identity = run_identity(run_dir) if last is not None else {}
    if not identity.get("id"):
        identity = {
            "id": carried or uuid.uuid4().hex,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "train_images": train_images,
        }
    if changes:
        identity.setdefault("changes", []).append({"from_epoch": last + 1, "settings": changes})
    atomic_write_text(path, json.dumps(identity, indent=1) + "\n")
    return identity["id"]


def train(config: Config, run_dir: Path | str, resume: bool = False, progress: bool = True) -> Path:
    """Train ``config`` into ``run_dir``: config.toml, metrics.csv, checkpoints/epoch-XXX.pt.

    Epoch 0 is the initial weights. With ``resume``, training continues after the last
    checkpoint (a killed epoch is redone from its start).
    """
    run_dir = Path(run_dir)
    proc = setup_process(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    with run_lock(run_dir) if proc.main else nullcontext():
        config, last, changes = _resolve_resume(config, run_dir, resume)
        layout = RunLayout(run_dir)
        t = config.train
        data = build_datasets(config.data)
        if proc.main and last is None and config.data.train_samples > len(data.train):
            warnings.warn(  # the subset is the whole split: said, and recorded in run.json
                f"data.train_samples = {config.data.train_samples:,} is more than the "
                f"{len(data.train):,} training images of {data.name}: all of them are used "
                "(run.json records train_images)",
                UserWarning,
                stacklevel=2,
            )
        if proc.main and progress:
            tqdm.write(
                f"data: {data.name}, {len(data.classes)} classes, {len(data.train):,} training "
                f"images at {data.image_size} x {data.image_size}, {data.in_channels} channel(s)"
            )
        torch.manual_seed(t.seed)
        model = build_model(config, len(data.classes), data.in_channels)
        optimizer = make_optimizer(model, t)
        rows, carried = [], ""  # carried: the run id in the checkpoint resumed from
        if last is not None:
            path = layout.checkpoint(last)
            state = load_checkpoint(path)
            carried = state.get("run_id", "")
            check_owner(state, path, run_identity(run_dir).get("id", ""), config)
            model.load_state_dict(state["model"])
            if state["optimizer"] is not None:
                asked = [
                    {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups
                ]
                optimizer.load_state_dict(state["optimizer"])
                for group, hyper in zip(optimizer.param_groups, asked):
                    group.update(hyper)  # a resume's momentum and weight decay take effect
            rows = metrics_rows(run_dir, last)
        model.to(proc.device)
        if t.channels_last:
            model.to(memory_format=torch.channels_last)
        net = model
        if proc.world > 1:
            ids = [proc.device.index] if proc.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        compile_layers(t.compile_en_layers)
        if config.model.norm == "en" and proc.device.type == "cpu":
            _build_cpu_kernel(progress and proc.main)
        if t.compile:
            net = torch.compile(net)
        train_loader, val_loader, test_loader = _loaders(data, config, proc)
        run_id = ""
        if proc.main:  # every check has passed: the first write
            run_id = _identity(run_dir, last, changes, carried, len(data.train))
            save_config(config, layout.config)
            if last is not None:  # a row lost to a kill: back even when no epoch follows
                repair_metrics(run_dir)
            if changes and progress:
                tqdm.write(
                    f"resuming after epoch {last} with "
                    + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
                    + f" (recorded in {layout.identity})"
                )
        meta = dict(
            config=config,
            classes=data.classes,
            synsets=data.synsets,
            in_channels=data.in_channels,
            run_id=run_id,
        )

        def finish_epoch(epoch: int, row: dict) -> None:
            rows.append(row)
            if proc.main:
                save_checkpoint(
                    layout.checkpoint(epoch),
                    model,
                    epoch=epoch,
                    optimizer=optimizer,
                    metrics=row,
                    **meta,
                )
                write_csv(layout.metrics, pd.DataFrame(rows, columns=METRIC_COLUMNS))

        if last is None:
            val_loss, val_acc = evaluate(net, val_loader, proc, t)
            finish_epoch(
                0,
                dict(
                    epoch=0,
                    lr=0.0,
                    train_loss=math.nan,
                    train_acc=math.nan,
                    val_loss=val_loss,
                    val_acc=val_acc,
                    seconds=0.0,
                ),
            )
            last = 0
        for epoch in range(last + 1, t.epochs + 1):
            start = time.perf_counter()
            _seed_epoch(t.seed, epoch, proc.rank)
            train_loss, train_acc = train_epoch(
                net, train_loader, optimizer, t, epoch, proc, progress
            )
            last_epoch = epoch == t.epochs  # the last epoch is scored on the whole split
            val_loss, val_acc = evaluate(net, test_loader if last_epoch else val_loader, proc, t)
            seconds = time.perf_counter() - start
            finish_epoch(
                epoch,
                dict(
                    epoch=epoch,
                    lr=lr_at(t, epoch),
                    train_loss=train_loss,
                    train_acc=train_acc,
                    val_loss=val_loss,
                    val_acc=val_acc,
                    seconds=seconds,
                ),
            )
            if proc.main and progress:
                tqdm.write(
                    f"epoch {epoch:3d}  lr {lr_at(t, epoch):.4g}  train {train_loss:.3f}/"
                    f"{train_acc:.3f}  val {val_loss:.3f}/{val_acc:.3f}  {seconds:.0f}s"
                )
    if proc.world > 1:
        dist.barrier()
    return run_dir


def final_metrics(run_dir: Path) -> dict[str, float]:
    """The last checkpoint's row of metrics (``metrics_rows``) as a dict (empty if none)."""
    rows = metrics_rows(run_dir)
    return {k: float(v) for k, v in rows[-1].items()} if rows else {}


__all__ = [
    "evaluate",
    "final_metrics",
    "lr_at",
    "make_optimizer",
    "metrics_rows",
    "read_metrics",
    "repair_metrics",
    "train",
]
