"""`nnunet-dino doctor`: versions, device, trainer registration, weights per backbone."""


EXAMPLE = "example: nnunet-dino doctor"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="versions, device, trainer registration, weights per backbone",
                              epilog=EXAMPLE)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..doctor import report
    text, all_found = report()
    print(text)
    return 0 if all_found else 1
