"""Started by tests/train/test_data_parallel.py under torchrun: runs each (kind, overrides) job of
the JSON file given as argv[1] through the same task code as the CLI, on every rank."""

import json
import sys

from reprlab import distributed
from reprlab.config import load_config
from reprlab.train.task import execute

if __name__ == "__main__":
    distributed.init_from_env()
    try:
        for job in json.loads(open(sys.argv[1]).read()):
            execute(load_config(job.get("config"), job["overrides"]), job["kind"])
    finally:
        distributed.shutdown()
