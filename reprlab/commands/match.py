"""``reprlab match``: ViT shapes whose parameter count matches a registered CNN's.

Prints the ranked candidates of :func:`reprlab.models.match.match_vit` (see its module docstring
for the ranking) with the keyword arguments that build each one through the registered ``vit``
model.
"""

from __future__ import annotations

import argparse

from reprlab.errors import ReprlabError

NAME = "match"
HELP = "rank ViT shapes whose parameter count matches a registered model's"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered model to match, e.g. resnet18")
    p.add_argument("--family", choices=["vit"], default="vit", help="family to search (only vit)")
    p.add_argument("--tolerance", type=float, default=0.02, help="relative parameter tolerance (default 0.02)")
    p.add_argument("--flops", action="store_true", help="also rank by closeness to the model's FLOPs/image")
    p.add_argument("--flops-tolerance", type=float, default=None, help="with --flops: drop shapes further than this relative FLOP gap")
    p.add_argument("--top", type=int, default=10, help="how many candidates to print (default 10)")
    p.add_argument("--patch-sizes", type=int, nargs="+", default=[4], help="patch sizes to search (default 4)")
    p.add_argument("--mlp-ratios", type=float, nargs="+", default=[2.0, 3.0, 4.0], help="MLP ratios to search (default 2 3 4)")
    p.add_argument("--pool", choices=["token", "avg"], default="token", help="ViT pooling (default token)")
    p.add_argument("--num-classes", type=int, default=100, help="classifier width on both sides (default 100)")


def run(args: argparse.Namespace) -> int:
    import torch

    from reprlab.commands.params import print_table
    from reprlab.models.flops import FLOP_CONVENTION, count_flops, count_params
    from reprlab.models.match import match_vit
    from reprlab.models.registry import create_model

    if args.flops_tolerance is not None and not args.flops:
        raise ReprlabError("--flops-tolerance needs --flops; expected both or neither")
    # Counting on the meta device costs nothing, even for a 130 M-parameter target.
    with torch.device("meta"):
        target = create_model(args.model, num_classes=args.num_classes)
    params = count_params(target)
    flops = count_flops(target, target.input_size) if args.flops else None
    found = match_vit(
        params,
        tolerance=args.tolerance,
        num_classes=args.num_classes,
        patch_sizes=args.patch_sizes,
        mlp_ratios=args.mlp_ratios,
        flops_target=flops,
        flops_tolerance=args.flops_tolerance,
        pool=args.pool,
        top=args.top,
    )
    what = f"{args.model}: {params:,} params" + (f", {flops / 1e9:.3f} GFLOPs/image" if flops is not None else "")
    if not found:
        print(f"no ViT shape within ±{args.tolerance:.1%} of {what}; try a larger --tolerance or more --mlp-ratios")
        return 1
    headers = ["#", "depth", "dim", "heads", "mlp", "patch", "params", "gap", "GFLOPs/img"]
    if flops is not None:
        headers.append("FLOP gap")
    headers.append("vit kwargs")
    rows = []
    for i, c in enumerate(found, 1):
        row = [str(i), str(c.depth), str(c.dim), str(c.heads), f"{c.mlp_ratio:g}", str(c.patch_size),
               f"{c.params:,}", f"{c.rel_gap:+.2%}", f"{c.flops / 1e9:.3f}"]
        if flops is not None:
            row.append(f"{c.flops_rel_gap:+.1%}")
        row.append(c.override())
        rows.append(row)
    notes = [
        "ranked by parameter gap (0.5% bins), " + ("then FLOP gap, " if flops is not None else "")
        + "then closeness to width/depth 32 and MLP ratio 4; counts verified by instantiation",
        f"build one with model name 'vit' and these kwargs; {FLOP_CONVENTION}",
        "train #1: reprlab train model.name=vit " + " ".join(f"model.kwargs.{kv}" for kv in found[0].override().split()),
    ]
    print_table(f"ViTs within ±{args.tolerance:.1%} of {what}", headers, rows, notes, left=(len(headers) - 1,))
    return 0
