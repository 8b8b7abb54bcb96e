"""What the demo prints: its own story (steps, progress, results) on the console, everything else in its
log. nnU-Net's commands already write their output only to the log (the runner's `log_path` without
`stream`); what the demo's own process prints on nnU-Net's behalf (the trainer search's "Searching in
..." lines, import-time warnings such as torch.jit's FutureWarning, the runner's command lines) is sent
there too. A failed step shows the log's last lines and its path."""
from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from typing import Iterator, Optional

from ..errors import UserError
from ..nnunet.runner import NnUNetCommandError
from ..training.budget import parse_progress

FAILED_TAIL_LINES = 25  # of the log, shown when a step fails


class DemoStepFailed(RuntimeError):
    """A step of the demo failed; the console already shows the log's last lines and its path."""


class StepPrinter:
    """`[k/n] step` lines; while a trainer runs, its progress every `every_s` seconds and at the end.
    Prints to the console it was created on, so the story still reaches the user inside `quiet()`."""

    def __init__(self, steps: int, every_s: float = 20.0, log_path: Optional[str] = None):
        self.steps, self.current, self.every_s, self.last, self.printed = steps, 0, every_s, None, -1e9
        self.console, self.log_path, self.title, self.started = sys.stdout, log_path, "", time.monotonic()

    def say(self, text: str = "") -> None:
        print(text, file=self.console, flush=True)

    def step(self, text: str) -> None:
        self.current, self.last, self.printed = self.current + 1, None, -1e9
        self.title, self.started = text, time.monotonic()
        self.say(f"[{self.current}/{self.steps}] {text}")

    def done(self, result: str = "") -> None:
        """The end of the current step: its time, and what it gave."""
        self.say(f"      done in {time.monotonic() - self.started:.0f} s" + (f"; {result}" if result else ""))

    def __call__(self, line: str) -> None:  # a line of the trainer's output
        progress = parse_progress(line)
        if progress is None:
            return
        self.last = progress
        if time.monotonic() - self.printed >= self.every_s or progress.done >= progress.total:
            self.printed = time.monotonic()
            self.say(f"      {progress.done}/{progress.total} {progress.unit}, {progress.seconds:.0f} s of training, "
                     f"about {progress.seconds_left:.0f} s left")

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Inside: whatever the process prints or warns goes to the log, not the console. A failing step
        shows the end of the log and its path; a failed nnU-Net command becomes DemoStepFailed."""
        with open(self.log_path, "a", buffering=1) as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log), warnings.catch_warnings():
            def warning_to_log(message, category, filename, lineno, file=None, line=None):
                log.write(warnings.formatwarning(message, category, filename, lineno, line))
            warnings.showwarning = warning_to_log
            try:
                yield
            except NnUNetCommandError as error:  # its output is in the log already; its first line says which
                reason = str(error).splitlines()[0].rstrip(":")
                log.write(f"{reason}\n")
                self._show_failure(log, reason)
                raise DemoStepFailed(f"step {self.current}/{self.steps} ({self.title}) failed; "
                                     f"log: {self.log_path}") from None
            except UserError:  # one line from cli.main says what to fix
                raise
            except Exception as error:  # a bug: its traceback follows on the console
                self._show_failure(log, f"{type(error).__name__}: {error}")
                raise

    def _show_failure(self, log, reason: str) -> None:
        log.flush()
        with open(self.log_path) as f:
            tail = f.read().splitlines()[-FAILED_TAIL_LINES:]
        self.say(f"!! [{self.current}/{self.steps}] {self.title} FAILED: {reason}")
        self.say(f"!! the last {len(tail)} lines of {os.path.abspath(self.log_path)}:")
        for line in tail:
            self.say(f"   | {line}")
        self.say(f"!! the whole log: {os.path.abspath(self.log_path)}")
