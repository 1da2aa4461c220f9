"""A generated Sentinel-1-like VV/VH scene with its true water mask, for the demo and the bench.

Not a simulation of radar physics, but a scene with the features that matter to a
water mapper: dark water (lakes and two meandering rivers) on brighter textured
land, multiplicative speckle, and a no-data edge like the border of a GRD swath.

- land: VV about -9 dB +- 3 dB of smooth texture, VH = VV - 7 dB;
- water: VV about -20 dB, VH about -27 dB (calm open water reflects away from the sensor);
- speckle: Gamma-distributed intensity with 4.4 looks (about the equivalent number
  of looks of IW GRD high resolution, per the Sentinel-1 product definition);
- no data: a strip along the left edge, slanted like a swath border.

The scene is deterministic for a seed and is written block by block in bounded
memory: smooth fields come from low-resolution random grids interpolated at each
pixel, and speckle from a random generator seeded by the seed and the block's
position (blocks are always 512 x 512).
"""
from __future__ import annotations

import math
import os
import shutil
import threading

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.transform import from_origin
from rasterio.windows import Window

from .errors import Cancelled, OutputError, UsageError
from .raster_io import check_outputs, temporary_beside, why_write_failed
from .units import convert

BLOCK = 512
LOOKS = 4.4
CRS = "EPSG:32630"        # UTM 30N, 10 m pixels: a plain projected Sentinel-1 grid
PIXEL_M = 10.0
ORIGIN = (500000.0, 4300000.0)
PIXEL_DEG = 8.983e-05      # Sen1Floods11's pixel, degrees (10 m at the equator)
GEOGRAPHIC_LON = 10.0      # west edge of the scene when tagged as a geographic grid


