"""What each backend command needs, as dataclasses that turn into CLI arguments.

The run dialog and the Processing algorithms fill these; ``task.py`` and the
algorithms hand ``argv()`` to :class:`~.backend_process.BackendProcess`. Keeping
the argument spelling here means one place follows the backend's CLI contract.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")
UNITS = ("dB", "linear", "amplitude")

Extent = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax


# a GDAL driver's subdataset, 'NETCDF:"scene.nc":Sigma0_VV_db' (not a Windows drive, C:\)
_SUBDATASET = re.compile(r'^[A-Za-z][A-Za-z0-9_]+:"?(?P<file>[^"]+?)"?:(?P<name>[^:"]+)$')


def is_gdal_name(path: str) -> bool:
    """A dataset name GDAL resolves itself rather than a file: a virtual path
    (``/vsizip//data/x.zip/a.tif``) or a driver's subdataset (a band of SNAP's NetCDF
    export as QGIS opens it: ``NETCDF:"scene.nc":Sigma0_VV_db``). The backend reads both."""
    return path.startswith("/vsi") or (bool(_SUBDATASET.match(path)) and not os.path.exists(path))


def dataset_file(path: str) -> str:
    """The file behind a dataset name: ``GPKG:/data/scene.gpkg:vv`` is /data/scene.gpkg;
    a file path or a virtual path is itself."""
    found = _SUBDATASET.match(path) if is_gdal_name(path) else None
    return found["file"] if found else path


def backend_path(path: str) -> str:
    """``path`` as QGIS means it, for the backend child.

    The child runs in the plugin's folder (so that ``-m backend`` finds our package),
    so a relative path, which QGIS and qgis_process read from their own working
    folder, would name another file there. GDAL dataset names are left as they are:
    normalising ``/vsizip//data/x.zip/a.tif`` would drop the slash that makes it absolute.
    """
    return path if is_gdal_name(path) else os.path.abspath(path)


def output_stem(source: str) -> str:
    """A file-name stem for a run's outputs from its input's source: the file's stem, and a
    subdataset's name after it (``NETCDF:"/d/scene.nc":Sigma0_VV_db`` gives
    ``scene_Sigma0_VV_db``); characters a file name cannot hold everywhere become '_'."""
    path = source.split("|")[0]
    found = _SUBDATASET.match(path) if is_gdal_name(path) else None
    stem = f"{Path(found['file']).stem}_{found['name']}" if found else Path(path).stem
    return re.sub(r'[<>:"/\\|?*\s]+', "_", stem).strip("_") or "scene"


def _extent_args(extent: Extent | None, extent_crs: str | None) -> list[str]:
    if extent is None:
        return []
    # one "--extent=..." word: a value starting with "-" would read as an option to argparse
    args = ["--extent=" + ",".join(repr(float(v)) for v in extent)]
    if extent_crs:
        args += ["--extent-crs", extent_crs]
    return args


@dataclass
class SceneInput:
    """The Sentinel-1 input: one file with VV and VH bands, or one VV and one VH file.

    ``bands`` (VV, VH), 1-based, are the bands of the one file the user chose; None
    lets the backend name them from their descriptions. ``nodata`` is a no-data value set
    on the layers in QGIS, which the files do not hold (``--nodata``).
    """
    vv: str
    vh: str | None = None
    bands: tuple[int, int] | None = None
    nodata: float | None = None

    def files(self) -> tuple[str, ...]:
        """The files read, resolved: one scene run again, from the dialog (its band boxes
        set) or the Toolbox (bands left to the backend), is the same scene."""
        return tuple(os.path.realpath(p) for p in (self.vv, self.vh) if p is not None)

    def args(self) -> list[str]:
        nodata = [] if self.nodata is None else [f"--nodata={self.nodata!r}"]
        if self.vh is not None:
            return [backend_path(self.vv), backend_path(self.vh), *nodata]
        return [backend_path(self.vv), *nodata] + (
            [f"--bands={self.bands[0]},{self.bands[1]}"] if self.bands else [])


@dataclass
class PredictParams:
    """``python -m backend predict``: the learned model."""
    scene: SceneInput
    mask: str
    probability: str | None = None
    uncertainty: str | None = None
    model: str | None = None          # None: the bundled default model
    device: str = "auto"
    threshold: float | None = None    # None: the model card's default
    units: str | None = None          # None: detected by the backend
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int | None = None   # None: the backend's (1 tile on CPU, 4 on CUDA)
    tta: bool = False
    extent: Extent | None = None
    extent_crs: str | None = None
    overwrite: bool = False

    def argv(self) -> list[str]:
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; expected one of {', '.join(DEVICES)}")
        if self.units is not None and self.units not in UNITS:
            raise ValueError(f"unknown units {self.units!r}; expected one of {', '.join(UNITS)}")
        args = ["predict", *self.scene.args(), "--mask", backend_path(self.mask),
                "--device", self.device]
        paths = {"--probability": self.probability, "--uncertainty": self.uncertainty,
                 "--model": self.model}
        optional = {**{flag: backend_path(p) for flag, p in paths.items() if p},
                    "--threshold": self.threshold, "--units": self.units,
                    "--tile-size": self.tile_size, "--overlap": self.overlap,
                    "--batch-size": self.batch_size}
        for flag, value in optional.items():
            if value is not None:
                args += [flag, str(value)]
        if self.tta:
            args.append("--tta")
        if self.overwrite:
            args.append("--overwrite")
        return args + _extent_args(self.extent, self.extent_crs)


@dataclass
class OtsuParams:
    """``python -m backend otsu``: the Otsu baseline on VV in dB."""
    scene: SceneInput
    mask: str
    extent: Extent | None = None
    extent_crs: str | None = None
    overwrite: bool = False

    def argv(self) -> list[str]:
        args = ["otsu", *self.scene.args(), "--mask", backend_path(self.mask)]
        if self.overwrite:
            args.append("--overwrite")
        return args + _extent_args(self.extent, self.extent_crs)


@dataclass
class FinalizeParams:
    """``python -m backend finalize``: the accepted mask, with provenance tags."""
    probability: str
    threshold: float
    mask: str
    tags: dict[str, str] | None = None
    corrections: str | None = None   # GeoJSON of water/dry polygons (plugin.corrections)
    overwrite: bool = False

    def argv(self) -> list[str]:
        args = ["finalize", backend_path(self.probability), "--threshold",
                repr(float(self.threshold)), "--mask", backend_path(self.mask)]
        for key, value in (self.tags or {}).items():
            args += ["--tag", f"{key}={value}"]
        if self.corrections:
            args += ["--corrections", backend_path(self.corrections)]
        if self.overwrite:
            args.append("--overwrite")
        return args


@dataclass
class CorrectParams:
    """``python -m backend correct``: water/dry polygons burnt into a mask."""
    mask: str
    corrections: str                 # GeoJSON (plugin.corrections.write_geojson)
    out: str
    overwrite: bool = False

    def argv(self) -> list[str]:
        args = ["correct", backend_path(self.mask), "--corrections",
                backend_path(self.corrections), "--out", backend_path(self.out)]
        return args + (["--overwrite"] if self.overwrite else [])


def free_output_paths(folder: str, stem: str, kinds: list[str], suffix: str = ".tif") -> dict[str, str]:
    """``{kind: <folder>/<stem>_<kind><suffix>}`` with a numeric suffix where any name is taken.

    A run never replaces a file the user already has: all kinds share one suffix
    so the outputs of a run stay together (``scene_2_mask.tif``, ``scene_2_probability.tif``).
    """
    base = Path(folder)
    n = 1
    while True:
        tag = stem if n == 1 else f"{stem}_{n}"
        paths = {kind: str(base / f"{tag}_{kind}{suffix}") for kind in kinds}
        if not any(Path(p).exists() for p in paths.values()):
            return paths
        n += 1
