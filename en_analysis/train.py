"""Training with per-epoch checkpoints, exact resume, and torchrun/DDP when launched by it.

Every source of randomness is re-seeded from (seed, epoch) at the start of each epoch, and the
checkpoint holds the weights, BN statistics and optimizer state, so a resumed run ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from .checkpoints import (
    build_model,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .config import Config, TrainConfig, read_config, save_config
from .data import Datasets, balanced_subset, build_datasets
from .errors import UserError
from .io import run_lock, write_csv

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
RUNTIME_KEYS = ("device", "threads", "amp", "channels_last", "compile")  # may change on resume


@dataclass
class Process:
    """Where this process runs: its rank among ``world`` processes and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_process(device: str) -> Process:
    """One process, or one of torchrun's (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"the device {device!r} was asked for but no CUDA device is available (use cpu)"
        )
    if world == 1:
        return Process(0, 1, torch.device(device))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
    return Process(dist.get_rank(), world, torch.device(f"cuda:{local}" if cuda else "cpu"))


def lr_at(cfg: TrainConfig, epoch: int, progress: float = 1.0) -> float:
    """Step schedule: x lr_gamma after each epoch in lr_drops; linear warm-up (progress 0..1)."""
    lr = cfg.lr * cfg.lr_gamma ** sum(d < epoch for d in cfg.lr_drops)
    done = epoch - 1 + progress
    if cfg.warmup_epochs and done < cfg.warmup_epochs:
        lr *= max(done, 1e-3) / cfg.warmup_epochs
    return lr


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD; the EN ratio sub-network gets ``ratio_lr_mult`` x lr and its own weight decay."""
    ratio, rest = [], []
    for name, p in model.named_parameters():
        (ratio if ".ratio_" in f".{name}" else rest).append(p)
    groups = [{"params": rest, "lr_mult": 1.0, "weight_decay": cfg.weight_decay}]
    if ratio:
        groups.append(
            {"params": ratio, "lr_mult": cfg.ratio_lr_mult, "weight_decay": cfg.ratio_weight_decay}
        )
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    torch.manual_seed(seed * 1_000_003 + epoch * 7_919 + rank)


def _reduce(values: list[float], proc: Process) -> list[float]:
    if proc.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=proc.device)
    dist.all_reduce(t)
    return t.tolist()


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
    loss_sum, correct, count = _reduce([loss_sum, correct, count], proc)
    return loss_sum / max(count, 1), correct / max(count, 1)


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
    loss_sum, correct, count = _reduce([loss_sum, correct, count], proc)
    return loss_sum / count, correct / count


