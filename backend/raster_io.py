"""Raster reading and writing: windows of the inputs on a processing grid, and GeoTIFFs
written atomically.

Outputs are written to a hidden temporary file in the destination folder and
renamed into place when complete, so a reader never sees a partial file and a
failed or cancelled run leaves nothing behind. Every problem is an
:class:`InputError` or :class:`OutputError` whose one-line message names the file.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import shutil
import tempfile

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio._err import CPLE_BaseError   # GDAL's errors (rasterio.errors has no name for them)
from rasterio.errors import RasterioError
from rasterio.windows import Window

from .errors import InputError, OutputError, first_line
from .grid import Grid

GDAL_CACHE_MB = 64   # GDAL's block cache, bounded: memory must not grow with the raster


def gdal_env() -> rasterio.Env:
    """GDAL settings for a run: a bounded block cache, and uncompressed GeoTIFFs read
    straight into our buffers (GTIFF_DIRECT_IO; about 2x faster, no cache copies)."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GTIFF_DIRECT_IO="YES")


def gdal_masked(ds, index: int) -> bool:
    """A GDAL mask (an internal mask, or an alpha band) marks the band's no data, rather
    than (or besides) a nodata value."""
    return bool({MaskFlags.per_dataset, MaskFlags.alpha} & set(ds.mask_flag_enums[index - 1]))


def band_scaling(ds, index: int) -> tuple[float, float]:
    """(scale, offset) of a band: value = stored x scale + offset (GDAL's convention,
    which QGIS follows when it shows the band); (1, 0) where the file sets none."""
    scale, offset = ds.scales[index - 1], ds.offsets[index - 1]
    return (1.0 if scale is None or scale == 0 else float(scale),
            0.0 if offset is None else float(offset))


# --------------------------------------------------------------------------- reading

def band_type(ds, index: int) -> str:
    """A band's data type; a resampled view (no ``dtypes``) gives float32."""
    dtypes = getattr(ds, "dtypes", None)
    return dtypes[index - 1] if dtypes else "float32"


def unreadable_rows(name: str, r0: int, r1: int, exc: BaseException) -> InputError:
    """The error for rows [r0, r1) that a truncated or corrupt file, which opened, fails
    to give. A resampled view (``WarpedVRT(path)``) is named by its file, and its rows,
    which are the model grid's, are not given."""
    why = first_line(exc, "read error")
    if name.startswith("WarpedVRT(") and name.endswith(")"):
        return InputError(f"{name[10:-1]}: cannot read part of the file, resampled to the "
                          f"model's pixels ({why})")
    return InputError(f"{name}: cannot read rows {r0}-{r1} ({why})")


