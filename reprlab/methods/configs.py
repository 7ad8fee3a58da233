"""The ``[method]`` sections and default ``[views]`` of every method, as plain dataclasses.

A method's code lives in ``reprlab/methods/<name>.py`` and uses torch; its configuration lives
here, free of torch, so that loading and checking a config (``reprlab config``, every run of a
study at ``study run --dry-run``) never imports torch. Each class is registered under the
method's name and is the ``Config`` attribute of the method class of that name (checked when the
method registers). A new method adds its dataclass here and its code in a file of its own.

Each dataclass field is one config key: its comment is the key's documentation
(``reprlab config method --method NAME``) and its type is checked on load. ``validate`` raises
the standard one-line error naming the key; ``default_views`` are the view pipelines a method
gets unless ``[views]`` says otherwise (solo-learn's CIFAR views where it publishes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from reprlab.augment.configs import CropCount, ViewConfig, ViewRules
from reprlab.config import MethodConfig
from reprlab.errors import ReprlabError
from reprlab.registry import METHOD_CONFIGS
from reprlab.schedules import ScalarSchedule, Scheduled, all_values


def method_config(name: str) -> Callable[[type[MethodConfig]], type[MethodConfig]]:
    """Decorator: register a ``[method]`` dataclass under the method's name."""

    def wrap(cls: type[MethodConfig]) -> type[MethodConfig]:
        METHOD_CONFIGS.add(name, cls)
        return cls

    return wrap


def check(cfg, key: str, ok: bool, expected: str) -> None:
    """Raise the standard one-line error for ``method.<key>`` unless ``ok``."""
    if not ok:
        raise ReprlabError(f"config key 'method.{key}': expected {expected}, got {getattr(cfg, key)!r}")


# --------------------------------------------------------------------------------------------
# View pipelines shared by several methods


def two_views(**overrides) -> dict[str, ViewConfig]:
    """Two crops from one pipeline (SimCLR, MoCo, SimSiam, Barlow Twins, VICReg)."""
    return {"view": ViewConfig(count=2, **overrides)}


def asymmetric_views() -> dict[str, ViewConfig]:
    """solo-learn's "asymmetric" CIFAR pair (BYOL, MoCo v3, Barlow Twins): the BYOL paper's two
    views without blur on 32 px images; solarisation 0 / 0.2 makes them differ."""
    jitter = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
    return {"view1": ViewConfig(**jitter, solarize_prob=0.0), "view2": ViewConfig(**jitter, solarize_prob=0.2)}


def symmetric_weak_views() -> dict[str, ViewConfig]:
    """solo-learn's CIFAR "symmetric_weak" views (SimSiam, MoCo v2): both crops from one pipeline,
    default jitter (0.4, 0.4, 0.4, 0.1), Gaussian blur (sigma 0.1-2 px) half of the time. Its
    blur is PIL's untruncated filter; a 13 px kernel (0.4 x 32) spans +-3 sigma at the largest
    sigma, where the default 3 px kernel would clip it."""
    return {"view": ViewConfig(count=2, blur_prob=0.5, blur_kernel_frac=0.4)}


#: why a two-crop method takes exactly two crops of one size
PAIR_WHY = "it concatenates its crops into one batch and splits it in halves, each half one crop of every image: the positive pairs"


def pair_rules(*names: str) -> ViewRules:
    """Two crops of one size: two from one view, or one from each of two views."""
    counts = {names[0]: CropCount(2, 2)} if len(names) == 1 else {n: CropCount(1, 1) for n in names}
    return ViewRules(counts=counts, same_size=names, why=PAIR_WHY)


# --------------------------------------------------------------------------------------------
# Self-supervised methods: what they share


