"""Where an experiment's files live: a local folder or an object store, behind one interface.

``storage_path`` is a folder (or ``file://`` URI) on a file system every node mounts, or an
object-store URI (``s3://bucket/prefix``, ``gs://...``, with pyarrow's query options such as
``?region=us-west-2&endpoint_override=http://host:port``). :class:`Storage` gives the experiment
store (:mod:`tune.store`, its only user) the few operations it needs on either, through
``pyarrow.fs``: the file-system layer Ray Tune and Ray Train use for the same ``storage_path``,
so one URI means the same objects to Ray and to us, credentials come from the same places (the
usual AWS/GCS variables, profiles and instance roles), and no second storage library is needed.

Local paths are ``pathlib.Path`` and are written atomically (a temporary name, then a rename).
Object stores replace a whole object when its upload completes (pyarrow's output stream uploads
on close), so a reader sees the previous ``metrics.json`` or the new one, never half of one;
there is no append, so an append-only log is rewritten whole. Remote paths are
``PurePosixPath`` (``bucket/prefix/...``); :meth:`Storage.uri` turns one back into the URI Ray
takes (scheme and query options included).
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional, Union

from pu_mlc.files import atomic_write

AnyPath = Union[Path, PurePosixPath]

#: URI schemes ``storage_path`` may name besides a local folder (pyarrow.fs's, Ray's).
OBJECT_STORES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs")


def is_remote(location: str | Path) -> bool:
    """True for an object-store URI (not a folder, not ``file://``)."""
    text = str(location)
    return "://" in text and text.split("://", 1)[0].lower() != "file"


def join_uri(location: str, *parts: str) -> str:
    """``location`` (a folder or a URI, possibly with ``?query``) with ``parts`` appended to its
    path: ``s3://b/p?region=x`` + ``name`` -> ``s3://b/p/name?region=x``."""
    if not is_remote(location):
        return str(Path(location).joinpath(*parts))
    base, sep, query = location.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + (sep + query if sep else "")


class Storage:
    """One experiment's location (see the module docstring).

    Paths inside an object store are ``PurePosixPath``; a concrete ``pathlib.Path`` always
    names the local file system, also when the experiment is remote (an export or a report
    written to a local ``--out`` folder goes through the same calls)."""

    def __init__(self, location: str | Path) -> None:
        text = str(location)
        self.remote = is_remote(text)
        if self.remote:
            import pyarrow.fs

            self.scheme = text.split("://", 1)[0].lower()
            self.query = text.partition("?")[2]
            self.fs, base = pyarrow.fs.FileSystem.from_uri(text)
            self.root: AnyPath = PurePosixPath(base)
        else:
            if text.lower().startswith("file://"):
                text = urllib.parse.unquote(urllib.parse.urlparse(text).path)
            self.scheme, self.query, self.fs = "file", "", None
            self.root = Path(text)

    def __repr__(self) -> str:
        return f"Storage({self.uri(self.root)!r})"

    def uri(self, path: AnyPath) -> str:
        """What Ray (``storage_path``, ``Tuner.restore``) and the user see for ``path``."""
        if not self.remote:
            return str(path)
        return f"{self.scheme}://{path}" + (f"?{self.query}" if self.query else "")

    # --- reading -----------------------------------------------------------------------------
    def _local(self, path: AnyPath) -> bool:
        return not self.remote or isinstance(path, Path)

    def read_bytes(self, path: AnyPath) -> Optional[bytes]:
        """The file's content; None when it does not exist."""
        if self._local(path):
            try:
                return Path(path).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None
        try:
            with self.fs.open_input_stream(str(path)) as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, OSError) as err:
            if self._info(path) is None:
                return None
            raise err

    def exists(self, path: AnyPath) -> bool:
        if self._local(path):
            return Path(path).exists()
        return self._info(path) is not None

    def is_dir(self, path: AnyPath) -> bool:
        if self._local(path):
            return Path(path).is_dir()
        import pyarrow.fs

        info = self._info(path)
        return info is not None and info.type == pyarrow.fs.FileType.Directory

    def list_dir(self, path: AnyPath) -> list[tuple[str, bool]]:
        """``(name, is_dir)`` of the entries of a folder ([] when there is none)."""
        if self._local(path):
            folder = Path(path)
            if not folder.is_dir():
                return []
            return sorted((p.name, p.is_dir()) for p in folder.iterdir())
        import pyarrow.fs

        try:
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(str(path),
                                                                  allow_not_found=True))
        except (FileNotFoundError, OSError):
            return []
        return sorted((PurePosixPath(i.path).name, i.type == pyarrow.fs.FileType.Directory)
                      for i in infos)

    def files(self, path: AnyPath) -> Iterator[tuple[str, int]]:
        """Every file under ``path``: ``(path relative to it, size in bytes)``."""
        if self._local(path):
            base = Path(path)
            for dirpath, _dirs, names in os.walk(base):
                for name in names:
                    full = Path(dirpath) / name
                    try:
                        yield str(full.relative_to(base)), full.stat().st_size
                    except OSError:
                        continue
            return
        import pyarrow.fs

        try:
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(str(path), recursive=True,
                                                                  allow_not_found=True))
        except (FileNotFoundError, OSError):
            return
        base = PurePosixPath(path)
        for info in infos:
            if info.type == pyarrow.fs.FileType.File:
                yield str(PurePosixPath(info.path).relative_to(base)), int(info.size or 0)

    def size(self, path: AnyPath) -> int:
        """Bytes under ``path`` as the storage holds them: local, each inode once (a hard link is
        no second copy) in allocated blocks; an object store, the sum of the objects' sizes."""
        if not self._local(path):
            return sum(size for _, size in self.files(path))
        seen: set[tuple[int, int]] = set()
        total = 0
        root = Path(path)
        if root.is_file():
            st = root.stat()
            return st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
        for dirpath, _dirnames, names in os.walk(root):
            for name in names:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key not in seen:
                    seen.add(key)
                    total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
        return total

    # --- writing -----------------------------------------------------------------------------
    def write_bytes(self, path: AnyPath, data: bytes) -> None:
        """Replace the file with ``data``, whole: a reader never sees part of it."""
        if self._local(path):
            atomic_write(Path(path), lambda f: f.write(data))
            return
        self.fs.create_dir(str(PurePosixPath(path).parent), recursive=True)
        with self.fs.open_output_stream(str(path)) as f:
            f.write(data)

    def append_line(self, path: AnyPath, line: str) -> None:
        """Add a line to a log (an object store has no append: the object is rewritten)."""
        if self._local(path):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with Path(path).open("a") as f:
                f.write(line + "\n")
            return
        self.write_bytes(path, (self.read_bytes(path) or b"") + (line + "\n").encode())

    def make_dir(self, path: AnyPath) -> None:
        if self._local(path):
            Path(path).mkdir(parents=True, exist_ok=True)
        else:
            self.fs.create_dir(str(path), recursive=True)

    def delete(self, path: AnyPath) -> None:
        """Remove a file or a folder with everything in it (nothing when it is not there)."""
        if self._local(path):
            p = Path(path)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            return
        import pyarrow.fs

        info = self._info(path)
        if info is None:
            return
        if info.type == pyarrow.fs.FileType.Directory:
            self.fs.delete_dir(str(path))
        else:
            self.fs.delete_file(str(path))

    def upload(self, local_dir: Path, dest: AnyPath,
               skip: Optional[dict[Path, tuple[int, int]]] = None) -> int:
        """Copy every file under the local folder ``local_dir`` to ``dest`` (nothing is deleted
        there: a resumed trial adds its own event files beside the earlier ones). With ``skip``
        (a dict this method keeps up to date), a file whose modification time and size are
        those of its last upload is not sent again. Returns the files copied. A no-op when both
        are the same local folder."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            return 0
        if self._local(dest) and Path(dest).resolve() == local_dir.resolve():
            return 0
        copied = 0
        for dirpath, _dirs, names in os.walk(local_dir):
            for name in sorted(names):
                src = Path(dirpath) / name
                if name.startswith(".") and name.endswith(".tmp"):
                    continue                  # an atomic write in progress
                try:
                    st = src.stat()
                    stamp = (st.st_mtime_ns, st.st_size)
                    if skip is not None and skip.get(src) == stamp:
                        continue
                    data = src.read_bytes()
                except OSError:               # removed while we walked (a temp file)
                    continue
                self.write_bytes(dest.joinpath(*src.relative_to(local_dir).parts), data)
                if skip is not None:
                    skip[src] = stamp
                copied += 1
        return copied

    def download(self, src: AnyPath, local_dir: Path) -> int:
        """Copy every file under ``src`` into the local folder ``local_dir``; returns how many."""
        copied = 0
        for rel, _size in list(self.files(src)):
            data = self.read_bytes(src.joinpath(*PurePosixPath(rel).parts))
            if data is None:
                continue
            target = Path(local_dir).joinpath(*PurePosixPath(rel).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            copied += 1
        return copied

    # --- internals ---------------------------------------------------------------------------
    def _info(self, path: AnyPath):
        import pyarrow.fs

        info = self.fs.get_file_info(str(path))
        return None if info.type == pyarrow.fs.FileType.NotFound else info
