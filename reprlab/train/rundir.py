"""The run directory: the only interface between a run and everything after it.

``runs/<name>/`` holds ``config.toml`` (fully resolved), ``env.json`` (versions, git SHA,
device), ``metrics.jsonl`` (one JSON object per logged step), TensorBoard events,
``checkpoints/last.pt`` and ``checkpoints/best.pt`` (written atomically), and ``result.json``
(written last: its presence with ``status == "complete"`` marks a finished run).

A failed attempt writes ``result.json`` with ``status == "failed"`` and ``error`` (the one-line
message the CLI printed), ``error_type``, ``failed_at`` and ``last_checkpoint_step``, so that
studies and reports can show it; the next attempt removes it when it starts, a successful one
writes the complete result in its place.

The recorded ``config.toml`` is the run's identity: a command whose resolved config differs
from it (:func:`config_differences`; :data:`VOLATILE_KEYS` aside) is refused while the
directory holds results or a checkpoint, unless ``--rerun`` clears the directory first. So is a
command whose inputs changed: ``inputs.json`` records the identity of the backbone a run read
(:mod:`reprlab.inputs`: a checkpoint's sha256), and another one is refused the same way.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from reprlab.config import Config, dumps_toml, flatten, to_dict
from reprlab.config_keys import is_under, read_dict, unread_keys
from reprlab.errors import ReprlabError
from reprlab.inputs import INPUTS_FILE, describe_input_differences, input_differences, read_inputs
# the one set of atomic writers; re-exported here for the code that imported them from this module
from reprlab.io import FileLock, atomic_copy, atomic_torch_save, atomic_write_json, atomic_write_text, load_torch, make_dirs, os_error, remove_orphaned_temporaries  # noqa: F401
# result.json's one reader and its key names (re-exported for the code that imported them from here)
from reprlab.result import read_result, result_key  # noqa: F401

# torch is imported inside the functions that need it: the study runner's dry run reads run
# directories through this module (RunDir, read_config, config_differences) without a model.

#: config keys that change neither what a run computes nor where it lives: they may differ
#: between the config recorded in a run directory and the config of a command resuming it
VOLATILE_KEYS = ("run.name", "run.out_dir", "run.group", "train.progress", "train.num_threads", "train.device")


# ============================================================================================
# The recorded config against the config of a command: one comparison for resume, skip and studies
# ============================================================================================


def config_hash(cfg: "Config | dict") -> str:
    """8 hex digits of the sha256 of the resolved config (:data:`VOLATILE_KEYS` aside): a run's
    default name, and a checkpoint's provenance; ``cfg`` may be a recorded config (a dict)."""
    d = flatten(cfg if isinstance(cfg, dict) else to_dict(cfg))
    for k in VOLATILE_KEYS:
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _field_default(cfg: Any, dotted: str) -> tuple[bool, Any]:
    """(True, default) of the config field ``dotted`` in the dataclass that holds it in ``cfg``."""
    import dataclasses

    *parents, last = dotted.split(".")
    obj = cfg
    try:
        for part in parents:
            obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    except (AttributeError, KeyError, TypeError):
        return False, None
    if not dataclasses.is_dataclass(obj):
        return False, None
    for f in dataclasses.fields(obj):
        if f.name == last:
            if f.default is not dataclasses.MISSING:
                return True, to_dict(f.default) if dataclasses.is_dataclass(f.default) else f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return True, to_dict(f.default_factory())  # type: ignore[misc]
    return False, None


def config_differences(recorded: dict, cfg: Config) -> list[tuple[str, Any, Any]]:
    """(key, recorded value, value now) for every config key on which ``recorded`` (a parsed
    config.toml) and ``cfg`` disagree, in key order.

    Ignored: :data:`VOLATILE_KEYS`; keys the run does not read (:mod:`reprlab.config_keys`:
    a self-supervised run's ``[aug]``, a cosine schedule's milestones), on both sides, so a
    config.toml that records every key (written before the filter) compares like one that
    records the read ones; and keys the recorded config lacks whose value now is the field's
    default (keys added to reprlab after the run was recorded, at the value that reproduces
    what the run did). A key the recorded config has and ``cfg`` lacks differs.
    """
    unread = unread_keys(cfg)
    old, new = {k: v for k, v in flatten(recorded).items() if not is_under(k, unread)}, flatten(read_dict(cfg))
    out = []
    for k in sorted(old.keys() | new.keys()):
        if k in VOLATILE_KEYS or old.get(k) == new.get(k):
            continue
        if k not in old:
            known, default = _field_default(cfg, k)
            if known and new[k] == default:
                continue
        out.append((k, old.get(k, "<absent>"), new.get(k, "<absent>")))
    return out


def _show(v: Any) -> str:
    return v if v == "<absent>" else json.dumps(v)  # as TOML writes it: 0.1, 10, "cosine", [60, 120]


