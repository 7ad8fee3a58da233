"""The model registry: ``create_model(name, num_classes=..., **kw)`` over registered factories.

Every registered model follows one contract so that the training loop, the probes and the
fine-tuning code never special-case an architecture:

* ``model.embed(x) -> Tensor[B, model.num_features]`` returns pooled pre-logit features;
* ``model.get_classifier()`` is the classifier (``nn.Linear``, or ``nn.Identity`` when
  ``num_classes=0``) and ``model.reset_classifier(num_classes)`` replaces it;
* ``model(x) == model.get_classifier()(model.embed(x))``;
* ``model.input_size`` is the side length the architecture expects (32 for CIFAR variants);
* ``model.family`` is ``"cnn"`` or ``"vit"``; ``model.heavy`` marks presets too large for a CPU.
"""

from __future__ import annotations

import ast
import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from reprlab.errors import ReprlabError
from reprlab.registry import Registry

if TYPE_CHECKING:  # this module stays free of torch: a config checks model arguments without it
    import torch.nn as nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    family: str  # "cnn" | "vit"
    input_size: int
    heavy: bool
    description: str


#: every architecture module of ``reprlab.models`` registers its models when imported (lazily,
#: on the first look-up: CLI start-up stays cheap); these modules hold none
MODELS: Registry[ModelEntry] = Registry("model", "reprlab.models", skip=("registry", "heads", "flops"))


def register_model(
    name: str, *, family: str, input_size: int = 32, heavy: bool = False, description: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``factory(num_classes: int, **kw) -> nn.Module`` under ``name``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(name, ModelEntry(name, factory, family, input_size, heavy, description or (factory.__doc__ or "").strip().split("\n")[0]))
        return factory

    return wrap


def get_entry(name: str) -> ModelEntry:
    """The registered model ``name``; unknown: a one-line error with the closest name and the known ones."""
    return MODELS.get(name)


def factory_arguments(name: str) -> tuple[list[str], bool]:
    """The keyword arguments of model ``name``'s factory (``num_classes`` left out) and whether
    it takes ``**kwargs``. Read from the source of ``reprlab/models/`` when the factory is
    registered there under a literal name, so that checking a config imports no torch; else from
    the imported factory."""
    declared = _declared_arguments()
    if name in declared:
        return declared[name]
    params = inspect.signature(get_entry(name).factory).parameters.values()
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "num_classes"]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


@functools.cache
def _declared_arguments() -> dict[str, tuple[list[str], bool]]:
    out: dict[str, tuple[list[str], bool]] = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Name) and dec.func.id == "register_model"
                        and dec.args and isinstance(dec.args[0], ast.Constant) and isinstance(dec.args[0].value, str)):
                    a = node.args
                    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg != "num_classes"]
                    out[dec.args[0].value] = (names, a.kwarg is not None)
    return out


def create_model(name: str, num_classes: int = 100, **kw) -> nn.Module:
    """Build a registered model; ``num_classes=0`` gives a headless backbone."""
    entry = get_entry(name)
    try:
        model = entry.factory(num_classes=num_classes, **kw)
    except TypeError as e:  # an unknown keyword for this architecture is a user error
        raise ReprlabError(f"model {name!r}: {e}") from None
    model.family = entry.family
    model.heavy = entry.heavy
    model.model_name = name
    model.model_kwargs = {k: v for k, v in kw.items() if k != "weights"}  # rebuilds the architecture
    if not hasattr(model, "input_size"):
        model.input_size = entry.input_size
    return model


def list_models() -> list[str]:
    return MODELS.names()