def mirror_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map indices outside [0, n) into it by mirror reflection (edge pixel repeated).

    Period 2n, so any index maps, even far outside a tiny raster.
    """
    m = np.mod(idx, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


class WindowReader:
    """Reads float32 windows of a processing grid from band sources, NaN for no data.

    Values equal to a band's nodata value become NaN; infinities are left as they
    are, and every consumer treats non-finite values as no data. A band stored with a
    scale and offset (:func:`band_scaling`) is read in its values, not as stored.

    ``sources`` are (dataset, band index, nodata) in model band order; the processing
    grid is the window (row_off, col_off, height, width) of those datasets. Windows
    may reach outside the processing grid: real pixels are read where the dataset
    has them, and mirror padding is used beyond the dataset's edges. The value at a
    grid position therefore never depends on how the grid is cut into windows.
    """

    def __init__(self, sources: list[tuple[object, int, float | None]], row_off: int,
                 col_off: int):
        self.sources = sources
        self.row_off, self.col_off = row_off, col_off
        ds0 = sources[0][0]
        self.src_height, self.src_width = ds0.height, ds0.width
        self._scaling = [band_scaling(ds, index) for ds, index, _ in sources]
        self._masked = [gdal_masked(ds, index) for ds, index, _ in sources]
        # bands of one dataset are read in one call, but for bands of another type (a VRT
        # stacking a Float32 and an Int16 file), which rasterio reads in one call only apart
        self._groups: list[tuple[object, list[int], list[int]]] = []
        for pos, (ds, index, _) in enumerate(sources):
            for g in self._groups:
                if g[0] is ds and band_type(ds, g[1][0]) == band_type(ds, index):
                    g[1].append(index)
                    g[2].append(pos)
                    break
            else:
                self._groups.append((ds, [index], [pos]))

    def _read_box(self, out: np.ndarray, r0: int, c0: int) -> None:
        h, w = out.shape[1:]
        win = Window(c0, r0, w, h)
        for ds, indexes, positions in self._groups:
            try:
                if positions == list(range(len(self.sources))):
                    ds.read(indexes, window=win, out=out, out_dtype=np.float32)
                else:
                    out[positions] = ds.read(indexes, window=win, out_dtype=np.float32)
                for index, p in zip(indexes, positions):
                    if self._masked[p]:
                        out[p][ds.read_masks(index, window=win) == 0] = np.nan
            except RasterioError as exc:  # a truncated or corrupt file fails only here
                raise unreadable_rows(ds.name, r0, r0 + h, exc) from None

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Grid rows [r0, r1) and columns [c0, c1) as (bands, rows, cols) float32."""
        h, w = r1 - r0, c1 - c0
        sr0, sc0 = r0 + self.row_off, c0 + self.col_off
        out = np.empty((len(self.sources), h, w), np.float32)
        # the part inside the dataset is read in place; the rest mirrors it
        ir0, ir1 = max(sr0, 0), min(sr0 + h, self.src_height)
        ic0, ic1 = max(sc0, 0), min(sc0 + w, self.src_width)
        rows = mirror_index(np.arange(sr0, sr0 + h), self.src_height)
        cols = mirror_index(np.arange(sc0, sc0 + w), self.src_width)
        if (ir0 < ir1 and ic0 < ic1 and rows.min() >= ir0 and rows.max() < ir1
                and cols.min() >= ic0 and cols.max() < ic1):
            self._read_box(out[:, ir0 - sr0:ir1 - sr0, ic0 - sc0:ic1 - sc0], ir0, ic0)
            r_out = np.flatnonzero(np.arange(sr0, sr0 + h) != rows)
            c_out = np.flatnonzero(np.arange(sc0, sc0 + w) != cols)
            if r_out.size:
                out[:, r_out] = out[:, rows[r_out] - sr0]
            if c_out.size:
                out[:, :, c_out] = out[:, :, cols[c_out] - sc0]
        else:  # a raster smaller than the padding: gather from a box around it
            rlo, clo = int(rows.min()), int(cols.min())
            box = np.empty((len(self.sources), int(rows.max()) + 1 - rlo,
                            int(cols.max()) + 1 - clo), np.float32)
            self._read_box(box, rlo, clo)
            out[:] = box[:, (rows - rlo)[:, None], (cols - clo)[None, :]]
        for k, (_, _, nodata) in enumerate(self.sources):
            band = out[k]
            if nodata is not None and not math.isnan(nodata):  # the stored value
                band[band == np.float32(nodata)] = np.nan
            scale, offset = self._scaling[k]
            if scale != 1.0:
                band *= np.float32(scale)
            if offset != 0.0:
                band += np.float32(offset)
        return out


