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
