"""`nnunet-dino demo` (`make demo`): the plugin's main job on real MRI, offline, on a CPU."""


EXAMPLE = "example: nnunet-dino demo --output demo_output"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="real MRI (mricron-data): plan, train a DINO trainer and nnUNetTrainer "
                                           "for one budget, predict, evaluate, write report.md + figures",
                                           epilog=EXAMPLE)
    p.add_argument("--budget-seconds", type=float, default=None, metavar="S",
                   help="train each model for S seconds of wall clock instead of the trainers' fixed number "
                        "of iterations (equal time: the result then depends on the machine)")
    p.add_argument("--output", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--trainer", default="nnUNetTrainerUDFA_S_demo", help="the DINO trainer to run")
    p.add_argument("--baseline", default="nnUNetTrainer_demo", help="the comparison trainer")
    p.add_argument("--dataset", default="auto", choices=["auto", "colin27", "synthetic"],
                   help="auto: Colin27 if mricron-data is installed, else synthetic")
    p.add_argument("--keep", action="store_true", help="keep an existing output folder's nnU-Net data")
    p.set_defaults(run=run)


def run(args) -> int:
    import sys
    from ..demo import DemoStepFailed, run_demo
    try:
        run_demo(args.output, trainer=args.trainer, baseline=args.baseline, dataset=args.dataset, keep=args.keep,
                 budget_seconds=args.budget_seconds)
    except DemoStepFailed as failure:  # the console shows the end of the log already
        print(f"nnunet-dino demo: {failure}", file=sys.stderr)
        return 1
    return 0
