"""Progress bar on rank 0 only; quiet (one update every 30 s) when stderr is not a terminal,
so logs captured by Ray or a batch system do not fill with carriage-return updates."""

from __future__ import annotations

import sys
from typing import Iterable, Optional

from tqdm.auto import tqdm


def progress(iterable: Iterable, total: Optional[int], enabled: bool, desc: str = ""):
    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False,
                dynamic_ncols=True, mininterval=0.5 if interactive else 30.0)
