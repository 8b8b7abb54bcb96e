"""`nnunet-dino bundle`: make a model folder's slim checkpoints self-contained, for sharing."""


EXAMPLE = "example: nnunet-dino bundle nnUNet_results/Dataset042_Liver/nnUNetTrainerUDFA_S__nnUNetPlans__2d"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bundle", help="make a model folder's slim checkpoints self-contained (for sharing)",
                              epilog=EXAMPLE)
    p.add_argument("model_folder", help="<nnUNet_results>/<Dataset>/<Trainer>__<Plans>__<configuration>")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..nnunet.models import bundle_model_folder
    rewritten = bundle_model_folder(args.model_folder)
    for path in rewritten:
        print(f"self-contained: {path}")
    if not rewritten:
        print(f"nothing to do: every checkpoint in {args.model_folder} is already self-contained")
    return 0