@dataclass
class SSLConfig(MethodConfig):
    knn_k: int = 200  # kNN monitor: neighbours
    knn_temperature: float = 0.1  # kNN monitor: similarity temperature
    knn_every_epochs: int = 5  # kNN monitor on the CIFAR-100 validation split every this many epochs
    knn_bank_size: int = 0  # kNN monitor: training images in the memory bank (evenly strided); 0 = all
    online_probe: bool = True  # online linear probe on the detached features of the first view (online/val_acc1; labels of the pretraining set)
    online_probe_lr: float = 0.1  # online probe: its own SGD's learning rate (momentum 0.9, constant, no weight decay)

    def validate(self) -> None:
        check(self, "knn_k", self.knn_k >= 1, ">= 1")
        check(self, "knn_temperature", self.knn_temperature > 0, "> 0")
        check(self, "knn_every_epochs", self.knn_every_epochs >= 0, ">= 0")
        check(self, "knn_bank_size", self.knn_bank_size >= 0, ">= 0")
        check(self, "online_probe_lr", self.online_probe_lr > 0, "> 0")
        if hasattr(self, "momentum"):  # an EMA momentum (BYOL, MoCo, DINO): every value it takes in [0, 1]
            check(self, "momentum", all(0.0 <= v <= 1.0 for v in all_values(self.momentum)), "values in [0, 1] (1 = the target never moves)")

    @classmethod
    def default_views(cls) -> dict[str, ViewConfig]:
        return two_views()

    @classmethod
    def view_rules(cls) -> ViewRules:
        return pair_rules("view")


# --------------------------------------------------------------------------------------------
# The methods


@method_config("supervised")
@dataclass
class SupervisedConfig(MethodConfig):
    """Supervised training needs no [method] fields: its recipe is [aug] (crop, flip,
    RandAugment, erasing, CutMix/Mixup, label smoothing)."""


@method_config("simclr")
@dataclass
class SimCLRConfig(SSLConfig):
    temperature: float = 0.5  # NT-Xent temperature (SimCLR CIFAR: 0.5)
    proj_hidden_dim: int = 2048  # projection head hidden width
    proj_out_dim: int = 128  # projection head output width
    proj_layers: int = 2  # projection head depth (SimCLR v1: 2)

    def validate(self) -> None:
        super().validate()
        check(self, "temperature", self.temperature > 0, "> 0")


@method_config("byol")
@dataclass
class BYOLConfig(SSLConfig):
    proj_hidden_dim: int = 4096  # projector hidden width
    proj_out_dim: int = 256  # projector output width (the space the loss compares)
    pred_hidden_dim: int = 4096  # predictor hidden width
    momentum: Scheduled = field(default_factory=lambda: ScalarSchedule(start=0.99, end=1.0, shape="cosine"))  # EMA momentum of the target (paper: 0.996 -> 1 on ImageNet; CIFAR 0.99 -> 1)

    @classmethod
    def default_views(cls) -> dict[str, ViewConfig]:
        return asymmetric_views()

    @classmethod
    def view_rules(cls) -> ViewRules:
        return pair_rules("view1", "view2")


@method_config("mocov2")
@dataclass
class MoCoV2Config(SSLConfig):
    temperature: float = 0.2  # InfoNCE temperature (MoCo v2: 0.2; v1: 0.07)
    proj_hidden_dim: int = 2048  # projector hidden width (no BN, as in MoCo v2)
    proj_out_dim: int = 256  # projector output width = key width (paper: 128; solo-learn CIFAR: 256)
    queue_size: int = 65536  # negative keys kept (both views' keys are enqueued: 2 x batch per step)
    symmetric: bool = True  # loss in both directions, averaged (solo-learn's "MoCo v2+"); false = the paper's q1 -> k2 only
    momentum: Scheduled = field(default_factory=lambda: ScalarSchedule(start=0.99, end=0.999, shape="cosine"))  # key-encoder EMA momentum (paper: 0.999 on ImageNet; solo-learn CIFAR: 0.99 -> 0.999)

    def validate(self) -> None:
        super().validate()
        check(self, "temperature", self.temperature > 0, "> 0")
        check(self, "queue_size", self.queue_size >= 1, ">= 1")

    @classmethod
    def default_views(cls) -> dict[str, ViewConfig]:
        return symmetric_weak_views()


