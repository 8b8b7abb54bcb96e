"""Make nnU-Net find the plugin trainers with no user action.

nnunetv2 >= 2.8 looks for trainers outside its package only in the folders listed in the
`nnUNet_extTrainer` environment variable (os.pathsep separated). The `.pth` startup hook that
`pip install` places in site-packages imports this module in every Python process; it appends our
trainer folder to that variable, which child processes (DDP spawn, workers) inherit.
Standard library only: this runs at every interpreter start.
"""
import importlib.util
import os

from nnunet_dino import environment

ENV_VAR = "nnUNet_extTrainer"


def trainer_folder() -> str:
    """The folder nnU-Net must scan: the installed `nnunet_dino.trainers` package."""
    spec = importlib.util.find_spec("nnunet_dino.trainers")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nnunet_dino.trainers is not installed; reinstall nnunet-dino")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def register(environ=os.environ) -> str:
    """Append the trainer folder to `nnUNet_extTrainer` unless it is already listed."""
    folder = trainer_folder()
    current = [p for p in environ.get(ENV_VAR, "").split(os.pathsep) if p]
    if folder not in (os.path.abspath(p) for p in current):
        environ[ENV_VAR] = os.pathsep.join(current + [folder])
    return folder


if environment.get(environment.NO_AUTOREGISTER, "0") not in ("1", "true", "True"):
    register()
