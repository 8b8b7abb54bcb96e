"""nnU-Net's multi-GPU training wraps the network in DistributedDataParallel WITHOUT
find_unused_parameters: every trainable parameter must get a gradient in every step. Proven on CPU
with the gloo backend and 2 processes, for every plugin network."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from network_table import build_tiny
from nnunet_helpers import free_port
from nnunet_dino.backbones.adaptation import Adaptation
from nnunet_dino.networks.slab import make_slab

NETWORKS = {  # name: (family, options, input channels)
    "SegDINO": ("SegDINO", {}, 1),
    "UDFA": ("U-DFA", {}, 1),
    "UDFA_LGFA2": ("U-DFA", {"num_fusion_modules": 2}, 1),
    "DinoUNet": ("Dino U-Net", {}, 1),
    # 4 channels: the shell maps them to 3 (a learnable 1x1 mix only where the image reaches a trainable path)
    "SegDINO_4ch": ("SegDINO", {}, 4),
    "UDFA_4ch": ("U-DFA", {}, 4),
    "DinoUNet_4ch": ("Dino U-Net", {}, 4),
    # an adapted encoder (backbones/adaptation.py): its trained tensors get gradients too
    "SegDINO_lora": ("SegDINO", {"adaptation": Adaptation("lora", rank=4)}, 1),
    "SegDINO_last_k": ("SegDINO", {"adaptation": Adaptation("last_k", last_k=2)}, 1),
    "UDFA_full": ("U-DFA", {"adaptation": Adaptation("full", layer_decay=0.9)}, 1),
    "DinoUNet_lora_mlp": ("Dino U-Net", {"adaptation": Adaptation("lora", rank=4, lora_mlp=True)}, 1),
}
SLABS = {"UDFA_slab": ("U-DFA", {}, 1)}  # 2.5D: slabs of SLICES slices, neighbours as channels, fused across slices
SLICES = 3


def _build(name):
    family, options, channels = {**NETWORKS, **SLABS}[name]
    net = build_tiny(family, channels, 3, **options)  # seeded: identical on both ranks (DDP broadcasts rank 0's too)
    return make_slab(net, SLICES, "rgb") if name in SLABS else net


def _shape(name):
    depth = (SLICES,) if name in SLABS else ()
    return (2, {**NETWORKS, **SLABS}[name][2], *depth, 64, 64)


def _one_network(name, rank, world):
    """Two DDP steps on rank-specific data; True if both ranks end with the same nonzero gradients."""
    net = torch.nn.parallel.DistributedDataParallel(_build(name))  # as nnU-Net: no find_unused_parameters
    net.train()
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(100 + rank)  # different data per rank
    for _ in range(2):  # an unused parameter fails at the second step's reduction
        optimizer.zero_grad()
        x = torch.randn(_shape(name))
        target = torch.randint(0, 3, (x.shape[0], *x.shape[2:]))
        torch.nn.functional.cross_entropy(net(x), target).backward()
        missing = [n for n, p in net.module.named_parameters() if p.requires_grad and p.grad is None]
        if missing:
            return f"parameters without gradient: {missing[:5]}"
        optimizer.step()
    grads = torch.cat([p.grad.flatten() for p in net.module.parameters() if p.requires_grad])
    gathered = [torch.zeros_like(grads) for _ in range(world)]
    dist.all_gather(gathered, grads)
    return bool(torch.equal(gathered[0], gathered[1])) and float(grads.abs().sum()) > 0


def _worker(rank, world, port, results):
    """Every network in one process group (one spawn for all: starting processes is the cost)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        for name in list(NETWORKS) + list(SLABS):
            try:
                results[(rank, name)] = _one_network(name, rank, world)
            except Exception as error:  # noqa: BLE001 - reported by that network's test; a failed
                results[(rank, name)] = f"{type(error).__name__}: {error}"  # reduction breaks the group
                raise
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results():
    results = mp.Manager().dict()
    try:
        mp.spawn(_worker, args=(2, free_port(), results), nprocs=2, join=True)
    except mp.ProcessRaisedException:
        pass  # the network that raised has its message in `results`; the later ones have none
    return dict(results)


@pytest.mark.parametrize("name", list(NETWORKS) + list(SLABS))
def test_one_ddp_step_on_two_cpu_processes(name, ddp_results):
    outcome = [ddp_results.get((rank, name), "not run: an earlier network broke the process group")
               for rank in range(2)]
    assert outcome == [True, True], f"gradients differ across ranks, are all zero, or: {outcome}"
