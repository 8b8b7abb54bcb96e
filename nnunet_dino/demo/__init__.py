"""`make demo` / `nnunet-dino demo`: the plugin's main job on real anatomy, offline, on a CPU
(`run`), and its report with per-structure tables and figures (`report`)."""
from .run import run_demo

__all__ = ["run_demo"]
