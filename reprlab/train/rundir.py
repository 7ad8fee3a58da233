"""The run directory: the only interface between a run and everything after it.

``runs/<name>/`` holds ``config.toml`` (fully resolved), ``env.json`` (versions, git SHA,
device), ``metrics.jsonl`` (one JSON object per logged step), TensorBoard events,
``checkpoints/last.pt`` and ``checkpoints/best.pt`` (written atomically), and ``result.json``
(written last: its presence with ``status == "complete"`` marks a finished run).
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from reprlab.config import Config, dumps_toml, to_dict
from reprlab.errors import ReprlabError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def env_info(device: torch.device) -> dict:
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
        self._lock_fd: int | None = None

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

    def is_complete(self) -> bool:
        return read_result(self.path).get("status") == "complete" if self.result_file.is_file() else False

    # ---- lifecycle
    def open(self, cfg: Config, device: torch.device) -> None:
        """Create the directory, take the lock, and write (or check) the resolved config."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.lock()
        try:
            cfg_text = dumps_toml(to_dict(cfg))
            existing = self.path / "config.toml"
            if existing.is_file() and self.last.is_file() and existing.read_text() != cfg_text:
                from reprlab.config import flatten
                import tomllib

                old, new = flatten(tomllib.loads(existing.read_text())), flatten(to_dict(cfg))
                from reprlab.train.task import VOLATILE_KEYS

                diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in VOLATILE_KEYS)
                if diff:
                    raise ReprlabError(
                        f"run directory {self.path} holds a run with a different config ({', '.join(diff[:4])} differ); "
                        "choose another run.name or delete the directory"
                    )
            atomic_write_text(existing, cfg_text)
            atomic_write_text(self.path / "env.json", json.dumps(env_info(device), indent=2))
        except BaseException:
            self.unlock()  # a refused open leaves the directory free for the next attempt
            raise

    def lock(self) -> None:
        fd = os.open(self.path / ".lock", os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ReprlabError(f"run directory {self.path} is in use by another process (lock {self.path / '.lock'})") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def write_result(self, result: dict) -> None:
        atomic_write_text(self.result_file, json.dumps(result, indent=2, sort_keys=False) + "\n")


def read_result(path: Path) -> dict:
    f = Path(path) / "result.json"
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ReprlabError(f"{f}: invalid JSON ({e})") from None


def _step_of(line: str) -> int | None:
    """The step of a metrics line; None for a blank or torn line (a kill mid-write)."""
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
        if resume_step is None:
            self.file.write_text("")
        elif self.file.is_file():
            kept = [ln for ln in self.file.read_text().splitlines() if _step_of(ln) is not None and _step_of(ln) <= resume_step]
            atomic_write_text(self.file, "".join(ln + "\n" for ln in kept))
        self._fh = open(self.file, "a")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self.tb = SummaryWriter(str(run.path / "tb"), purge_step=purge)

    def log(self, step: int, epoch: float, metrics: dict[str, float], extra_tb: dict[str, float] | None = None) -> None:
        row = {"step": step, "epoch": round(epoch, 6), **{k: float(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        if self.tb is not None:
            for k, v in {**metrics, **(extra_tb or {})}.items():
                self.tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        self._fh.close()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
