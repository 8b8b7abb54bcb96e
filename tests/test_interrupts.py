"""Ctrl-C stops a command within seconds, prints one line, and leaves nothing half-written or running."""
import os
import signal
import subprocess
import sys
import textwrap
import time

from nnunet_dino.datasets.synthetic import make_synthetic_3d

CLI = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")


def _wait_for(predicate, timeout_s: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _sigint_default() -> None:
    """Children start with Ctrl-C's default action even when this suite runs in a background job (whose
    shell ignores SIGINT, and an ignored signal stays ignored across exec: Python would not install its
    KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(process: subprocess.Popen, within_s: float = 20.0):
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=within_s)
    return process.returncode, err


def test_ctrl_c_during_onboarding_removes_the_staging_folder(tmp_path):
    source = make_synthetic_3d(str(tmp_path / "source"), 991, num_train=6, num_test=0)
    raw = tmp_path / "raw"
    os.makedirs(raw)
    env = dict(os.environ, nnUNet_raw=str(raw))
    process = subprocess.Popen([CLI, "onboard", os.path.join(source, "imagesTr"), os.path.join(source, "labelsTr"),
                                "-d", "12", "-n", "Stop", "--image-pattern", "{case}_{channel}.nii.gz",
                                "--no-progress", "-np", "1"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    _wait_for(lambda: any(".onboarding-" in d for d in os.listdir(raw)) or process.poll() is not None,
              what="the staging folder")
    assert process.poll() is None, "onboarding finished before it could be interrupted"
    code, err = _interrupt(process)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert os.listdir(raw) == []


def test_ctrl_c_stops_the_nnunet_child_process(tmp_path):
    """The one subprocess runner ends the nnU-Net command it started when it is interrupted."""
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import subprocess, sys
        from nnunet_dino.nnunet import runner
        original = subprocess.Popen
        def recording(*args, **kwargs):
            process = original(*args, **kwargs)
            open({str(pid_file)!r}, "w").write(str(process.pid))
            return process
        runner.subprocess.Popen = recording
        try:
            runner.run_nnunet(["sleep", "300"], echo=False)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_sigint_default)
    _wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="the child process")
    child = int(pid_file.read_text())
    code, err = _interrupt(process)
    assert code == 130, err
    _wait_for(lambda: not os.path.exists(f"/proc/{child}") or "zombie" in open(f"/proc/{child}/status").read().lower(),
              timeout_s=15, what="the child to end")


def test_ctrl_c_ends_a_child_of_its_own_session_with_its_whole_group(tmp_path):
    """`own_session` (nnU-Net's integrity check, whose worker pool ignores Ctrl-C): the runner ends the child's
    whole process group, a grandchild that would outlive its parent included."""
    pid_file = tmp_path / "grandchild.pid"
    grandchild = (f"import subprocess, sys, time; p = subprocess.Popen(['sleep', '300']); "
                  f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(300)")
    script = textwrap.dedent(f"""
        import sys
        from nnunet_dino.nnunet import runner
        try:
            runner.run_nnunet([sys.executable, "-c", {grandchild!r}], echo=False, own_session=True)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_sigint_default)
    _wait_for(lambda: pid_file.exists() and pid_file.read_text() or process.poll() is not None,
              what="the grandchild process")
    assert process.poll() is None, process.communicate()
    orphan = int(pid_file.read_text())
    code, err = _interrupt(process)
    assert code == 130, err
    _wait_for(lambda: not os.path.exists(f"/proc/{orphan}") or "zombie" in open(f"/proc/{orphan}/status").read().lower(),
              timeout_s=15, what="the grandchild to end")


# --- every long command: Ctrl-C while the runner's child runs, or at a write ---------------------------------
STAND_IN = """import os, sys, time
open({pid_file!r}, "w").write(str(os.getpid()))
time.sleep(300)
"""
DRIVER = """import sys
from nnunet_dino.nnunet import runner
runner.launch_command = lambda name: [{stand_in!r}]  # every command the runner starts is the stand-in
{setup}
from nnunet_dino.cli import main
sys.exit(main({argv!r}))
"""


def _interrupted_at_its_child(tmp_path, argv, env=None, setup="", marker_timeout_s=120.0):
    """`nnunet-dino ARGV` in a child Python where every command the one runner starts is a stand-in that
    writes its pid and sleeps; Ctrl-C once the stand-in runs. Returns (exit code, stderr)."""
    pid_file, stand_in = tmp_path / "stand_in.pid", tmp_path / "stand_in"
    stand_in.write_text(f"#!{sys.executable}\n" + STAND_IN.format(pid_file=str(pid_file)))
    stand_in.chmod(0o755)
    script = DRIVER.format(stand_in=str(stand_in), setup=setup, argv=list(argv))
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_sigint_default, cwd=str(tmp_path))
    try:
        _wait_for(lambda: pid_file.exists() and pid_file.read_text() or process.poll() is not None,
                  timeout_s=marker_timeout_s, what="the command's child process")
        assert process.poll() is None, process.communicate()
        child = int(pid_file.read_text())
        code, err = _interrupt(process)
    finally:
        if process.poll() is None:
            process.kill()
    _wait_for(lambda: not os.path.exists(f"/proc/{child}") or "zombie" in open(f"/proc/{child}/status").read().lower(),
              timeout_s=15, what="the child to end")
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return code, err


