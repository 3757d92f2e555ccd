"""One split of a multi-label dataset: what every dataset reader returns.

Every dataset reader (COCO-2014, VOC-2007, any COCO-format folder) produces the same thing: a
:class:`Split` per part of the dataset, holding image paths and the *full* label matrix exactly as
annotated (+1 present, -1 absent). Everything downstream (the partial-label mask, held-out
validation, image checks, loaders) works on splits and never on a dataset's own format, so a new
dataset needs only a reader that returns ``{'train': Split, 'test': Split, ['val': Split]}``,
listed in :mod:`pu_mlc.data.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np



@dataclass(frozen=True, eq=False)
class Split:
    """The images of one split and their full labels, in dataset order.

    ``files`` are relative to ``image_dir``; ``labels`` is ``(len(files), len(class_names))``
    int8 with +1 for a class present and -1 for absent. ``source`` names the annotation file(s) the
    split was read from, so later messages (an unreadable image, a class-count mismatch) can say
    where the data came from.
    """

    name: str
    image_dir: Path
    files: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_dir", Path(self.image_dir))
        object.__setattr__(self, "files", tuple(self.files))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        labels = np.asarray(self.labels)
        if labels.ndim != 2 or labels.shape != (len(self.files), len(self.class_names)):
            raise ValueError(
                f"Split {self.name!r}: labels of shape {labels.shape} do not match "
                f"{len(self.files)} files x {len(self.class_names)} classes")
        if labels.size and not np.isin(labels, (-1, 1)).all():
            raise ValueError(f"Split {self.name!r}: full labels must be +1 or -1")
        object.__setattr__(self, "labels", labels.astype(np.int8, copy=False))

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def path(self, i: int) -> Path:
        """Absolute path of image ``i``."""
        return self.image_dir / self.files[i]

    def subset(self, indices: Union[Sequence[int], np.ndarray]) -> "Split":
        """The split restricted to ``indices`` (in the given order), labels included."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"Split {self.name!r} has {len(self)} images; index out of range")
        return Split(self.name, self.image_dir, tuple(self.files[i] for i in idx),
                     self.labels[idx], self.class_names, self.source)
