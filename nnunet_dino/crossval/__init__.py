"""Cross-validation through nnU-Net's own commands: the missing folds of several trainers run
resumably (`folds`) or are written as scripts (`scripts`); `report` scores and compares them
(`statistics`) and writes the report's files (`report_files`)."""
from .folds import run_crossval
from .report import build_report, default_report_folder
from .report_files import write_report
from .scripts import emit_scripts

__all__ = ["build_report", "default_report_folder", "emit_scripts", "run_crossval", "write_report"]
