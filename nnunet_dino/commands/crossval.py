"""`nnunet-dino crossval`: run the missing folds of several models (resumable), or --emit scripts."""
from . import add_model_selection


EXAMPLE = "example: nnunet-dino crossval -d 42 -tr nnUNetTrainer:3d_fullres nnUNetTrainerUDFA_S:2d --npz"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("crossval", help="run the missing cross-validation folds of several models (any "
                                               "TRAINER[:CONFIGURATION[:PLANS]], optionally at train fractions) "
                                               "with nnUNetv2_train (resumable), or --emit them as scripts",
                                               epilog=EXAMPLE)
    add_model_selection(p)
    p.add_argument("--device", default=None, choices=["cpu", "cuda", "mps"],
                   help="default: cuda if available, else cpu (with --emit: cuda)")
    p.add_argument("--npz", action="store_true", help="save validation softmax (.npz), for find_best_configuration")
    p.add_argument("--num-gpus", type=int, default=1, help="nnU-Net's -num_gpus (DDP) inside each fold")
    p.add_argument("--keep-going", action="store_true", help="after a failed fold, run the others")
    p.add_argument("--emit", metavar="DIR", default=None,
                   help="write run_folds.sh and job_array.sh (SLURM array) into DIR instead of running")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..crossval import emit_scripts, run_crossval
    selection = dict(folds=args.folds, plans=args.plans, configuration=args.configuration, npz=args.npz,
                     num_gpus=args.num_gpus, fractions=args.train_fractions, fraction_seed=args.fraction_seed)
    if args.emit:
        emit_scripts(args.dataset, args.trainers, args.emit, device=args.device or "cuda", **selection)
        return 0
    return run_crossval(args.dataset, args.trainers, device=args.device, keep_going=args.keep_going, **selection)
