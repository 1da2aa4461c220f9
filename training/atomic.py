"""Atomic file writes: write to a hidden temporary file beside the target, then rename.

A reader never sees a half-written file, and a failed or interrupted write leaves
the target as it was and no temporary file behind. A killed process (SIGKILL) cannot
remove its temporary file: :func:`remove_stale` lets the next writer of the target do it.
"""
from __future__ import annotations

import glob
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix, because some writers (matplotlib,
    the ONNX exporter) choose the format from it. The name has a random part, and the
    file is made here only where nothing has that name: in a folder others can write to,
    a link planted under a name the writer would use made it overwrite the link's target.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))   # the umask applies
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale(path: Path) -> None:
    """Remove the temporary files of ``path`` left by processes no longer running on this
    machine; the process id in their names (:func:`atomic_path`) keeps a live writer's."""
    path = Path(path)
    head, tail = f".{path.stem}.", f".tmp{path.suffix}"
    for tmp in path.parent.glob(f"{glob.escape(head)}*{glob.escape(tail)}"):
        # the random part is missing from the names of earlier versions, left in run folders
        own = re.fullmatch(r"(\d+)(-[0-9a-f]{8})?", tmp.name[len(head):-len(tail)])
        if own and not _running(int(own[1])):
            tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


class WriteError(OSError):
    """A file could not be written (a full disk, a quota): one line naming it."""


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; a write that fails is a :class:`WriteError`
    naming the file, which is left as it was."""
    remove_stale(path)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise WriteError(f"{path}: cannot be written ({exc.strerror or exc}); the file there "
                         f"before, if any, is kept") from None


def refused_output(path: Path, overwrite: bool) -> str | None:
    """Why a command must not write its output ``path``, checked before its work: a
    place it cannot write (which --overwrite does not fix), or a file there already
    without ``overwrite``."""
    problem = unwritable(path)
    if problem is None and Path(path).exists() and not overwrite:
        problem = f"{path}: exists; pass --overwrite to replace it"
    return problem


def unwritable(path: Path, folder: bool = False) -> str | None:
    """Why ``path`` (a file, or with ``folder`` a run folder) cannot be written, else None:
    checked before the work that would end in writing it."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        return f"{path}: is a {'file, not a folder' if folder else 'folder, not a file'}"
    where = path if folder and path.is_dir() else path.parent
    if folder:  # a run folder is made with its parents: the nearest existing one must take it
        while not where.exists() and where != where.parent:
            where = where.parent
    if not where.is_dir():
        return f"{path}: the folder {where} does not exist" if not where.exists() else \
            f"{path}: {where} is a file, not a folder"
    from backend.raster_io import write_refused   # rasterio: loaded when a command checks
    refused = write_refused(str(where))
    return f"{path}: cannot write in {where} ({refused})" if refused else None

