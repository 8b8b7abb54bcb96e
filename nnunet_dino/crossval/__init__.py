"""Cross-validation through nnU-Net's own commands, for any models (`models`: TRAINER[:CONFIGURATION[:PLANS]]):
the missing folds run resumably (`folds`) or are written as scripts (`scripts`), also on seeded fractions of
the training cases (`fractions`); `report` scores and compares them (`statistics`, `learning`) and writes
the report's files (`report_files`, `report_figures`, `report_html`)."""
from .folds import run_crossval
from .report import build_report, default_report_folder
from .report_files import write_report
from .scripts import emit_scripts

__all__ = ["build_report", "default_report_folder", "emit_scripts", "run_crossval", "write_report"]
