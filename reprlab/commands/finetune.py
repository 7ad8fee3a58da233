"""``reprlab finetune``: a new linear head on CIFAR-100 over a pretrained backbone, training
either only the head (``--mode head``, backbone frozen in eval mode) or every layer
(``--mode full``, backbone learning rate times ``optim.backbone_lr_mult``)."""

from __future__ import annotations

from reprlab.commands._common import add_run_arguments, execute_task, recipe, task_config

NAME = "finetune"
HELP = "fine-tune a pretrained backbone on CIFAR-100 (--mode full | head)"
DATA_PARALLEL = True  # under torchrun the command joins the process group (reprlab.distributed)


def add_arguments(p) -> None:
    add_run_arguments(p, default_config=None)
    p.add_argument("--backbone", help="checkpoint path | imagenet-supervised | random-init")
    p.add_argument("--weights", help="imagenet-supervised: local state-dict file instead of the download")
    p.add_argument("--mode", choices=("full", "head"), help="full: all layers; head: only the new linear head")


def run_config(args):
    """(resolved config, task kind) of the command line ``args``."""
    extra = [f'eval.backbone="{args.backbone}"'] if args.backbone else []
    extra += [f'eval.weights="{args.weights}"'] if args.weights else []
    extra += [f'eval.finetune_mode="{args.mode}"'] if args.mode else []
    return task_config(args, lambda cfg: f"finetune-{cfg.eval.finetune_mode}", ['data.dataset="cifar100"', *extra], recipe("finetune/resnet18.toml"))


def run(args) -> int:
    return execute_task(args, *run_config(args))
