"""Checkpoints: ``last.pt`` to resume a run, ``best.pt`` to use its selected model.

``last.pt`` holds everything the next epoch needs (the recipe's state: model, EMA, optimizer,
OneCycle position, GradScaler, the divergence rule's reference loss; the selection so far; the
per-epoch history). Every random draw (shuffle, augmentation, MixUp, the global generators) is
re-derived from (seed, rank, epoch) at each epoch start, so no generator state is saved and the
continuation is exact (``tests/test_engine_resume_exact.py``).
``best.pt`` holds only the selected model's weights with the class names and the config, so it can
be loaded for inference without the pretrained backbone file, and the decision thresholds chosen
for that model (on the validation split under the honest protocol), so ``pu-mlc predict`` decides
as the run's reported OF1/CF1 did instead of at an arbitrary 0.5. Both are written atomically and
hold only tensors and plain Python values, so they are read with ``weights_only=True``: a crafted
pickle on shared storage cannot run code when a run is resumed. Epochs are 1-based.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch

from ..errors import OutputDirError
from .outputs import torch_save_atomic

#: Version 2: 1-based epochs, the recipe's state under "recipe".
FORMAT_VERSION = 2


def save_checkpoint(path: Path, *, recipe_state: dict, epoch: int, selection: dict,
                    history: list[dict]) -> None:
    torch_save_atomic({"format_version": FORMAT_VERSION, "epoch": epoch,
                       "recipe": recipe_state, "selection": selection, "history": history},
                      path)


def load_checkpoint(path: Path, device: Optional[torch.device] = None) -> dict:
    """The state in ``last.pt``; a foreign, truncated or older file is refused in one line."""
    path = Path(path)
    if not path.exists():
        raise OutputDirError(f"checkpoint {path} does not exist")
    state = safe_torch_load(path, device)
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        found = state.get("format_version") if isinstance(state, dict) else type(state).__name__
        raise OutputDirError(f"checkpoint {path} has format {found!r}, this version reads "
                             f"{FORMAT_VERSION}; start a new run (another --output-dir)")
    return state


def safe_torch_load(path: Path, device=None):
    """``torch.load`` that never unpickles code: anything beyond tensors and plain values is
    refused with a one-line error naming the file."""
    try:
        with warnings.catch_warnings():      # e.g. "Detected pickle protocol 4": not for users
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=device or "cpu", weights_only=True)
    except Exception as err:  # a truncated, foreign or malicious file
        raise OutputDirError(f"checkpoint {path} cannot be read safely "
                             f"({load_failure_reason(err)}); it is not a file this version of "
                             f"pu-mlc wrote, and it was not "
                             f"unpickled: replace it or start a new run") from None


def load_failure_reason(err: Exception) -> str:
    """The informative line of a ``torch.load`` error. The weights-only unpickler's message
    starts with advice to retry with ``weights_only=False`` (which would run the file's code), so
    its specific line ("unsupported GLOBAL posix.mkdir ...") is shown instead."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    for key in ("GLOBAL", "Unsupported", "unsupported"):
        for line in lines:
            if key in line:
                return line.rstrip(".")
    first = lines[0]
    if "weights_only" in first:
        return "it holds more than tensors and plain values"
    return first.rstrip(".")


def save_best_weights(path: Path, model: torch.nn.Module, config: dict,
                      class_names: tuple[str, ...], epoch: int, which: str,
                      score: float, thresholds: Optional[dict] = None) -> None:
    """Write ``best.pt``. ``thresholds``: the selection's decision thresholds
    (``Selection.thresholds``: kind, one value per class, the split they were chosen on)."""
    payload = {"format_version": FORMAT_VERSION, "model": model.state_dict(),
               "class_names": list(class_names), "epoch": epoch, "which": which,
               "selection_score": score, "config": config}
    if thresholds is not None:           # plain values only: best.pt is read weights_only
        payload["thresholds"] = {k: ([float(x) for x in v] if k == "values" else str(v))
                                 for k, v in thresholds.items()}
    torch_save_atomic(payload, path)
