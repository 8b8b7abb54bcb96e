"""`nnunet-dino` command line: doctor, env, plan, make-dataset, evaluate, demo."""
from __future__ import annotations

import argparse
import sys


def _doctor(args) -> int:
    from .doctor import report
    text, all_found = report()
    print(text)
    return 0 if all_found else 1


def _env(args) -> int:
    from ._autoregister import ENV_VAR, register
    import os
    folder = register()
    print(folder if args.path else f"export {ENV_VAR}={os.environ[ENV_VAR]}")
    return 0


def _demo(args) -> int:
    from .demo import run_demo
    run_demo(args.output, trainer=args.trainer, baseline=args.baseline, dataset=args.dataset, keep=args.keep,
             budget_seconds=args.budget_seconds)
    return 0


def _evaluate(args) -> int:
    from .evaluation import evaluate_folders, format_class_table
    try:
        summary = evaluate_folders(args.gt_dir, args.pred_dir, args.dataset_json, output_dir=args.output,
                                   num_processes=args.num_processes,
                                   allow_missing_predictions=args.allow_missing_predictions)
    except (ValueError, FileNotFoundError) as error:
        print(f"nnunet-dino evaluate: error: {error}", file=sys.stderr)
        return 2
    print(format_class_table(summary))
    print(f"{len(summary['metric_per_case'])} cases; metrics_summary.json and CSVs in "
          f"{args.output or args.pred_dir}")
    return 0


def _make_dataset(args) -> int:
    import os
    from .datasets.colin27 import format_summary, make_colin27_dataset
    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        print("nnunet-dino make-dataset: error: set nnUNet_raw or pass --raw DIR", file=sys.stderr)
        return 2
    try:
        result = make_colin27_dataset(raw, args.id, name=args.name, slab=args.slab, test_slabs=args.test_slabs,
                                      downsample=args.downsample, overwrite=args.overwrite, grouping=args.structures)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"nnunet-dino make-dataset: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(result, raw))
    return 0


def _bundle(args) -> int:
    from .checkpoints import bundle_model_folder
    for path in bundle_model_folder(args.model_folder):
        print(f"self-contained: {path}")
    return 0


def _plan(args) -> int:
    from .planning import plan_with_preset
    plan_with_preset(args.dataset, args.preset, target_shape=args.target, num_processes=args.np)
    return 0


