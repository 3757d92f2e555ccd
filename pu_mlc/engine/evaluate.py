"""Scoring a split with one or more models, sharded across DDP ranks.

The published code let every GPU score the whole test set (and dropped the last incomplete
batch, so some test images were never scored). Here each rank scores a disjoint shard
(``ShardedEvalSampler``), the shards are gathered by image index, and every image is scored
exactly once per model; the regular and the EMA model share one pass over the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import numpy as np
import torch
from torch import nn

from ..metrics import evaluation_summary, gather_predictions
from .distributed import DistContext
from .precision import Precision


@dataclass
class EvalTarget:
    """A split to score: its loader and the labels its metrics use."""

    name: str                          # 'test' | 'val'
    loader: torch.utils.data.DataLoader
    positives: np.ndarray              # bool (N, C)
    valid: Optional[np.ndarray]        # bool (N, C) of known entries, None = all known
    class_names: tuple[str, ...]


@torch.no_grad()
def predict(models: Mapping[str, nn.Module], target: EvalTarget, ctx: DistContext,
            precision: Precision,
            batch_to_input: Callable[[object], torch.Tensor]) -> dict[str, np.ndarray]:
    """Sigmoid scores (N, C) of every model for every image of the split, on every rank."""
    total = len(target.loader.dataset)
    scores: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    indices: list[torch.Tensor] = []
    for m in models.values():
        m.eval()
    for batch in target.loader:
        x = batch_to_input(batch)
        idx = batch[2]
        indices.append(torch.as_tensor(idx, dtype=torch.long))
        for name, m in models.items():
            with precision.autocast():
                logits = m(x)
            scores[name].append(torch.sigmoid(logits.float()))
    num_classes = len(target.class_names)
    local_idx = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long)
    out = {}
    gather_device = ctx.device if _uses_nccl(ctx) else torch.device("cpu")
    for name in models:
        local = (torch.cat(scores[name]) if scores[name]
                 else torch.zeros(0, num_classes, device=ctx.device))
        full = gather_predictions(local.to(gather_device), local_idx.to(gather_device), total)
        out[name] = full.float().cpu().numpy()
    return out


def summarise(scores: np.ndarray, target: EvalTarget) -> dict:
    return evaluation_summary(scores, target.positives, target.class_names, valid=target.valid)


def _uses_nccl(ctx: DistContext) -> bool:
    if not ctx.distributed:
        return False
    import torch.distributed as dist

    return dist.get_backend() == "nccl"