class ShrunkView:
    """A float dataset seen on a coarser grid that only scales it (same CRS and corner,
    no flip), each view pixel the overlap-weighted average of the pixels under it: what
    a :class:`WindowReader` reads in place of ``warped``, GDAL's warped view of it.

    The part of a window whose pixels lie inside the dataset is averaged by GDAL as it
    reads a fractional window, about 3x cheaper than its warper (measured 0.5 against
    1.4 CPU s on a 4096 px scene at 7.07 -> 10 m) and equal to it within 1e-5. The rest
    comes from ``warped``: the last column and row, whose pixels reach past the dataset
    (GDAL would shift a window's samples), and a window one column wide, which GDAL's
    read-time average gets wrong (up to 1.5 dB off in 38 of 400 random windows, every
    one of them one column wide; GDAL 3.10). The dataset's nodata value marks no data.
    """

    def __init__(self, ds, warped, sx: float, sy: float):
        self.ds, self.warped, self.sx, self.sy = ds, warped, sx, sy
        self.width, self.height, self.name = warped.width, warped.height, ds.name
        self.scales, self.offsets = ds.scales, ds.offsets   # applied by the reader
        self.mask_flag_enums = [[MaskFlags.all_valid]] * ds.count
        # view pixels wholly inside the dataset
        self.inside = (min(self.height, math.floor(ds.height / sy + 1e-9)),
                       min(self.width, math.floor(ds.width / sx + 1e-9)))

    def read(self, indexes: list[int], window: Window, out: np.ndarray | None = None,
             out_dtype=np.float32) -> np.ndarray:
        c0, r0, w, h = (int(v) for v in (window.col_off, window.row_off, window.width,
                                          window.height))
        if out is None:
            out = np.empty((len(indexes), h, w), np.float32)
        r1, c1 = min(r0 + h, self.inside[0]), min(c0 + w, self.inside[1])
        if r1 <= r0 or c1 - c0 < 2:
            r1, c1 = r0, c0                         # all of it from the warped view
        else:
            src = Window(c0 * self.sx, r0 * self.sy, (c1 - c0) * self.sx, (r1 - r0) * self.sy)
            # one call for bands of one type; bands of other types each apart
            together = len({band_type(self.ds, i) for i in indexes}) == 1
            first = 0
            for group in [indexes] if together else [[i] for i in indexes]:
                out[first:first + len(group), :r1 - r0, :c1 - c0] = self.ds.read(
                    group, window=src, out_shape=(len(group), r1 - r0, c1 - c0),
                    resampling=Resampling.average, out_dtype=np.float32)
                first += len(group)
        if c1 < c0 + w:
            out[:, :, c1 - c0:] = self.warped.read(indexes, window=Window(c1, r0, c0 + w - c1, h))
        if r1 < r0 + h and c1 > c0:
            out[:, r1 - r0:, :c1 - c0] = self.warped.read(
                indexes, window=Window(c0, r1, c1 - c0, r0 + h - r1))
        return out

    def close(self) -> None:
        self.warped.close()


class GapFilledView:
    """A bilinear warped view whose pixels left without data take the overlap-weighted
    average of the input pixels under them (``average``: a warped view on the same grid),
    where any have data; what a :class:`WindowReader` reads in place of ``bilinear``.

    GDAL's bilinear warper leaves a pixel no data when too little of its kernel has data,
    though input pixels with data lie under it: on a 5 x 20 m grid seen at 10 m it dropped
    every other isolated valid column, and a pixel that reaches past the input's edge it
    leaves without data too. The input pixels under them then had no model pixel with data
    to take a probability from.
    """

    def __init__(self, bilinear, average):
        self.bilinear, self.average = bilinear, average
        self.width, self.height, self.name = bilinear.width, bilinear.height, bilinear.name
        self.scales, self.offsets = bilinear.scales, bilinear.offsets
        self.mask_flag_enums = bilinear.mask_flag_enums

    def read(self, indexes: list[int], window: Window, out: np.ndarray | None = None,
             out_dtype=np.float32) -> np.ndarray:
        out = self.bilinear.read(indexes, window=window, out=out, out_dtype=out_dtype)
        gaps = np.isnan(out)
        if gaps.any():
            np.copyto(out, self.average.read(indexes, window=window, out_dtype=out_dtype),
                      where=gaps)
        return out

    def close(self) -> None:
        self.bilinear.close()
        self.average.close()


STRIP_SAMPLE_BYTES = 64 << 20   # whole-row reads for the sample up to this size
SPARSE_SAMPLE = 1000            # fewer valid pixels than this in the sample: look closer


