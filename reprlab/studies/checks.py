"""The checks shared by study files and sweep tables: reading TOML, rejecting unknown keys (with
the closest valid one), typed values, config paths, and building a run's config early so that a
typo fails before hours of earlier runs. No torch, no Optuna.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Iterable

import tomllib

import reprlab
from reprlab.config import toml_value
from reprlab.errors import ReprlabError

COMMANDS = ("train", "pretrain", "probe", "finetune")


#: configs named in built-in studies are relative to the repository root
# "configs/..." in a study file resolves against the cwd, else against the package, which ships
# the recipes in reprlab/configs (the repository's configs/ links there).
PACKAGE_ROOT = Path(reprlab.__file__).resolve().parent


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ReprlabError(f"{path}: invalid TOML ({e})") from None
    except OSError as e:
        raise ReprlabError(f"{path}: cannot be read ({e.strerror})") from None


def override(key: str, value: Any) -> str:
    return f"{key}={toml_value(value)}"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_keys(table: dict, allowed: Iterable[str], where: str) -> None:
    """Reject unknown keys, naming the closest valid one (a typo must not be silently ignored)."""
    allowed = list(allowed)
    for key in table:
        if key not in allowed:
            raise ReprlabError(f"{where}: unknown key {key!r}{did_you_mean(key, allowed)} (valid: {', '.join(allowed)})")


def expect(value: Any, kind: type | tuple[type, ...], where: str, key: str, what: str) -> Any:
    # bool is an int in Python; a study file saying seeds = [true] is still wrong
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)))
    if not ok:
        raise ReprlabError(f"{where}: key {key!r} must be {what}, got {value!r}")
    return value


def check_node(t: dict, allowed: Iterable[str], required: Iterable[str], where: str) -> tuple[str, str]:
    """The checks shared by ``[[run]]`` and ``[[sweep]]`` tables; returns (name, command)."""
    check_keys(t, allowed, where)
    for req in required:
        if req not in t:
            raise ReprlabError(f"{where}: missing required key {req!r}")
    name = expect(t["name"], str, where, "name", "a string")
    if not NAME_RE.match(name):
        raise ReprlabError(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    command = expect(t["command"], str, where, "command", "a string")
    if command not in COMMANDS:
        raise ReprlabError(f"{where}: command {command!r} is not one of {', '.join(COMMANDS)}{did_you_mean(command, COMMANDS)}")
    return name, command


def string_list(value: Any, where: str, key: str) -> list[str]:
    expect(value, list, where, key, "a list of strings")
    for v in value:
        expect(v, str, where, key, "a list of strings")
    return list(value)


def check_overrides(items: list[str], where: str, key: str) -> list[str]:
    for item in items:
        k, sep, _ = item.partition("=")
        if not sep or not k.strip():
            raise ReprlabError(f"{where}: {key} entry {item!r} is not key=value (e.g. \"optim.lr=0.1\"; strings TOML-quoted: 'run.group=\"x\"')")
    return items


def resolve_config_path(path: str, where: str) -> str:
    """A config path as written, resolved against the cwd first and then the installed package."""
    p = Path(path)
    if p.is_file():
        return path
    if not p.is_absolute() and (PACKAGE_ROOT / p).is_file():
        return str(PACKAGE_ROOT / p)
    looked = str(Path.cwd()) if Path.cwd().resolve() == PACKAGE_ROOT else f"{Path.cwd()} and {PACKAGE_ROOT}"
    raise ReprlabError(f"{where}: config file {path!r} not found (looked in {looked})")


def validate_overrides(config: str | None, overrides: list[str], where: str) -> None:
    """Build the run's config now, so a typo in a study fails before hours of earlier runs."""
    from reprlab.config import load_config

    try:
        load_config(config, overrides)
    except ReprlabError as e:
        raise ReprlabError(f"{where}: {e}") from None
