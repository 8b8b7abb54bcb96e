"""The `nnunet-dino` commands, one module each. A command module exposes `add_parser(subparsers)`,
which adds its sub-parser and sets `run`, and `run(args) -> exit code`; it imports heavy libraries
inside `run` so `nnunet-dino --help` stays fast. `cli.main` turns a `UserError` into one message and
exit code 2. Shared argument groups live here."""
from __future__ import annotations

import argparse

#: in the order `nnunet-dino --help` lists them
COMMANDS = ("doctor", "env", "make_dataset", "onboard", "plan", "crossval", "report", "evaluate", "bundle",
            "bench", "demo")


def add_model_selection(parser: argparse.ArgumentParser) -> None:
    """-d, -tr, --folds, -p, -c: which trained models of which dataset (crossval and report)."""
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    parser.add_argument("-tr", "--trainers", nargs="+", required=True, help="nnU-Net trainer class names")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="folds (default: 0 1 2 3 4)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-c", "--configuration", default="2d", help="configuration (default: 2d)")
