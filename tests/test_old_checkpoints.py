"""Nothing checkpointed before stops loading: slim (and bundled) checkpoints written by an earlier commit's code
(tests/fixtures/old_checkpoints.py: one case per family and adaptation mode, a 2.5D slab among them) load into
the networks of today's code and give the outputs they gave then."""
import glob
import importlib
import os

import pytest
import torch

from fixtures.old_checkpoints import checkpoint_of, expand, load
from nnunet_dino.backbones import get_backbone_spec
from nnunet_dino.backbones.adaptation import Adaptation
from nnunet_dino.networks.slab import make_slab
from nnunet_dino.training import trainers

FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "fixtures", "checkpoints_*.pth.gz")))
CASES = [(path, name) for path in FIXTURES for name in load(path)["cases"]]


def test_the_fixtures_are_small_and_there():
    assert FIXTURES and all(os.path.getsize(path) < 200_000 for path in FIXTURES)


@pytest.mark.parametrize("path, name", CASES, ids=[f"{os.path.basename(p).split('.')[0]}-{n}" for p, n in CASES])
def test_an_old_checkpoint_loads_and_predicts_as_it_did(path, name, tmp_path, monkeypatch, one_thread):
    case = load(path)["cases"][name]
    base, arch = case["backbone"]
    spec = get_backbone_spec(base).variant(f"fixture_{base}", **arch)
    if case["weights"] == "file":  # the frozen base: rebuilt from its recipes into a weights file
        torch.save(expand(case["base_weights"]), tmp_path / f"{spec.name}.pth")
        monkeypatch.setenv("nnUNet_dino_weights", str(tmp_path / f"{spec.name}.pth"))
    else:
        monkeypatch.delenv("nnUNet_dino_weights", raising=False)
    module, cls = case["network"].split(":")
    net = getattr(importlib.import_module(module), cls)(1, 3, backbone=spec, cpu_precision="fp32", **case["options"])
    if case["adaptation"] is not None:
        net.backbone.adapt(Adaptation.from_record(case["adaptation"]))
    if case["slices"]:
        make_slab(net, case["slices"], "rgb")
    checkpoint = checkpoint_of(case)
    assert hasattr(trainers, checkpoint["trainer_name"])  # nnU-Net finds the trainer the checkpoint names
    net.load_state_dict(checkpoint["network_weights"])
    with torch.no_grad():
        out = net.eval()(case["input"])
    torch.testing.assert_close(out, case["output"], rtol=1e-4, atol=1e-4)
