"""Files the plugin writes itself (the Processing algorithms' outputs, the review dock's
corrections): written beside the destination under a hidden name and renamed into place
at the end, so that a cancel, a failure or a kill leaves the file that was there; what a
killed run left is undone by the next run to the same file (:func:`remove_stale`).

Hidden names are ``.<name>.<pid>-<hex>.sarflood-tmp...``, the backend's own pattern
(``backend.raster_io.temporary_path``, whose other kinds, ``kept`` and ``new``, mark its
outputs while it renames them): the process id tells whose they are.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
from contextlib import contextmanager, suppress
from pathlib import Path

# and what GDAL or a driver added after it (``extra``: .aux.xml, -journal, ...)
HIDDEN_NAME = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]+\.sarflood-(?P<kind>tmp|kept|new)(?P<extra>.*)$")
_SQLITE_FILES = ("-journal", "-wal", "-shm")   # a GeoPackage's, while it is open or was killed
# a shapefile's files that may not be written again: stale ones would describe the old file
_SHAPEFILE_EXTRAS = (".qix", ".sbn", ".sbx", ".cpg", ".prj", ".qpj")


def file_state(path: str | Path | None) -> tuple[int, int] | None:
    """A file as far as a change to it shows: (modification time, size); None if it is
    gone (or there is no path)."""
    try:
        stat = os.stat(path)
        return stat.st_mtime_ns, stat.st_size
    except (OSError, TypeError):
        return None


def hidden_path(path: str, suffix: str = "") -> str:
    """A hidden name beside ``path`` for what this process writes in its place."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.sarflood-tmp{suffix}")


def is_plain_file(destination: str) -> bool:
    """Whether a vector destination is a file path, not a data source URI
    (``memory:``, ``ogr:dbname=...``, ``postgres:...``) or a layer of a file."""
    if not destination or "|" in destination:
        return False
    scheme = re.match(r"^([A-Za-z][\w+.-]*):", destination)
    return scheme is None or len(scheme.group(1)) == 1   # C: is a Windows drive


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # EPERM: another user's process
        return True
    return True


def remove_stale(path: str) -> list[str]:
    """Undo what runs killed while writing ``path`` left beside it (their process is gone):
    hidden files and folders are removed, and where one was killed while renaming its
    outputs into place, the file it replaced (``kept``) is put back, and an output it added
    (marked ``new``) removed, as the plugin does for its own killed child
    (``BackendProcess._remove_leftovers``). What was done, in words.

    Not on Windows, where os.kill(pid, 0) would end the process. A process of the same
    number on another machine writing to a shared folder is not told apart."""
    if os.name == "nt":
        return []
    folder, name = os.path.split(os.path.abspath(path))
    done = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = HIDDEN_NAME.match(entry.name)
        if match is None or match["name"] != name or _alive(int(match["pid"])):
            continue
        try:
            done += undo_leftover(entry.path, path, match)
        except OSError:
            continue
    return done


def undo_leftover(leftover: str, output: str, match: re.Match) -> list[str]:
    """Undo one hidden file (``match``: its :data:`HIDDEN_NAME`) that a killed run left
    beside ``output``: a ``kept`` is put back, a ``new``'s output removed with it, anything
    else removed; what was done. Raises OSError."""
    if match["kind"] == "kept" and not match["extra"]:
        os.replace(leftover, output)
        return [f"put back {output}, which an interrupted run had replaced"]
    done = []
    if match["kind"] == "new" and not match["extra"] and os.path.exists(output):
        os.unlink(output)
        done.append(f"removed {output}, written by an interrupted run")
    if os.path.isdir(leftover) and not os.path.islink(leftover):
        shutil.rmtree(leftover)
    else:
        os.unlink(leftover)
    return done + [f"removed {leftover}, left by an interrupted run"]


