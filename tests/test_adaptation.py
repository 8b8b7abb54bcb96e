"""Encoder adaptation (backbones/adaptation.py): LoRA, last_k and full fine-tuning, on tiny ViTs, and
one run per mode through nnU-Net's command line."""
import dataclasses
import json
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from network_table import build_tiny
from nnunet_helpers import free_port
from nnunet_dino.backbones import WeightsSource, load_backbone_weights
from nnunet_dino.backbones.adaptation import Adaptation, AdaptationError
from nnunet_dino.networks.base import BACKBONE_RECORD_KEY
from nnunet_dino.training.base import nnUNetTrainerDino

LORA = Adaptation("lora", rank=4, alpha=8.0)
LAST_2 = Adaptation("last_k", last_k=2)
FULL = Adaptation("full", layer_decay=0.5, backbone_lr_ratio=0.25)
X = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
TARGET = torch.randint(0, 3, (2, 32, 32), generator=torch.Generator().manual_seed(4))


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def _network(family="SegDINO", adaptation=None):
    net = build_tiny(family, 1, 3, adaptation=adaptation, cpu_precision="fp32")
    load_backbone_weights(net.backbone, WeightsSource("random"))  # what slim checkpoints record
    return net


def _train(net, steps=3, lr=1e-2):
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    net.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(net(X), TARGET).backward()
        optimizer.step()
    return net.eval()


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("family", ["SegDINO", "U-DFA"])  # DINOv3 (q/v biases: F.linear on qkv.weight), DINOv2
def test_lora_starts_at_the_frozen_model_and_trains_only_its_own_tensors(family):
    frozen, adapted = _network(family), _network(family, LORA)
    with torch.no_grad():
        assert torch.equal(frozen.eval()(X), adapted.eval()(X))  # step 0: up = 0, exactly the frozen model
    assert torch.equal(frozen.train()(X), adapted.train()(X))  # also with the graph built
    base, lora = _snapshot(adapted.backbone.vit), _snapshot(adapted.backbone.lora)
    assert lora and all(k.endswith((".up", ".down")) for k in lora)
    assert {k.split(".")[2] for k in lora} == {"attn_qkv", "attn_proj"}
    _train(adapted)
    assert all(torch.equal(v, adapted.backbone.vit.state_dict()[k]) for k, v in base.items())
    assert all(not torch.equal(v, adapted.backbone.lora.state_dict()[k]) for k, v in lora.items())
    with torch.no_grad():
        merged = adapted(X)
        assert adapted.backbone.lora._merged  # the summed weights were cached
        adapted.backbone.lora.merge = False
        unmerged = adapted(X)
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    assert not torch.allclose(merged, frozen(X), atol=1e-4)


def test_last_k_trains_the_last_blocks_without_a_graph_before_them():
    net = _network("SegDINO", LAST_2)
    depth = net.backbone.depth
    outputs = {}
    hooks = [block.register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o.requires_grad))
             for n, block in enumerate(net.backbone.vit.blocks)]
    net.train()(X)
    for hook in hooks:
        hook.remove()
    assert outputs == {n: n >= depth - 2 for n in range(depth)}  # no autograd graph through the frozen prefix
    before = _snapshot(net.backbone.vit)
    _train(net)
    after = net.backbone.vit.state_dict()
    for n in range(depth):
        keys = [k for k in before if k.startswith(f"blocks.{n}.")]
        changed = [k for k in keys if not torch.equal(before[k], after[k])]
        assert (changed == []) if n < depth - 2 else (len(changed) > 0), (n, changed)
    assert not torch.equal(before["norm.weight"], after["norm.weight"])
    assert torch.equal(before["patch_embed.proj.weight"], after["patch_embed.proj.weight"])


def _host(net, adaptation, lr=1e-2):
    return SimpleNamespace(network=net, initial_lr=lr, weight_decay=1e-4, optimizer_name="adamw",
                           num_epochs=10, lr_schedule="poly", warmup_epochs=0, adaptation=adaptation,
                           decay_all_parameters=False, configuration_manager=SimpleNamespace(configuration={}))


