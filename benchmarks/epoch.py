"""Where one training epoch of the default preset goes, as fractions of the epoch, and EN/BN.

Runs ``--steps`` training steps of the ``fashion-mnist`` preset (real data) for EN and BN,
timing data loading, forward, backward and the optimizer step separately, then the per-epoch
validation pass and one checkpoint write; prints each part as a fraction of an estimated full
epoch and the EN/BN ratio of the whole.

    python benchmarks/epoch.py --steps 40
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from en_analysis.data import build_datasets
from en_analysis.settings.config import load_config
from en_analysis.training.checkpoints import build_model, save_checkpoint
from en_analysis.training.train import _loaders, evaluate, make_optimizer, setup_process


def profile(norm: str, steps: int, threads: int) -> dict[str, float]:
    config = load_config("fashion-mnist", None, [f"model.norm={norm}"])
    if threads:
        torch.set_num_threads(threads)
    proc = setup_process("cpu")
    data = build_datasets(config.data)
    torch.manual_seed(0)
    model = build_model(config, len(data.classes), data.in_channels)
    optimizer = make_optimizer(model, config.train)
    train, val, _ = _loaders(data, config, proc)
    parts = dict.fromkeys(["data", "forward", "backward", "optimizer"], 0.0)
    model.train()
    clock = time.perf_counter()
    for step, (x, y) in enumerate(train):
        now = time.perf_counter()
        parts["data"] += now - clock
        loss = F.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        clock = time.perf_counter()
        if step >= 2:  # the first steps warm up
            parts["forward"] += t1 - now
            parts["backward"] += t2 - t1
            parts["optimizer"] += clock - t2
        if step + 1 == steps + 2:
            break
    scale = len(train) / steps  # per full epoch
    parts = {k: v * scale for k, v in parts.items()}
    start = time.perf_counter()
    evaluate(model, val, proc, config.train)
    parts["validation"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        save_checkpoint(
            Path(tmp) / "e.pt",
            model,
            config,
            1,
            data.classes,
            data.synsets,
            data.in_channels,
            optimizer=optimizer,
        )
        parts["checkpoint"] = time.perf_counter() - start
    return parts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="timed training steps per model")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    results = {norm: profile(norm, args.steps, args.threads) for norm in ("en", "bn")}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; one epoch, estimated")
    for norm, parts in results.items():
        total = sum(parts.values())
        shares = ", ".join(f"{k} {v / total:.0%}" for k, v in parts.items())
        print(f"{norm.upper()}: {total:.1f} s per epoch: {shares}")
    en, bn = (sum(results[n].values()) for n in ("en", "bn"))
    print(f"EN/BN per epoch: {en / bn:.2f}")


if __name__ == "__main__":
    main()
