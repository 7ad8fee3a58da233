"""``reprlab config``: every config key with its default and its one-line documentation.

``reprlab config`` lists the keys of a supervised run; ``--method NAME`` those of a method
(its ``[method]`` fields and its views, without the sections it does not read, such as a
self-supervised method's ``[aug]``: :mod:`reprlab.config_keys`); a prefix narrows the list to a
section or key (``reprlab config optim``, ``reprlab config views.local --method dino``).
``reprlab config method --method NAME`` ends with the method's views; ``reprlab config views``
prints the views every method accepts and the crop counts it can use from each (``--method
NAME``: one method), from the declarations in ``reprlab/methods/configs.py`` (``view_rules``).
``reprlab config published`` lists the published numbers the report sets ours beside.
"""

from __future__ import annotations

from reprlab.config import default_config, describe, method_config_class
from reprlab.config_keys import is_under, unread_keys
from reprlab.errors import ReprlabError
from reprlab.registry import METHOD_CONFIGS

NAME = "config"
HELP = "list every config key with its default and meaning (`config views`: the views and crop counts each method accepts)"


def add_arguments(p) -> None:
    p.add_argument("prefix", nargs="?", default="", help="only this section or key (e.g. optim, method, views.local); "
                   "`views`: each method's accepted views and crop counts; "
                   "`published`: the published numbers the report compares with")
    p.add_argument("--method", default=None, help=f"show the [method] fields and views of this method ({', '.join(METHOD_CONFIGS.names())}; "
                   "default: supervised, for `views`: every method)")


def _fmt(value) -> str:
    import json
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value):  # a scheduled value: its table, as a config file writes it
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in asdict(value).items() if v is not None) + "}"
    return repr(value)


def select(rows: list[tuple], prefix: str) -> list[tuple]:
    """Rows of the section or key ``prefix`` (``optim`` matches ``optim.lr``, not ``optimx``)."""
    if not prefix:
        return rows
    p = prefix.rstrip(".")
    out = [r for r in rows if r[0] == p or r[0].startswith(p + ".")]
    if not out:
        import difflib

        keys = [r[0] for r in rows]
        sections = sorted({k.split(".")[0] for k in keys} | {k.rsplit(".", 1)[0] for k in keys})
        close = difflib.get_close_matches(p, sections + keys, n=1, cutoff=0.4)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ReprlabError(f"no config section or key {prefix!r}{hint} (sections: {', '.join(sorted({k.split('.')[0] for k in keys}))})")
    return out


def published() -> int:
    """``reprlab config published``: the table of :mod:`reprlab.report.published`, one row each."""
    from reprlab.report.published import PUBLISHED

    rows = [(r.method, r.dataset, r.backbone + (f" ({r.note})" if r.note else ""), str(r.epochs), r.protocol, f"{r.top1:.2f}", r.url) for r in PUBLISHED]
    header = ("method", "dataset", "backbone", "epochs", "protocol", "top-1", "source")
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(f"{x:<{w}}" for x, w in zip(row, widths)).rstrip())
    return 0


def view_lines(method: str) -> list[str]:
    """What ``reprlab config views --method METHOD`` prints: the method's views, the crop count
    it accepts from each (its default), the size rules and why."""
    cls = method_config_class(method)
    return [f"{method}:", *(f"  {line}" for line in cls.view_rules().describe(cls.default_views()))]


def run(args) -> int:
    if args.prefix == "published":
        return published()
    if args.prefix.rstrip(".") == "views":
        names = METHOD_CONFIGS.names() if args.method in (None, "all") else [args.method]
        for name in names:
            print("\n".join(view_lines(name)))
        print("(each view's fields: reprlab config views.NAME --method METHOD)")
        return 0
    method = args.method or "supervised"
    cfg = default_config(method)
    unread = unread_keys(cfg, choices=False)  # every optimiser's and schedule's keys stay listed
    rows = select([r for r in describe(cfg) if not is_under(r[0], unread)], args.prefix)
    width = max(len(r[0]) for r in rows)
    for key, default, comment in rows:
        print(f"{key:<{width}}  {_fmt(default):<24}  # {comment}")
    if args.prefix.rstrip(".") == "method":  # a method's keys end with its views (`config views` prints all of them)
        print("\n".join(["views of " + view_lines(method)[0], *view_lines(method)[1:]]))
    return 0