def test_full_fine_tuning_groups_carry_the_decayed_rates():
    net = _network("SegDINO", FULL)
    host = _host(net, FULL)
    optimizer, schedule = nnUNetTrainerDino.configure_optimizers(host)
    depth = net.backbone.depth  # 4
    expected = {0: 0.25 * 0.5 ** 5, 1: 0.25 * 0.5 ** 4, 2: 0.25 * 0.5 ** 3, 3: 0.25 * 0.5 ** 2, 4: 0.25 * 0.5,
                5: 0.25}  # embedding, blocks 0-3, final norm: lr * ratio * decay^(depth + 1 - layer)
    assert depth == 4
    encoder = [g for g in optimizer.param_groups if "layer" in g]
    assert {g["layer"] for g in encoder} == set(expected)
    for group in encoder:
        assert group["lr"] == pytest.approx(1e-2 * expected[group["layer"]], rel=1e-12)
    head = [g for g in optimizer.param_groups if "layer" not in g]
    assert [g["lr"] for g in head] == [1e-2, 1e-2]
    covered = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert covered == {id(p) for p in net.parameters() if p.requires_grad}
    assert all(id(p) in covered for p in net.backbone.vit.blocks.parameters())
    schedule.step(5)  # poly at epoch 5, each group at its scale
    poly = 1e-2 * (1 - 5 / 10) ** 0.9
    for group in encoder:
        assert group["lr"] == pytest.approx(poly * expected[group["layer"]], rel=1e-12)
    frozen = _network("SegDINO")
    groups = nnUNetTrainerDino.configure_optimizers(_host(frozen, Adaptation()))[0].param_groups
    assert len(groups) == 2 and not any(id(p) in {id(q) for g in groups for q in g["params"]}
                                        for p in frozen.backbone.parameters())


@pytest.mark.parametrize("adaptation,kept", [
    (LORA, lambda k: k.startswith("backbone.lora.")),
    (LAST_2, lambda k: k.startswith(("backbone.vit.blocks.2.", "backbone.vit.blocks.3.", "backbone.vit.norm."))),
    (FULL, lambda k: k.startswith("backbone.vit.")),
], ids=["lora", "last_k", "full"])
def test_slim_checkpoints_keep_only_what_changed_and_reload_exactly(adaptation, kept, monkeypatch):
    net = _train(_network("SegDINO", adaptation), steps=2)
    with net.slim_state_dict():
        slim = net.state_dict()
    backbone_keys = {k for k in net.state_dict() if k.startswith("backbone.")}
    assert {k for k in slim if k.startswith("backbone.")} == {k for k in backbone_keys if kept(k)}
    assert slim[BACKBONE_RECORD_KEY]["adaptation"]["mode"] == adaptation.mode
    monkeypatch.setenv("nnUNet_dino_weights", "random")  # the base the record names
    if adaptation.mode == "full":
        monkeypatch.delenv("nnUNet_dino_weights")  # the whole encoder is in the checkpoint: no base needed
    fresh = build_tiny("SegDINO", 1, 3, adaptation=adaptation, cpu_precision="fp32")
    with pytest.warns(UserWarning, match="RANDOM FROZEN BACKBONE"):
        fresh.load_state_dict(slim)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(X), net(X))
    with pytest.raises(AdaptationError, match="Use the trainer the model was trained with"):
        build_tiny("SegDINO", 1, 3).load_state_dict(slim)
    frozen = _network("SegDINO")
    with frozen.slim_state_dict():
        assert "adaptation" not in frozen.state_dict()[BACKBONE_RECORD_KEY]  # frozen models: records unchanged


@pytest.mark.parametrize("family,adaptation", [("SegDINO", LORA), ("SegDINO", LAST_2), ("SegDINO", FULL),
                                               ("U-DFA", LORA)], ids=["segdino-lora", "segdino-last_k",
                                                                      "segdino-full", "udfa-lora"])
def test_compile_traces_each_mode(family, adaptation):
    net = build_tiny(family, 1, 2, adaptation=dataclasses.replace(adaptation, checkpointing=True),
                     cpu_precision="fp32").train()
    compiled = torch.compile(net, backend="aot_eager")
    out = compiled(X)
    torch.testing.assert_close(out, net(X), rtol=1e-4, atol=1e-5)
    out.sum().backward()
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert [n for n, p in trainable if p.grad is None] == []
    assert any(n.startswith("backbone.") for n, _ in trainable)


