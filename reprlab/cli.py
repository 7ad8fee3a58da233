"""The ``reprlab`` command line.

Sub-commands are plug-ins: every module in :mod:`reprlab.commands` defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. A :class:`~reprlab.errors.ReprlabError`
is printed as one line (``reprlab: error: ...``) with a non-zero exit and no traceback; so is an
operating-system error of the environment (read-only file system, no space left, permission
denied: :data:`reprlab.io.CAUSES`), naming the path. A closed pipe (``reprlab config | head``)
ends the command quietly with exit status 141 (128 + SIGPIPE), as a Unix tool killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import pkgutil
import sys
import warnings

from reprlab.errors import ReprlabError


def _commands() -> dict:
    import reprlab.commands as pkg

    mods = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"reprlab.commands.{info.name}")
        mods[mod.NAME] = mod
    return mods


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="reprlab", description="Reproducible representation-learning experiments on CIFAR-100.")
    parser.add_argument("--data-root", help="folder holding the datasets (default: $REPRLAB_DATA, else ./data)")
    from reprlab import __version__

    parser.add_argument("--version", action="version", version=f"reprlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = _commands()
    for name in sorted(mods):
        p = sub.add_parser(name, help=mods[name].HELP, description=mods[name].HELP)
        p.add_argument("--data-root", default=argparse.SUPPRESS, help="folder holding the datasets (default: $REPRLAB_DATA, else ./data)")
        mods[name].add_arguments(p)
    parser.set_defaults(_subparsers=sub.choices)
    return parser, mods


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, with ``key=value`` overrides and options mixed in any order.

    argparse gives a ``nargs="*"`` positional the first run of words only (``pretrain a=1
    --config X b=2`` leaves ``b=2`` over); every word left over that is an override joins the
    command's overrides in command-line order. Anything else left over is an error with the
    sub-command's usage, not the top-level one."""
    args, extra = parser.parse_known_args(argv)
    sub = parser.get_default("_subparsers").get(getattr(args, "command", None))
    if extra and sub is not None and isinstance(getattr(args, "overrides", None), list) and all("=" in w and not w.startswith("-") for w in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        (sub or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


@functools.cache
def _parser() -> tuple[argparse.ArgumentParser, dict]:
    return build_parser()


def resolve_argv(argv: list[str]):
    """The resolved config of a ``reprlab`` command line (``argv`` without the program), as its
    command would record it (``run_config`` of the command module, as for ``--print-config``)."""
    parser, mods = _parser()
    try:
        args = parse_args(parser, argv)
    except SystemExit:
        raise ReprlabError(f"command line does not parse: reprlab {' '.join(argv)}") from None
    return mods[args.command].run_config(args)[0]


#: exit status after a closed pipe: what a shell reports for a writer killed by SIGPIPE
BROKEN_PIPE_EXIT = 141


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly. Point stdout at /dev/null so that the
        # interpreter's final flush does not meet the broken pipe again and print about it.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass  # stdout is not a file descriptor (tests capture it)
        return BROKEN_PIPE_EXIT


def _main(argv: list[str] | None) -> int:
    parser, mods = build_parser()
    args = parse_args(parser, argv)
    if not args.command:
        parser.print_help()
        return 2
    from reprlab.data import paths

    saved_root = paths._cli_data_root
    paths.set_cli_data_root(getattr(args, "data_root", None))
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"reprlab: warning: {msg}\n"
    try:
        if getattr(mods[args.command], "DATA_PARALLEL", False):
            from reprlab import distributed

            distributed.init_from_env()  # under torchrun: join the process group (else nothing)
        return _run(args, mods)
    finally:
        paths.set_cli_data_root(saved_root)
        if "reprlab.distributed" in sys.modules:
            sys.modules["reprlab.distributed"].shutdown()  # one call's --data-root never reaches the next (tests call main in-process)


def _run(args, mods) -> int:
    from reprlab.io import is_environment_error, os_cause

    try:
        code = int(mods[args.command].run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except ReprlabError as e:
        print(f"reprlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        raise
    except OSError as e:
        if not is_environment_error(e):
            raise  # anything else is a bug and keeps its traceback
        print(f"reprlab: error: {e.filename + ': ' if e.filename else ''}{os_cause(e)}", file=sys.stderr)
        return ReprlabError.exit_code
    except KeyboardInterrupt:
        print("reprlab: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
