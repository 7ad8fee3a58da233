"""One sweep worker process for tests/studies/test_sweep_workers.py: ``run_sweep`` on a shared
storage with the fake trial executor of helpers_sweeps (an epoch per poll, no training), so
several of these at once test what the workers agree on through the storage, in separate
processes, without the cost of real runs.

argv[1]: a JSON file {"table": sweep table, "out": folder, "storage": URL, "poll_s": seconds,
"record": file, "ready": file, "go": file}. Every trial "process" started appends "<pid> <trial
dir>" to ``record``. Workers start together: each, its imports done, creates ``ready`` + its pid
and waits (30 s at most) for the file ``go``, which the test creates once all are ready.
"""

import io
import json
import os
import sys
import time
from pathlib import Path

import optuna  # noqa: F401 -- imported before the start line, so that the workers start together

from helpers_sweeps import FakeRun
from reprlab.errors import ReprlabError
from reprlab.studies.sweep import run_sweep
from reprlab.studies.sweep_spec import parse_sweep


def main(job: dict) -> int:
    spec = parse_sweep(job["table"], "worker sweep")

    def executor(argv, log_path, env):
        run = FakeRun(argv, [0.0])
        # the value depends on the parameters only, so a sampler has something to learn
        value = sum(float(v) for v in run.params.values())
        run.curve = [value / 2, value]
        with open(job["record"], "a") as f:
            f.write(f"{os.getpid()} {run.dir}\n")
        return run

    Path(f"{job['ready']}{os.getpid()}").touch()
    deadline = time.monotonic() + 30
    while not Path(job["go"]).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    out = io.StringIO()
    try:
        run_sweep(spec, job["out"], storage=job["storage"], executor=executor, poll_s=job["poll_s"], out=out)
    except ReprlabError as e:
        print(out.getvalue() + f"reprlab: error: {e}", flush=True)
        return 2
    print(out.getvalue(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(open(sys.argv[1]).read())))
