"""`nnunet-dino env`: the nnUNet_extTrainer line that registers the plugin's trainers."""
import os


EXAMPLE = "example: nnunet-dino env --path"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("env", help="print the nnUNet_extTrainer export line (or --path: the folder)",
                              epilog=EXAMPLE)
    p.add_argument("--path", action="store_true", help="print only the trainer folder")
    p.set_defaults(run=run)


def run(args) -> int:
    from .._autoregister import ENV_VAR, register
    folder = register()
    print(folder if args.path else f"export {ENV_VAR}={os.environ[ENV_VAR]}")
    return 0
