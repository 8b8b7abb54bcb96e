"""nnU-Net finds the plugin trainers in a fresh shell, with no export, editable or not."""
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
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
    env.pop("PYTHONPATH", None)  # a PYTHONPATH naming a source checkout would shadow the installed copy under test
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                          "--no-build-isolation", "--no-index", str(src)], cwd=str(tmp_path), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert pip.returncode == 0, pip.stdout[-3000:]
    assert os.path.isfile(os.path.join(site, "nnunet_dino_autoregister.pth"))
    out = _run(str(venv / "bin" / "python"), RESOLVE, cwd=str(tmp_path), env=env)
    assert out.split("PACKAGE ", 1)[1].startswith(site)
    assert out.split("EXT ", 1)[1].strip() == os.path.join(site, "nnunet_dino", "trainers")


@pytest.mark.parametrize("weights", ["unset", "folder", "one_file"])
def test_doctor_reports_trainers_and_weights(tmp_path, weights):
    cli = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")
    env = clean_environment()
    good = tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"
    if weights != "unset":
        import torch
        from nnunet_dino.backbones import FrozenDinoBackbone, get_backbone_spec
        torch.save(FrozenDinoBackbone(get_backbone_spec("dinov3_vits16")).vit.state_dict(), good)
        (tmp_path / "dinov2_vitb14_pretrain.pth").write_bytes(np.random.default_rng(0).bytes(1000))  # garbage
        data = good.read_bytes()
        (tmp_path / "dinov2_vits14_pretrain.pth").write_bytes(data[: len(data) // 2])  # truncated download
        env["nnUNet_dino_weights"] = str(tmp_path if weights == "folder" else good)
    proc = subprocess.run([cli, "doctor"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout
    out = proc.stdout
    for key in ("torch 2.", "nnunetv2 2.8", "timm 1.0", "device:"):
        assert key in out
    from nnunet_dino.networks.base import cpu_has_native_bf16
    assert ("bf16 autocast (native bf16" if cpu_has_native_bf16() else "fp32 (no native bf16)") in out
    assert "nnUNetTrainerSegDINO               found (nnunet_dino.training.trainers)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  dino")}
    served = {line.split(": ")[0].strip(): line for line in out.split("the backbones they serve:")[-1].splitlines()}
    if weights == "unset":
        assert "unset: training refuses to start" in out
        assert all("no weights found" in line for line in lines.values())
        assert "the backbones they serve" not in out
    elif weights == "folder":
        assert f"found: file {good}" in lines["dinov3_vits16"]
        assert "UNUSABLE" in lines["dinov2_vitb14"] and "is not a checkpoint" in lines["dinov2_vitb14"]
        assert "UNUSABLE" in lines["dinov2_vits14"] and "truncated or corrupt" in lines["dinov2_vits14"]
        assert "no weights found" in lines["dinov2_vitl14"]
        assert served[f"file {good}"].endswith(": dinov3_vits16")
        assert served[f"file {tmp_path / 'dinov2_vitb14_pretrain.pth'}"].endswith("serves NO backbone (unusable, see above)")
    else:  # one file for every backbone: it serves only the one whose names and shapes it holds
        assert f"found: file {good}" in lines["dinov3_vits16"]
        assert all("UNUSABLE" in line for name, line in lines.items() if name != "dinov3_vits16")
        assert "do not fit backbone DINOV3 ViT (dinov3_vitb16" in lines["dinov3_vitb16"]
        assert served[f"file {good}"].endswith(": dinov3_vits16")
