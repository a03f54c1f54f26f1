"""model.sync_bn_stats: EN's BN statistics all-reduced across processes equal one process's on
the whole batch (2 gloo processes)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from en_analysis.nn import ExemplarNorm2d


def _layer(sync: bool) -> ExemplarNorm2d:
    torch.manual_seed(0)
    layer = ExemplarNorm2d(4, sync_bn_stats=sync)
    layer.fix_ratios([0, 0, 1])  # pure BN
    return layer


def _worker(rank: int, port: int, x: torch.Tensor, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    layer = _layer(sync=True)
    x = x[rank::2].clone().requires_grad_()
    y = layer(x)
    y.square().sum().backward()
    torch.save(
        {"y": y.detach(), "mean": layer.running_mean, "var": layer.running_var, "grad": x.grad},
        f"{folder}/{rank}.pt",
    )
    dist.destroy_process_group()


def test_synced_bn_statistics_equal_the_global_batch(tmp_path):
    x = torch.randn(8, 4, 5, 5) * 2 + 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, x, str(tmp_path)), nprocs=2)
    single = _layer(sync=False)
    xs = x.clone().requires_grad_()
    y = single(xs)
    y.square().sum().backward()
    for rank in (0, 1):
        out = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        torch.testing.assert_close(out["y"], y[rank::2].detach(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out["mean"], single.running_mean)
        torch.testing.assert_close(out["var"], single.running_var)
        torch.testing.assert_close(out["grad"], xs.grad[rank::2], atol=1e-4, rtol=1e-3)
