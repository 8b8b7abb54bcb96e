"""`nnunet-dino pretrain`: continue (or start) DINO self-supervised training of a backbone on 2D slices of
nnU-Net datasets or image folders; writes a Meta-layout backbone file for `nnUNet_dino_weights`."""
from __future__ import annotations

#: recipe options: (flag, Recipe field, type, help); unset flags keep the Recipe's default
RECIPE_OPTIONS = (
    ("--steps", "steps", int, "training steps (default: 10000)"),
    ("--batch-size", "batch_size", int, "slices per step and GPU (default: 32)"),
    ("--global-size", "global_size", int, "global crop size in pixels, rounded to the patch size (default: 224)"),
    ("--local-size", "local_size", int, "local crop size in pixels, rounded to the patch size (default: 96)"),
    ("--local-crops", "local_crops", int, "local crops per slice (default: 8; 0: none)"),
    ("--lr", "lr", float, "peak learning rate after warm-up (default: 2e-4)"),
    ("--layer-decay", "layer_decay", float, "layer-wise lr decay (default: 0.9)"),
    ("--prototypes", "prototypes", int, "DINO/iBOT head prototypes (default: 65536)"),
    ("--head-hidden", "head_hidden", int, "head MLP width (default: 2048)"),
    ("--head-bottleneck", "head_bottleneck", int, "head bottleneck width (default: 256)"),
    ("--dino-weight", "dino_weight", float, "DINO (class token) loss weight (default: 1)"),
    ("--ibot-weight", "ibot_weight", float, "iBOT loss weight (default: 1)"),
    ("--koleo-weight", "koleo_weight", float, "KoLeo weight (default: 0.1)"),
    ("--gram-weight", "gram_weight", float, "DINOv3 Gram anchoring weight (default: 0, off)"),
    ("--gram-refresh", "gram_refresh", int, "steps between Gram-teacher refreshes (default: 1000)"),
    ("--mask-probability", "mask_probability", float, "share of global crops masked for iBOT (default: 0.5)"),
    ("--case-pool", "case_pool", int, "cases held in memory, one swapped per step (default: 64)"),
    ("--save-every", "save_every", int, "steps between saves of the resumable state (default: 200)"),
    ("--seed", "seed", int, "random seed (default: 0)"),
    ("--centring", "centring", str, "teacher centring: centre (EMA) or sinkhorn (Sinkhorn-Knopp) (default: centre)"),
)


EXAMPLE = ("example: nnunet-dino pretrain -d 42 --backbone dinov3_vitb16 --init "
           "weights/dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth --steps 20000 -o weights/ct_dinov3_vitb16.pth")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="DINO self-supervised continued pretraining of a backbone on your "
                                               "own scans (2D slices); writes weights for nnUNet_dino_weights",
                                               epilog=EXAMPLE)
    p.add_argument("-d", "--datasets", nargs="+", default=[], help="nnU-Net dataset ids or names (labels unused)")
    p.add_argument("--folder", action="append", default=[], help="a folder of unlabelled images/volumes (repeatable)")
    p.add_argument("--backbone", required=True, help="backbone name (see `nnunet-dino weights list`)")
    p.add_argument("--init", default=None, help="starting weights: a file or model folder, or 'random' "
                                                "(default: $nnUNet_dino_weights)")
    p.add_argument("-o", "--output", required=True, help="output backbone file (.pth, Meta's layout)")
    p.add_argument("--source", choices=("auto", "raw", "preprocessed"), default="auto",
                   help="read datasets preprocessed (as the trainers see them) or raw (default: auto, "
                        "preprocessed where it exists)")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans of the preprocessed data (default: nnUNetPlans)")
    p.add_argument("-c", "--configuration", default="2d", help="preprocessed configuration (default: 2d)")
    for flag, field, kind, text in RECIPE_OPTIONS:
        p.add_argument(flag, dest=f"recipe_{field}", type=kind, default=None, help=text,
                       metavar="N" if kind is int else "X")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available")
    p.add_argument("-num_gpus", "--num-gpus", type=int, default=1,
                   help="GPUs of this node: N > 1 relaunches the command under torchrun (DDP), as nnU-Net's -num_gpus")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute block activations (memory)")
    p.add_argument("--restart", action="store_true", help="discard a saved training state and start over")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def recipe_from_args(args):
    from ..pretrain.recipe import Recipe
    chosen = {field: getattr(args, f"recipe_{field}") for _, field, _, _ in RECIPE_OPTIONS}
    return Recipe(**{k: v for k, v in chosen.items() if v is not None})


def _relaunch_under_torchrun(gpus: int) -> int:
    """This very command line, once per GPU, under torchrun (each process joins the DDP group)."""
    import sys
    from torch.distributed.run import main as torchrun
    torchrun(["--standalone", f"--nproc_per_node={gpus}", sys.argv[0], *sys.argv[1:]])
    return 0


def run(args) -> int:
    import os
    if args.num_gpus > 1 and "LOCAL_RANK" not in os.environ:
        return _relaunch_under_torchrun(args.num_gpus)
    from ..backbones import get_backbone_spec
    from ..errors import OptionError
    from ..pretrain.data import select_cases
    from ..pretrain.loop import PretrainJob, pretrain
    from ..pretrain.record import output_paths
    try:
        spec = get_backbone_spec(args.backbone)
    except KeyError as error:
        raise OptionError(str(error).strip("'\"")) from None
    cases, groups = select_cases(args.datasets, args.folder, args.source, args.plans, args.configuration)
    job = PretrainJob(spec, args.init, cases, groups, recipe_from_args(args), args.output, device=args.device,
                      gradient_checkpointing=args.gradient_checkpointing, restart=args.restart,
                      overwrite=args.overwrite, progress=not args.no_progress)
    record = pretrain(job)
    if record:
        paths = output_paths(args.output)
        losses = ", ".join(f"{k} {v:.4f}" for k, v in record["final_losses"].items())
        print(f"wrote {paths['weights']} ({spec.name}, Meta layout, {record['steps']} steps on "
              f"{record['num_cases']} cases, {record['training_seconds']:.0f} s; final losses: {losses})")
        print(f"record {paths['record']}; loss plot {paths['plot']}; resumable state {paths['state']}")
        print(f"use it: export nnUNet_dino_weights={paths['weights']}")
    return 0