def test_ctrl_c_in_crossval_stops_the_training_child(synthetic_2d, tmp_path):
    env = dict(os.environ, **{**synthetic_2d["env"], "nnUNet_results": str(tmp_path / "results")})
    setup = ("import nnunet_dino.crossval.folds as folds\n"  # nnU-Net's trainer search (many seconds) is not the point
             "folds.require_trainers = lambda names: None")
    _interrupted_at_its_child(tmp_path, ["crossval", "-d", "990", "-tr", "nnUNetTrainer", "--folds", "0",
                                         "--device", "cpu"], env, setup=setup)
    log = os.path.join(tmp_path, "results", synthetic_2d["dataset"], "crossval_logs", "commands.log")
    assert "start train" in open(log).read()  # the fold was started, through the runner


def test_ctrl_c_in_bench_stops_the_memory_child_and_writes_no_results(tmp_path):
    setup = ("import nnunet_dino.bench as bench\nfrom nnunet_dino.bench.measure import memory_in_children\n"
             "bench.run_benchmark = lambda settings: memory_in_children('nnunet', 'nnUNetTrainer', settings)")
    _interrupted_at_its_child(tmp_path, ["bench", "--patch", "32", "32", "--batch", "1", "--device", "cpu",
                                         "--json", str(tmp_path / "bench.json")], setup=setup, marker_timeout_s=60)
    assert not (tmp_path / "bench.json").exists()


def test_ctrl_c_in_the_demo_stops_nnunet_and_writes_no_report(tmp_path):
    env = dict(os.environ, nnUNet_dino_weights="random")
    _interrupted_at_its_child(tmp_path, ["demo", "--dataset", "synthetic", "--output", str(tmp_path / "demo")], env)
    assert not any(name.endswith((".md", ".html", ".png")) for name in os.listdir(tmp_path / "demo"))


def test_ctrl_c_while_report_writes_leaves_no_report_file(tmp_path, monkeypatch, capsys):
    """In-process: the report is built and written in a hidden folder and moved into place at the end."""
    import nnunet_dino.crossval as crossval
    from nnunet_dino.cli import main
    output = tmp_path / "cv_report"

    def evaluated(dataset, trainers, output, **options):
        os.makedirs(os.path.join(output, "evaluation", "fold_0"))
        with open(os.path.join(output, "evaluation", "fold_0", "metrics_summary.json"), "w") as f:
            f.write("{}")
        return object()

    def written_halfway(report, output):
        with open(os.path.join(output, "report.md"), "w") as f:
            f.write("# Cross-validation: half")
        raise KeyboardInterrupt

    monkeypatch.setattr(crossval, "build_report", evaluated)
    monkeypatch.setattr(crossval, "write_report", written_halfway)
    assert main(["report", "-d", "990", "-tr", "nnUNetTrainer", "-o", str(output)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and len(err.strip().splitlines()) == 1, err
    assert not output.exists(), os.listdir(output)


def test_ctrl_c_while_pretrain_saves_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    """In-process, at the first save of the resumable state: no output, no partial state file."""
    import torch
    from dino_weights_helpers import tiny_spec
    from nnunet_dino.backbones import registry
    from nnunet_dino.cli import main
    from nnunet_dino.datasets.synthetic import make_synthetic_2d
    spec = tiny_spec("dinov3_vits16")
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    images = os.path.join(make_synthetic_2d(str(tmp_path / "raw"), 990, num_train=2, num_test=0), "imagesTr")
    saved = torch.save

    def cut_short(obj, path, *args, **kwargs):
        saved({"half": torch.zeros(8)}, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", cut_short)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["pretrain", "--folder", images, "--backbone", spec.name, "--init", "random", "--steps", "2",
            "--save-every", "1", "--batch-size", "2", "--global-size", "32", "--local-crops", "0", "--prototypes",
            "16", "--head-hidden", "16", "--head-bottleneck", "8", "--no-progress", "-o", str(out / "tiny.pth")]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(os.listdir(out)) == [], os.listdir(out)
