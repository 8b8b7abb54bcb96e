"""Shared fixtures: one tiny synthetic 2D dataset, planned and preprocessed once per session."""
import os

# OpenMP threads that wait by spinning starve everything else on a busy CPU, and nnU-Net gives
# torch every core; sleeping waiters are somewhat slower on an idle machine (README, cpu_precision,
# has the measured figures). Set before torch loads libgomp; nnU-Net's subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from nnunet_helpers import clean_environment

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def synthetic_2d(tmp_path_factory):
    """nnU-Net folders holding Dataset990_Synth2D (10 + 2 grey 64x80 PNGs), planned + preprocessed."""
    from nnunet_dino.datasets.synthetic import make_synthetic_2d
    from nnunet_dino.nnunet import nnunet_environment, plan_and_preprocess
    work = str(tmp_path_factory.mktemp("nnunet_2d"))
    env = nnunet_environment(work, clean_environment())
    folder = make_synthetic_2d(env["nnUNet_raw"], 990)
    plan_and_preprocess(990, env)
    return {"env": env, "dataset": os.path.basename(folder), "raw_folder": folder, "work": work}


@pytest.fixture
def nnunet_paths(monkeypatch, synthetic_2d, tmp_path):
    """In-process nnU-Net paths: the shared preprocessed data, a fresh results folder per test."""
    env = synthetic_2d["env"]
    monkeypatch.setenv("nnUNet_raw", env["nnUNet_raw"])
    monkeypatch.setenv("nnUNet_preprocessed", env["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    return synthetic_2d


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, which also spares them a busy, oversubscribed CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_compiler_state():
    """Each test compiles from a clean torch.compile state: graphs and guards cached by an earlier test's
    networks (e.g. another adaptation of the same family) must not leak into the next one's trace."""
    yield
    import sys
    if "torch._dynamo" in sys.modules:
        torch._dynamo.reset()
