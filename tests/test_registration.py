"""nnU-Net finds the plugin trainers in a fresh shell, with no export, editable or not."""
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from nnunet_helpers import clean_environment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESOLVE = (
    "import os, pickle\n"
    "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
    "from nnunet_dino.training.trainers import __all__ as names\n"
    "for n in names:\n"
    "    cls = find(n)\n"
    "    assert pickle.loads(pickle.dumps(cls)) is cls, n\n"
    "    print('RESOLVED', n, cls.__module__)\n"
    "import nnunet_dino\n"
    "print('PACKAGE', nnunet_dino.__file__)\n"
    "print('EXT', os.environ['nnUNet_extTrainer'])\n"
)


def _run(python, code, cwd, env=None):
    proc = subprocess.run([python, "-c", code], cwd=cwd, env=env or clean_environment(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


def test_fresh_shell_resolves_every_trainer_with_a_stable_module_path(tmp_path):
    out = _run(sys.executable, RESOLVE, cwd=str(tmp_path))
    from nnunet_dino.training.trainers import __all__ as names
    for name in names:
        assert f"RESOLVED {name} nnunet_dino.training.trainers" in out
    ext = out.split("EXT ", 1)[1].strip()
    assert os.path.isfile(os.path.join(ext, "nnunet_dino_trainers.py"))


def test_env_command_prints_the_trainer_folder():
    cli = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")
    out = subprocess.run([cli, "env"], env=clean_environment(), stdout=subprocess.PIPE, text=True, check=True).stdout
    assert out.startswith("export nnUNet_extTrainer=")
    folder = subprocess.run([cli, "env", "--path"], env=clean_environment(), stdout=subprocess.PIPE, text=True,
                            check=True).stdout.strip()
    assert os.path.isfile(os.path.join(folder, "nnunet_dino_trainers.py")) and folder in out


def test_non_editable_install_registers_too(tmp_path):
    """`pip install --no-deps .` into a venv that sees the dependencies (system-site-packages style)."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                             "demo_output", "tests"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    # the dependencies (torch, nnunetv2, pip, setuptools) come from the test interpreter's site-packages
    with open(os.path.join(site, "_test_deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    env = clean_environment()
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                          "--no-build-isolation", "--no-index", str(src)], cwd=str(tmp_path), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert pip.returncode == 0, pip.stdout[-3000:]
    assert os.path.isfile(os.path.join(site, "nnunet_dino_autoregister.pth"))
    out = _run(str(venv / "bin" / "python"), RESOLVE, cwd=str(tmp_path), env=env)
    assert out.split("PACKAGE ", 1)[1].startswith(site)
    assert out.split("EXT ", 1)[1].strip() == os.path.join(site, "nnunet_dino", "trainers")


@pytest.mark.parametrize("weights", ["unset", "folder"])
def test_doctor_reports_trainers_and_weights(tmp_path, weights):
    cli = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")
    env = clean_environment()
    if weights == "folder":
        import torch
        from nnunet_dino.backbones import FrozenDinoBackbone, get_backbone_spec
        torch.save(FrozenDinoBackbone(get_backbone_spec("dinov3_vits16")).vit.state_dict(),
                   tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth")
        env["nnUNet_dino_weights"] = str(tmp_path)
    proc = subprocess.run([cli, "doctor"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout
    out = proc.stdout
    for key in ("torch 2.", "nnunetv2 2.8", "timm 1.0", "device:"):
        assert key in out
    from nnunet_dino.networks.base import cpu_has_native_bf16
    assert ("bf16 autocast (native bf16" if cpu_has_native_bf16() else "fp32 (no native bf16)") in out
    assert "nnUNetTrainerSegDINO               found (nnunet_dino.training.trainers)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  dino")}
    if weights == "unset":
        assert "unset: training refuses to start" in out
        assert all("no weights found" in line for line in lines.values())
    else:
        assert "dinov3_vits16_pretrain_lvd1689m-08c60483.pth" in lines["dinov3_vits16"]
        assert "no weights found" in lines["dinov2_vitb14"]
