"""gpu-check's `ddp` row: nnU-Net's `-num_gpus 2` path on two GPUs, one process each.

As nnUNetTrainer.initialize sets it up: the network compiled, its BatchNorms converted to
SyncBatchNorm, wrapped in DistributedDataParallel without find_unused_parameters; then two fp16
autocast + GradScaler steps on different data per rank. Passes when both ranks finish with every
trainable parameter holding a gradient and identical gradients on both ranks.
"""
from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from . import gpu_check

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, family: "gpu_check.Family", settings: "gpu_check.CheckSettings", port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a bounded wait: a rank that fails leaves the other in a collective, which then times out
    dist.init_process_group("nccl", rank=rank, world_size=WORLD, timeout=datetime.timedelta(minutes=5))
    try:
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
        net = family.build(tiny=settings.tiny).to(device).train()
        trainable = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trainable, lr=1e-3, momentum=0.99, nesterov=True)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.compile(net))
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank])
        scaler = torch.amp.GradScaler("cuda")
        gen = torch.Generator().manual_seed(100 + rank)  # different data per rank
        for _ in range(2):  # a parameter without gradient fails the second step's reduction
            x = torch.randn(settings.batch, 1, *settings.patch, generator=gen).to(device)
            target = torch.randint(0, gpu_check.NUM_CLASSES, (settings.batch, *settings.patch), generator=gen)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda"):
                loss = F.cross_entropy(model(x), target.to(device))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if any(p.grad is None for p in trainable):
            results[rank] = "a trainable parameter has no gradient"
            return
        grads = torch.cat([p.grad.flatten().float() for p in trainable])
        gathered = [torch.zeros_like(grads) for _ in range(WORLD)]
        dist.all_gather(gathered, grads)
        results[rank] = "" if torch.equal(gathered[0], gathered[1]) else "gradients differ across ranks"
    except Exception as error:  # noqa: BLE001 -- reported in the row
        results[rank] = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"[:200]
    finally:
        dist.destroy_process_group()


def check_ddp(family: "gpu_check.Family", settings: "gpu_check.CheckSettings") -> "gpu_check.CheckRow":
    if settings.device != "cuda" or torch.cuda.device_count() < WORLD:
        return gpu_check.CheckRow(family.name, "ddp", gpu_check.SKIP, f"needs {WORLD} CUDA GPUs")
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(family, settings, _free_port(), results), nprocs=WORLD, join=True)
    problems = sorted({results.get(rank, "no result") for rank in range(WORLD)} - {""})
    return gpu_check.CheckRow(family.name, "ddp", gpu_check.FAIL if problems else gpu_check.PASS,
                              "; ".join(problems) or f"{WORLD} GPUs: compiled, SyncBatchNorm, DDP, 2 AMP steps, "
                                                    "equal gradients")
