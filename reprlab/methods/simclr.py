"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations").

Two views of every image from the on-device view pipeline (random resized crop, flip, colour
jitter, grayscale; blur and solarisation optional), a two-layer projection head, and the NT-Xent
loss over the 2N views of the batch. The backbone is the CIFAR ResNet (3x3 stem) whatever the
pretraining dataset, so the features it learns are those a 32 px CIFAR image will use.

Monitor: weighted kNN (k=200, T=0.1) on the CIFAR-100 validation split every
``method.knn_every_epochs`` epochs, with the CIFAR-100 training split (minus validation) as the
memory bank; it selects ``best.pt`` and is logged with the loss as ``knn/acc1``.
"""

from __future__ import annotations

import torch

from reprlab.augment.views import ViewAugment
from reprlab.data.device import stats_tensors
from reprlab.errors import ReprlabError
from reprlab.eval.features import extract_features
from reprlab.eval.knn import knn_accuracy
from reprlab.losses import nt_xent
from reprlab.methods.base import Method, register_method
from reprlab.models import create_model
from reprlab.models.heads import ProjectionHead


@register_method("simclr")
class SimCLR(Method):
    selection_metric = "knn/acc1"

    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.backbone = create_model(cfg.model.name, num_classes=0, **cfg.model.kwargs)
        self.projector = ProjectionHead(self.backbone.num_features, m.proj_hidden_dim, m.proj_out_dim, m.proj_layers)
        self.views = ViewAugment(cfg.views, splits.mean, splits.std)
        self._encode = self.backbone
        self._monitor = None

    def compile(self) -> None:
        self._encode = torch.compile(self.backbone)

    def training_step(self, images, labels, generator):
        v1 = self.views(images, generator)
        v2 = self.views(images, generator)
        x = torch.cat([v1, v2])
        if self.cfg.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z = self.projector(self._encode(x))
        z1, z2 = z.float().chunk(2)
        return nt_xent(z1, z2, self.cfg.method.temperature), None

    def eval_due(self, epoch: int, last: bool) -> bool:
        every = self.cfg.method.knn_every_epochs
        return last or (every > 0 and epoch % every == 0)

    def monitor_data(self):
        """CIFAR-100 train (bank) and val (queries), loaded once; labels never reach the loss."""
        if self._monitor is None:
            if self.splits.name == "cifar100" and self.cfg.data.labels == "fine" and self.cfg.data.fraction == 1.0:
                s = self.splits
            else:
                from dataclasses import replace

                from reprlab.data.registry import load_splits

                s = load_splits(replace(self.cfg.data, dataset="cifar100", fraction=1.0, resolution=32, labels="fine"))
            bank_size = self.cfg.method.knn_bank_size
            bank = s.train if not bank_size or bank_size >= len(s.train) else s.train.subset(torch.arange(len(s.train))[:: max(1, len(s.train) // bank_size)][:bank_size])
            self._monitor = (bank, s.val, s.train.num_classes)
        return self._monitor

    def evaluate(self, split: str, epoch: int) -> dict[str, float]:
        if split != "val":
            raise ReprlabError("SimCLR pretraining reports kNN accuracy on the validation split only; use `reprlab probe` for test numbers")
        bank, val, num_classes = self.monitor_data()
        mean, std = stats_tensors(self.splits.mean, self.splits.std, self.device)
        bs, res = self.cfg.train.eval_batch_size, self.backbone.input_size
        cl = self.cfg.model.channels_last
        fb = extract_features(self.backbone, bank.images, mean, std, bs, self.device, res, cl, self.amp_dtype)
        fq = extract_features(self.backbone, val.images, mean, std, bs, self.device, res, cl, self.amp_dtype)
        acc = knn_accuracy(fq, val.labels.to(self.device), fb, bank.labels.to(self.device), num_classes, self.cfg.method.knn_k, self.cfg.method.knn_temperature)
        return {"knn/acc1": acc}
