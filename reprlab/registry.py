"""One registry type for everything a config names by a string: register, look up, suggest.

A registry knows the package its entries live in and imports it lazily (``reprlab.methods.byol``
registers ``byol`` when imported), so naming an entry never requires importing every module of
the project up front, and a lower layer can look up an entry of a higher one by name without
importing it. The package may be a single module that registers every entry when imported
(``reprlab.methods.configs``).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

from reprlab.errors import ReprlabError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, skip: tuple[str, ...] = ()) -> None:
        self.kind, self.package, self.skip = kind, package, skip
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` (a class also gets ``obj.name = name``)."""

        def wrap(obj: T) -> T:
            self.add(name, obj)
            if isinstance(obj, type):
                obj.name = name
            return obj

        return wrap

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; a second, different entry of one name is a bug."""
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = obj
        return obj

    def _load(self, name: str | None = None) -> None:
        if self._loaded:
            return
        pkg = importlib.import_module(self.package)
        if not hasattr(pkg, "__path__"):  # a module: importing it registered every entry
            self._loaded = True
            return
        if name is not None and name not in self._entries and name.isidentifier() and not name.startswith("_") and name not in self.skip:
            try:  # the usual case: the entry lives in a module of its own name
                importlib.import_module(f"{self.package}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{self.package}.{name}":
                    raise
        if name is None or name not in self._entries:
            for info in pkgutil.iter_modules(pkg.__path__):
                if info.name not in self.skip and not info.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{info.name}")
            self._loaded = True

    def get(self, name: str) -> T:
        self._load(name)
        if name not in self._entries:
            raise ReprlabError(f"unknown {self.kind} {name!r}{self.suggest(name)} (known: {', '.join(self.names())})")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def suggest(self, name: str) -> str:
        """'; did you mean X?' for the closest registered name, or ''."""
        close = difflib.get_close_matches(name, list(self._entries), n=1)
        return f"; did you mean {close[0]!r}?" if close else ""

    def __contains__(self, name: str) -> bool:
        self._load(name)
        return name in self._entries


#: self-supervised and supervised methods: ``reprlab/methods/<name>.py``; the models
#: (``reprlab.models.registry.MODELS``) and datasets (``reprlab.data.registry.DATASETS``) are
#: registries of this class too, next to their decorators
METHODS: Registry = Registry("method", "reprlab.methods", skip=("base", "ssl", "configs"))

#: the ``[method]`` dataclass of each method, by the method's name: torch-free, so that a config
#: loads without torch (``reprlab/methods/configs.py``; a method may instead declare it as the
#: ``Config`` of its class, found through :data:`METHODS`)
METHOD_CONFIGS: Registry = Registry("method", "reprlab.methods.configs")
