"""`nnunet-dino report`: the cross-validation report of several trainers."""
import os

from . import add_model_selection


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="cross-validation report: Dice/HD95/ASD per class (mean ± sd over "
                                             "folds), Wilcoxon vs a reference trainer, parameter counts, box plots")
    add_model_selection(p)
    p.add_argument("--reference", default=None,
                   help="trainer the others are compared with (default: the first nnUNetTrainer[_variant] "
                        "among -tr, else the first)")
    p.add_argument("-o", "--output", default=None, help="output folder (default: cv_report_<Dataset>)")
    p.add_argument("-np", type=int, default=1, help="evaluation worker processes (default: 1)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..crossval import build_report, default_report_folder, write_report
    report = build_report(args.dataset, args.trainers, folds=args.folds, plans=args.plans,
                          configuration=args.configuration, output=args.output, reference=args.reference,
                          num_processes=args.np)
    paths = write_report(report, args.output or default_report_folder(report.dataset))
    with open(paths["markdown"]) as f:
        print(f.read().split("## Box plots")[0].rstrip())
    print(f"\nwritten: {', '.join(sorted(os.path.basename(p) for p in paths.values()))} in "
          f"{os.path.dirname(paths['markdown'])}")
    return 0
