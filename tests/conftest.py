"""Shared fixtures: datasets and trained models built once per run and shared by the xdist workers
(tests/README.md), the worker-to-core pinning and the heaviest-first module order."""
import os

# OpenMP threads that wait by spinning starve everything else on a busy CPU, and nnU-Net gives
# torch every core; sleeping waiters are somewhat slower on an idle machine (README, cpu_precision,
# has the measured figures). Set before torch loads libgomp; nnU-Net's subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from filelock import FileLock  # noqa: E402

from nnunet_helpers import clean_environment, write_nnunet_splits

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: modules whose tests (fixtures included) take minutes, heaviest first: under pytest-xdist they start
#: first, so the two workers finish together instead of one waiting on a late heavy module.
HEAVIEST_FIRST = ("test_slab_downstream.py", "test_reliability.py", "test_crossval_report.py", "test_e2e.py",
                  "test_cuda_readiness.py", "test_adaptation.py", "test_comparison_e2e.py", "test_bench.py",
                  "test_predict_ensemble.py", "test_pretrain_effect.py", "test_slab_e2e.py", "test_realdata.py",
                  "test_registration.py", "test_slim_checkpoints.py", "test_recipe_e2e.py", "test_pretrain_e2e.py",
                  "test_ddp.py", "test_slab.py", "test_segdino_v2.py", "test_interrupts.py")


def pytest_configure(config):
    """An xdist worker (and every nnU-Net process it starts) runs on a core of its own: nnU-Net gives
    torch every core of the machine, and two workers' trainings sharing both cores slow each other
    more than running apart."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[int(worker.lstrip("gw")) % len(cores)]})
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    def weight(item):
        name = os.path.basename(str(item.fspath))
        return HEAVIEST_FIRST.index(name) if name in HEAVIEST_FIRST else len(HEAVIEST_FIRST)
    items.sort(key=weight)  # stable: the order within a module and among the light ones is kept


def built_once(tmp_path_factory, name: str, build) -> str:
    """The folder `name` under the run's temporary root, filled by `build(folder)` once per test run:
    under pytest-xdist the first worker that asks builds it, the others wait and reuse it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    folder, done = root / name, root / f"{name}.built"
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(str(folder))
            done.touch()
    return str(folder)


@pytest.fixture(scope="session")
def synthetic_2d(tmp_path_factory):
    """nnU-Net folders holding Dataset990_Synth2D (10 + 2 grey 64x80 PNGs), planned + preprocessed, with
    nnU-Net's own 5-fold split written once here (tests training in parallel would each create it)."""
    from nnunet_dino.datasets.synthetic import make_synthetic_2d
    from nnunet_dino.nnunet import nnunet_environment, plan_and_preprocess

    def build(work):
        env = nnunet_environment(work, clean_environment())
        make_synthetic_2d(env["nnUNet_raw"], 990)
        plan_and_preprocess(990, env)
        write_nnunet_splits(os.path.join(env["nnUNet_preprocessed"], "Dataset990_Synth2D"))
    work = built_once(tmp_path_factory, "nnunet_2d", build)
    env = nnunet_environment(work, clean_environment())
    folder = os.path.join(env["nnUNet_raw"], "Dataset990_Synth2D")
    return {"env": env, "dataset": os.path.basename(folder), "raw_folder": folder, "work": work}


@pytest.fixture(scope="session")
def trained_segdino_2d(synthetic_2d, tmp_path_factory):
    """nnUNetTrainerSegDINO_debug trained once on Dataset990 (fold 0, random backbone) through
    nnUNetv2_train: {'env' (its results folder set), 'model' (the model folder)}. Read it only; a test
    that changes the model works on `copy_of(trained_segdino_2d, tmp_path)`."""
    from nnunet_dino.nnunet import train
    from nnunet_helpers import SEGDINO_DEBUG, results_folder
    env = dict(synthetic_2d["env"], nnUNet_dino_weights="random")
    results = built_once(tmp_path_factory, "segdino_2d_results",
                         lambda folder: train(990, SEGDINO_DEBUG, dict(env, nnUNet_results=folder)))
    env["nnUNet_results"] = results
    return {"env": env, "model": results_folder(env, synthetic_2d["dataset"], SEGDINO_DEBUG)}


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


@pytest.fixture(scope="session")
def synthetic_slabs(tmp_path_factory):
    """Dataset993_SynthSlabs (columns and flakes, 6 + 2 volumes of 10 x 32 x 32; datasets/slab_synthetic.py)
    planned in 2d and 3d_fullres, then `nnunet-dino plan --preset 2.5d`: {'env' (random backbone, a
    shared results folder: write models elsewhere), 'raw', 'name', 'plan_output' (what that plan printed)}."""
    import subprocess
    import sys
    from nnunet_dino.datasets.slab_synthetic import make_synthetic_slabs
    from nnunet_dino.nnunet import nnunet_environment, plan_and_preprocess

    def build(work):
        env = nnunet_environment(work, clean_environment())
        make_synthetic_slabs(env["nnUNet_raw"], 993, num_train=6, shape=(10, 32, 32))
        plan_and_preprocess(993, env, configurations=("2d", "3d_fullres"))
        cli = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")
        out = subprocess.run([cli, "plan", "-d", "993", "--preset", "2.5d", "-np", "1"], env=env, check=True,
                             capture_output=True, text=True).stdout
        with open(os.path.join(work, "plan_output.txt"), "w") as f:
            f.write(out)
    work = built_once(tmp_path_factory, "nnunet_slabs", build)
    env = dict(nnunet_environment(work, clean_environment()), nnUNet_dino_weights="random")
    raw = os.path.join(env["nnUNet_raw"], "Dataset993_SynthSlabs")
    return {"env": env, "raw": raw, "name": os.path.basename(raw),
            "plan_output": open(os.path.join(work, "plan_output.txt")).read()}