def describe_differences(diff: list[tuple[str, Any, Any]], limit: int = 4) -> str:
    """``optim.lr: recorded 0.1, now 0.5; train.max_steps: recorded 10, now 12`` (and N more)."""
    parts = [f"{k}: recorded {_show(a)}, now {_show(b)}" for k, a, b in diff[:limit]]
    if len(diff) > limit:
        parts.append(f"and {len(diff) - limit} more")
    return "; ".join(parts)


def read_config(path: Path) -> dict | None:
    """A run directory's config.toml, parsed; None when there is none."""
    f = Path(path) / "config.toml"
    if not f.is_file():
        return None
    try:
        return tomllib.loads(f.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ReprlabError(f"{f}: invalid TOML ({e}); the run directory is damaged: choose another run.name or --rerun") from None
    except OSError as e:
        raise os_error(e, f, "read") from None


def load_checkpoint(path: Path, **kwargs: Any) -> dict:
    """A checkpoint of the loop (on the CPU: RNG states must stay there)."""
    return load_torch(path, "checkpoint", "; delete it to restart the run", map_location="cpu", weights_only=False, **kwargs)


def checkpoint_step(path: Path) -> int | None:
    """The step stored in a checkpoint (memory-mapped: the weights are not read); None if absent."""
    path = Path(path)
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path, mmap=True)
    try:
        return int(ckpt["step"])
    except (KeyError, TypeError, ValueError):
        raise ReprlabError(f"checkpoint {path} holds no step; not a reprlab checkpoint (delete it to restart the run)") from None


def env_info(device: Any) -> dict:
    """Versions, git SHA and the device (a ``torch.device``) for ``env.json``."""
    import torch
    import torchvision

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
        "argv": sys.argv,
    }
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    info["cpu_threads"] = torch.get_num_threads()
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, timeout=5)
        info["git_sha"] = sha.stdout.strip() or None
        info["git_dirty"] = bool(dirty.stdout.strip()) if sha.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        info["git_sha"] = None
    from reprlab import __version__

    info["reprlab"] = __version__
    return info


