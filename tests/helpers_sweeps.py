"""A fake trial executor for sweep and study tests: each "process" writes one epoch of metrics per
poll() and then result.json, with the val/acc1 curve it was handed."""

from __future__ import annotations

import json
from pathlib import Path


def _arg(argv: list[str], key: str) -> str:
    return json.loads(next(a for a in argv if a.startswith(key + "=")).split("=", 1)[1])


class FakeRun:
    """A trial 'process' that writes one epoch of metrics per poll(), then result.json.

    ``curve`` gives val/acc1 per epoch; the last value becomes result.json val.acc1.
    """

    def __init__(self, argv: list[str], curve: list[float], fail: bool = False) -> None:
        self.dir = Path(_arg(argv, "run.out_dir")) / _arg(argv, "run.name")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.argv, self.curve, self.fail = argv, curve, fail
        self.epoch, self.code, self.terminated = 0, None, False
        self.sweep_keys = _arg(argv, "run.sweep_keys")
        self.params = {k: float(_arg(argv, k)) for k in self.sweep_keys}

    def poll(self):
        if self.code is not None:
            return self.code
        if self.fail:
            (self.dir / "log.txt").write_text("reprlab: error: something broke\n")
            self.code = 2
            return self.code
        if self.epoch < len(self.curve):
            self.epoch += 1
            with open(self.dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": self.epoch * 10, "epoch": float(self.epoch), "val/acc1": self.curve[self.epoch - 1]}) + "\n")
            return None
        result = {"status": "complete", "val": {"acc1": self.curve[-1]}, "sweep": "search", "sweep_params": self.params}
        (self.dir / "result.json").write_text(json.dumps(result))
        self.code = 0
        return 0

    def terminate(self):
        self.terminated = True
        self.code = -15

    kill = terminate

    def wait(self, timeout=None):
        return self.code


class FakeExecutor:
    """Hands out curves in call order (independent of the sampler's order)."""

    def __init__(self, curves, fail_calls=()):
        self.curves, self.fail_calls, self.runs = list(curves), set(fail_calls), []

    def __call__(self, argv, log_path, env):
        i = len(self.runs)
        run = FakeRun(argv, self.curves[i % len(self.curves)], fail=i in self.fail_calls)
        self.runs.append(run)
        return run
