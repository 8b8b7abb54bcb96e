"""`nnunet-dino predict`: nnUNetv2_predict, with the folds of an ensemble sharing one frozen encoder."""
from ..errors import OptionError

EXAMPLE = ("example: nnunet-dino predict -i nnUNet_raw/Dataset042_Liver/imagesTs -o predictions -d 42 -c 2d "
           "-tr nnUNetTrainerSegDINO -f 0 1 2 3 4 -device cpu")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", epilog=EXAMPLE,
                              help="nnUNetv2_predict's arguments and outputs; the folds of a frozen-encoder model "
                                   "share one encoder forward per tile and mirror (--tile-batch: tiles per call)")
    p.add_argument("-i", required=True, help="input folder (nnU-Net's CASE_XXXX file naming)")
    p.add_argument("-o", required=True, help="output folder (created; files appear only once complete)")
    p.add_argument("-m", default=None, metavar="MODEL_FOLDER",
                   help="the trained model folder (instead of -d/-tr/-p/-c)")
    p.add_argument("-d", default=None, help="dataset id or name (with -tr, -p, -c: the model under nnUNet_results)")
    p.add_argument("-tr", default="nnUNetTrainer", help="trainer (default: nnUNetTrainer)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-c", default=None, help="configuration, e.g. 2d or 2.5d")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds (default: 0 1 2 3 4)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default: checkpoint_final.pth)")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step, fraction of the tile (0.5)")
    p.add_argument("--disable_tta", action="store_true", help="no test-time mirroring")
    p.add_argument("--save_probabilities", action="store_true", help="also write .npz probabilities and .pkl")
    p.add_argument("--continue_prediction", action="store_true", help="keep the cases already predicted")
    p.add_argument("-device", default="cuda", help="cuda, cpu or mps (default: cuda)")
    p.add_argument("-npp", type=int, default=3, help="preprocessing processes (default: 3; -npp 0 -nps 0: no worker processes)")
    p.add_argument("-nps", type=int, default=3, help="export processes (default: 3)")
    p.add_argument("-num_parts", type=int, default=1, help="parts the input is split into (default: 1)")
    p.add_argument("-part_id", type=int, default=0, help="which part this run predicts (default: 0)")
    p.add_argument("--tile-batch", type=int, default=None, metavar="N",
                   help="tiles per network call (default: 4 on CUDA, 1 on a CPU)")
    p.add_argument("--verbose", action="store_true", help="nnU-Net's verbose output")
    p.add_argument("--disable_progress_bar", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def model_folder_of(args) -> str:
    """-m, or the folder nnU-Net derives from -d, -tr, -p and -c."""
    if args.m:
        return args.m
    if args.d is None or args.c is None:
        raise OptionError("give -m MODEL_FOLDER, or -d DATASET and -c CONFIGURATION (with -tr and -p)")
    from ..nnunet.folders import dataset_name, model_folder
    return model_folder(dataset_name(args.d), args.tr, args.p, args.c)


def folds_of(values) -> list:
    from . import fold_argument
    import argparse
    try:
        return [fold_argument(v) for v in values]
    except argparse.ArgumentTypeError as error:
        raise OptionError(f"-f: {error}") from None


def run(args) -> int:
    from ..prediction.files import PredictionRequest, predict_folder
    request = PredictionRequest(
        model_folder=model_folder_of(args), input_folder=args.i, output_folder=args.o, folds=folds_of(args.f),
        checkpoint=args.chk, step_size=args.step_size, mirroring=not args.disable_tta,
        save_probabilities=args.save_probabilities, continue_prediction=args.continue_prediction, device=args.device,
        processes_preprocessing=args.npp, processes_export=args.nps, tile_batch=args.tile_batch,
        num_parts=args.num_parts, part_id=args.part_id, verbose=args.verbose,
        progress_bar=not args.disable_progress_bar)
    written = predict_folder(request)
    print(f"nnunet-dino predict: {len(written)} case(s) written to {args.o}")
    return 0