class RunDir:
    """Paths and writers of one run directory, held under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self._lock: FileLock | None = None

    # ---- paths
    @property
    def last(self) -> Path:
        return self.ckpt_dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.ckpt_dir / "best.pt"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def result_file(self) -> Path:
        return self.path / "result.json"

    @property
    def config_file(self) -> Path:
        return self.path / "config.toml"

    def is_complete(self) -> bool:
        return read_result(self.path).get("status") == "complete" if self.result_file.is_file() else False

    def holds(self) -> str | None:
        """What the directory holds that its config.toml governs ("a complete run", "a partial
        run (checkpoint at step 40)"), or None: a directory without results or checkpoints (a
        run that failed before its first checkpoint) may take any config."""
        if self.is_complete():
            return "a complete run"
        if self.last.is_file():
            try:
                return f"a partial run (checkpoint at step {checkpoint_step(self.last)})"
            except ReprlabError:
                return "a partial run (unreadable checkpoint)"
        if (self.path / "features.pt").is_file():
            return "a partial run (cached features)"
        return None

    def differences(self, cfg: Config) -> tuple[str | None, list[tuple[str, Any, Any]]]:
        """(what the directory holds, how its recorded config differs from ``cfg``)."""
        holds = self.holds()
        recorded = read_config(self.path) if holds else None
        return holds, (config_differences(recorded, cfg) if recorded is not None else [])

    def check_config(self, cfg: Config, inputs: dict | None = None) -> None:
        """Refuse ``cfg`` when the directory holds results or checkpoints of another config, or
        (``inputs``: :func:`reprlab.inputs.input_identities`) made from other inputs."""
        holds, diff = self.differences(cfg)
        if diff:
            raise ReprlabError(
                f"run directory {self.path} holds {holds} with another config ({describe_differences(diff)}); "
                "choose another run.name for the new config, or pass --rerun to replace the old run"
            )
        changed = input_differences(read_inputs(self.path), inputs) if holds and inputs is not None else []
        if changed:
            raise ReprlabError(
                f"run directory {self.path} holds {holds} made from another input ({describe_input_differences(changed)}); "
                "choose another run.name for the new input, or pass --rerun to replace the old run"
            )

    # ---- lifecycle
    def open(self, cfg: Config, device: Any, rerun: bool = False, inputs: dict | None = None) -> None:
        """Create the directory, take the lock, check (or, ``rerun``, clear) what it holds, and
        write the resolved config and the identities of its ``inputs`` (``inputs.json``)."""
        make_dirs(self.path)
        self.lock()
        try:
            if rerun:
                removed = self.clear()
                if removed:
                    print(f"reprlab: {self.path}: --rerun: removed the previous run ({', '.join(removed)})", file=sys.stderr)
            else:
                self.check_config(cfg, inputs)  # again under the lock: another process may have written it meanwhile
                self.remove_orphans()
            make_dirs(self.ckpt_dir)
            self.drop_failure()  # a new attempt; it records its own failure, if any
            cfg_text = dumps_toml(read_dict(cfg))  # the keys the run reads
            existing = self.config_file
            atomic_write_text(existing, cfg_text)
            if inputs:
                atomic_write_text(self.path / INPUTS_FILE, json.dumps(inputs, indent=2) + "\n")
            from reprlab.runtime import precision_record

            precision = precision_record(cfg.train.precision, device)  # what auto chose here, and why
            atomic_write_text(self.path / "env.json", json.dumps({**env_info(device), "precision": precision}, indent=2))
        except BaseException:
            self.unlock()  # a refused open leaves the directory free for the next attempt
            raise

    def remove_orphans(self) -> list[str]:
        """Remove the temporary files of atomic writes whose writer died mid-write (a SIGKILL
        while ``last.pt`` was written leaves ``checkpoints/.last.pt.tmp<pid>``, a checkpoint's
        size); call with the lock held. Returns their paths, relative to the run directory."""
        removed = [f"{sub}{name}" for sub, folder in (("", self.path), ("checkpoints/", self.ckpt_dir)) for name in remove_orphaned_temporaries(folder)]
        if removed:
            print(f"reprlab: {self.path}: removed temporary files of a killed writer ({', '.join(removed)})", file=sys.stderr)
        return removed

    @staticmethod
    def _kept(p: Path) -> bool:
        """What ``--rerun`` keeps: locks (ours, a sweep's) and the study runner's logs, which a
        running child writes to through a descriptor the runner opened."""
        return p.name.endswith(".lock") or (p.name.startswith("log") and p.suffix == ".txt")

    def clear(self) -> list[str]:
        """Remove what the directory holds (``--rerun``; call with the lock held); returns the names."""
        removed = []
        for p in sorted(self.path.iterdir()):
            if self._kept(p):
                continue
            folder = p.is_dir() and not p.is_symlink()
            try:
                shutil.rmtree(p) if folder else p.unlink()
            except OSError as e:
                raise os_error(e, e.filename or p, "remove") from None
            removed.append(p.name + ("/" if folder else ""))
        return removed

    def lock(self) -> None:
        self._lock = FileLock(self.path / ".lock", f"run directory {self.path}").acquire()

    def unlock(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
            self._lock = None

    def write_result(self, result: dict) -> None:
        atomic_write_text(self.result_file, json.dumps(result, indent=2, sort_keys=False) + "\n")

    # ---- failures
    def write_failure(self, record: dict) -> None:
        """Record a failed attempt as result.json with ``status = "failed"`` (best effort: on a
        full disk the record itself may not fit, and must not hide the error it records)."""
        try:
            if not self.is_complete():
                self.write_result(record)
        except (ReprlabError, OSError):
            pass

    def drop_failure(self) -> None:
        """Remove the failure record of an earlier attempt."""
        try:
            if self.result_file.is_file() and read_result(self.path).get("status") == "failed":
                self.result_file.unlink()
        except ReprlabError:  # unreadable result.json: the new attempt overwrites it
            pass
        except OSError as e:
            raise os_error(e, self.result_file, "remove") from None


def metrics_line_step(line: str) -> int | None:
    """The step of one metrics.jsonl line; None for a blank or torn line (a kill mid-write).
    (:func:`checkpoint_step` is the other step reader: the step a checkpoint holds.)"""
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class MetricsLogger:
    """Appends metrics to ``metrics.jsonl`` and mirrors them to TensorBoard.

    On resume from a checkpoint at step ``s`` every line with ``step > s`` is dropped (it was
    written after that checkpoint and will be written again), so a killed-and-resumed run has
    exactly the lines of an uninterrupted one.
    """

    def __init__(self, run: RunDir, resume_step: int | None, tensorboard: bool = True) -> None:
        self.file = run.metrics_file
        try:
            if resume_step is None:
                self.file.write_text("")
            elif self.file.is_file():
                kept = [ln for ln in self.file.read_text().splitlines() if (step := metrics_line_step(ln)) is not None and step <= resume_step]
                atomic_write_text(self.file, "".join(ln + "\n" for ln in kept))
            self._fh = open(self.file, "a")
        except OSError as e:
            raise os_error(e, self.file) from None
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            try:
                self.tb = SummaryWriter(str(run.path / "tb"), purge_step=purge)
            except OSError as e:
                raise os_error(e, e.filename or run.path / "tb") from None

    def log(self, step: int, epoch: float, metrics: dict[str, float], extra_tb: dict[str, float] | None = None) -> None:
        row = {"step": step, "epoch": round(epoch, 6), **{k: float(v) for k, v in metrics.items()}}
        try:
            self._fh.write(json.dumps(row) + "\n")
            self._fh.flush()
        except OSError as e:
            raise os_error(e, self.file) from None
        if self.tb is not None:
            for k, v in {**metrics, **(extra_tb or {})}.items():
                self.tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:  # a full disk: the error that stopped the run is already on its way up
            pass
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
