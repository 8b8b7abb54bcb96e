"""`nnunet-dino plan`: plan (and preprocess) a dataset with a preset nnU-Net cannot find by -pl."""


EXAMPLE = "example: nnunet-dino plan -d 42 --preset 2.5d --slices 5"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plan", help="plan (and preprocess) a dataset with a preset nnU-Net cannot find by -pl",
                              epilog=EXAMPLE)
    p.add_argument("-d", "--dataset", type=int, required=True, help="dataset id")
    p.add_argument("--preset", default="dinounet512", choices=["dinounet512", "2.5d"],
                   help="dinounet512: Dino U-Net's recipe (median slice -> 512x512, patch 512x512, 4 stages); "
                        "2.5d: adds a configuration '2.5d' (slabs of --slices neighbouring slices) to the plans")
    p.add_argument("--target", type=int, nargs=2, default=[512, 512], metavar=("H", "W"),
                   help="dinounet512: in-plane target shape (default 512 512, the paper's)")
    p.add_argument("--slices", type=int, default=5, metavar="K", help="2.5d: slices per slab (default 5)")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="2.5d: the plans to add it to (default nnUNetPlans)")
    p.add_argument("-np", type=int, default=2, help="processes for preprocessing (default 2)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..plans import SLAB_PRESET, add_slab_configuration, plan_with_preset
    if args.preset == SLAB_PRESET:
        add_slab_configuration(args.dataset, args.slices, args.plans, num_processes=args.np)
    else:
        plan_with_preset(args.dataset, args.preset, target_shape=args.target, num_processes=args.np)
    return 0
