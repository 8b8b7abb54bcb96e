"""`nnunet-dino select`: nnU-Net's best model or ensemble among any models (e.g. 3d_fullres beside 2.5d)."""
from . import add_model_selection


EXAMPLE = "example: nnunet-dino select -d 42 -tr nnUNetTrainer:3d_fullres nnUNetTrainerUDFA_S nnUNetTrainerUDFA_S:2.5d"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("select", help="nnU-Net's find_best_configuration over any models "
                                             "(TRAINER[:CONFIGURATION[:PLANS]], e.g. nnUNetTrainer:3d_fullres beside "
                                             "nnUNetTrainerSegDINO:2.5d): best model or ensemble, postprocessing, "
                                             "inference instructions", epilog=EXAMPLE)
    add_model_selection(p, fractions=False)
    p.add_argument("--no-ensembles", action="store_true", help="compare single models only (no .npz needed)")
    p.add_argument("-np", type=int, default=1, help="worker processes (default: 1)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..crossval.selection import select_best
    result = select_best(args.dataset, args.trainers, folds=args.folds, plans=args.plans,
                         configuration=args.configuration, ensembling=not args.no_ensembles, num_processes=args.np)
    best = result["best_model_or_ensemble"]
    chosen = " + ".join(f"{m['trainer']}:{m['configuration']}:{m['plans_identifier']}"
                        for m in best["selected_model_or_models"])
    print(f"\nbest: {chosen} (cross-validation mean foreground Dice {best['result_on_crossval_pre_pp']:.4f}, "
          f"{best['result_on_crossval_post_pp']:.4f} after postprocessing); inference_instructions.txt beside "
          f"the dataset's models says how to predict with it")
    return 0
