"""How much of its recipe a run trained, and whether its numbers can say anything about the method.

A run records its budget against the recipe it was started from (result.json's ``budget``,
:data:`reprlab.result.BUDGET_KEYS`): epochs or steps done, the recipe's, and for a probe or a
fine-tune the budget of its backbone's pretraining. A run that had less than
:data:`TOY_FRACTION` of a recipe (its own or its backbone's) is a *toy*: its numbers show that
the machinery works end to end, not what the method does, and the report says so next to every
number and in every figure. Pure data: no matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from reprlab.report.load import MetricsLog, Run, is_number
from reprlab.report.published import Reference, matching

__all__ = [
    "TOY_FRACTION",
    "TOY_WORDS",
    "Budget",
    "budgets",
    "limiting",
    "is_toy",
    "budget_text",
    "toy_mark",
    "toy_percent",
    "group_budget_text",
    "trained_epochs",
    "of_published",
    "last_value",
    "pretraining_runs",
    "published_for",
]

#: under this fraction of its recipe's epochs (or steps) a run is a toy; 10 %: a tenth of the
#: recipe is far below where the methods the recipes reproduce reach their published numbers
#: (a 1000-epoch SSL recipe at 100 epochs is still tens of points short on CIFAR-100)
TOY_FRACTION = 0.10
#: what a toy run's numbers are, in words a newcomer reads next to them
TOY_WORDS = "shows the machinery, not the method"


def _num(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"


def _pct(fraction: float) -> str:
    pct = fraction * 100
    return f"{pct:.2g} %" if pct < 10 else f"{pct:.0f} %"


@dataclass(frozen=True)
class Budget:
    """One budget against its recipe's: ``done`` of ``of`` ``unit`` (``epochs`` or ``steps``)."""

    done: float
    of: float
    unit: str
    recipe: str | None
    backbone: bool  # the budget of the backbone's pretraining, not of the run itself
    whose: str = ""  # how the text names it: "backbone", "fine-tune" or "probe" over a backbone, else ""

    @property
    def fraction(self) -> float:
        return self.done / self.of

    @property
    def toy(self) -> bool:
        return self.fraction < TOY_FRACTION

    def short(self) -> str:
        """``"4 of 1000 epochs"``."""
        return f"{_num(self.done)} of {_num(self.of)} {self.unit}"

    def text(self) -> str:
        """``"backbone: 4 of 1000 epochs (0.4 %)"``."""
        return f"{self.whose + ': ' if self.whose else ''}{_num(self.done)} of {_num(self.of)} {self.unit} ({_pct(self.fraction)})"


def _against_recipe(block: dict, backbone: bool, whose: str) -> Budget | None:
    recipe = block.get("recipe") if isinstance(block.get("recipe"), str) else None
    # a recipe that stops at max_steps counts in steps; otherwise in epochs
    for done_key, of_key, unit in (("steps", "recipe_steps", "steps"), ("epochs", "recipe_epochs", "epochs")):
        done, of = block.get(done_key), block.get(of_key)
        if is_number(done) and is_number(of) and of > 0:
            return Budget(float(done), float(of), unit, recipe, backbone, whose)
    return None


def _blocks(run: Run) -> list[tuple[dict, bool]]:
    """The run's budget block and its backbone's (and theirs, down a chain of fine-tunes)."""
    out: list[tuple[dict, bool]] = []
    block: Any = run.get("budget")
    backbone = False
    while isinstance(block, dict) and len(out) < 8:
        out.append((block, backbone))
        block, backbone = block.get("backbone"), True
    return out


def budgets(run: Run) -> list[Budget]:
    """The run's budgets against their recipes: its own (absent for the cached probe, which
    trains no epochs) and its backbone's pretraining; empty for a record without ``budget`` or
    a recipe (an old run, a run started without a config file)."""
    # over a backbone, the run's own budget is named too, so that a row pooling probes and
    # fine-tunes says which is which
    own = {"finetune": "fine-tune", "probe": "probe"}.get(run.task, "")
    return [b for block, backbone in _blocks(run) if (b := _against_recipe(block, backbone, "backbone" if backbone else own)) is not None]


def limiting(run: Run) -> Budget | None:
    """The smallest of the run's budgets: the one that decides whether its numbers mean much."""
    found = budgets(run)
    return min(found, key=lambda b: b.fraction) if found else None


def is_toy(run: Run) -> bool:
    b = limiting(run)
    return b is not None and b.toy