@method_config("mocov3")
@dataclass
class MoCoV3Config(SSLConfig):
    temperature: float = 0.2  # InfoNCE temperature (paper: 1.0 for ResNet-50, 0.2 for ViT; solo-learn CIFAR: 0.2)
    proj_hidden_dim: int = 4096  # projector hidden width
    proj_out_dim: int = 256  # projector (and predictor) output width
    proj_layers: int = 3  # projector depth in Linear layers (paper text: 3; official ResNet code and solo-learn: 2)
    pred_hidden_dim: int = 4096  # predictor hidden width (2 layers)
    momentum: Scheduled = field(default_factory=lambda: ScalarSchedule(start=0.99, end=1.0, shape="cosine"))  # key-encoder EMA momentum (paper: 0.99 -> 1 cosine for ResNet-50; solo-learn CIFAR the same)

    def validate(self) -> None:
        super().validate()
        check(self, "temperature", self.temperature > 0, "> 0")
        check(self, "proj_layers", self.proj_layers >= 1, ">= 1")

    @classmethod
    def default_views(cls) -> dict[str, ViewConfig]:
        return asymmetric_views()

    @classmethod
    def view_rules(cls) -> ViewRules:
        return pair_rules("view1", "view2")


@method_config("simsiam")
@dataclass
class SimSiamConfig(SSLConfig):
    proj_hidden_dim: int = 2048  # projector hidden width (paper and solo-learn CIFAR: 2048)
    proj_out_dim: int = 2048  # projector output width = the predictor's input and output width
    proj_layers: int = 3  # projector depth in Linear layers, BN after each, the output one included (paper: 3)
    pred_hidden_dim: int = 512  # predictor bottleneck width (paper: 512 for D = 2048)

    def validate(self) -> None:
        super().validate()
        check(self, "proj_layers", self.proj_layers >= 1, ">= 1")

    @classmethod
    def default_views(cls) -> dict[str, ViewConfig]:
        return symmetric_weak_views()


@method_config("barlow_twins")
@dataclass
class BarlowTwinsConfig(SSLConfig):
    proj_hidden_dim: int = 2048  # projector hidden width (paper: 8192; solo-learn CIFAR: 2048)
    proj_out_dim: int = 2048  # projector output width = side of the cross-correlation matrix (paper: 8192; solo-learn CIFAR: 2048)
    proj_layers: int = 3  # projector Linear layers, BN + ReLU between them (paper: 3)
    lambd: float = 0.0051  # weight of the off-diagonal (redundancy-reduction) term (paper's code: 0.0051)
    scale_loss: float = 0.1  # constant factor on the loss (paper: 1; solo-learn CIFAR: 0.1)

    def validate(self) -> None:
        super().validate()
        check(self, "proj_layers", self.proj_layers >= 1, ">= 1")
        check(self, "lambd", self.lambd >= 0, ">= 0")
        check(self, "scale_loss", self.scale_loss > 0, "> 0")

    @classmethod
    def default_views(cls) -> dict[str, ViewConfig]:
        return asymmetric_views()

    @classmethod
    def view_rules(cls) -> ViewRules:
        return pair_rules("view1", "view2")


