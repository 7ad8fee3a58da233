"""``reprlab probe``: the linear classification protocol on CIFAR-100 with a frozen backbone.

Default: cached features + logistic regression with L2 chosen on validation. ``--augment``:
SGD on a linear head over the frozen backbone (eval mode) with crop + flip every epoch, through
the training loop. Both verify afterwards that the backbone is bit-identical to before. The
runs themselves are :mod:`reprlab.train.task`'s (the cached one: ``run_cached``).
"""

from __future__ import annotations

from reprlab.commands._common import add_run_arguments, execute_task, recipe, resolve, task_config

NAME = "probe"
HELP = "linear protocol on CIFAR-100 over a frozen backbone (cached features, or --augment)"
DATA_PARALLEL = True  # under torchrun the command joins the process group (reprlab.distributed)


def add_arguments(p) -> None:
    add_run_arguments(p)
    p.add_argument("--backbone", help="checkpoint path (or run dir) | imagenet-supervised | random-init")
    p.add_argument("--weights", help="imagenet-supervised: local state-dict file instead of the download")
    p.add_argument("--augment", action="store_true", help="SGD on the head with crop+flip augmentation instead of cached features")


def run_config(args):
    """(resolved config, task kind) of the command line ``args``: "probe" (cached) or "probe-augment"."""
    extra = [f'eval.backbone="{args.backbone}"'] if args.backbone else []
    extra += [f'eval.weights="{args.weights}"'] if args.weights else []
    extra = ['data.dataset="cifar100"', *extra] + (['eval.protocol="augment"'] if args.augment else [])
    if resolve(args, extra).eval.protocol == "augment":  # the flag, or the key itself; a later override wins for both
        return task_config(args, "probe-augment", extra, recipe("probe/linear_augment.toml"))
    return task_config(args, "probe", extra)


def run(args) -> int:
    return execute_task(args, *run_config(args))
