"""Supervised training with cross-entropy: from scratch, as pretraining on a source dataset's
own labels, and as fine-tuning (``full``: every layer, backbone at ``backbone_lr_mult``;
``head``: a new linear head over a frozen backbone kept in eval mode).

The recipe is the same for every architecture (the CNN-vs-ViT comparison depends on it):
crop + flip, optional RandAugment and random erasing, CutMix/Mixup with soft targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reprlab import distributed
from reprlab.augment.basic import random_crop, random_flip
from reprlab.augment.mix import BatchMix, rand_augment, random_erasing
from reprlab.data.device import iterate_eval, prepare_batch, stats_tensors
from reprlab.errors import ReprlabError
from reprlab.eval.metrics import classification_metrics
from reprlab.losses import soft_cross_entropy
from reprlab.methods.base import Method, register_method
from reprlab.methods.configs import SupervisedConfig
from reprlab.models import create_model


@register_method("supervised")
class Supervised(Method):
    Config = SupervisedConfig

    def __init__(self, cfg, splits, device, backbone=None, mode: str = "scratch") -> None:
        super().__init__(cfg, splits, device)
        num_classes = splits.train.num_classes
        self.mode = mode  # scratch | full | head
        if backbone is None:
            self.backbone = create_model(cfg.model.name, num_classes=num_classes, **cfg.model.kwargs)
            self.input_size = cfg.eval.resolution or splits.train.images.shape[-1]
        else:
            # Fine-tuning: the backbone brings its own normalisation and native resolution.
            self.backbone = backbone.model
            self.backbone.reset_classifier(num_classes)
            self.mean, self.std = stats_tensors(backbone.mean, backbone.std, device)
            self.input_size = cfg.eval.resolution or backbone.input_size
        self.compiled_backbone = None  # model.compile: a function, out of the module tree (see SSLMethod)
        head_ids = {id(p) for p in self.backbone.get_classifier().parameters()}
        self._head_ids = head_ids
        if mode == "head":
            for p in self.backbone.parameters():
                p.requires_grad_(id(p) in head_ids)
        self.mix = BatchMix(cfg.aug.mix, num_classes)
        m = cfg.aug.mix
        self.mix_active = m.cutmix_prob > 0 or m.mixup_prob > 0

    def named_trainable(self):
        mult = self.cfg.optim.backbone_lr_mult if self.mode == "full" else 1.0
        for n, p in self.named_parameters():
            if p.requires_grad:
                yield n, p, 1.0 if id(p) in self._head_ids else mult

    def set_train_mode(self) -> None:
        self.train()
        if self.mode == "head":
            self.backbone.eval()  # frozen means frozen: BN running statistics do not move either

    def compile(self) -> None:
        self.compiled_backbone = torch.compile(self.backbone.forward)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return prepare_batch(x, self.mean, self.std, self.input_size, self.cfg.model.channels_last)

    def training_step(self, images, labels, generator, ctx):
        a = self.cfg.aug
        if a.rand_augment:
            images = rand_augment(images, a.rand_augment_ops, a.rand_augment_magnitude, generator=generator)
        images = random_crop(images, a.crop_padding, generator)
        if a.flip:
            images = random_flip(images, generator)
        x = self._prepare(images)
        if a.random_erasing > 0:
            x = random_erasing(x, a.random_erasing, generator=generator)
        if self.mix_active:
            x, target = self.mix(x, labels, generator)
        else:
            target = labels
        logits = (self.compiled_backbone or self.backbone)(x)
        if self.mix_active:
            loss = soft_cross_entropy(logits.float(), target)
        else:
            loss = F.cross_entropy(logits.float(), target, label_smoothing=a.mix.label_smoothing)
        acc1 = (logits.argmax(1) == labels).float().mean() * 100.0
        return loss, {"acc1": acc1}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (float32) over a uint8 array on the device, in eval mode (sharded over ranks
        under data parallelism, every rank gets all of them: call it on every rank)."""
        n = len(images)
        images = images[distributed.shard(n)]
        was_training = self.training
        self.eval()
        out = []
        for sl in iterate_eval(images, self.cfg.train.eval_batch_size):
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
                out.append((self.compiled_backbone or self.backbone)(self._prepare(images[sl])).float())
        self.train(was_training)
        return distributed.gather_rows(torch.cat(out), n)  # the identity in one process

    def evaluate(self, split: str, epoch: int) -> dict[str, float]:
        s = getattr(self.splits, split)
        if s is None or len(s) == 0:
            raise ReprlabError(f"dataset {self.splits.name!r} has no {split} split to evaluate")
        images = s.images.to(self.device)
        labels = s.labels.to(self.device)
        logits = self.predict(images)
        return classification_metrics(logits, labels, split)

    def snapshot_frozen(self) -> None:
        """Remember every backbone tensor (parameters and BN buffers) except the new head."""
        from reprlab.eval.frozen import snapshot

        self._frozen = snapshot(self.backbone, exclude=self._head_ids)

    def verify_frozen(self) -> None:
        from reprlab.eval.frozen import verify_unchanged

        verify_unchanged(self.backbone, self._frozen, exclude=self._head_ids)