class _Field:
    """A smooth random field: a coarse Gaussian grid, interpolated at pixel positions
    with smoothstep weights (no kinks along the grid lines)."""

    def __init__(self, rng: np.random.Generator, size: int, scale: float):
        self.scale = scale
        n = int(math.ceil(size / scale)) + 2
        self.grid = rng.standard_normal((n, n)).astype(np.float32)

    def __call__(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        y = (rows + 0.5) / self.scale
        x = (cols + 0.5) / self.scale
        i, j = np.floor(y).astype(int), np.floor(x).astype(int)
        fy, fx = (y - i).astype(np.float32)[:, None], (x - j).astype(np.float32)[None, :]
        fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
        g = self.grid[i] * (1 - fy) + self.grid[i + 1] * fy
        return g[:, j] * (1 - fx) + g[:, j + 1] * fx


class Scene:
    """The scene's fields for one seed and size; :meth:`block` renders any window."""

    def __init__(self, height: int, width: int, seed: int = 0):
        self.height, self.width, self.seed = height, width, seed
        rng = np.random.default_rng(seed)
        size = max(height, width)
        self.lakes = [_Field(rng, size, 500.0), _Field(rng, size, 120.0)]
        self.texture = [_Field(rng, size, 300.0), _Field(rng, size, 60.0), _Field(rng, size, 12.0)]
        self.wind = _Field(rng, size, 400.0)
        self.rivers = [(rng.uniform(0.2, 0.8), rng.uniform(0, 2 * math.pi), rng.uniform(18, 40))
                       for _ in range(2)]

    def _water(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        lake = 0.8 * self.lakes[0](rows, cols) + 0.4 * self.lakes[1](rows, cols)
        water = lake > 0.75
        y, x = rows[:, None].astype(np.float32), cols[None, :].astype(np.float32)
        for k, (pos, phase, half_width) in enumerate(self.rivers):
            along, across = (y, x) if k == 0 else (x, y)
            extent = self.width if k == 0 else self.height
            centre = (pos * extent + 0.06 * extent * np.sin(2 * np.pi * along / 2900 + phase)
                      + 0.02 * extent * np.sin(2 * np.pi * along / 610 + 2 * phase))
            water |= np.abs(across - centre) < half_width
        return water

    def block(self, row: int, col: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """(bands (2, h, w) float32 in dB with NaN no data, water (h, w) bool)."""
        rows, cols = np.arange(row, row + h), np.arange(col, col + w)
        water = self._water(rows, cols)
        tex = (0.6 * self.texture[0](rows, cols) + 0.3 * self.texture[1](rows, cols)
               + 0.2 * self.texture[2](rows, cols))
        vv = np.where(water, -20.0 + 1.2 * self.wind(rows, cols), -9.0 + 3.0 * tex)
        vh = np.where(water, vv - 7.0, vv - 7.0 + 0.8 * tex)
        rng = np.random.default_rng([self.seed, row, col])
        bands = np.stack([vv, vh]).astype(np.float32)
        speckle = rng.gamma(LOOKS, 1.0 / LOOKS, size=bands.shape).astype(np.float32)
        bands += 10.0 * np.log10(speckle)
        edge = cols[None, :] < 0.03 * self.width + 0.08 * (self.height - rows[:, None])
        bands[:, edge] = np.nan
        return bands, water & ~edge


def check_latitude(latitude: float | None, height: int) -> None:
    """UsageError unless a geographic scene ``height`` rows high fits between the poles."""
    if latitude is not None and not (latitude <= 90 and latitude - height * PIXEL_DEG >= -90):
        raise UsageError(f"--latitude {latitude:g}: a scene {height} rows high would run from "
                         f"latitude {latitude:g} to {latitude - height * PIXEL_DEG:.3f}, "
                         f"beyond the poles")


def check_room(folder: str, height: int, width: int) -> None:
    """OutputError before writing when ``folder``'s disk cannot hold the scene
    (uncompressed float32 VV and VH)."""
    need = height * width * 2 * 4
    free = shutil.disk_usage(folder).free
    if need > free:
        raise OutputError(f"{folder}: a {width} x {height} scene takes {need / 1e9:.2f} GB, "
                          f"and {free / 1e9:.2f} GB are free there; give a smaller --size")


def write_scene(path: str, size: int | tuple[int, int], seed: int = 0, units: str = "dB",
                truth: str | None = None, latitude: float | None = None,
                tag: str | None = None, cancel: threading.Event | None = None) -> None:
    """Write the scene as a tiled 2-band GeoTIFF (VV, VH), block by block.

    ``truth`` also writes the true water mask (uint8: 0 dry, 1 water, 255 no data).
    ``latitude`` tags the same pixels as a geographic grid of Sen1Floods11's degree
    pixels whose top edge lies at that latitude, as an Earth Engine export is: away from
    the equator they are narrower than 10 m, so ``predict`` resamples them. ``tag`` is
    the file's SARFLOOD_SCENE tag (default: "generated, seed N"). ``cancel`` set stops
    it at the next row of blocks (:class:`Cancelled`), the files left half-written.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if min(height, width) < 1:
        raise UsageError(f"--size {size}: give at least 1 pixel")
    check_latitude(latitude, height)
    folder = os.path.dirname(os.path.abspath(path))
    check_room(folder, height, width)
    try:
        _write_blocks(path, Scene(height, width, seed), units, truth, latitude,
                      tag or f"generated, seed {seed}", cancel or threading.Event())
    except (RasterioError, OSError) as exc:   # a disk filled by something else meanwhile
        raise OutputError(f"{folder}: writing the scene failed "
                          f"({why_write_failed(exc, path)})") from None


def _write_blocks(path: str, scene: Scene, units: str, truth: str | None,
                  latitude: float | None, tag: str, cancel: threading.Event) -> None:
    height, width = scene.height, scene.width
    crs, transform = (CRS, from_origin(*ORIGIN, PIXEL_M, PIXEL_M)) if latitude is None else (
        "EPSG:4326", from_origin(GEOGRAPHIC_LON, latitude, PIXEL_DEG, PIXEL_DEG))
    profile = dict(driver="GTiff", width=width, height=height, crs=crs, transform=transform,
                   tiled=True, blockxsize=BLOCK, blockysize=BLOCK, bigtiff="IF_SAFER")
    with rasterio.open(path, "w", count=2, dtype="float32", nodata=float("nan"),
                       **profile) as dst:
        dst.descriptions = ("VV", "VH")
        dst.units = (units, units)
        dst.update_tags(SARFLOOD_SCENE=tag)
        mask = (rasterio.open(truth, "w", count=1, dtype="uint8", nodata=255, compress="deflate",
                              **profile) if truth else None)
        try:
            for row in range(0, height, BLOCK):
                if cancel.is_set():
                    raise Cancelled("cancelled")
                for col in range(0, width, BLOCK):
                    h, w = min(BLOCK, height - row), min(BLOCK, width - col)
                    bands, water = scene.block(row, col, h, w)
                    win = Window(col, row, w, h)
                    if mask is not None:
                        m = water.astype(np.uint8)
                        m[np.isnan(bands[0])] = 255
                        mask.write(m, 1, window=win)
                    for b in bands:
                        convert(b, "dB", units)
                    dst.write(bands, window=win)
        finally:
            if mask is not None:
                mask.close()


def save_scene(out: str, size: int, seed: int = 0, units: str = "dB",
               truth: str | None = None, overwrite: bool = False, tag: str | None = None,
               cancel: threading.Event | None = None) -> None:
    """``python -m backend scene``: :func:`write_scene` to temporary files, then renamed
    into place; existing files are replaced only with ``overwrite``. Cancelled, it leaves
    none."""
    check_outputs({"scene": out, "truth": truth}, [], overwrite)
    paths = [p for p in (out, truth) if p]
    temps = {p: temporary_beside(p) for p in paths}
    try:
        write_scene(temps[out], size, seed=seed, units=units, truth=temps.get(truth), tag=tag,
                    cancel=cancel)
        for path in paths:
            os.replace(temps[path], path)
    finally:
        for temp in temps.values():
            if os.path.exists(temp):
                os.unlink(temp)