def test_adaptation_declarations_are_checked_and_recorded():
    with pytest.raises(AdaptationError, match="mode must be one of"):
        Adaptation("partial")
    with pytest.raises(AdaptationError, match="at most 4"):
        build_tiny("SegDINO", adaptation=Adaptation("last_k", last_k=9))
    assert Adaptation.from_record(None) == Adaptation() and Adaptation.from_record(FULL.to_record()) == FULL
    from nnunet_dino.training import trainers
    for name in ("SegDINO", "UDFA", "UDFA_S", "DinoUNet"):
        lora, ft = getattr(trainers, f"nnUNetTrainer{name}_LoRA"), getattr(trainers, f"nnUNetTrainer{name}_FT")
        assert lora.adaptation.mode == "lora" and ft.adaptation.mode == "full" and ft.adaptation.warmup_epochs == 10
        assert getattr(trainers, f"nnUNetTrainer{name}_FT_debug").adaptation.warmup_epochs == 1
    assert trainers.nnUNetTrainerSegDINO.adaptation == Adaptation()


# --- the warm-up, in a real trainer ------------------------------------------------------------------
def test_full_fine_tuning_keeps_the_encoder_frozen_during_its_warm_up(nnunet_paths, monkeypatch):
    from nnunet_dino.backbones.registry import register_backbone
    from nnunet_dino.training.trainers import nnUNetTrainerSegDINO_FT_debug
    from nnunet_helpers import make_trainer
    from dino_weights_helpers import tiny_spec
    register_backbone(tiny_spec("dinov3_vits16"))

    class TinyFT(nnUNetTrainerSegDINO_FT_debug):
        backbone = "tiny_dinov3_vits16"
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    trainer = make_trainer(TinyFT, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    trainer.initialize()
    vit = trainer.unwrapped_network.backbone.vit
    batch = {"data": torch.randn(2, 1, 64, 80), "target": torch.randint(0, 3, (2, 1, 64, 80)).float()}
    before = _snapshot(vit)
    trainer.on_train_epoch_start()  # epoch 0: the warm-up
    assert not any(p.requires_grad for p in vit.parameters())
    for _ in range(2):
        trainer.train_step(batch)
    assert all(torch.equal(v, vit.state_dict()[k]) for k, v in before.items())
    trainer.current_epoch = 1
    trainer.on_train_epoch_start()  # the encoder joins
    trainer.train_step(batch)
    assert all(not torch.equal(before[k], vit.state_dict()[k]) for k in ("blocks.0.attn.qkv.weight", "norm.weight"))
    log = open(trainer.log_file).read()
    assert "encoder DINOV3 ViT" in log and "fully fine-tuned" in log and "the encoder joins training" in log


# --- end to end, one run per mode --------------------------------------------------------------------
# A user's own trainers, found through nnUNet_extTrainer (documentation/adaptation.md): the declared `_LoRA` /
# `_FT` twins and a last_k subclass, each on a tiny DINOv3 so three runs stay cheap (nnunet_helpers.py).


@pytest.mark.parametrize("trainer,mode", [("nnUNetTrainerTinySegDINO_LoRA_debug", "lora"),
                                          ("nnUNetTrainerTinySegDINO_Last2_debug", "last_k"),
                                          ("nnUNetTrainerTinySegDINO_FT_debug", "full")])
def test_each_mode_trains_predicts_and_evaluates_through_nnunet(synthetic_2d, tmp_path, monkeypatch, trainer, mode):
    """plan (the session's dataset) -> train `_debug` -> `--val` and `--c` (the adapted tensors and the
    mode's optimiser groups reload) -> bundle (LoRA, last_k) -> export to zip -> install into a fresh
    results folder -> predict from it in a new process without nnUNet_dino_weights -> evaluate."""
    from nnunet_dino.nnunet import predict, train
    from nnunet_dino.nnunet.runner import run_step
    from nnunet_dino.nnunet.models import bundle_model_folder
    from nnunet_helpers import evaluate_in_process, results_folder, tiny_trainers
    env = dict(synthetic_2d["env"], nnUNet_dino_weights="random",
               nnUNet_extTrainer=tiny_trainers(tmp_path)["nnUNet_extTrainer"], nnUNet_results=str(tmp_path / "results"))
    train(990, trainer, env)
    model = results_folder(env, synthetic_2d["dataset"], trainer)
    record = json.load(open(os.path.join(model, "fold_0", "backbone_weights.json")))
    plans = json.load(open(os.path.join(model, "plans.json")))["configurations"]["2d"]["nnunet_dino"]
    assert record["adaptation"]["mode"] == plans["adaptation"]["mode"] == mode
    weights = torch.load(os.path.join(model, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                         weights_only=False)["network_weights"]
    assert {k.split(".")[1] for k in weights if k.startswith("backbone.")} == ({"lora"} if mode == "lora" else {"vit"})
    log_name = next(f for f in os.listdir(os.path.join(model, "fold_0")) if f.startswith("training_log"))
    log = open(os.path.join(model, "fold_0", log_name)).read()
    assert "% trainable); encoder DINOV3 ViT" in log and ("the encoder joins training" in log) == (mode == "full")
    summary_file = os.path.join(model, "fold_0", "validation", "summary.json")
    os.remove(summary_file)
    train(990, trainer, env, extra=["--val"])  # validation only, from the slim checkpoint
    assert os.path.isfile(summary_file)
    train(990, trainer, env, extra=["--c"])  # continue: checkpoint and optimiser state reload into this mode
    continued = torch.load(os.path.join(model, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                           weights_only=False)["network_weights"]
    assert weights.keys() == continued.keys() and all(
        torch.equal(weights[k], continued[k]) for k in weights if isinstance(weights[k], torch.Tensor))
    if mode != "full":  # self-contained: the base travels too (full checkpoints hold the whole encoder already)
        for name, value in env.items():  # this process resolves the user's trainer and rebuilds the base too
            monkeypatch.setenv(name, value)
        assert bundle_model_folder(model)
    archive = str(tmp_path / "model.zip")
    run_step(["nnUNetv2_export_model_to_zip", "-d", "990", "-o", archive, "-c", "2d", "-tr", trainer, "-f", "0"], env)
    env.pop("nnUNet_dino_weights")
    env["nnUNet_results"] = str(tmp_path / "installed_results")
    os.makedirs(env["nnUNet_results"])
    run_step(["nnUNetv2_install_pretrained_model_from_zip", archive], env)
    out = str(tmp_path / "predictions")
    predict(990, trainer, os.path.join(synthetic_2d["raw_folder"], "imagesTs"), out, env)
    summary = evaluate_in_process(os.path.join(synthetic_2d["raw_folder"], "labelsTs"), out,
                                  os.path.join(model, "dataset.json"))
    assert len(summary["metric_per_case"]) == 2 and summary["mean"]["1"]["Dice"] >= 0


# --- DDP: the warm-up's end rebuilds the wrapper (tests/test_ddp.py runs each mode's step) -------------
def _warmup_worker(rank, world, port, results):
    import torch.distributed as dist
    from nnunet_dino.training.base import rewrap_ddp
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        net = build_tiny("SegDINO", 1, 3, adaptation=Adaptation("full", warmup_epochs=1))
        net.backbone.set_encoder_trainable(False)  # the warm-up, as the trainer starts it
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        optimizer = torch.optim.SGD(list(net.parameters()), lr=1e-2)
        torch.manual_seed(100 + rank)
        encoder = _snapshot(net.backbone.vit)
        for step in range(3):
            if step == 1:  # the encoder joins: as nnUNetTrainerDino._sync_encoder_warmup
                assert net.backbone.set_encoder_trainable(True)
                ddp = rewrap_ddp(ddp)
            optimizer.zero_grad()
            F.cross_entropy(ddp(torch.randn(2, 1, 32, 32)), torch.randint(0, 3, (2, 32, 32))).backward()
            assert not [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
            optimizer.step()
            if step == 0:
                assert all(torch.equal(v, net.backbone.vit.state_dict()[k]) for k, v in encoder.items())
        grads = torch.cat([p.grad.flatten() for p in net.backbone.vit.parameters() if p.grad is not None])
        gathered = [torch.zeros_like(grads) for _ in range(world)]
        dist.all_gather(gathered, grads)
        results[rank] = bool(torch.equal(gathered[0], gathered[1])) and float(grads.abs().sum()) > 0
    finally:
        dist.destroy_process_group()


def test_ddp_reduces_the_encoder_once_it_joins_after_the_warm_up():
    import torch.multiprocessing as mp
    results = mp.Manager().dict()
    mp.spawn(_warmup_worker, args=(2, free_port(), results), nprocs=2, join=True)
    assert results[0] and results[1], "encoder gradients differ across ranks or are all zero"