def sample_grid(reader: WindowReader, grid_h: int, grid_w: int, n: int = 5,
                size: int = 128) -> np.ndarray:
    """Up to n x n windows of size x size spread over the grid: (bands, pixels).

    The default, 25 windows of 128 x 128 (409,600 pixels per band), is read and
    judged in about 20 ms on a tiled scene; 256 x 256 windows took about 55 ms,
    5% of a 4096 x 4096 run with the bundled model (2 cores).

    In a file stored in strips (blocks of whole rows, common for compressed
    GeoTIFFs) GDAL decodes the whole rows for each window, so each row of windows
    is read once, full width, and cut up: the same pixels, several times faster.

    Where data covers a small part of the grid (a scene clipped to an area of interest
    inside a wide no-data border) the windows can miss it: with under ``SPARSE_SAMPLE``
    valid pixels, 32 x 32 windows of 16 x 16 are added, spread the same way; with none
    at all, the valid pixels of strips read from the top until some are found.
    """
    sample = _windows(reader, grid_h, grid_w, n, size)
    if n < 32 and np.isfinite(sample).all(axis=0).sum() < SPARSE_SAMPLE:
        sample = np.concatenate([sample, _windows(reader, grid_h, grid_w, 32, 16)], axis=1)
    if not np.isfinite(sample).all(axis=0).any():
        # still nothing: a patch smaller than the lattice's gaps, or no data at all; the
        # run reads every pixel anyway, so reading strips until some data shows is cheap
        found = _strips_with_data(reader, grid_h, grid_w, size)
        sample = np.concatenate([sample, found], axis=1) if found.size else sample
    return sample


