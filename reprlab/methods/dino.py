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

from dataclasses import dataclass, field

import torch

from reprlab import distributed
from reprlab.augment.views import ViewConfig
from reprlab.losses import dino_center_update, dino_loss
from reprlab.errors import ReprlabError
from reprlab.methods.base import register_method
from reprlab.methods.ssl import SSLConfig, SSLMethod, check
from reprlab.models.heads import DINOHead
from reprlab.schedules import ScalarSchedule, Scheduled, all_values


@dataclass
class DINOConfig(SSLConfig):
    proj_hidden_dim: int = 2048  # head MLP hidden width (paper and solo-learn CIFAR: 2048)
    bottleneck_dim: int = 256  # width of the L2-normalised bottleneck (paper: 256)
    out_dim: int = 4096  # K, logits of the weight-normalised last layer (paper: 65536; solo-learn CIFAR: 4096)
    head_layers: int = 3  # Linear layers of the head MLP, GELU between them (paper: 3)
    head_batch_norm: bool = False  # BatchNorm in the head MLP (paper: off)
    student_temperature: float = 0.1  # tau_s (paper: 0.1)
    teacher_temperature: Scheduled = field(default_factory=lambda: ScalarSchedule(start=0.07, warmup_from=0.04, warmup_epochs=50))  # tau_t: linear warm-up 0.04 -> 0.07, then constant (paper: over 30 epochs; solo-learn: 50)
    center_momentum: float = 0.9  # EMA momentum of the teacher centre (paper: 0.9)
    momentum: Scheduled = field(default_factory=lambda: ScalarSchedule(start=0.9995, end=1.0, shape="cosine"))  # teacher EMA momentum (paper: 0.996 -> 1; solo-learn CIFAR: 0.9995 -> 1)
    freeze_last_layer_epochs: int = 1  # the head's last layer gets no update during this many first epochs (paper: 1)

    def validate(self) -> None:
        super().validate()
        check(self, "head_layers", self.head_layers >= 1, ">= 1")
        check(self, "student_temperature", self.student_temperature > 0, "> 0")
        check(self, "teacher_temperature", min(all_values(self.teacher_temperature)) > 0, "values > 0")
        check(self, "center_momentum", 0.0 <= self.center_momentum <= 1.0, "a value in [0, 1]")
        check(self, "momentum", all(0.0 <= v <= 1.0 for v in all_values(self.momentum)), "values in [0, 1]")
        check(self, "freeze_last_layer_epochs", self.freeze_last_layer_epochs >= 0, ">= 0")


@register_method("dino")
class DINO(SSLMethod):
    Config = DINOConfig
    probe_backbone = "teacher_backbone"  # the paper evaluates the teacher

    @classmethod
    def default_views(cls):
        # solo-learn's asymmetric CIFAR pair as the global crops, plus the paper's local crops.
        jitter = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
        return {
            "global1": ViewConfig(**jitter, crop_scale=(0.4, 1.0)),
            "global2": ViewConfig(**jitter, crop_scale=(0.4, 1.0), solarize_prob=0.2),
            "local": ViewConfig(**jitter, count=4, size=16, crop_scale=(0.05, 0.4)),
        }

    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.head = DINOHead(self.backbone.num_features, m.proj_hidden_dim, m.bottleneck_dim, m.out_dim, m.head_layers, m.head_batch_norm)
        self.teacher_backbone = self.momentum_target(self.backbone)
        self.teacher_head = self.momentum_target(self.head)
        self.register_buffer("center", torch.zeros(1, m.out_dim))
        # Global crops are the largest ones (the teacher sees only those); they must come first.
        sizes = [size for _, size in self.views.layout]
        self.n_global = sum(size == max(sizes) for size in sizes)
        if sizes[: self.n_global] != [max(sizes)] * self.n_global or self.n_global < 2:
            raise ReprlabError(f"DINO needs at least 2 global crops (the largest size) declared before the local ones; views give {self.views.layout}")

    def training_step(self, images, labels, generator, ctx):
        m = self.cfg.method
        crops = self.views(images, generator)
        student = self.head(torch.cat(self.encode_crops(crops))).float().chunk(len(crops))
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
        return loss, {**extra, "teacher_temperature": tau_t, "momentum": ctx.value(m.momentum)}

    def before_optimizer_step(self, ctx):
        if ctx.epoch < self.cfg.method.freeze_last_layer_epochs:
            self.head.last_layer.weight.grad = None  # no update at all: no step, no decay, no momentum
