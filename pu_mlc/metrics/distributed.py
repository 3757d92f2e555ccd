"""Distributed evaluation that counts every test image exactly once.

``torch.utils.data.DistributedSampler`` pads the dataset to a multiple of the world size by
repeating images, so gathering its shards counts some test images twice (and ``drop_last`` drops
some instead); mAP then depends on the number of GPUs. Here each rank takes the indices
``rank, rank + world_size, ...`` without padding (:class:`ShardedEvalSampler`), ships its scores
together with their dataset indices, and :func:`gather_predictions` puts every row back at its
index, checking that each index arrived exactly once.
"""

from __future__ import annotations

from typing import Iterator, List, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


class ShardedEvalSampler(Sampler[int]):
    """The indices ``rank::world_size`` of a dataset of ``n`` items: a partition, no padding.

    Shards differ in length by at most one; use with ``shuffle``-free evaluation loaders and pass
    each batch's dataset indices to :func:`gather_predictions`.
    """

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        super().__init__()
        if n < 0:
            raise ValueError(f"dataset size must be >= 0, got {n}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        self.n, self.rank, self.world_size = int(n), int(rank), int(world_size)

    @property
    def indices(self) -> range:
        """This rank's dataset indices."""
        return range(self.rank, self.n, self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _communication_device(tensor: torch.Tensor,
                          group: Optional[dist.ProcessGroup]) -> torch.device:
    """Where collectives can run: NCCL needs CUDA tensors, gloo takes CPU (and CUDA) tensors."""
    if "nccl" in str(dist.get_backend(group)).lower() and tensor.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def _all_gather_rows(scores: torch.Tensor, indices: torch.Tensor,
                     group: Optional[dist.ProcessGroup]):
    """All-gather variable-length (rows, C) scores and (rows,) indices: pad, gather, strip."""
    world_size = dist.get_world_size(group)
    device = _communication_device(scores, group)
    scores, indices = scores.to(device), indices.to(device)
    meta = torch.tensor([scores.shape[0], scores.shape[1]], dtype=torch.long, device=device)
    metas: List[torch.Tensor] = [torch.empty_like(meta) for _ in range(world_size)]
    dist.all_gather(metas, meta, group=group)
    lengths = [int(m[0]) for m in metas]
    widths = sorted({int(m[1]) for m in metas})
    if len(widths) != 1:
        raise RuntimeError(f"gather_predictions: ranks disagree on the number of classes "
                           f"({widths}); every rank must score the same classes")
    longest = max(lengths)
    padded_scores = scores.new_zeros((longest, scores.shape[1]))
    padded_scores[:scores.shape[0]] = scores
    padded_indices = torch.full((longest,), -1, dtype=torch.long, device=device)
    padded_indices[:indices.shape[0]] = indices
    score_parts = [torch.empty_like(padded_scores) for _ in range(world_size)]
    index_parts = [torch.empty_like(padded_indices) for _ in range(world_size)]
    dist.all_gather(score_parts, padded_scores, group=group)
    dist.all_gather(index_parts, padded_indices, group=group)
    all_scores = torch.cat([part[:length] for part, length in zip(score_parts, lengths)])
    all_indices = torch.cat([part[:length] for part, length in zip(index_parts, lengths)])
    return all_scores, all_indices


def _check_each_index_once(indices: torch.Tensor, total: int) -> None:
    out_of_range = (indices < 0) | (indices >= total)
    if bool(out_of_range.any()):
        bad = indices[out_of_range][:10].tolist()
        raise RuntimeError(f"gather_predictions: indices outside [0, {total}): {bad}")
    counts = torch.bincount(indices, minlength=total)
    duplicated = torch.nonzero(counts > 1).flatten()
    missing = torch.nonzero(counts == 0).flatten()
    if duplicated.numel() or missing.numel():
        raise RuntimeError(
            f"gather_predictions: every test image must be scored exactly once, but "
            f"{duplicated.numel()} indices arrived more than once (e.g. {duplicated[:10].tolist()})"
            f" and {missing.numel()} never arrived (e.g. {missing[:10].tolist()}); use "
            f"ShardedEvalSampler (no padding) rather than DistributedSampler")


def gather_predictions(local_scores: torch.Tensor, local_indices: torch.Tensor, total: int,
                       group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """Every rank's scores placed by dataset index into one ``(total, C)`` tensor, on every rank.

    ``local_scores`` is ``(n_local, C)``, ``local_indices`` the ``(n_local,)`` dataset indices of
    its rows (any order). Under an initialised process group (gloo with CPU tensors, NCCL with
    CUDA tensors) the shards are all-gathered over ``group`` (default: the whole world; every
    member must call); without one the local rows are placed alone.
    Raises ``RuntimeError`` on every rank if an index is out of range, missing or seen twice.
    The result is on ``local_scores``'s device, in its dtype.
    """
    if local_scores.dim() != 2:
        raise ValueError(f"local_scores must have shape (n_local, C), got "
                         f"{tuple(local_scores.shape)}")
    if tuple(local_indices.shape) != (local_scores.shape[0],):
        raise ValueError(f"local_indices must have shape ({local_scores.shape[0]},), got "
                         f"{tuple(local_indices.shape)}")
    scores = local_scores.detach()
    indices = local_indices.detach().to(device=scores.device, dtype=torch.long)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        scores, indices = _all_gather_rows(scores, indices, group)
    _check_each_index_once(indices, total)
    placed = scores.new_empty((total, scores.shape[1]))
    placed[indices] = scores
    return placed.to(local_scores.device)
