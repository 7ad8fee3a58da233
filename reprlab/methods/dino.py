"""DINO (Caron et al. 2021, "Emerging properties in self-supervised vision transformers").

Self-distillation without labels: a student (backbone + DINO head) is trained to match, with
a cross-entropy, the sharpened and centred output distribution of a teacher, the EMA of the
student. Multi-crop: the two global crops go through teacher and student, the local crops
through the student only (one forward per crop size); every (teacher crop, other student
crop) pair counts. Collapse is avoided by centring the teacher logits (an EMA of their global
batch mean, a registered buffer) and sharpening them (teacher temperature < student's).

Also as in the paper: the teacher temperature warms up linearly from 0.04 to 0.07; the last
layer of the head receives no update during the first epoch(s) (``freeze_last_layer_epochs``);
its weight norm is fixed to 1 (``norm_last_layer``). The kNN monitor and the checkpoint's
backbone (`reprlab probe`, `finetune`) are the TEACHER's (``probe_backbone``), which the paper
evaluates.

``train/loss`` is the KL divergence KL(P_t || P_s), i.e. the paper's cross-entropy (eq. 3,
logged as ``train/cross_entropy``) minus the teacher's entropy. That entropy is a constant for
the student, so the gradient is the paper's; but it moves with the teacher, and early in
training the centring raises it (a freshly initialised network sends every image to much the
same prototype), so the cross-entropy can rise while the student is learning to match the
teacher. The KL falls when the student learns and is 0 at a perfect match. Also logged:
``train/teacher_entropy`` (mean, nats; near log K = a uniform teacher, near 0 = a one-hot
one: the two collapse modes), ``train/teacher_temperature`` and ``train/momentum``.

Recipe (configs/pretrain/dino_cifar100.toml) follows solo-learn's CIFAR setting (ResNet-18,
head 2048 -> 256 -> 4096, LARS lr 0.3, eta 0.02, weight decay 1e-6 at batch 256, 10 warm-up
epochs then cosine, 1000 epochs, teacher momentum 0.9995 -> 1, temperature warm-up over 50
epochs), which departs from the paper's ImageNet ViT setting (AdamW, weight decay 0.04 -> 0.4,
K = 65536, momentum 0.996 -> 1, warm-up over 30 epochs). solo-learn trains on two 32 px crops
only; here the paper's multi-crop is kept at CIFAR scale: four 16 px local crops of 5-40 % of
the image (``views.local.count`` / ``.size``), global crops of 40-100 %, no blur on 32 px
images, solarisation 0.2 on the second global crop.
"""

from __future__ import annotations

import torch

from reprlab import distributed
from reprlab.losses import dino_center_update, dino_loss
from reprlab.methods.base import register_method
from reprlab.methods.configs import DINOConfig
from reprlab.methods.ssl import SSLMethod
from reprlab.models.heads import DINOHead
from reprlab.models.momentum import ema_update_, momentum_copy


@register_method("dino")
class DINO(SSLMethod):
    Config = DINOConfig
    probe_backbone = "teacher_backbone"  # the paper evaluates the teacher

    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.head = DINOHead(self.backbone.num_features, m.proj_hidden_dim, m.bottleneck_dim, m.out_dim, m.head_layers, m.head_batch_norm)
        # the teacher: a frozen copy of the student, its EMA (after_optimizer_step)
        self.teacher_backbone = momentum_copy(self.backbone)
        self.teacher_head = momentum_copy(self.head)
        self.register_buffer("center", torch.zeros(1, m.out_dim))
        # Global crops are the largest ones (the teacher sees only those), declared first: the
        # config's view rules (DINOConfig.view_rules) guarantee two of them, then smaller local ones.
        sizes = [size for _, size in self.views.layout]
        self.n_global = sum(size == max(sizes) for size in sizes)

    def training_step(self, images, labels, generator, ctx):
        m = self.cfg.method
        crops = self.views(images, generator)
        h = self.encode_crops(crops)
        student = self.head(torch.cat(h)).float().chunk(len(crops))
        with torch.no_grad():
            teacher = self.teacher_head(self.encode(torch.cat(crops[: self.n_global]), self.teacher_backbone)).float()
        tau_t = ctx.value(m.teacher_temperature)
        ce = dino_loss(student, teacher.chunk(self.n_global), self.center, m.student_temperature, tau_t, self.n_global)
        with torch.no_grad():
            log_p = torch.log_softmax((teacher - self.center) / tau_t, dim=-1)
            entropy = -(log_p.exp() * log_p).sum(dim=-1).mean()  # every teacher crop is in V - 1 pairs: the pairs' mean
            self.center.copy_(dino_center_update(self.center, teacher, m.center_momentum, all_reduce=distributed.all_reduce_sum))
        loss = ce - entropy  # KL(P_t || P_s): the cross-entropy's gradient, without the teacher's moving entropy
        extra = {"cross_entropy": ce.detach(), "teacher_entropy": entropy}
        return loss, {**extra, "teacher_temperature": tau_t, "momentum": ctx.value(m.momentum), **self.online_probe_step(h[0], labels)}

    def before_optimizer_step(self, ctx):
        if ctx.epoch < self.cfg.method.freeze_last_layer_epochs:
            self.head.last_layer.weight.grad = None  # no update at all: no step, no decay, no momentum

    def after_optimizer_step(self, ctx):
        # The teacher moves after the student's step, towards it, at the scheduled momentum.
        m = ctx.value(self.cfg.method.momentum)
        ema_update_(self.teacher_backbone, self.backbone, m)
        ema_update_(self.teacher_head, self.head, m)
