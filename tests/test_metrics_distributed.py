"""Distributed evaluation counts every test image exactly once, whatever the number of processes.

Real gloo process groups (3 CPU processes, file:// rendezvous in a temporary directory, and a
2-process subgroup of them) score their ShardedEvalSampler shards of an 11-image dataset through
a DataLoader and gather.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from pu_mlc.metrics import ShardedEvalSampler, gather_predictions, mean_average_precision

TOTAL = 11
NUM_CLASSES = 4


def dataset_scores(total: int = TOTAL) -> torch.Tensor:
    return torch.rand(total, NUM_CLASSES, generator=torch.Generator().manual_seed(0))


def dataset_positives(total: int = TOTAL) -> np.ndarray:
    return (torch.rand(total, NUM_CLASSES, generator=torch.Generator().manual_seed(1))
            < 0.4).numpy()


def _score_shard(total: int, rank: int, world_size: int):
    """Score this rank's shard the way an evaluation loop does: loader batches of indices."""
    scores = dataset_scores(total)
    loader = DataLoader(TensorDataset(torch.arange(total)), batch_size=2,
                        sampler=ShardedEvalSampler(total, rank, world_size))
    indices = [batch for (batch,) in loader]
    local_indices = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long)
    return scores[local_indices], local_indices


def _gather_checks(rank: int, world_size: int, group=None) -> dict:
    """Gather the shards of this group; also a too-small dataset and a duplicated index."""
    result = {}
    local_scores, local_indices = _score_shard(TOTAL, rank, world_size)
    result["local_count"] = local_indices.numel()
    result["gathered"] = gather_predictions(local_scores, local_indices, TOTAL, group=group)

    # fewer images than processes: the last rank of a 3-process group has an empty shard
    small_scores, small_indices = _score_shard(2, rank, world_size)
    result["small"] = gather_predictions(small_scores, small_indices, 2, group=group)

    # the last rank re-sends index 0 instead of its own last one
    duplicated = local_indices.clone()
    if rank == world_size - 1:
        duplicated[-1] = 0
    try:
        gather_predictions(local_scores, duplicated, TOTAL, group=group)
        result["duplicate_error"] = None
    except RuntimeError as error:
        result["duplicate_error"] = str(error)
    return result


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    """One of 3 gloo processes: checks in the 3-process world, then in a 2-process group."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=3,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = {3: _gather_checks(rank, 3)}
        pair = dist.new_group([0, 1])
        if rank in (0, 1):
            results[2] = _gather_checks(dist.get_rank(pair), 2, group=pair)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gathered_scores_equal_single_process_scores_with_each_image_once(tmp_path):
    # One spawn of 3 processes (process start-up dominates the run time) covers both a
    # 3-process world and a 2-process group.
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=3, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(3)]
    expected = dataset_scores()
    for world_size in (3, 2):
        results = [r[world_size] for r in per_rank[:world_size]]
        assert sum(r["local_count"] for r in results) == TOTAL
        for result in results:
            assert torch.equal(result["gathered"], expected)
            assert torch.equal(result["small"], dataset_scores(2))
            assert "more than once" in result["duplicate_error"]
            assert "e.g. [0]" in result["duplicate_error"]
        assert mean_average_precision(results[0]["gathered"].numpy(), dataset_positives()) == \
            mean_average_precision(expected.numpy(), dataset_positives())
    assert 2 not in per_rank[2]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 12])
def test_sharded_eval_sampler_partitions_the_dataset_without_padding(world_size):
    shards = [list(ShardedEvalSampler(TOTAL, rank, world_size)) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(TOTAL))
    assert [len(ShardedEvalSampler(TOTAL, r, world_size)) for r in range(world_size)] == \
        [len(shard) for shard in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards[0][:2] == list(range(0, TOTAL, world_size))[:2]


def test_sharded_eval_sampler_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError):
        ShardedEvalSampler(TOTAL, 2, 2)


def test_without_a_process_group_local_scores_are_placed_by_index():
    assert not dist.is_initialized()
    scores = dataset_scores()
    order = torch.randperm(TOTAL, generator=torch.Generator().manual_seed(3))
    assert torch.equal(gather_predictions(scores[order], order, TOTAL), scores)


@pytest.mark.parametrize("indices,message", [
    ([0, 1, 2, 2], "more than once"),
    ([0, 1, 2], "never arrived"),
    ([0, 1, 2, 7], "outside"),
])
def test_without_a_process_group_missing_duplicated_or_foreign_indices_raise(indices, message):
    scores = torch.rand(len(indices), NUM_CLASSES)
    with pytest.raises(RuntimeError, match=message):
        gather_predictions(scores, torch.tensor(indices), 4)
