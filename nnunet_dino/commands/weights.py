"""`nnunet-dino weights`: list the weights found per backbone, verify a file, convert it losslessly
between formats, fetch weights from the Hugging Face hub."""
from __future__ import annotations

import json


EXAMPLE = "example: nnunet-dino weights verify weights/dinov2_vitb14_pretrain.pth --backbone dinov2_vitb14"
#: one example per action, shown at the end of `nnunet-dino weights ACTION --help`
ACTION_EXAMPLES = {
    "list": "example: nnunet-dino weights list --no-hash",
    "verify": EXAMPLE,
    "convert": ("example: nnunet-dino weights convert dinov2_vits14_pretrain.pth --to safetensors "
                "dinov2_vits14.safetensors"),
    "fetch": "example: nnunet-dino weights fetch dinov3_vits16 --to weights/",
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("weights", help="list, verify, convert and fetch DINO weights", epilog=EXAMPLE)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="per backbone: what is found where, format, size, sha256, licence")
    a.add_argument("--no-hash", action="store_true", help="skip the sha256 of each file (large files take a while)")
    a = actions.add_parser("verify", help="load a file strictly: layout, variant, normalisation, missing keys")
    a.add_argument("file", help="weights file or transformers model folder")
    a.add_argument("--backbone", help="backbone name (default: the first whose tensors fit)")
    a = actions.add_parser("convert", help="write a weights file in another format, checked by reloading")
    a.add_argument("file", help="weights file or transformers model folder")
    a.add_argument("--to", required=True, choices=("safetensors", "meta", "hf"), help="output format")
    a.add_argument("out", help="output file (.safetensors, .pth), or folder for hf")
    a.add_argument("--backbone", help="backbone name (default: the first whose tensors fit)")
    a = actions.add_parser("fetch", help="download a backbone's weights from the Hugging Face hub (online only)")
    a.add_argument("name", help="backbone name, as `nnunet-dino weights list` shows")
    a.add_argument("--to", dest="folder", help="folder to download into (default: $nnUNet_dino_weights)")
    for action, action_parser in actions.choices.items():
        action_parser.epilog = ACTION_EXAMPLES[action]
    p.set_defaults(run=run)


def run(args) -> int:
    from ..backbones import weight_files
    if args.action == "list":
        for row in weight_files.list_weights(with_hash=not args.no_hash):
            details = ", ".join(f"{k} {row[k]}" for k in ("format", "size", "sha256") if k in row)
            found = row["found"] + (f" ({details})" if details else "")
            print(f"{row['backbone']}: {found}; licence: {row['licence']}")
    elif args.action == "verify":
        info = weight_files.verify(args.file, args.backbone)
        print(f"OK: {args.file} loads into {info['backbone']} with nothing missing or unexpected")
        norm = info["normalization"]
        print(f"layout {info['format']}, variant {json.dumps(info.get('variant') or {})}, normalisation "
              f"mean {norm['mean']} std {norm['std']} ({norm['origin']}), sha256 of the tensors {info['sha256'][:16]}")
        for note in info.get("notes", ()):
            print(f"note: {note}")
    elif args.action == "convert":
        done = weight_files.convert(args.file, args.to, args.out, args.backbone)
        print(f"wrote {done['out']}: {done['tensors']} tensors of {done['backbone']} ({done['layout']} layout in, "
              f"{args.to} out); reloaded and every tensor is equal")
        for note in done["notes"]:
            print(f"note: {note}")
    else:
        for path, digest in weight_files.fetch(args.name, args.folder).items():
            print(f"{digest}  {path}")
    return 0
