"""The PU-MLC recipe as one object: what turns a batch into an update (SPEC §4).

Adam (weight decay on every trainable tensor), OneCycle over ``epochs`` (80) stepped per
iteration, the loss (PU loss + MixUp regulariser, or a baseline), autocast with a GradScaler for
fp16, and the EMA of the model updated after every optimizer step. ``Recipe.build`` makes all of
it from a :class:`~pu_mlc.config.TrainConfig`; :meth:`Recipe.train_step` is *the* training step:
``fit`` calls it for every batch and the benchmarks in ``bench/`` time the same method, so a
benchmark can never measure a step that users do not run.

The step runs the fused form (one forward pass over the batch and its MixUp; see
:mod:`pu_mlc.engine.step` for why it is exact). Its MixUp draws come from a CPU generator the
caller owns, so they cost no device->host synchronisation and a resumed run repeats them. Every
step also feeds the recipe's :class:`~pu_mlc.engine.step.DivergenceWatch` (a non-finite loss or
gradient, noticed on the device without a sync; ``fit`` reads it at its sync points).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..losses import loss_from_config
from .distributed import DistContext
from .ema import TrainableStateEma
from .precision import Precision
from .step import DivergenceWatch, compute_loss, optimizer_step

if TYPE_CHECKING:
    from ..config import TrainConfig


@dataclass
class Recipe:
    model: nn.Module                 # the network itself (saved, evaluated, EMA'd)
    net: nn.Module                   # what the step runs: model, DDP(model) and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: TrainableStateEma
    precision: Precision
    scaler: Optional["torch.amp.GradScaler"]
    criterion: nn.Module
    mixup_alpha: float
    channels_last: bool = False
    watch: Optional[DivergenceWatch] = None

    @classmethod
    def build(cls, cfg: "TrainConfig", model: nn.Module, steps_per_epoch: int,
              ctx: DistContext, precision: Precision) -> "Recipe":
        """The recipe of ``cfg`` for ``model`` (already on ``ctx.device``)."""
        cuda = ctx.device.type == "cuda"
        channels_last = cuda and cfg.channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)
        trainable = model.trainable_parameters()
        optimizer = torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     **({"fused": True} if cuda else {}))
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
            pct_start=cfg.pct_start)
        net: nn.Module = model
        if ctx.distributed:
            net = DDP(model, device_ids=[ctx.device.index] if cuda else None,
                      **_no_buffer_sync())
        if cfg.compile:
            net = torch.compile(net)
        scaler = precision.grad_scaler()
        return cls(model=model, net=net, optimizer=optimizer, scheduler=scheduler,
                   ema=TrainableStateEma(model, decay=cfg.ema), precision=precision,
                   scaler=scaler,
                   criterion=loss_from_config(cfg),
                   mixup_alpha=cfg.mixup_alpha, channels_last=channels_last,
                   watch=DivergenceWatch(trainable, ctx.device, check_gradients=scaler is None))

    def train_step(self, x: torch.Tensor, targets: torch.Tensor,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One update on a batch already on the device; returns the detached loss."""
        loss, _ = compute_loss(self.net, x, targets, self.criterion, self.precision,
                               mixup_alpha=self.mixup_alpha, generator=generator, fused=True)
        optimizer_step(loss, self.optimizer, self.scaler)
        self.scheduler.step()
        self.ema.update(self.model)
        if self.watch is not None:
            self.watch.observe(loss)
        return loss.detach()

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "watch": self.watch.state_dict() if self.watch is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.watch is not None:
            self.watch.load_state_dict(state.get("watch"))


def _no_buffer_sync() -> dict:
    """DDP must not re-broadcast buffers every forward: they are constants here (eval-mode BN
    statistics, word vectors, adjacency). torch >= 2.14 spells it ``forward_sync_buffers``."""
    import inspect

    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}
