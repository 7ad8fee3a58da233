"""``reprlab params``: size, cost and speed of registered models, side by side.

Parameters and FLOPs are counted on a meta-device copy (no memory, no arithmetic), so even the
heavy 224 px presets are counted instantly. Throughput is measured only when asked for
(``--throughput``): it builds real weights and times training steps, which takes seconds per
model on a GPU but minutes for a few models on a small CPU; heavy presets need ``--heavy`` too. FLOPs follow one convention for every model
(``reprlab.models.flops.FLOP_CONVENTION``), printed under the table.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from reprlab.errors import ReprlabError

NAME = "params"
HELP = "parameter count and FLOPs/image of registered models (instant); train/eval throughput with --throughput"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL", help="registered model names, e.g. resnet18 vgg11_bn vit_c100_small")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")
    p.add_argument("--batch", type=int, default=128, help="batch size for throughput (default 128)")
    p.add_argument("--device", default="cpu", help="device for throughput, e.g. cpu or cuda (default cpu)")
    p.add_argument("--throughput", action="store_true",
                   help="also time training and evaluation steps (img/s): a few seconds per model on a GPU, "
                   "up to a minute per model on a 2-core CPU; off by default")
    p.add_argument("--no-throughput", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.add_argument("--heavy", action="store_true", help="with --throughput: also time heavy presets (224 px, ~130 M params)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 3 on cpu, 20 on cuda)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 1 on cpu, 5 on cuda)")
    p.add_argument("--num-classes", type=int, default=100, help="classifier width (default 100)")


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = (), left: Sequence[int] = (0,)
) -> None:
    """Print a table with ``rich`` when it is installed, else as aligned plain text.

    Columns whose index is in ``left`` (text) are left-aligned, the others (numbers) right-aligned.
    """
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

        def line(cells: Sequence[str]) -> str:
            cols = (str(c).ljust(w) if i in left else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
            return "  ".join(cols).rstrip()

        print(title)
        print(line(headers))
        print("  ".join("-" * w for w in widths))
        for r in rows:
            print(line(r))
        for n in notes:
            print(n)
        return
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i in left else "right")
    for r in rows:
        table.add_row(*[str(c) for c in r])
    console = Console()
    console.print(table)
    for n in notes:
        console.print(n)


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def run(args: argparse.Namespace) -> int:
    # Imported here so that building the CLI parser does not pay for torch.
    import torch

    from reprlab.models.flops import FLOP_CONVENTION, count_flops, count_params, measure_throughput, resolve_device
    from reprlab.models.registry import create_model, get_entry, list_models

    if args.list:
        entries = [get_entry(n) for n in list_models()]
        rows = [[e.name, e.family, str(e.input_size), "heavy" if e.heavy else "", e.description] for e in entries]
        print_table("registered models", ["model", "family", "input", "", "description"], rows, left=(0, 1, 3, 4))
        return 0
    if not args.models:
        raise ReprlabError("no model named; expected one or more registered names (see `reprlab params --list`)")
    if args.batch < 1:
        raise ReprlabError(f"--batch {args.batch} is not usable; expected a positive int")
    timing = args.throughput and not args.no_throughput
    device = resolve_device(args.device) if timing else torch.device("cpu")
    steps = args.steps if args.steps is not None else (20 if device.type == "cuda" else 3)
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
    entries = [get_entry(name) for name in args.models]  # fail on a typo before any slow work

    rows: list[list[str]] = []
    skipped_heavy: list[str] = []
    for entry in entries:
        with torch.device("meta"):
            shadow = create_model(entry.name, num_classes=args.num_classes)
        size = shadow.input_size
        params = count_params(shadow)
        flops = count_flops(shadow, size)
        train = evaluate = None
        if timing and (args.heavy or not entry.heavy):
            model = create_model(entry.name, num_classes=args.num_classes)
            train = measure_throughput(model, size, args.batch, device, "train", steps, warmup)
            evaluate = measure_throughput(model, size, args.batch, device, "eval", steps, warmup)
            del model
        elif timing:
            skipped_heavy.append(entry.name)
        rows.append([entry.name, entry.family, str(size), f"{params:,}", f"{params / 1e6:.2f}", f"{flops / 1e9:.3f}",
                     _fmt_rate(train), _fmt_rate(evaluate)])

    notes = [FLOP_CONVENTION]
    if timing:
        notes.append(f"throughput: {device}, batch {args.batch}, fp32, {steps} timed steps after {warmup} warm-up; "
                     "train = forward+backward+SGD step; CNNs in channels_last")
    else:
        notes.append("throughput not measured: add --throughput for train/eval img/s (seconds per model on a GPU, longer on a CPU)")
    if skipped_heavy:
        notes.append(f"not timed (heavy; add --heavy): {', '.join(skipped_heavy)}")
    print_table(
        f"models ({args.num_classes} classes)",
        ["model", "family", "input", "params", "M", "GFLOPs/img", "train img/s", "eval img/s"],
        rows,
        notes,
        left=(0, 1),
    )
    return 0
