"""`nnunet-dino onboard`: a folder of images + masks -> a checked nnU-Net raw dataset."""


EXAMPLE = ("example: nnunet-dino onboard scans/ -d 42 -n Liver --image-pattern '{case}_{channel}.nii.gz' "
           "--mask-pattern '{case}_seg.nii.gz' --labels background=0 liver=1 tumour=2 --modality CT")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("onboard", help="your images + masks -> an nnU-Net raw dataset (checked, dataset.json, "
                                              "integrity check); refuses listing every bad file, writing nothing",
                                              epilog=EXAMPLE)
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
    p.add_argument("--strict", action="store_true",
                   help="refuse the findings too (constant images, empty masks), not only the errors")
    p.add_argument("-np", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..onboarding import format_summary, onboard
    result = onboard(args.images, args.masks, args.dataset_id, args.name, args.raw,
                     image_pattern=args.image_pattern, mask_pattern=args.mask_pattern, channels=args.channels,
                     labels=args.labels, modality=args.modality, normalization=args.normalization,
                     test_images=args.test_images, overwrite=args.overwrite, num_processes=args.np,
                     progress=not args.no_progress, strict=args.strict)
    print(format_summary(result))
    return 0
