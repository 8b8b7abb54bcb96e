"""`nnunet-dino report`: the cross-validation report of several models."""
import contextlib
import os
import shutil
import tempfile

from . import add_model_selection


EXAMPLE = ("example: nnunet-dino report -d 42 -tr nnUNetTrainer:3d_fullres nnUNetTrainerUDFA_S --train-fractions "
           "0.25 1.0")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="cross-validation report of any models (TRAINER[:CONFIGURATION[:PLANS]]): "
                                             "Dice/HD95/ASD per class (mean ± sd over folds), bootstrap intervals, "
                                             "Wilcoxon + Holm and a verdict against a reference, learning curves of "
                                             "train fractions, parameters, times; Markdown and self-contained HTML",
                                             epilog=EXAMPLE)
    add_model_selection(p)
    p.add_argument("--reference", default=None,
                   help="model the others are compared with, as given to -tr (default: the first "
                        "nnUNetTrainer[_variant] among -tr, else the first)")
    p.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default: 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    p.add_argument("-o", "--output", default=None, help="output folder (default: cv_report_<Dataset>)")
    p.add_argument("-np", type=int, default=1, help="evaluation worker processes (default: 1)")
    p.set_defaults(run=run)


@contextlib.contextmanager
def staged_into(folder: str):
    """A hidden folder inside `folder` to write into; afterwards its files replace their namesakes in `folder`,
    each by one rename (whole or not at all). On Ctrl-C or an error it goes, with `folder` if it was made for
    it and is still empty: nothing half-written is left."""
    made = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".writing-", dir=folder)
    try:
        yield staging
        for root, _, files in os.walk(staging):
            target = os.path.join(folder, os.path.relpath(root, staging))
            os.makedirs(target, exist_ok=True)
            for name in files:
                os.replace(os.path.join(root, name), os.path.join(target, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made and not os.listdir(folder):
            os.rmdir(folder)


def run(args) -> int:
    from ..crossval import build_report, default_report_folder, write_report
    from ..crossval.report_files import SUMMARY_HEADING
    from ..errors import OptionError
    from ..nnunet import dataset_name
    if args.resamples < 100:
        raise OptionError(f"--resamples {args.resamples}: use at least 100 (the default 10000 is usual)")
    folder = args.output or default_report_folder(dataset_name(args.dataset))
    with staged_into(folder) as staging:
        report = build_report(args.dataset, args.trainers, folds=args.folds, plans=args.plans,
                              configuration=args.configuration, output=staging, reference=args.reference,
                              num_processes=args.np, fractions=args.train_fractions, fraction_seed=args.fraction_seed,
                              n_resamples=args.resamples, seed=args.seed)
        written = {name: os.path.join(folder, os.path.relpath(path, staging))
                   for name, path in write_report(report, staging).items()}
    with open(written["markdown"]) as f:
        text = f.read()
    summary = text.split(SUMMARY_HEADING, 1)[1].split("\n## ", 1)[0]
    print(f"{SUMMARY_HEADING}{summary.rstrip()}")
    print(f"\nwritten: {', '.join(sorted(os.path.basename(p) for p in written.values()))} in {folder}")
    return 0