@method_config("vicreg")
@dataclass
class VICRegConfig(SSLConfig):
    proj_hidden_dim: int = 2048  # expander hidden width (paper: 8192; solo-learn CIFAR: 2048)
    proj_out_dim: int = 2048  # expander output width, the embedding the loss sees (paper: 8192; solo-learn CIFAR: 2048)
    proj_layers: int = 3  # expander Linear layers, BN + ReLU between them (paper: 3)
    sim_coeff: float = 25.0  # lambda: weight of the invariance (MSE) term (paper: 25)
    std_coeff: float = 25.0  # mu: weight of the variance hinge (paper: 25)
    cov_coeff: float = 1.0  # nu: weight of the covariance term (paper: 1)

    def validate(self) -> None:
        super().validate()
        check(self, "proj_layers", self.proj_layers >= 1, ">= 1")
        for key in ("sim_coeff", "std_coeff", "cov_coeff"):
            check(self, key, getattr(self, key) >= 0, ">= 0")

    @classmethod
    def default_views(cls) -> dict[str, ViewConfig]:
        # solo-learn's CIFAR VICReg views: one pipeline, two crops.
        return two_views(crop_scale=(0.2, 1.0), saturation=0.2, solarize_prob=0.1)


@method_config("dino")
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
        check(self, "freeze_last_layer_epochs", self.freeze_last_layer_epochs >= 0, ">= 0")

    @classmethod
    def default_views(cls) -> dict[str, ViewConfig]:
        # solo-learn's asymmetric CIFAR pair as the global crops, plus the paper's local crops.
        jitter = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
        return {
            "global1": ViewConfig(**jitter, crop_scale=(0.4, 1.0)),
            "global2": ViewConfig(**jitter, crop_scale=(0.4, 1.0), solarize_prob=0.2),
            "local": ViewConfig(**jitter, count=4, size=16, crop_scale=(0.05, 0.4)),
        }

    @classmethod
    def view_rules(cls) -> ViewRules:
        return ViewRules(counts={"global1": CropCount(1, 1), "global2": CropCount(1, 1), "local": CropCount(0, None)},
                         same_size=("global1", "global2"), smaller=("local",),
                         why="the two global crops, the largest, go through teacher and student; the local crops through the student only")


@method_config("swav")
@dataclass
class SwAVConfig(SSLConfig):
    proj_hidden_dim: int = 2048  # projector hidden width (paper and solo-learn CIFAR: 2048)
    proj_out_dim: int = 128  # projection width = prototype width (paper: 128)
    num_prototypes: int = 3000  # K, learnable prototypes (paper ImageNet and solo-learn CIFAR: 3000)
    temperature: float = 0.1  # softmax temperature of the swapped prediction (paper: 0.1)
    sinkhorn_epsilon: float = 0.05  # entropy regularisation of the Sinkhorn codes (paper: 0.05)
    sinkhorn_iterations: int = 3  # Sinkhorn-Knopp iterations (paper: 3)
    queue_size: int = 3840  # past projections per assigned crop added to Sinkhorn's input, over all ranks; 0 = no queue (solo-learn CIFAR: 3840)
    queue_start_epochs: int = 50  # the queue joins the codes from this epoch on, once full (solo-learn CIFAR: 50)
    freeze_prototypes_epochs: int = 2  # the prototypes get no update during this many first epochs (paper: 1; solo-learn CIFAR: 2)

    def validate(self) -> None:
        super().validate()
        check(self, "temperature", self.temperature > 0, "> 0")
        check(self, "sinkhorn_epsilon", self.sinkhorn_epsilon > 0, "> 0")
        check(self, "sinkhorn_iterations", self.sinkhorn_iterations >= 1, ">= 1")
        check(self, "queue_size", self.queue_size >= 0, ">= 0")
        check(self, "queue_start_epochs", self.queue_start_epochs >= 0, ">= 0")
        check(self, "freeze_prototypes_epochs", self.freeze_prototypes_epochs >= 0, ">= 0")

    @classmethod
    def default_views(cls) -> dict[str, ViewConfig]:
        # solo-learn's "symmetric" CIFAR views: colour strength 1, blur 0.5.
        return {"view": ViewConfig(count=2, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_prob=0.5)}

    @classmethod
    def view_rules(cls) -> ViewRules:
        return ViewRules(counts={"view": CropCount(2, None)}, same_size=("view",),
                         why="codes are assigned to the first two crops and predicted from every other crop")
