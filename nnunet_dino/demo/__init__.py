"""`make demo` / `nnunet-dino demo`: the plugin's main job on real anatomy, offline, on a CPU
(`run`, printing its story with `console`), and its report with per-structure tables (`report`) and
figures shown as radiology viewers show them (`figures`)."""
from .run import DemoStepFailed, run_demo

__all__ = ["DemoStepFailed", "run_demo"]
