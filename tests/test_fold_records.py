"""Per-fold weights records, atomic checkpoints and resuming past a corrupt checkpoint, in-process."""
import json
import os

import pytest
import torch

from nnunet_dino.networks.base import BACKBONE_RECORD_KEY
from nnunet_dino.training.base import CorruptCheckpointsError
from nnunet_dino.training.records import WEIGHTS_RECORD_FILE, fold_weights_record
from nnunet_dino.training.trainers import nnUNetTrainerSegDINO_debug
from nnunet_helpers import make_trainer

OTHER_WEIGHTS = {"backbone": "dinov3_vits16", "sha256": "f" * 64,
                 "weights": {"backbone": "dinov3_vits16", "source": "file", "format": "meta",
                             "path": "/data/dinov3_vits16_pretrain_lvd1689m-08c60483.pth"}}


def _log(trainer) -> str:
    return open(trainer.log_file).read()


@pytest.fixture
def trainer(nnunet_paths, monkeypatch):
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    return make_trainer(nnUNetTrainerSegDINO_debug, nnunet_paths["env"]["nnUNet_preprocessed"],
                        nnunet_paths["dataset"], fold=1)


def test_each_fold_records_its_weights_and_other_weights_are_warned_about(trainer):
    fold_0 = os.path.join(trainer.output_folder_base, "fold_0")
    os.makedirs(fold_0)
    with open(os.path.join(fold_0, WEIGHTS_RECORD_FILE), "w") as f:
        json.dump(OTHER_WEIGHTS, f)  # fold 0 was trained with a file
    trainer.initialize()
    assert "WARNING nnunet-dino: this fold is trained with a RANDOM backbone (seeded), but fold_0 was trained " \
           "with /data/dinov3_vits16_pretrain_lvd1689m-08c60483.pth" in _log(trainer)
    latest = os.path.join(trainer.output_folder, "checkpoint_latest.pth")
    trainer.save_checkpoint(latest)
    record = fold_weights_record(trainer.output_folder)
    assert record["weights"]["format"] == "random" and record == trainer.unwrapped_network.backbone_record()
    assert fold_weights_record(fold_0) == OTHER_WEIGHTS  # each fold keeps its own
    os.remove(os.path.join(trainer.output_folder, WEIGHTS_RECORD_FILE))  # the checkpoint is the truth
    assert fold_weights_record(trainer.output_folder) == dict(record, checkpoint="checkpoint_latest.pth")
    assert not [f for f in os.listdir(trainer.output_folder) if f.endswith(".partial")]  # renamed into place


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(trainer, monkeypatch):
    trainer.initialize()
    latest = os.path.join(trainer.output_folder, "checkpoint_latest.pth")
    trainer.save_checkpoint(latest)
    before = open(latest, "rb").read()
    real_save = torch.save

    def killed_halfway(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise KeyboardInterrupt  # stands in for the kill
    monkeypatch.setattr(torch, "save", killed_halfway)
    trainer.current_epoch = 1
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(latest)
    assert open(latest, "rb").read() == before  # intact, still loadable
    assert BACKBONE_RECORD_KEY in torch.load(latest, weights_only=False)["network_weights"]


def test_resume_skips_a_corrupt_checkpoint(trainer):
    trainer.initialize()
    best, latest = (os.path.join(trainer.output_folder, f"checkpoint_{n}.pth") for n in ("best", "latest"))
    trainer.current_epoch = 0
    trainer.save_checkpoint(best)  # epoch 1 when resumed
    trainer.current_epoch = 1
    trainer.save_checkpoint(latest)
    with open(latest, "r+b") as f:
        f.truncate(os.path.getsize(latest) // 2)  # as an unsafe writer killed mid-write leaves it
    trainer.resuming = True  # nnUNetv2_train --c
    trainer.load_checkpoint(latest)  # what nnU-Net's --c picks
    assert trainer.current_epoch == 1
    assert "cannot read checkpoint_latest.pth" in _log(trainer) and "Resuming from checkpoint_best.pth (epoch 1)" \
        in _log(trainer)
    with open(best, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(CorruptCheckpointsError, match="every checkpoint is corrupt.*checkpoint_best.pth"):
        trainer.load_checkpoint(latest)