def budget_text(run: Run) -> str:
    """The run's budgets, its own first (``"2 of 100 epochs (2 %); backbone: 4 of 1000 epochs
    (0.4 %)"``); for a record without a recipe, the epochs it trained and "recipe unknown"."""
    found = budgets(run)
    if found:
        return "; ".join(b.text() for b in found)
    epochs = trained_epochs(run)
    if epochs is None:
        return "—"
    whose = "backbone: " if run.task in ("probe", "finetune") else ""
    return f"{whose}{_num(epochs)} epochs (recipe unknown)"


def toy_mark(budget: Budget) -> str:
    """The words a toy number carries: ``"⚠ 4 of 1000 epochs: shows the machinery, not the method"``."""
    whose = "backbone pretrained " if budget.backbone else ""
    return f"⚠ {whose}{_num(budget.done)} of {_num(budget.of)} {budget.unit}: {TOY_WORDS}"


def toy_percent() -> str:
    """:data:`TOY_FRACTION` as the report writes it: ``"10 %"``."""
    return f"{TOY_FRACTION * 100:g} %"


def group_budget_text(runs: Sequence[Run]) -> tuple[str, Budget | None]:
    """The budget cell of a group (its runs' budgets, each once) and its toy budget, if any run is one."""
    texts = list(dict.fromkeys(part for r in runs for part in budget_text(r).split("; ")))
    toys = [b for r in runs if (b := limiting(r)) is not None and b.toy]
    return "; ".join(texts) or "—", (min(toys, key=lambda b: b.fraction) if toys else None)


def trained_epochs(run: Run) -> float | None:
    """Epochs of the training a published number is compared with: a probe's or fine-tune's
    backbone pretraining (what a published SSL number's epochs count), else the run's own."""
    blocks = _blocks(run)
    if run.task in ("probe", "finetune"):
        if len(blocks) > 1 and is_number(blocks[1][0].get("epochs")):
            return float(blocks[1][0]["epochs"])
        bb = run.get("backbone")
        value = bb.get("pretrain_epochs") if isinstance(bb, dict) else None
        return float(value) if is_number(value) else None
    if blocks and is_number(blocks[0][0].get("epochs")):
        return float(blocks[0][0]["epochs"])
    return float(run.get("epochs")) if is_number(run.get("epochs")) else None


def of_published(runs: Iterable[Run], ref: Reference) -> str:
    """Our training epochs as a fraction of the published row's: ``"4 of 1000 epochs (0.4 %)"``."""
    epochs = sorted({e for r in runs if (e := trained_epochs(r)) is not None})
    if not epochs:
        return "—"
    ours = "–".join(_num(e) for e in (epochs[0], epochs[-1])[: 1 if len(epochs) == 1 else 2])
    return f"{ours} of {_num(ref.epochs)} epochs ({_pct(epochs[-1] / ref.epochs)})"


def last_value(log: MetricsLog | None, key: str) -> float | None:
    """The last logged value of ``key`` (the final online-probe accuracy), ``None`` without one."""
    if log is None:
        return None
    values = [rec[key] for _, rec in log.records if is_number(rec.get(key))]
    return float(values[-1]) if values else None


def pretraining_runs(runs: Iterable[Run], among: Sequence[Run]) -> list[Run]:
    """The pretraining runs (in ``among``) whose checkpoints ``runs`` were made from, each once:
    matched by the checkpoint's run directory (``<run>/checkpoints/<file>``), resolved, or by its
    trailing path when the report is built from another folder than the runs were."""
    found: dict[Path, Run] = {}
    pretrains = [r for r in among if r.task == "pretrain"]
    for run in runs:
        bb = run.get("backbone")
        ckpt = bb.get("checkpoint") if isinstance(bb, dict) else None
        if not isinstance(ckpt, str):
            continue
        path = Path(ckpt)
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        tail = "/" + run_dir.as_posix().removeprefix("./")
        for p in pretrains:
            here = p.dir.resolve()
            if here == run_dir.resolve() or (not run_dir.is_absolute() and here.as_posix().endswith(tail)):
                found.setdefault(p.dir, p)
                break
    return list(found.values())


def published_for(runs: Sequence[Run]) -> list[Reference]:
    """The published rows for these runs' method, dataset and model (when they all agree): an
    SSL probe's are its backbone's method and pretraining dataset; a scratch run's "supervised"."""
    def common(key: str) -> Any:
        values = {r.get(key) for r in runs}
        return values.pop() if len(values) == 1 else None

    return matching(common("method"), common("dataset"), common("model"))
