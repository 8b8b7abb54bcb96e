"""`nnunet-dino` command line: doctor, env, demo (and later: plan, evaluate, onboard, ...)."""
from __future__ import annotations

import argparse
import sys


def _doctor(args) -> int:
    from .doctor import report
    text, all_found = report()
    print(text)
    return 0 if all_found else 1


def _env(args) -> int:
    from ._autoregister import ENV_VAR, register
    import os
    folder = register()
    print(folder if args.path else f"export {ENV_VAR}={os.environ[ENV_VAR]}")
    return 0


def _demo(args) -> int:
    from .demo import run_demo
    run_demo(args.output, trainer=args.trainer, keep=args.keep)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-dino", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="versions, device, trainer registration, weights per backbone")
    p.set_defaults(func=_doctor)
    p = sub.add_parser("env", help="print the nnUNet_extTrainer export line (or --path: the folder)")
    p.add_argument("--path", action="store_true", help="print only the trainer folder")
    p.set_defaults(func=_env)
    p = sub.add_parser("demo", help="plan -> train -> predict -> evaluate on the built-in demo data (CPU)")
    p.add_argument("--output", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--trainer", default="nnUNetTrainerSegDINO_debug", help="plugin trainer to run")
    p.add_argument("--keep", action="store_true", help="reuse an existing output folder's dataset/plans")
    p.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
