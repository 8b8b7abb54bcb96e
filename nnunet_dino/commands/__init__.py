"""The `nnunet-dino` commands, one module each. A command module exposes `add_parser(subparsers)`,
which adds its sub-parser and sets `run`, and `run(args) -> exit code`; it imports heavy libraries
inside `run` so `nnunet-dino --help` stays fast. `cli.main` turns a `UserError` into one message and
exit code 2. Shared argument groups live here."""
from __future__ import annotations

import argparse

#: in the order `nnunet-dino --help` lists them
COMMANDS = ("doctor", "env", "make_dataset", "onboard", "plan", "crossval", "report", "select", "predict", "evaluate",
            "bundle", "weights", "pretrain", "bench", "gpu_check", "demo")


def fold_argument(text: str):
    """A fold as nnU-Net takes it: a number, or 'all'."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fold: give a number or 'all'") from None


def add_model_selection(parser: argparse.ArgumentParser, fractions: bool = True) -> None:
    """-d, -tr, --folds, -p, -c (and, with `fractions`, --train-fractions, --fraction-seed): which trained
    models of which dataset (crossval, report, select)."""
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    parser.add_argument("-tr", "--trainers", "--models", nargs="+", required=True, metavar="MODEL",
                        help="models as TRAINER[:CONFIGURATION[:PLANS]], e.g. nnUNetTrainer:3d_fullres:"
                             "nnUNetResEncUNetMPlans nnUNetTrainerUDFA:2d; omitted parts are -c and -p")
    parser.add_argument("--folds", type=fold_argument, nargs="+", default=[0, 1, 2, 3, 4],
                        help="folds (default: 0 1 2 3 4); 'all' trains one model on every case, as nnU-Net's fold all")
    parser.add_argument("-p", "--plans", default="nnUNetPlans",
                        help="plans identifier of models that do not name one (default: nnUNetPlans)")
    parser.add_argument("-c", "--configuration", default="2d",
                        help="configuration of models that do not name one (default: 2d)")
    if not fractions:
        return
    parser.add_argument("--train-fractions", type=float, nargs="+", default=[1.0], metavar="F",
                        help="label efficiency: also train on a seeded fraction F of each fold's training cases "
                             "(same subset for every model, validation cases unchanged; 1.0 = the full-data run), "
                             "e.g. 0.1 0.25 0.5 1.0")
    parser.add_argument("--fraction-seed", type=int, default=0,
                        help="seed of the train-fraction subsets (default: 0)")
