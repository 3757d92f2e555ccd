"""Checkpoints: ``last.pt`` to resume a run, ``best.pt`` to use its selected model.

``last.pt`` holds everything the next epoch needs (model and EMA state, optimizer, OneCycle
position, GradScaler, selection so far, per-epoch history); the MixUp randomness is re-seeded
from (seed, rank, epoch) so nothing else is needed for an exact continuation. ``best.pt`` holds
only the selected model's weights with the class names and the config, so it can be loaded for
inference without the pretrained backbone file. Both are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import OutputDirError
from .outputs import torch_save_atomic
from .selection import Selection

FORMAT_VERSION = 1


def save_checkpoint(path: Path, *, model: nn.Module, ema: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, scaler, epoch: int,
                    selection: Selection, history: list[dict]) -> None:
    torch_save_atomic({
        "format_version": FORMAT_VERSION,
        "epoch": epoch,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "selection": selection.state_dict(),
        "history": history,
    }, path)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    path = Path(path)
    if not path.exists():
        raise OutputDirError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise OutputDirError(f"checkpoint {path} cannot be read ({err}); start a new run "
                             f"with --overwrite") from None
    if state.get("format_version") != FORMAT_VERSION:
        raise OutputDirError(f"checkpoint {path} has format {state.get('format_version')}, "
                             f"this version reads {FORMAT_VERSION}")
    return state


def save_best_weights(path: Path, model: nn.Module, cfg: TrainConfig,
                      class_names: tuple[str, ...], epoch: int,
                      selection: Selection) -> None:
    torch_save_atomic({
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "class_names": list(class_names),
        "epoch": epoch,
        "which": selection.best_model,
        "selection_score": selection.best_score,
        "config": cfg.to_dict(),
    }, path)


def load_best_weights(path: Path, device: Optional[torch.device] = None) -> dict:
    return torch.load(path, map_location=device or "cpu", weights_only=False)
