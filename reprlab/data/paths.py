"""Where data is read from (the data root) and written to (the cache dir)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA = "REPRLAB_DATA"
ENV_CACHE = "REPRLAB_CACHE"

# The CLI's --data-root sets this; it wins over the config file and the environment.
_cli_data_root: str | None = None


def set_cli_data_root(path: str | None) -> None:
    global _cli_data_root
    _cli_data_root = path


def data_root(config_root: str = "") -> tuple[Path, str]:
    """The data root and how it was chosen: --data-root, then data.root, then $REPRLAB_DATA, then ./data."""
    if _cli_data_root:
        return Path(_cli_data_root).expanduser(), "--data-root"
    if config_root:
        return Path(config_root).expanduser(), "data.root"
    if os.environ.get(ENV_DATA):
        return Path(os.environ[ENV_DATA]).expanduser(), f"${ENV_DATA}"
    return Path("data"), "default ./data"


def cache_dir(config_cache: str = "") -> Path:
    """A writable directory for extracted archives and decoded uint8 arrays (never the data root)."""
    from reprlab.io import make_dirs

    raw = config_cache or os.environ.get(ENV_CACHE) or "~/.cache/reprlab"
    return make_dirs(Path(raw).expanduser())
