"""One module per `nnunet-dino` command: `add_parser(subparsers)` and `run(args) -> int`."""
