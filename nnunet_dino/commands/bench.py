"""`nnunet-dino bench`: nnUNetTrainer vs each DINO family at one patch and batch."""
from ..errors import OptionError


EXAMPLE = "example: nnunet-dino bench --patch 224 224 --batch 2 --threads 2"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="nnUNetTrainer vs each DINO family at one patch and batch: step time, "
                                            "tiles/s, memory, backbone share and GFLOP/s, checkpoint size, "
                                            "sliding-window time", epilog=EXAMPLE)
    p.add_argument("--patch", type=int, nargs=2, default=[224, 224], metavar=("H", "W"), help="2D patch (224 224)")
    p.add_argument("--batch", type=int, default=2, help="training batch (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions; medians are reported (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up repetitions (default 2)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    p.add_argument("--families", nargs="+", default=None, metavar="FAMILY",
                   help="plugin families, from the network registry (default: one row per family; nnUNetTrainer "
                        "always runs); udfa_spa3: U-DFA-S with the 3-scale SPA")
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
    p.add_argument("--adaptation", action="store_true",
                   help="instead: one row per encoder adaptation (frozen, lora, last_k, full) for each family at its "
                        "smallest size: step time, peak train memory, trainable parameters, checkpoint size")
    p.add_argument("--json", default="bench_results.json", help="results file (default: bench_results.json)")
    p.add_argument("--slices", type=int, default=None, metavar="K",
                   help="instead: each family in 2.5d (slabs of K slices, --batch slabs) against itself in 2d "
                        "(K x --batch slices) at the same patch: train step and prediction of one volume")
    p.add_argument("--depth", type=int, default=20, metavar="Z", help="with --slices: slices of the volume (20)")
    p.add_argument("--ensemble", type=int, default=None, metavar="F",
                   help="instead: one case (--case) predicted by F folds with mirroring, nnunet-dino predict vs "
                        "nnUNetv2_predict per family, and F folds / 1 fold")
    p.set_defaults(run=run)


def run(args) -> int:
    import torch
    from ..bench import BenchSettings, format_report, run_benchmark, write_json
    from ..bench.settings import DEFAULT_FAMILIES, FAMILIES
    families = tuple(args.families or DEFAULT_FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise OptionError(f"--families: unknown {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda, but torch sees no CUDA device")
    if args.threads is not None:
        if args.threads < 1:
            raise OptionError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)  # the memory children inherit the count
    settings = BenchSettings(patch=tuple(args.patch), batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                             device=device, families=families, input_channels=args.channels,
                             num_classes=args.classes, case=tuple(args.case) if args.case else None,
                             predict_repeats=args.predict_repeats, vit_b=not args.no_vit_b,
                             cpu_precision=args.cpu_precision)
    if args.ensemble is not None:
        if args.ensemble < 1:
            raise OptionError(f"--ensemble needs at least 1 fold, got {args.ensemble}")
        from ..bench.ensemble import format_ensemble_report, run_ensemble_bench
        results = run_ensemble_bench(settings, args.ensemble)
        print(format_ensemble_report(results))
    elif args.slices is not None:
        from ..bench.slab import format_slab_report, run_slab_benchmark
        results = run_slab_benchmark(settings, args.slices, args.depth)
        print(format_slab_report(results))
    elif args.adaptation:
        from ..bench.adaptation import format_adaptation_report, run_adaptation_bench
        results = run_adaptation_bench(settings)
        print(format_adaptation_report(results))
    else:
        results = run_benchmark(settings)
        print(format_report(results))
    write_json(results, args.json)
    print(f"written: {args.json}")
    return 0
