"""The online linear probe of self-supervised pretraining (as solo-learn reports its numbers):
a linear classifier trained alongside pretraining on the *detached* backbone features of each
step's first view, with its own optimiser (SGD with momentum 0.9, torch's update rule, at a
constant ``method.online_probe_lr``, no weight decay), evaluated on the validation split at every
evaluation (``online/val_acc1``).

It must not change pretraining, and nothing here can: the features are detached (no gradient
reaches the backbone); its parameters are in no parameter group of the run's optimiser (so
neither its gradient clipping nor its weight decay sees them); its weights are initialised from
their own seeded generator, not the run's global one; it draws no random numbers while training;
and its loss is logged as ``train/online_loss``, apart from ``train/loss``. Its weights and its
optimiser's state (the momentum buffers, registered buffers: a method's state_dict holds tensors
only) are part of the method's ``state_dict`` (``online_probe.*``), so a resumed run continues
it exactly. Under data parallelism its gradients are averaged over the ranks by hand
(DDP ignores its parameters: its update is not part of the backbone's backward).

Labels: those of the pretraining dataset (CIFAR-100's fine labels, Tiny ImageNet's 200 classes,
...), the probe being evaluated on that dataset's validation split; so ``online/val_acc1`` is a
number of the pretraining dataset (the kNN monitor, ``knn/acc1``, is CIFAR-100's whatever the
dataset). With ``data.fraction`` < 1 it sees the labels of that fraction only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprlab import distributed
from reprlab.eval.features import extract_features


class OnlineProbe(nn.Module):
    """``num_features`` -> ``num_classes`` logits, trained by :meth:`step`, scored by :meth:`accuracy`."""

    def __init__(self, num_features: int, num_classes: int, lr: float, seed: int) -> None:
        super().__init__()
        # nn.Linear's initialisation draws from the global CPU generator: from a fork of it here,
        # so the run's own stream (and with it every later draw of the run) is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.linear = nn.Linear(num_features, num_classes)
        self.lr, self.momentum = lr, 0.9
        self.register_buffer("weight_velocity", torch.zeros_like(self.linear.weight))
        self.register_buffer("bias_velocity", torch.zeros_like(self.linear.bias))

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One update on ``features`` (detached here) and ``labels``; returns its loss (detached).

        In float32 whatever the caller's autocast (a tiny layer: precision costs nothing)."""
        with torch.autocast(features.device.type, enabled=False):
            loss = F.cross_entropy(self.linear(features.detach().float()), labels)
            params = [self.linear.weight, self.linear.bias]
            grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, v in zip(params, grads, [self.weight_velocity, self.bias_velocity]):
                if distributed.world_size() > 1:
                    g = distributed.all_reduce_sum(g) / distributed.world_size()
                v.mul_(self.momentum).add_(g)  # torch.optim.SGD's momentum (dampening 0)
                p.sub_(v, alpha=self.lr)
        return loss.detach()

    def accuracy(self, backbone: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean, std, batch_size: int, device, channels_last: bool, amp_dtype) -> float:
        """Top-1 (%) on a uint8 split of the probe over ``backbone``'s features (eval mode)."""
        feats = extract_features(backbone, images, mean, std, batch_size, device, backbone.input_size, channels_last, amp_dtype)
        with torch.no_grad():
            pred = self.linear(feats.to(self.linear.weight.device)).argmax(1)
        return (pred == labels.to(pred.device)).float().mean().item() * 100.0
