"""``reprlab config``: every config key with its default and its one-line documentation.

``reprlab config`` lists the keys of a supervised run; ``--method NAME`` those of a method
(its ``[method]`` fields and its views, without the sections it does not read, such as a
self-supervised method's ``[aug]``: :mod:`reprlab.config_keys`); a prefix narrows the list to a
section or key (``reprlab config optim``, ``reprlab config method --method byol``).
"""

from __future__ import annotations

from reprlab.config import default_config, describe
from reprlab.config_keys import is_under, unread_keys
from reprlab.errors import ReprlabError

NAME = "config"
HELP = "list every config key with its default and meaning"


def add_arguments(p) -> None:
    p.add_argument("prefix", nargs="?", default="", help="only this section or key (e.g. optim, method, views.local)")
    p.add_argument("--method", default="supervised", help="show the [method] fields and views of this method (e.g. byol, dino)")


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


def run(args) -> int:
    cfg = default_config(args.method)
    unread = unread_keys(cfg, choices=False)  # every optimiser's and schedule's keys stay listed
    rows = select([r for r in describe(cfg) if not is_under(r[0], unread)], args.prefix)
    width = max(len(r[0]) for r in rows)
    for key, default, comment in rows:
        print(f"{key:<{width}}  {_fmt(default):<24}  # {comment}")
    return 0
