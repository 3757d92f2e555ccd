"""Writing files so that a kill never leaves half of one, and asking the file system whether a
folder can be written, before any expensive work starts.

Torch-free on purpose: the search's Ray processes (study drivers, trial drivers) mark trial
outcomes with these helpers and must not import torch for it (half a GB of memory and seconds of
CPU per process). ``pu_mlc.engine.outputs`` adds the run-directory layout and checkpoints.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from .errors import DiskFullError, OutputDirError


def check_writable_dir(path: Path, what: str) -> None:
    """Refuse, naming ``path`` and the fix, when ``path`` cannot be (or become) a directory this
    process can create files in.

    The nearest existing ancestor of ``path`` (``path`` itself when it exists) must be a
    directory, and a temporary file is created and removed in it: this asks the file system
    itself, so read-only mounts, permissions, ACLs and full quotas all answer truthfully (mode
    bits alone would mislead: root may write into a mode-0555 directory). Nothing is left
    behind: no directory is created, the probe file is removed.
    """
    path = Path(path)
    fix = f"choose another {_flag_of(what)} (a folder you can write to)"
    probe = path
    try:
        while not probe.exists():
            if os.path.islink(probe):
                raise OutputDirError(f"{what} {path}: {probe} is a broken symbolic link; "
                                     f"remove it or {fix}")
            if probe.parent == probe:
                break
            probe = probe.parent
        is_dir = probe.is_dir()
    except OSError as err:
        raise OutputDirError(f"{what} {path} cannot be inspected ({err.strerror or err}: "
                             f"{err.filename or probe}); {fix}") from None
    if not is_dir:
        where = "is a file" if probe == path else f"cannot be created: {probe} is a file"
        raise OutputDirError(f"{what} {path} {where}, not a directory; {fix}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pu_mlc-write-probe-", dir=probe)
    except OSError as err:
        raise OutputDirError(f"{what} {path} cannot be written: creating a file in {probe} "
                             f"failed ({err.strerror or err}); {fix}") from None
    os.close(fd)
    os.unlink(tmp)


def _flag_of(what: str) -> str:
    start = what.find("(--")
    return what[start + 1:what.index(")", start)] if start >= 0 else "directory"


def write_json_atomic(path: Path, payload: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(payload, indent=2, sort_keys=False)
                                          .encode()))


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


#: Free bytes below which a failed write is put down to a full disk: torch reports a short
#: write as ``RuntimeError('... file write failed')``, without the errno.
FULL_DISK_BYTES = 1 << 20


def atomic_write(path: Path, write) -> None:
    """Write ``path`` through a temporary file beside it, then rename: a kill or a full disk
    leaves the earlier ``path`` as it was. A full disk is raised as :class:`DiskFullError`
    naming the file, the bytes written and the fix, instead of torch's bare 'file write failed'.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        full = _disk_full(err, path.parent)
        written = _size(tmp)
        Path(tmp).unlink(missing_ok=True)
        if full:
            kept = "the earlier one is kept as it was" if path.exists() else "none was there"
            raise DiskFullError(
                f"writing {path} failed: the disk holding {path.parent} is full "
                f"({written:,} bytes written before it filled; {kept}); free space there or "
                f"write elsewhere (--output-dir; a search's storage_path or "
                f"$PU_MLC_STAGING_DIR)") from err
        raise


def _disk_full(err: BaseException, folder: Path) -> bool:
    """Whether ``err`` (raised while writing into ``folder``) came from a full disk."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(err, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(folder).free < FULL_DISK_BYTES
    except OSError:
        return False


def _size(file: str) -> int:
    try:
        return os.path.getsize(file)
    except OSError:
        return 0


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