def _strips_with_data(reader: WindowReader, grid_h: int, grid_w: int, rows: int) -> np.ndarray:
    """The valid pixels of the grid's strips of ``rows`` rows, from the top, until
    ``SPARSE_SAMPLE`` are found: (bands, pixels), possibly empty.

    A strip over ``STRIP_SAMPLE_BYTES`` is read in parts of as many columns as fit: a
    sparse GeoTIFF of a few KB can declare millions of columns of no data, and its whole
    strips took gigabytes (2.2 GB at 1,000,000 columns)."""
    k = len(reader.sources)
    cols = max(1, STRIP_SAMPLE_BYTES // (k * rows * 4))
    parts = ((r, min(r + rows, grid_h), c, min(c + cols, grid_w))
             for r in range(0, grid_h, rows) for c in range(0, grid_w, cols))
    found, count = [], 0
    for part in parts:
        values = reader.read(*part).reshape(k, -1)
        valid = np.isfinite(values).all(axis=0)
        if valid.any():
            found.append(values[:, valid])
            count += int(valid.sum())
            if count >= SPARSE_SAMPLE:
                break
    return np.concatenate(found, axis=1) if found else np.empty((k, 0), np.float32)


def _windows(reader: WindowReader, grid_h: int, grid_w: int, n: int, size: int
             ) -> np.ndarray:
    parts = []
    k = len(reader.sources)
    hs, ws = min(size, grid_h), min(size, grid_w)
    strips = (all(ds.block_shapes[i - 1][1] >= ds.width for ds, i, _ in reader.sources)
              and k * hs * grid_w * 4 <= STRIP_SAMPLE_BYTES)
    cols = np.unique(np.linspace(0, grid_w - ws, n).astype(int))
    for r in np.unique(np.linspace(0, grid_h - hs, n).astype(int)):
        row = reader.read(int(r), int(r) + hs, 0, grid_w) if strips else None
        for c in cols:
            window = (row[:, :, c:c + ws] if strips
                      else reader.read(int(r), int(r) + hs, int(c), int(c) + ws))
            parts.append(window.reshape(k, -1))
    return np.concatenate(parts, axis=1)


# --------------------------------------------------------------------------- outputs

def file_identity(path: str) -> object:
    """What tells two paths of one file apart from two files: the device and inode of
    a file that exists (the same file through a bind mount, another letter case on a
    case-insensitive disk, a UNC path and a mapped drive), else the resolved path."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino)


def check_outputs(outputs: dict[str, str | None], inputs: list[str], overwrite: bool,
                  sources: list[str] = ()) -> None:
    """Refuse outputs that would clash or fail, before any work is done. Raises OutputError.

    ``sources``: files the inputs read besides themselves (a VRT's).
    """
    seen: dict[object, str] = {}
    in_real = {file_identity(p) for p in inputs}
    read = {file_identity(p) for p in sources}
    for kind, path in outputs.items():
        if not path:
            continue
        real = file_identity(path)
        if real in in_real:
            raise OutputError(f"{path}: the {kind} output is also an input; choose another path")
        if real in read:
            raise OutputError(f"{path}: the {kind} output is a file an input reads (a VRT's "
                              f"source); choose another path")
        if real in seen:
            raise OutputError(f"{path}: given as both the {seen[real]} and the {kind} output")
        seen[real] = kind
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise OutputError(f"{path}: is a folder; give a file name for the {kind} output")
        if not path.lower().endswith((".tif", ".tiff")):
            raise OutputError(f"{path}: the {kind} output is a GeoTIFF; give it a .tif name")
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise OutputError(f"{path}: {folder} is a file, not a folder")
        if not os.path.isdir(folder):
            raise OutputError(f"{path}: the folder {folder} does not exist")
        if os.path.exists(path) and not overwrite:
            raise OutputError(f"{path}: exists; use --overwrite to replace it")
        refused = write_refused(folder)
        if refused:
            raise OutputError(f"{path}: cannot write in the folder {folder} ({refused})")
        _check_name_length(path, folder, kind)


_NAME_MAX = 255   # characters of a name on NTFS, where os.pathconf does not exist
# what temporary_path adds to an output's name: ".", ".<pid>-<8 hex>.sarflood-kept", ".aux.xml"
_HIDDEN_EXTRA = 1 + len(".4194304-00000000.sarflood-kept") + len(".aux.xml")


def _check_name_length(path: str, folder: str, kind: str) -> None:
    """The hidden files written beside an output carry its whole name (the plugin puts a
    killed run's outputs back by it): a name within the folder's limit but not with them
    failed mid-run as an internal error."""
    pathconf = getattr(os, "pathconf", None)   # Unix only: Windows runs died on its absence
    try:
        limit = pathconf(folder, "PC_NAME_MAX") if pathconf else _NAME_MAX
    except (OSError, ValueError):
        return
    longest = limit - _HIDDEN_EXTRA
    if len(os.fsencode(os.path.basename(path))) > longest:
        raise OutputError(f"{path}: the {kind} output's name is too long: at most {longest} "
                          f"bytes here, as the run writes hidden files named after it beside it")


def write_refused(folder: str) -> str | None:
    """Why no file can be made in ``folder`` (the system's reason), else None. os.access
    is no proof (root, read-only mounts): a hidden file is made and removed."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".sarflood-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def temporary_path(folder: str, name: str, kind: str = "tmp") -> str:
    """A hidden file in ``folder`` beside ``name``: ``.<name>.<pid>-<hex>.sarflood-<kind>``.

    ``tmp``: the file being written. While the outputs are renamed into place (a moment),
    ``kept``: the file an output replaces, hard-linked; ``new``: an empty marker, for an
    output that replaces none. A run removes its own on every error and on cancel; the
    process id lets whoever started a run that was killed (the plugin) find what it left,
    and nothing of another run writing into the same folder: it removes a ``tmp``, puts a
    ``kept`` back, and removes a ``new``'s output, so that a run killed between two renames
    leaves the outputs as they were.
    """
    return os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.sarflood-{kind}")


def temporary_beside(path: str, kind: str = "tmp") -> str:
    """:func:`temporary_path` for the file at ``path``, in its folder."""
    folder, name = os.path.split(os.path.abspath(path))
    return temporary_path(folder, name, kind)


# what a failed write raises: rasterio's errors, GDAL's own where rasterio passes them on
# unwrapped (building overviews on a full disk), and the system's
WRITE_ERRORS = (RasterioError, CPLE_BaseError, OSError)

# files GDAL attaches to X.tif as X.tif<suffix>
REPLACED_SIDECARS = (".aux.xml", ".ovr", ".OVR", ".ovr.aux.xml", ".aux", ".AUX", ".msk", ".MSK")


def _replace_failure(exc: OSError) -> str:
    """Why a file could not be renamed over the one there. Windows refuses to replace a file
    that a program holds open, QGIS with a layer of it among them (Linux and macOS allow it)."""
    if getattr(exc, "winerror", None) in (5, 32):   # access denied, sharing violation
        return (f"{exc.strerror}: it is read-only, or open in another program: in QGIS, "
                "remove its layer from the project; or choose another file")
    return exc.strerror or str(exc)


class GeoTiffOut:
    """One single-band output GeoTIFF: tiled, compressed (``options``), internal overviews.

    It is written to a hidden temporary file beside ``path``; :meth:`finish` builds
    the overviews, :meth:`publish` renames it into place, :meth:`abort` deletes it.
    """

    def __init__(self, path: str, grid: Grid, dtype: str, nodata: float | None, block: int,
                 tags: dict[str, str], description: str, overview_resampling: Resampling,
                 overwrite: bool, options: dict[str, object], scale: float | None = None):
        self.path = path
        self.overwrite = overwrite
        self.overview_resampling = overview_resampling
        self.tmp = temporary_beside(path)
        # the folder itself, not its name: what a failed run leaves is removed from it even
        # if the analyst renamed it meanwhile (POSIX; elsewhere by name only)
        self._folder = _open_folder(os.path.dirname(self.tmp))
        profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1,
                       dtype=dtype, crs=grid.crs, transform=grid.transform, nodata=nodata,
                       tiled=True, blockxsize=block, blockysize=block, bigtiff="IF_SAFER",
                       **options)
        try:
            self.ds = rasterio.open(self.tmp, "w", **profile)
            self.ds.update_tags(**tags)
            self.ds.set_band_description(1, description)
            if scale is not None:
                self.ds.scales = (scale,)
        except BaseException as exc:   # a second Ctrl-C too: OutputSink does not hold it yet
            if hasattr(self, "ds"):
                self.abort()
            else:
                self._remove()
            if isinstance(exc, WRITE_ERRORS):
                raise OutputError(f"{path}: cannot be written ({exc})") from None
            raise

    def write(self, data: np.ndarray, row: int, col: int) -> None:
        try:
            self.ds.write(data, 1, window=Window(col, row, data.shape[1], data.shape[0]))
        except WRITE_ERRORS as exc:   # a full disk fails here
            raise OutputError(f"{self.path}: cannot be written "
                              f"({why_write_failed(exc, self.tmp)})") from None

    def finish(self) -> None:
        """Build the overviews, close the temporary file and check that it is whole."""
        try:
            factors = overview_factors(self.ds.width, self.ds.height)
            if factors:
                self.ds.build_overviews(factors, self.overview_resampling)
                self.ds.update_tags(ns="rio_overview", resampling=self.overview_resampling.name)
            self.ds.close()
        except WRITE_ERRORS as exc:
            # the free space is measured before the file is removed: after, it was the
            # space the file had filled
            why = self._folder_gone() or why_write_failed(exc, self.tmp)
            self.abort()
            raise OutputError(f"{self.path}: cannot be written ({why})") from None
        problem = not_whole(self.tmp, factors)
        if problem:
            why = (self._folder_gone() or problem) + disk_full_note(self.tmp)
            self.abort()
            raise OutputError(f"{self.path}: cannot be written ({why})")

    def _folder_gone(self) -> str | None:
        """Said instead of GDAL's 'No such file or directory' on the file it was writing."""
        folder = os.path.dirname(self.tmp)
        if os.path.isdir(folder):
            return None
        return f"its folder {folder} was removed or renamed during the run"

    def publish(self) -> None:
        """Rename the finished temporary file into place."""
        try:
            if os.path.exists(self.path) and not self.overwrite:
                raise OutputError(f"{self.path}: appeared while running; use --overwrite to "
                                  "replace it")
            # what GDAL (QGIS) kept beside the file replaced describes it, not the new one,
            # and GDAL would read it for the new one: statistics and histograms, external
            # overviews (a small output has no internal ones) and an external mask. Removed
            # first: where one cannot be (open elsewhere, on Windows) nothing is replaced yet
            for sidecar in REPLACED_SIDECARS:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + sidecar)
            os.replace(self.tmp, self.path)
            self._close_folder()
        except OSError as exc:
            self.abort()
            raise OutputError(f"{self.path}: cannot be written "
                              f"({self._folder_gone() or _replace_failure(exc)})") from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        try:
            if not self.ds.closed:
                self.ds.close()
        except Exception:  # closing a half-written file may fail; it is deleted next
            pass
        self._remove()

    def _remove(self) -> None:
        for p in (self.tmp, self.tmp + ".aux.xml"):
            # a cleanup that fails must not hide the error that called it
            with contextlib.suppress(OSError):
                if self._folder is None:
                    os.unlink(p)
                else:
                    os.unlink(os.path.basename(p), dir_fd=self._folder)
        self._close_folder()

    def _close_folder(self) -> None:
        if self._folder is not None:
            os.close(self._folder)
            self._folder = None


def _open_folder(folder: str) -> int | None:
    """A descriptor of ``folder`` to remove files from by name within it, or None where
    the system cannot (no ``dir_fd``) or the folder cannot be read (write-only)."""
    if os.unlink not in os.supports_dir_fd:
        return None
    try:
        return os.open(folder, os.O_RDONLY)
    except OSError:
        return None


def not_whole(path: str, factors: list[int]) -> str | None:
    """Why a closed GeoTIFF is not whole, or None.

    libtiff reports some failed writes (a disk that fills while the overviews or the
    directory are written) only on stderr, and closing returns as if all went well: the
    file was published cut short, unreadable, or with blocks never written (read back as
    zeros). So every block of every level must have bytes, and the last one must read.
    """
    try:
        with rasterio.open(path) as ds:
            width, height, levels = ds.width, ds.height, len(ds.overviews(1))
        if levels != len(factors):
            return f"it has {levels} overview levels, not {len(factors)}"
        for level in [None, *range(len(factors))]:
            with rasterio.open(path, **({} if level is None else {"overview_level": level})) as ds:
                if level is not None:
                    # GDAL's overview of factor f is ceil(size / f) each way (rasterio's
                    # own factors, width / overview width, do not say so for a narrow one)
                    f = factors[level]
                    want = (-(-width // f), -(-height // f))
                    if (ds.width, ds.height) != want:
                        return (f"its overview {level + 1} came out {ds.width} x {ds.height} "
                                f"px, not {want[0]} x {want[1]}")
                bh, bw = ds.block_shapes[0]
                rows, cols = -(-ds.height // bh), -(-ds.width // bw)
                if not all(_written(ds, i, j) for i in range(rows) for j in range(cols)):
                    return "some of its blocks were not written"
                ds.read(1, window=Window((cols - 1) * bw, (rows - 1) * bh,
                                         ds.width - (cols - 1) * bw, ds.height - (rows - 1) * bh))
    except (RasterioError, OSError) as exc:
        # GDAL names the hidden temporary file, which is removed before the user reads this
        why = first_line(exc.__cause__ or exc)
        for name in (path, os.path.basename(path)):
            why = re.sub(re.escape(name) + r"(, band \d+)?: ", "", why)
        return f"the written file does not read back: {why}"
    return None


def _written(ds, i: int, j: int) -> bool:
    try:
        return ds.block_size(1, i, j) > 0
    except RasterioError:   # GDAL knows no bytes of it: never written
        return False


FULL_DISK_BYTES = 16 << 20   # a failed write with less free than this: the disk is full


def disk_full_note(path: str) -> str:
    """'; the disk is full (N MB free)' where it is (GDAL says so only on stderr), else ''."""
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        return ""
    return f"; the disk is full ({free / 1e6:.1f} MB free)" if free < FULL_DISK_BYTES else ""


def why_write_failed(exc: BaseException, path: str) -> str:
    """One line on a failed write: GDAL's own cause (rasterio chains it), and whether the
    disk is full."""
    return first_line(exc.__cause__ or exc) + disk_full_note(path)


def overview_factors(width: int, height: int, smallest: int = 128) -> list[int]:
    """2, 4, 8, ... until the overview's longer side is below ``smallest`` pixels."""
    factors, f = [], 2
    while max(width, height) / f >= smallest:
        factors.append(f)
        f *= 2
    return factors