def _onboard(args) -> int:
    from .onboarding import OnboardingError, format_summary, onboard
    try:
        result = onboard(args.images, args.masks, args.dataset_id, args.name, args.raw,
                         image_pattern=args.image_pattern, mask_pattern=args.mask_pattern, channels=args.channels,
                         labels=args.labels, modality=args.modality, normalization=args.normalization,
                         test_images=args.test_images, overwrite=args.overwrite, num_processes=args.np,
                         progress=not args.no_progress)
    except OnboardingError as error:
        print(f"nnunet-dino onboard: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:
        print(f"nnunet-dino onboard: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(result))
    return 0


def _crossval(args) -> int:
    from .crossval import emit_scripts, run_crossval
    try:
        if args.emit:
            emit_scripts(args.dataset, args.trainers, args.emit, folds=args.folds, plans=args.plans,
                         configuration=args.configuration, device=args.device or "cuda", npz=args.npz,
                         num_gpus=args.num_gpus)
            return 0
        return run_crossval(args.dataset, args.trainers, folds=args.folds, plans=args.plans,
                            configuration=args.configuration, device=args.device, npz=args.npz,
                            num_gpus=args.num_gpus, keep_going=args.keep_going)
    except ValueError as error:
        print(f"nnunet-dino crossval: error: {error}", file=sys.stderr)
        return 2


def _report(args) -> int:
    import os
    from .cv_report import build_report, default_report_folder
    from .cv_report_output import write_report
    try:
        report = build_report(args.dataset, args.trainers, folds=args.folds, plans=args.plans,
                              configuration=args.configuration, output=args.output, reference=args.reference,
                              num_processes=args.np)
    except (ValueError, FileNotFoundError) as error:
        print(f"nnunet-dino report: error: {error}", file=sys.stderr)
        return 2
    paths = write_report(report, args.output or default_report_folder(report.dataset))
    with open(paths["markdown"]) as f:
        print(f.read().split("## Box plots")[0].rstrip())
    print(f"\nwritten: {', '.join(sorted(os.path.basename(p) for p in paths.values()))} in "
          f"{os.path.dirname(paths['markdown'])}")
    return 0


def _bench(args) -> int:
    import torch
    from .bench import BenchSettings, format_report, run_benchmark, write_json
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("nnunet-dino bench: error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print(f"nnunet-dino bench: error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)  # the memory children inherit the count
    settings = BenchSettings(patch=tuple(args.patch), batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                             device=device, families=tuple(args.families), input_channels=args.channels,
                             num_classes=args.classes, case=tuple(args.case) if args.case else None,
                             predict_repeats=args.predict_repeats, vit_b=not args.no_vit_b,
                             cpu_precision=args.cpu_precision)
    results = run_benchmark(settings)
    print(format_report(results))
    write_json(results, args.json)
    print(f"written: {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-dino", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="versions, device, trainer registration, weights per backbone")
    p.set_defaults(func=_doctor)
    p = sub.add_parser("env", help="print the nnUNet_extTrainer export line (or --path: the folder)")
    p.add_argument("--path", action="store_true", help="print only the trainer folder")
    p.set_defaults(func=_env)
    p = sub.add_parser("bundle", help="make a model folder's slim checkpoints self-contained (for sharing)")
    p.add_argument("model_folder", help="<nnUNet_results>/<Dataset>/<Trainer>__<Plans>__<configuration>")
    p.set_defaults(func=_bundle)
    p = sub.add_parser("plan", help="plan (and preprocess) a dataset with a preset nnU-Net cannot find by -pl")
    p.add_argument("-d", "--dataset", type=int, required=True, help="dataset id")
    p.add_argument("--preset", default="dinounet512", choices=["dinounet512"],
                   help="dinounet512: Dino U-Net's recipe (median slice -> 512x512, patch 512x512, 4 stages)")
    p.add_argument("--target", type=int, nargs=2, default=[512, 512], metavar=("H", "W"),
                   help="in-plane target shape (default 512 512, the paper's)")
    p.add_argument("-np", type=int, default=2, help="processes for preprocessing (default 2)")
    p.set_defaults(func=_plan)
    p = sub.add_parser("demo", help="real MRI (mricron-data): plan, train a DINO trainer and nnUNetTrainer "
                                    "for one budget, predict, evaluate, write report.md + figures")
    p.add_argument("--output", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--trainer", default="nnUNetTrainerUDFA_S_demo", help="the DINO trainer to run")
    p.add_argument("--baseline", default="nnUNetTrainer_demo", help="the comparison trainer")
    p.add_argument("--dataset", default="auto", choices=["auto", "colin27", "synthetic"],
                   help="auto: Colin27 if mricron-data is installed, else synthetic")
    p.add_argument("--keep", action="store_true", help="keep an existing output folder's nnU-Net data")
    p.add_argument("--budget-seconds", type=float, default=None, metavar="S",
                   help="train each model for S seconds of wall clock instead of the trainers' fixed number "
                        "of iterations (equal time: the result then depends on the machine)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("evaluate", help="per-class Dice, HD95 and ASD (mm) of a prediction folder -> JSON + CSV")
    p.add_argument("gt_dir", help="folder of reference segmentations")
    p.add_argument("pred_dir", help="folder of predicted segmentations (same file names)")
    p.add_argument("-d", "--dataset-json", required=True, help="dataset.json (labels, file_ending)")
    p.add_argument("-o", "--output", default=None, help="output folder (default: PRED_DIR, beside summary.json)")
    p.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--allow-missing-predictions", action="store_true",
                   help="evaluate only the references that have a prediction (e.g. one fold vs labelsTr)")
    p.set_defaults(func=_evaluate)
    p = sub.add_parser("make-dataset", help="build a real nnU-Net raw dataset (colin27: Colin27 T1 + AAL structures)")
    p.add_argument("dataset", choices=["colin27"], help="colin27: axial slabs of the mricron-data brain")
    p.add_argument("--id", type=int, default=901, help="nnU-Net dataset id (default: 901)")
    p.add_argument("--name", default=None, help="dataset name (default: Colin27AAL, or Colin27AAL<N>mm)")
    p.add_argument("--slab", type=int, default=6, help="slab (case) thickness in mm (default: 6)")
    p.add_argument("--test-slabs", type=int, default=4, help="held-out test slabs, spread evenly (default: 4)")
    p.add_argument("--downsample", type=int, default=1, help="N mm isotropic voxels instead of 1 mm (default: 1)")
    p.add_argument("--structures", default="lobes", choices=["lobes", "grey"],
                   help="lobes: 13 (lobes per hemisphere, cerebellum); grey: 2 (cerebral grey matter, "
                        "cerebellum; the demo's)")
    p.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that id and name")
    p.set_defaults(func=_make_dataset)
    p = sub.add_parser("onboard", help="your images + masks -> an nnU-Net raw dataset (checked, dataset.json, "
                                       "integrity check); refuses listing every bad file, writing nothing")
    p.add_argument("images", help="folder of images (training cases)")
    p.add_argument("masks", nargs="?", default=None,
                   help="folder of masks (default: the images folder, told apart by --mask-pattern)")
    p.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    p.add_argument("-n", "--name", required=True, help="dataset name: DatasetXXX_NAME")
    p.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    p.add_argument("--image-pattern", default=None,
                   help="image file names: '{case}' (default), '{case}_{channel}.nii.gz' for several channel "
                        "files per case, or a regex with (?P<case>...) and (?P<channel>...)")
    p.add_argument("--mask-pattern", default=None, help="mask file names, e.g. '{case}_seg' (default '{case}')")
    p.add_argument("--channels", nargs="+", default=None, help="channel ids in order (default: sorted)")
    p.add_argument("--labels", nargs="+", default=None,
                   help="name=VALUE ... (VALUE as in the masks, e.g. background=0 tumour=255) or a JSON file; "
                        "default: inferred from the masks")
    p.add_argument("--modality", nargs="+", default=None,
                   help="CT for all channels, or CHANNEL=MODALITY pairs (CT selects nnU-Net's CTNormalization)")
    p.add_argument("--normalization", nargs="+", default=None,
                   help="override per channel: SCHEME or CHANNEL=SCHEME; schemes: zscore ct rgb_to_0_1 "
                        "rescale_to_0_1 nonorm")
    p.add_argument("--test-images", default=None, help="folder of unlabelled test images -> imagesTs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")
    p.add_argument("-np", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_onboard)
    p = sub.add_parser("crossval", help="run the missing cross-validation folds of several trainers with "
                                        "nnUNetv2_train (resumable), or --emit them as scripts")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("-tr", "--trainers", nargs="+", required=True, help="nnU-Net trainer class names")
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="folds (default: 0 1 2 3 4)")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-c", "--configuration", default="2d", help="configuration (default: 2d)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda", "mps"],
                   help="default: cuda if available, else cpu (with --emit: cuda)")
    p.add_argument("--npz", action="store_true", help="save validation softmax (.npz), for find_best_configuration")
    p.add_argument("--num-gpus", type=int, default=1, help="nnU-Net's -num_gpus (DDP) inside each fold")
    p.add_argument("--keep-going", action="store_true", help="after a failed fold, run the others")
    p.add_argument("--emit", metavar="DIR", default=None,
                   help="write run_folds.sh and job_array.sh (SLURM array) into DIR instead of running")
    p.set_defaults(func=_crossval)
    p = sub.add_parser("report", help="cross-validation report: Dice/HD95/ASD per class (mean ± sd over folds), "
                                      "Wilcoxon vs a reference trainer, parameter counts, box plots")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("-tr", "--trainers", nargs="+", required=True, help="nnU-Net trainer class names")
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="folds (default: 0 1 2 3 4)")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-c", "--configuration", default="2d", help="configuration (default: 2d)")
    p.add_argument("--reference", default=None,
                   help="trainer the others are compared with (default: the first nnUNetTrainer[_variant] "
                        "among -tr, else the first)")
    p.add_argument("-o", "--output", default=None, help="output folder (default: cv_report_<Dataset>)")
    p.add_argument("-np", type=int, default=1, help="evaluation worker processes (default: 1)")
    p.set_defaults(func=_report)
    p = sub.add_parser("bench", help="nnUNetTrainer vs each DINO family at one patch and batch: step time, tiles/s, "
                                     "memory, backbone share and GFLOP/s, checkpoint size, sliding-window time")
    p.add_argument("--patch", type=int, nargs=2, default=[224, 224], metavar=("H", "W"), help="2D patch (224 224)")
    p.add_argument("--batch", type=int, default=2, help="training batch (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions; medians are reported (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up repetitions (default 2)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    p.add_argument("--families", nargs="+", default=["segdino", "udfa", "dinounet"],
                   choices=["segdino", "udfa", "dinounet"], help="plugin families (nnUNetTrainer always runs)")
    p.add_argument("--channels", type=int, default=1, help="input channels (default 1)")
    p.add_argument("--classes", type=int, default=4, help="output classes incl. background (default 4)")
    p.add_argument("--case", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="sliding-window case size (default: twice the patch)")
    p.add_argument("--predict-repeats", type=int, default=1, help="sliding-window runs per model (default 1)")
    p.add_argument("--no-vit-b", action="store_true", help="skip the ViT-B checkpoint sizes")
    p.add_argument("--cpu-precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="the plugin networks' CPU precision (default auto: bf16 autocast where the CPU has native "
                        "bf16, as the trainers run; fp32 compares like for like with nnUNetTrainer's fp32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default="bench_results.json", help="results file (default: bench_results.json)")
    p.set_defaults(func=_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
