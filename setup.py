"""nnunet-dino: frozen DINO foundation encoders inside stock nnU-Net v2.

`trainers/` (the folder nnU-Net scans through `nnUNet_extTrainer`) lives at the repository root
and is installed as `nnunet_dino.trainers`; every other module is under `nnunet_dino/`. A one-line `.pth` startup hook adds the trainer folder to
`nnUNet_extTrainer`, so `pip install` alone makes `nnUNetv2_train ... -tr nnUNetTrainerSegDINO` work.
"""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH_FILE = "nnunet_dino_autoregister.pth"


class BuildPyWithStartupHook(build_py):
    """Copy the `.pth` startup hook to the root of the built tree (the site-packages root)."""

    def run(self):
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        # editable wheels are assembled from the install dir, regular wheels from build_lib
        target = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        os.makedirs(target, exist_ok=True)
        shutil.copyfile(os.path.join(here, PTH_FILE), os.path.join(target, PTH_FILE))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH_FILE)]


packages = [p for p in find_packages(include=["nnunet_dino", "nnunet_dino.*"])]
setup(
    name="nnunet-dino",
    version="0.1.0",
    description="Frozen DINOv2/DINOv3 encoders (U-DFA, Dino U-Net, SegDINO) as nnU-Net v2 trainers",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages + ["nnunet_dino.trainers"],
    package_dir={"nnunet_dino.trainers": "trainers"},
    cmdclass={"build_py": BuildPyWithStartupHook},
    install_requires=[
        "torch>=2.1.2,!=2.9.*",
        "nnunetv2>=2.8.1,<2.9",
        "dynamic-network-architectures>=0.4.4,<0.5",
        "timm>=1.0.20,<1.0.29",  # public API only; CI pins 1.0.22, the tests also pass on 1.0.28
        "safetensors>=0.4",
        "numpy>=1.24",
        "scipy>=1.10",
        "SimpleITK>=2.2.1",
        "highdicom>=0.28,<0.30",  # DICOM-SEG masks in `onboard` (brings pydicom 3)
    ],
    extras_require={
        "hub": ["huggingface_hub>=0.20"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "transformers>=4.56", "medpy>=0.5"],
    },
    entry_points={"console_scripts": ["nnunet-dino=nnunet_dino.cli:main"]},
)
