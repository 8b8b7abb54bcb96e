"""`nnunet-dino evaluate`: per-class Dice, HD95 and ASD (mm) of a prediction folder."""
import os

from ..errors import MissingInputError


EXAMPLE = ("example: nnunet-dino evaluate nnUNet_raw/Dataset042_Liver/labelsTr predictions/ -d "
           "nnUNet_raw/Dataset042_Liver")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="per-class Dice, HD95 and ASD (mm) of a prediction folder -> "
                                               "JSON + CSV", epilog=EXAMPLE)
    p.add_argument("gt_dir", help="folder of reference segmentations")
    p.add_argument("pred_dir", help="folder of predicted segmentations (same file names)")
    p.add_argument("-d", "--dataset-json", required=True,
                   help="dataset.json (labels, file_ending), or the folder holding it")
    p.add_argument("-o", "--output", default=None, help="output folder (default: PRED_DIR, beside summary.json)")
    p.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--allow-missing-predictions", action="store_true",
                   help="evaluate only the references that have a prediction (e.g. one fold vs labelsTr)")
    p.set_defaults(run=run)


def dataset_json_file(path: str) -> str:
    """`-d` names dataset.json or a folder holding it (a raw dataset, a model folder)."""
    candidate = os.path.join(path, "dataset.json") if os.path.isdir(path) else path
    if not os.path.isfile(candidate):
        raise MissingInputError(f"-d {path}: no dataset.json there; give the dataset.json of the dataset (or the "
                                f"folder holding it, e.g. nnUNet_raw/DatasetXXX_Name)")
    return candidate


def run(args) -> int:
    from ..evaluation import evaluate_folders, format_class_table
    summary = evaluate_folders(args.gt_dir, args.pred_dir, dataset_json_file(args.dataset_json), output_dir=args.output,
                               num_processes=args.num_processes,
                               allow_missing_predictions=args.allow_missing_predictions)
    print(format_class_table(summary))
    print(f"{len(summary['metric_per_case'])} cases; metrics_summary.json and CSVs in "
          f"{args.output or args.pred_dir}")
    return 0
