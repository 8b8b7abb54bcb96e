"""`nnunet-dino make-dataset`: build a real nnU-Net raw dataset from packaged data (Colin27 + AAL)."""


EXAMPLE = "example: nnunet-dino make-dataset colin27 --id 902 --downsample 2 --structures grey"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("make-dataset", help="build a real nnU-Net raw dataset (colin27: Colin27 T1 + AAL "
                                                   "structures)", epilog=EXAMPLE)
    p.add_argument("dataset", choices=["colin27"], help="colin27: axial slabs of the mricron-data brain")
    p.add_argument("--id", type=int, default=901, help="nnU-Net dataset id (default: 901)")
    p.add_argument("--name", default=None, help="dataset name (default: Colin27AAL, or Colin27AAL<N>mm)")
    p.add_argument("--slab", type=int, default=6, help="slab (case) thickness in mm (default: 6)")
    p.add_argument("--test-slabs", type=int, default=4, help="held-out test slabs, spread evenly (default: 4)")
    p.add_argument("--downsample", type=int, default=1, help="N mm isotropic voxels instead of 1 mm (default: 1)")
    p.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that id and name")
    p.add_argument("--structures", default="lobes", choices=["lobes", "grey"],
                   help="lobes: 13 (lobes per hemisphere, cerebellum); grey: 2 (cerebral grey matter, "
                        "cerebellum; the demo's)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..datasets.colin27 import format_summary, make_colin27_dataset
    from ..nnunet.folders import raw_root
    raw = raw_root(args.raw, alternative=", or pass --raw DIR")
    result = make_colin27_dataset(raw, args.id, name=args.name, slab=args.slab, test_slabs=args.test_slabs,
                                  downsample=args.downsample, overwrite=args.overwrite, grouping=args.structures)
    print(format_summary(result, raw))
    return 0