@contextmanager
def written_beside(destination: str):
    """Yields the path to write ``destination`` to instead: the same file name in a hidden
    folder beside it (so a GeoPackage's layer keeps its name). When the block ends without
    an error, the files written there are renamed into place; otherwise removed. A file
    already at ``destination`` stays whole until then."""
    folder, name = os.path.split(os.path.abspath(destination))
    hidden = hidden_path(destination)
    os.mkdir(hidden)
    try:
        yield os.path.join(hidden, name)
        _move_into_place(hidden, folder, name)
    finally:
        shutil.rmtree(hidden, ignore_errors=True)


def _move_into_place(hidden: str, folder: str, name: str) -> None:
    target = os.path.join(folder, name)
    # SQLite would apply a killed run's journal of the old file to the new one
    for suffix in _SQLITE_FILES:
        Path(target + suffix).unlink(missing_ok=True)
    written = sorted(os.listdir(hidden), key=lambda n: n == name)   # the main file last
    if name.lower().endswith(".shp"):
        stem = name[:-4]
        for extra in _SHAPEFILE_EXTRAS:
            if stem + extra not in written:
                Path(folder, stem + extra).unlink(missing_ok=True)
    for file in written:
        os.replace(os.path.join(hidden, file), os.path.join(folder, file))


def set_aside(path: str) -> str:
    """Before a run writes ``path``: a copy of the file there under a hidden ``kept`` name
    (:data:`HIDDEN_NAME`), or a hidden ``new`` marker where there is none, for
    :func:`remove_stale` to put the file back, or remove the new one, after a kill; its
    path. Raises OSError."""
    hidden = hidden_path(path)   # .<name>.<pid>-<hex>.sarflood-tmp
    try:
        if not os.path.exists(path):
            marker = hidden.removesuffix("tmp") + "new"
            open(marker, "x").close()
            return marker
        shutil.copyfile(path, hidden)   # whole or not at all under the kept name
        kept = hidden.removesuffix("tmp") + "kept"
        os.replace(hidden, kept)
        return kept
    finally:
        Path(hidden).unlink(missing_ok=True)


def settle(path: str, aside: str, ok: bool) -> None:
    """The run that wrote ``path`` ended: what :func:`set_aside` kept at ``aside`` is
    dropped after a success, and put back after a failure (or, where there was none and
    ``aside`` is its marker, the file written is removed). What cannot be done now is left
    for :func:`recover_aside` in the next run to the same output."""
    with suppress(OSError):
        if ok:
            os.remove(aside)
        else:
            undo_leftover(aside, path, HIDDEN_NAME.match(os.path.basename(aside)))


def recover_aside(sidecar: str, mask: str) -> list[str]:
    """Before a run writes ``mask`` and ``sidecar`` again: what runs killed meanwhile set
    aside of ``sidecar`` (:func:`set_aside`) is put back, or dropped where their backend had
    already replaced the mask (:func:`_drop_superseded`). What was done, in words."""
    return _drop_superseded(sidecar, mask) + remove_stale(sidecar)


def _drop_superseded(sidecar: str, mask: str) -> list[str]:
    """What runs killed after their backend had replaced ``mask`` set aside beside
    ``sidecar``: the mask, newer than the polygons there, was burnt from them, so the
    earlier polygons (or the mark that there were none) are removed rather than put back
    by :func:`remove_stale`. What was done, in words."""
    if os.name == "nt":   # as remove_stale: os.kill(pid, 0) would end the process there
        return []
    written, polygons = file_state(mask), file_state(sidecar)
    if written is None or polygons is None or written[0] <= polygons[0]:
        return []
    folder, name = os.path.split(os.path.abspath(sidecar))
    done = []
    for entry in os.scandir(folder):
        match = HIDDEN_NAME.match(entry.name)
        if (match and match["name"] == name and match["kind"] in ("kept", "new")
                and not match["extra"] and not _alive(int(match["pid"]))):
            os.unlink(entry.path)
            done.append(f"removed {entry.path}, left by an interrupted run that had written {mask}")
    return done
