"""`nnunet-dino`: set-up checks, datasets, planning, cross-validation, evaluation, sharing, benchmarks
and the demo around stock nnU-Net v2."""
from __future__ import annotations

import argparse
import importlib
import sys

from .commands import COMMANDS
from .errors import UserError

#: the epilog of every command's --help: one line, a command a user can paste
EXAMPLE_PREFIX = "example: "


def installed_version() -> str:
    """The installed distribution's version (setup.py's), as pip reports it."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("nnunet-dino")
    except PackageNotFoundError:
        return "unknown (the package is not installed; pip install it)"


class ExampleKeepingFormatter(argparse.HelpFormatter):
    """argparse's layout, except that an `example: ...` epilog stays one line, so it can be copied."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXAMPLE_PREFIX):
            return indent + text
        return super()._fill_text(text, width, indent)


def _keep_examples(parser: argparse.ArgumentParser) -> None:
    """Give `parser` and every sub-parser below it the example-keeping layout."""
    if parser.formatter_class is argparse.HelpFormatter:
        parser.formatter_class = ExampleKeepingFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _keep_examples(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-dino", description=__doc__,
                                     epilog=f"{EXAMPLE_PREFIX}nnunet-dino doctor")
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name}", __package__)
        module.add_parser(subparsers)
    _keep_examples(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as error:
        print(f"nnunet-dino {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nnunet-dino {args.command}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
