"""``reprlab export``: a checkpoint's backbone as a torchvision or timm state dict, an ONNX graph
or reprlab's state dict, with a JSON sidecar (:mod:`reprlab.eval.export`)."""

from __future__ import annotations

NAME = "export"
HELP = "export a checkpoint's backbone for torchvision, timm or ONNX Runtime (with a JSON sidecar)"


def add_arguments(p) -> None:
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="a run directory (its checkpoints/last.pt, as the probe reads) or a checkpoint file")
    # checked by the export (one line naming the closest format), not by argparse's choices
    p.add_argument("--format", required=True, metavar="torchvision|timm|onnx|state_dict", help="what to write")
    p.add_argument("--out", help="file to write (the sidecar is FILE.json); a folder or none: <run>.<format>.pt / <run>.onnx")
    p.add_argument("--with-head", action="store_true", help="a supervised run: export its classifier too (the model returns logits)")


def run(args) -> int:
    from reprlab.eval.export import describe, export
    from reprlab.train.task import config_hash

    print(describe(export(args.checkpoint, args.format, args.out, args.with_head, config_hash=config_hash)))
    return 0
