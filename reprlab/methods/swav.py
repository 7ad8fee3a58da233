"""SwAV (Caron et al. 2020, "Unsupervised learning of visual features by contrasting cluster
assignments").

Every crop's projection is L2-normalised and scored against K learnable prototypes (a bias-free
Linear whose rows are renormalised to unit length after every optimiser step). For the first
two crops, soft cluster assignments ("codes") are computed without gradient by a few
Sinkhorn-Knopp iterations that spread the batch equally over the prototypes; each code is then
predicted from the scores of every other crop (swapped prediction, a cross-entropy at
temperature 0.1). The equipartition is over the global batch: Sinkhorn sums its marginals with
``reprlab.distributed.all_reduce_sum``. The prototypes get no update during the first
epoch(s) (``freeze_prototypes_epochs``), as in the paper.

Queue (``queue_size > 0``): small batches give Sinkhorn too few samples to spread over K
prototypes, so the normalised projections of past batches are kept, per assigned crop, in a
registered buffer (newest first; each rank keeps ``queue_size / world`` rows, as in the
paper's code) and their scores are stacked under the batch's before Sinkhorn; only the batch
rows of the result are used. The queue is filled from the first step and joins the codes from
epoch ``queue_start_epochs`` on, once full. It never receives gradients.

Recipe (configs/pretrain/swav_cifar100.toml) follows solo-learn's CIFAR setting (projector
2048 -> 128, 3000 prototypes, queue 3840 from epoch 50, prototypes frozen for 2 epochs, LARS lr
0.6, eta 0.02, weight decay 1e-6 at batch 256, 1000 epochs, two 32 px crops of its "symmetric"
pipeline with blur 0.5, whose 3-px kernel here is milder than solo-learn's radius-based blur).
The paper's ImageNet setting differs in multi-crop (2 x 224 + 6 x 96 px), batch 4096 and one
frozen epoch. Crops beyond the first two, if ``views.view.count`` is raised, are predicted
from but not assigned, as the paper's local crops are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprlab import distributed
from reprlab.losses import sinkhorn_knopp, swav_loss
from reprlab.methods.base import register_method
from reprlab.methods.configs import SwAVConfig
from reprlab.methods.ssl import SSLMethod
from reprlab.models.heads import ProjectionHead

N_ASSIGN = 2  # crops whose codes are predicted (the global crops)


@register_method("swav")
class SwAV(SSLMethod):
    Config = SwAVConfig

    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.projector = ProjectionHead(self.backbone.num_features, m.proj_hidden_dim, m.proj_out_dim, 2)
        self.prototypes = nn.Linear(m.proj_out_dim, m.num_prototypes, bias=False)
        self._normalize_prototypes()
        rows = m.queue_size // distributed.world_size()
        self.register_buffer("queue", torch.zeros(N_ASSIGN, rows, m.proj_out_dim))  # newest first
        self._enqueue: torch.Tensor | None = None  # this step's projections, queued after the optimiser step

    @torch.no_grad()
    def _normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def queue_in_use(self, ctx, batch: int) -> bool:
        """Whether the queue joins this step's codes: past its start and full (``batch`` rows
        are enqueued every step from step 0)."""
        rows = self.queue.shape[1]
        return rows > 0 and ctx.epoch >= self.cfg.method.queue_start_epochs and ctx.step * batch >= rows

    @torch.no_grad()
    def assign(self, scores: list[torch.Tensor], ctx) -> list[torch.Tensor]:
        """Sinkhorn codes of the assigned crops' (B, K) scores, the queue's stacked under them."""
        m, batch = self.cfg.method, scores[0].shape[0]
        use_queue = self.queue_in_use(ctx, batch)
        codes = []
        for i, s in enumerate(scores):
            if use_queue:
                s = torch.cat([s, self.scores(self.queue[i].float())])
            codes.append(sinkhorn_knopp(s, m.sinkhorn_epsilon, m.sinkhorn_iterations, all_reduce=distributed.all_reduce_sum)[:batch])
        return codes

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """Cosines to the prototypes in float32 even under bf16 autocast: Sinkhorn divides them by
        epsilon = 0.05, which would magnify bf16's ~0.004 resolution near 1 twentyfold."""
        with torch.autocast(z.device.type, enabled=False):
            return self.prototypes(z.float())

    def training_step(self, images, labels, generator, ctx):
        crops = self.views(images, generator)
        batch = images.shape[0]
        h = self.encode_crops(crops)
        z = F.normalize(self.projector(torch.cat(h)).float(), dim=1)
        scores = self.scores(z).chunk(len(crops))
        codes = self.assign([s.detach() for s in scores[:N_ASSIGN]], ctx)
        if self.queue.shape[1] > 0:  # enqueued after the optimiser step (not on an fp16-skipped one)
            self._enqueue = z[: N_ASSIGN * batch].detach().view(N_ASSIGN, batch, -1)
        return swav_loss(scores, codes, self.cfg.method.temperature, tuple(range(N_ASSIGN))), self.online_probe_step(h[0], labels)

    def rank_state(self):
        return {"queue": self.queue}  # each rank queues its own projections (queue_size / world rows)

    def before_optimizer_step(self, ctx):
        if ctx.epoch < self.cfg.method.freeze_prototypes_epochs:
            self.prototypes.weight.grad = None  # no update at all: no step, no decay, no momentum

    def after_optimizer_step(self, ctx):
        if self._enqueue is not None:
            self.queue.copy_(torch.cat([self._enqueue, self.queue], dim=1)[:, : self.queue.shape[1]])
            self._enqueue = None
        if ctx.epoch >= self.cfg.method.freeze_prototypes_epochs:  # frozen rows are already unit
            self._normalize_prototypes()