def read_metrics(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return pd.DataFrame(columns=METRIC_COLUMNS)
    return pd.read_csv(path)


def first_conflict(stored: Config, asked: Config) -> tuple[str, str] | None:
    """The first model, data or training setting that differs between two configs, in words
    (device settings, epochs and data loading workers may differ: a resume may change them)."""
    free = {("train", k) for k in (*RUNTIME_KEYS, "epochs")} | {("data", "num_workers")}
    old, new = stored.to_dict(), asked.to_dict()
    for section in ("model", "data", "train"):
        for key, value in new[section].items():
            if (section, key) not in free and old[section][key] != value:
                return f"{section}.{key} is {old[section][key]!r}", f"(asked {value!r})"
    return None


def refuse_conflicts(stored: Config, asked: Config, run_dir: Path) -> None:
    """One line naming the first setting that a trained run cannot change."""
    conflict = first_conflict(stored, asked)
    if conflict:
        setting, asked_value = conflict
        raise UserError(
            f"{setting} in the trained run {run_dir} {asked_value}: a trained run keeps its "
            "model, data and training settings; train a new run with another --out"
        )


RUN_START = {"config.toml", "metrics.csv", "checkpoints", ".lock"}  # what a new run writes first


def _check_fresh_folder(run_dir: Path, config: Config) -> None:
    """A new run goes into a new or empty folder, or one holding only the start of this same run
    (a run stopped before its first checkpoint); anything else would be overwritten or, like
    another run's ratios, analysed as this run's."""
    if not run_dir.is_dir():
        return
    names = {p.name for p in run_dir.iterdir()}
    foreign = sorted(names - RUN_START)
    if foreign:
        raise UserError(
            f"{run_dir} already holds {', '.join(foreign[:4])}{', ...' if len(foreign) > 4 else ''}"
            ": a new run needs a new or empty folder; choose another --out"
        )
    if "config.toml" in names:
        try:
            conflict = first_conflict(read_config(run_dir / "config.toml"), config)
        except UserError:
            conflict = ("it is not an en-analysis config", "")
        if conflict:
            raise UserError(
                f"{run_dir} holds the config.toml of another run ({' '.join(conflict).strip()}"
                "); a new run needs a new or empty folder: choose another --out"
            )


def _resolve_resume(config: Config, run_dir: Path, resume: bool) -> tuple[Config, int | None]:
    """The config to train with and the last complete epoch to continue from (None: fresh)."""
    checkpoints = list_checkpoints(run_dir)
    if not resume:
        if checkpoints:
            raise UserError(
                f"{run_dir} already holds checkpoints; continue it with --resume or choose "
                f"another --out"
            )
        _check_fresh_folder(run_dir, config)
        return config, None
    stored_path = Path(run_dir) / "config.toml"
    if not stored_path.exists() or not checkpoints:
        _check_fresh_folder(run_dir, config)
        return config, None  # nothing to resume: start fresh
    stored = read_config(stored_path)
    refuse_conflicts(stored, config, run_dir)
    for key in RUNTIME_KEYS:
        setattr(stored.train, key, getattr(config.train, key))
    stored.train.epochs = max(stored.train.epochs, config.train.epochs)
    stored.data.num_workers = config.data.num_workers
    return stored, max(checkpoints)


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
        config, last = _resolve_resume(config, run_dir, resume)
        t = config.train
        data = build_datasets(config.data)
        if proc.main and progress:
            tqdm.write(
                f"data: {data.name}, {len(data.classes)} classes, {len(data.train):,} training "
                f"images at {data.image_size} x {data.image_size}, {data.in_channels} channel(s)"
            )
        torch.manual_seed(t.seed)
        model = build_model(config, len(data.classes), data.in_channels)
        optimizer = make_optimizer(model, t)
        rows = []
        if last is not None:
            state = load_checkpoint(checkpoint_path(run_dir, last))
            model.load_state_dict(state["model"])
            if state["optimizer"] is not None:
                optimizer.load_state_dict(state["optimizer"])
            rows = [r for r in read_metrics(run_dir).to_dict("records") if r["epoch"] <= last]
        model.to(proc.device)
        if t.channels_last:
            model.to(memory_format=torch.channels_last)
        net = model
        if proc.world > 1:
            ids = [proc.device.index] if proc.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if t.compile:
            net = torch.compile(net)
        train_loader, val_loader, test_loader = _loaders(data, config, proc)
        if proc.main:  # every check has passed: the first write
            save_config(config, run_dir / "config.toml")
        meta = dict(
            config=config, classes=data.classes, synsets=data.synsets, in_channels=data.in_channels
        )

        def finish_epoch(epoch: int, row: dict) -> None:
            rows.append(row)
            if proc.main:
                save_checkpoint(
                    checkpoint_path(run_dir, epoch),
                    model,
                    epoch=epoch,
                    optimizer=optimizer,
                    metrics=row,
                    **meta,
                )
                write_csv(run_dir / "metrics.csv", pd.DataFrame(rows, columns=METRIC_COLUMNS))

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
    """The last epoch's row of metrics.csv as a dict (empty if none)."""
    frame = read_metrics(run_dir)
    return {} if frame.empty else {k: float(v) for k, v in frame.iloc[-1].items()}


__all__ = [
    "evaluate",
    "final_metrics",
    "lr_at",
    "make_optimizer",
    "read_metrics",
    "refuse_conflicts",
    "train",
]
