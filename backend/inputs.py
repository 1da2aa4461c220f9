"""Open and check VV/VH inputs, and name their bands.

Inputs are one raster with VV and VH bands, or two single-band rasters. Bands are
named from their descriptions (``VV``, ``Sigma0_VH_db``, ...) or, for single-band
files, from the file name; two unnamed bands of one file are told apart by brightness,
two unnamed files keep the order given; ``--bands`` chooses them by number in one
multi-band file. Every problem is an :class:`InputError` whose one-line message names
the file.
"""
from __future__ import annotations

import math
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field, replace

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine

from .errors import InputError, UsageError, first_line
from .grid import Grid, grid_of, same_crs
from .raster_io import WindowReader, band_scaling, file_identity, gdal_masked, sample_grid

BAND_NAMES = ("VV", "VH")

_BAND_RE = re.compile(r"(?<![a-z])(vv|vh)(?![a-z])", re.IGNORECASE)
# Sentinel-1's other dual polarisation (HH + HV, over polar regions and sea ice)
_OTHER_POL_RE = re.compile(r"(?<![a-z])(hh|hv)(?![a-z])", re.IGNORECASE)
LISTED_AT_MOST = 10   # names a message lists (a file's subdatasets, a zip's GeoTIFFs)


@dataclass(frozen=True)
class BandSource:
    """One input band: which file and band index, its name, nodata value and metadata text."""
    path: str
    index: int            # 1-based band index in the file
    name: str             # VV or VH
    nodata: float | None
    text: str             # description, unit and tags: what units detection reads
    named_by: str         # how it was named: description, file name, position, brightness, --bands


@dataclass
class InputSet:
    """The opened inputs: band sources by name, their common grid, and the open datasets."""
    paths: list[str]
    bands: dict[str, BandSource]
    grid: Grid
    datasets: dict[str, rasterio.io.DatasetReader]
    notes: list[str] = field(default_factory=list)

    def mapping(self) -> dict[str, dict]:
        """Which file and band each name comes from, and how it was named (for results)."""
        return {n: {"path": s.path, "band": s.index, "named_by": s.named_by}
                for n, s in self.bands.items()}

    def sources(self) -> list[str]:
        """Files the inputs read besides themselves (a VRT's sources, and theirs: GDAL lists
        one level): no output may replace one either."""
        found: list[str] = []
        pending = [f for ds in self.datasets.values() for f in ds.files[1:]]
        while pending:
            path = pending.pop()
            if path in found:
                continue
            found.append(path)
            if path.lower().endswith(".vrt"):
                try:
                    with rasterio.open(path) as ds:
                        pending += ds.files[1:]
                except RasterioError:
                    pass   # the input read it; if it cannot be opened alone, it is listed still
        return found

    def close(self) -> None:
        for ds in self.datasets.values():
            ds.close()


def _one_named(pattern: re.Pattern, text: str) -> str | None:
    found = {m.upper() for m in pattern.findall(text or "")}
    return found.pop() if len(found) == 1 else None


def band_name_in(text: str) -> str | None:
    """'VV' or 'VH' if the text names exactly one of them as a word, else None."""
    return _one_named(_BAND_RE, text)


def _refuse_hh_hv(labels: list[tuple[str, str]], where: str, how: str) -> None:
    """HH/HV bands (no VV/VH among them) are another polarisation, not unnamed VV/VH.

    ``labels``: (what, text) per band, e.g. ("band 1", its description).
    """
    named = [(what, _one_named(_OTHER_POL_RE, text)) for what, text in labels]
    named = [(what, pol) for what, pol in named if pol]
    if named:
        said = " and ".join(f"{what} is {pol}" for what, pol in named)
        raise InputError(f"{where}: {said} (from the {how}); the model reads VV and VH, the "
                         "polarisations of Sentinel-1 over land, and HH/HV (polar and sea-ice "
                         "scenes) back-scatter differently; --bands VV_INDEX,VH_INDEX uses "
                         "them as VV and VH all the same")


# what to do with a file of one kind (SARFLOOD_OUTPUT) where another is wanted
_KIND_ADVICE = {
    ("probability", "mask"): "finalize it into a mask first (python -m backend finalize "
                             "{path} --threshold T --mask OUT.tif), or use predict --mask",
    ("uncertainty", "mask"): "use the run's mask (predict --mask)",
    ("mask", "probability"): "finalize needs the run's probability (predict --probability)",
    ("uncertainty", "probability"): "finalize needs the run's probability (predict --probability)",
}


def check_output_kind(path: str, tags: dict[str, str], wanted: str) -> None:
    """InputError where the file's SARFLOOD_OUTPUT tag names another kind than ``wanted``
    (a uint8 probability's codes 0..250 would pass for mask codes). Untagged files, as
    other tools write them, are taken for what is wanted."""
    kind = tags.get("SARFLOOD_OUTPUT", wanted)
    if kind != wanted:
        advice = _KIND_ADVICE.get((kind, wanted), f"give a {wanted}").format(path=path)
        raise InputError(f"{path}: is {_our(kind)}, not a water {wanted}; {advice}")


def check_not_output(path: str, tags: dict[str, str]) -> None:
    """InputError where the file is one of our outputs (its SARFLOOD_OUTPUT tag): a mask's
    0/1 codes or a probability read as backscatter map nonsense without an error (a run's
    VV-named mask was taken for the VV band of the next one)."""
    kind = tags.get("SARFLOOD_OUTPUT")
    if kind:
        raise InputError(f"{path}: is {_our(kind)}, not Sentinel-1 backscatter; give the VV "
                         "and VH scene")


def _our(kind: str) -> str:
    """'a mask written by SAR Flood Mapper', 'an uncertainty ...': an output named in a message."""
    return f"{'an' if kind[:1] in tuple('aeiou') else 'a'} {kind} written by SAR Flood Mapper"


def open_mask(path: str):
    """Open a water mask (one uint8 band: 0 dry, 1 water, 255 no data); InputError if not,
    or if it is another output of ours (checked first: a float32 probability is named as
    one, not as a wrong data type)."""
    ds = open_raster(path)
    try:
        check_output_kind(path, ds.tags(), "mask")
    except InputError:
        ds.close()
        raise
    if ds.count != 1 or ds.dtypes[0] != "uint8":
        found = f"{ds.count} band(s) of {ds.dtypes[0]}"
        ds.close()
        raise InputError(f"{path}: expected a water mask, one uint8 band (0 dry, 1 water, "
                         f"255 no data); found {found}")
    return ds


# a GDAL driver's subdataset (NETCDF:"scene.nc":Sigma0_VV_db), not a Windows drive (C:\)
_SUBDATASET_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")


def is_gdal_name(path: str) -> bool:
    """A dataset name GDAL resolves itself rather than a file: a virtual path
    (``/vsizip/...``: a GeoTIFF inside an ASF HyP3 zip, read in place) or a driver's
    subdataset (``NETCDF:"scene.nc":Sigma0_VV_db``: a band of SNAP's NetCDF export, as
    QGIS opens it)."""
    return path.startswith("/vsi") or (bool(_SUBDATASET_RE.match(path))
                                       and not os.path.exists(path))


def input_name(path: str) -> str:
    """An input as provenance names it: absolute, a GDAL dataset name as given."""
    return path if is_gdal_name(path) else os.path.abspath(path)


def open_raster(path: str, notes: list[str] | None = None):
    """Open a georeferenced, non-complex raster on a grid without rotation or shear (a
    flipped one is resampled by predict); InputError naming the file if not.

    GDAL dataset names (:func:`is_gdal_name`) go straight to GDAL, which says if they do
    not exist. What was assumed in opening it is added to ``notes``.
    """
    if not is_gdal_name(path):
        if not os.path.exists(path):
            raise InputError(f"{path}: file not found")
        if os.path.isdir(path):
            raise InputError(f"{path}: is a folder, not a raster file")
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: cannot be read (permission denied)")
        if os.path.getsize(path) == 0:
            raise InputError(f"{path}: is empty (0 bytes)")
        if path.lower().endswith(".zip"):
            raise InputError(f"{path}: is a zip archive; {_zip_advice(path)} (or unzip it)")
    try:
        ds = _open(path)
    except InputError:
        if _beam_dimap(path):
            raise InputError(f"{path}: is the header of SNAP's BEAM-DIMAP format (.dim), which "
                             f"GDAL does not read as a raster; {_dimap_advice(path)}") from None
        raise
    try:
        if _longitude_latitude(ds):
            ds.close()
            ds = _open(path, ASSUME_LONGLAT="YES")
            if ds.crs is not None and notes is not None:
                notes.append(f"{path}: has no CRS (no grid_mapping variable, as SNAP's NetCDF "
                             "export writes none), but its CF metadata gives the coordinates "
                             "as latitude and longitude in degrees: read as WGS 84 (EPSG:4326)")
        _check_dataset(path, ds)
        if not is_gdal_name(path):
            _check_complete(path, ds)
    except InputError:
        ds.close()
        raise
    return ds


def _zip_advice(path: str) -> str:
    """Which /vsizip/ paths to give for a zip: its VV and VH GeoTIFFs where their names say
    so (an ASF HyP3 product holds them in a folder named like the zip, with its DEM and
    maps beside them), else its GeoTIFFs."""
    archive = os.path.abspath(path)
    try:
        with zipfile.ZipFile(path) as z:
            tifs = [n for n in z.namelist() if n.lower().endswith((".tif", ".tiff"))]
    except (zipfile.BadZipFile, OSError):   # GDAL may read it still; say how to name a file
        return (f"give the raster inside it as /vsizip/{archive}/FOLDER/NAME.tif (a HyP3 zip "
                "holds a folder named like it)")
    if not tifs:
        return "it holds no GeoTIFF"
    return f"give the rasters inside it: {_listed([f'/vsizip/{archive}/{n}' for n in tifs])}"


def _listed(paths: list[str]) -> str:
    """Paths for a message: those whose file names say VV or VH (VV first) where any do,
    else all; at most LISTED_AT_MOST."""
    band = {p: band_name_in(os.path.basename(p)) for p in paths}
    chosen = sorted((p for p in paths if band[p]), key=lambda p: BAND_NAMES.index(band[p]))
    return _at_most(chosen or paths)


def _at_most(names: list[str]) -> str:
    """``names`` joined for a message, at most LISTED_AT_MOST of them, and how many more."""
    more = len(names) - LISTED_AT_MOST
    return " ".join(names[:LISTED_AT_MOST]) + (f" and {more} more" if more > 0 else "")


def _beam_dimap(path: str) -> bool:
    """SNAP's BEAM-DIMAP header (its profile says BEAM, or its .data folder lies beside it),
    not a SPOT DIMAP one, which GDAL reads."""
    if not path.lower().endswith(".dim") or is_gdal_name(path):
        return False
    with open(path, "rb") as f:
        head = f.read(4096)
    return b"BEAM" in head or os.path.isdir(os.path.splitext(path)[0] + ".data")


def _dimap_advice(path: str) -> str:
    """What to give for SNAP's BEAM-DIMAP header: the ENVI .img files of its .data folder,
    which GDAL reads (it does not read the .dim as one raster), or a GeoTIFF export."""
    data = os.path.splitext(path)[0] + ".data"
    export = "or export GeoTIFF from SNAP (File > Export > GeoTIFF)"
    if not os.path.isdir(data):
        return (f"its bands are in the folder {data}, which is missing (copy it with the "
                f".dim and give its .img files), {export}")
    images = sorted(os.path.join(data, n) for n in os.listdir(data)
                    if n.lower().endswith(".img"))
    if not images:
        return f"its folder {data} holds no .img file; {export}"
    return f"give the .img files of its .data folder: {_listed(images)}; {export}"


def _open(path: str, **options):
    try:
        with warnings.catch_warnings():  # a missing grid gets our own one-line error
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path, **options)
    except RasterioError as exc:
        raise InputError(f"{path}: not a raster GDAL can read ({first_line(exc)})") from None


# CF's units for latitude and longitude: degrees_north, degree_N, degreesE, ...
_CF_DEGREES = re.compile(r"degrees?_?(north|east|n|e)", re.IGNORECASE)


def _longitude_latitude(ds) -> bool:
    """A NetCDF grid without a CRS whose coordinate variables CF metadata plainly calls
    latitude and longitude (units or standard_name): GDAL gives the geotransform of 1-D
    lat/lon coordinates but no CRS without a grid_mapping variable, which SNAP's NetCDF4-CF
    export leaves out."""
    if ds.driver != "netCDF" or ds.crs is not None or ds.transform == Affine.identity():
        return False
    axes = set()
    for key, value in ds.tags().items():
        attribute, value = key.partition("#")[2], value.strip().lower()
        unit = _CF_DEGREES.fullmatch(value)
        if attribute == "units" and unit:
            axes.add("latitude" if unit[1].lower() in ("north", "n") else "longitude")
        elif attribute == "standard_name" and value in ("latitude", "longitude"):
            axes.add(value)
    return axes == {"latitude", "longitude"}


# formats whose pixels are stored as they are: GDAL reads zeros past the end of such a file
# cut short (GeoTIFF with GTIFF_DIRECT_IO, which gdal_env sets, and raw formats), no error
_UNCOMPRESSED = ("GTiff", "ENVI", "EHdr", "ISCE", "GenBin")


def _check_complete(path: str, ds) -> None:
    """Refuse an uncompressed raster cut short (an interrupted copy or download): it
    would be mapped with its missing part read as 0, the darkest backscatter."""
    if ds.driver not in _UNCOMPRESSED or (ds.driver == "GTiff" and ds.compression is not None):
        return
    size = os.path.getsize(path)
    need = ds.width * ds.height * sum(np.dtype(t).itemsize for t in ds.dtypes)
    ends = [need]
    if ds.driver == "GTiff":   # where the last block of each band ends in the file
        bw, bh = ds.block_shapes[0]
        last = f"{(ds.width - 1) // bw}_{(ds.height - 1) // bh}"
        for band in range(1, ds.count + 1):
            offset = ds.get_tag_item(f"BLOCK_OFFSET_{last}", "TIFF", bidx=band)
            length = ds.get_tag_item(f"BLOCK_SIZE_{last}", "TIFF", bidx=band)
            if offset and length:
                ends.append(int(offset) + int(length))
    if size < max(ends):
        raise InputError(f"{path}: is cut short ({size} bytes where its {ds.width} x "
                         f"{ds.height} uncompressed pixels reach byte {max(ends)}): an "
                         "interrupted copy or download? Copy it again")


def _check_dataset(path: str, ds) -> None:
    if ds.count == 0 and ds.subdatasets:
        raise InputError(f"{path}: {_subdatasets(ds)}")
    if ds.gcps[0] and ds.transform == Affine.identity():
        raise InputError(f"{path}: is located by ground control points only, as a Sentinel-1 "
                         "GRD is as delivered: calibrate it to sigma0 and terrain-correct it "
                         "onto a map grid first (e.g. SNAP: Calibration, then Terrain-Correction)")
    if ds.rpcs and ds.transform == Affine.identity():
        raise InputError(f"{path}: is located by rational polynomial coefficients (RPCs) "
                         "only, not on a map grid: orthorectify it first (e.g. gdalwarp -rpc "
                         "-t_srs EPSG:CODE)")
    if ds.transform == Affine.identity():
        raise InputError(f"{path}: has no georeferencing (no geotransform); the mask must "
                         "lie on a known grid and the pixel size must be known")
    if ds.crs is None:
        raise InputError(f"{path}: has a grid but no CRS; write the right one into the file "
                         "(gdal_edit.py -a_srs EPSG:CODE, or in QGIS Raster > Projections > "
                         "Assign Projection): a CRS set on a QGIS layer stays in QGIS")
    if not (ds.crs.is_geographic or ds.crs.is_projected):
        raise InputError(f"{path}: its CRS is neither geographic nor projected (a local or "
                         "engineering one), so its pixel size in metres is unknown; assign "
                         "the right CRS (e.g. gdal_edit.py -a_srs)")
    # by the unit's size, not its name: "degree", "Degree" (ESRI, OGC:CRS84), ...
    if ds.crs.is_geographic and not math.isclose(ds.crs.units_factor[1], math.pi / 180,
                                                 rel_tol=1e-9):
        raise InputError(f"{path}: its geographic CRS counts angles in "
                         f"{ds.crs.units_factor[0]}, not degrees; warp it to one in degrees "
                         "or to a projected CRS first (e.g. gdalwarp -t_srs EPSG:4326)")
    t = ds.transform
    # rotation terms far below a pixel over the whole raster are a writer's rounding
    if max(abs(t.b) * ds.height, abs(t.d) * ds.width) > 1e-9 * min(abs(t.a), abs(t.e)):
        raise InputError(f"{path}: the grid is rotated or sheared; warp it to a north-up "
                         "grid first (e.g. gdalwarp)")
    if ds.crs.is_geographic:
        top, bottom = t.f, t.f + t.e * ds.height
        if max(abs(top), abs(bottom)) > 90 + 1e-6:
            raise InputError(f"{path}: its rows run from latitude {top:g} to {bottom:g}, "
                             "beyond the poles: its georeferencing is wrong")
    for dtype in ds.dtypes:
        if np.dtype(dtype).kind == "c":
            raise InputError(f"{path}: complex ({dtype}) bands are not supported; give "
                             "calibrated backscatter (GRD), not SLC data")


def _subdatasets(ds) -> str:
    """What to pass instead of a container of subdatasets (a NetCDF file of several
    variables): their names as GDAL gives them, quoted for a shell."""
    tags = ds.tags(ns="SUBDATASETS")
    names = [tags[f"SUBDATASET_{k}_NAME"] for k in range(1, len(tags) + 1)
             if f"SUBDATASET_{k}_NAME" in tags]
    listed = _at_most([f"'{n}'" for n in names])
    more = " (gdalinfo lists them)" if len(names) > LISTED_AT_MOST else ""
    return (f"holds {len(names)} subdatasets (one per variable), not one raster; give the VV "
            f"and VH ones as two inputs, named as GDAL names them: {listed}{more}")


def _band_text(ds, i: int) -> str:
    parts = [ds.descriptions[i - 1] or "", ds.units[i - 1] or ""]
    parts += [f"{k}={v}" for k, v in ds.tags(i).items()]
    return " ".join(p for p in parts if p)


def _source(path: str, ds, i: int, name: str, named_by: str) -> BandSource:
    text = " ".join(filter(None, [_band_text(ds, i), os.path.basename(path)]))
    return BandSource(path, i, name, ds.nodatavals[i - 1], text, named_by)


def _bands_of_one(path: str, ds, notes: list[str]) -> dict[str, BandSource]:
    # an alpha band (gdalwarp -dstalpha) is not data; GDAL reads it as the others' mask only
    # in gray + alpha or RGBA files, and gdalwarp writes 0 under it (no data: units.py)
    data = [i for i in range(1, ds.count + 1) if ds.colorinterp[i - 1] != ColorInterp.alpha]
    count = len(data)
    descriptions = [ds.descriptions[i - 1] or "" for i in data]
    names = [band_name_in(d) for d in descriptions]
    if not any(names):
        _refuse_hh_hv([(f"band {i}", d) for i, d in zip(data, descriptions)],
                      path, "band descriptions")
    if count == 1:
        if not names[0]:
            _refuse_hh_hv([("its band", os.path.basename(path))], path, "file name")
        name = names[0] or band_name_in(os.path.basename(path)) or "VV"
        how = "description" if names[0] else ("file name" if band_name_in(os.path.basename(path))
                                              else "position")
        return {name: _source(path, ds, data[0], name, how)}
    found = {n: i for i, n in zip(data, names) if n}
    if set(found) == set(BAND_NAMES) and names.count("VV") == 1 and names.count("VH") == 1:
        if count > 2:
            notes.append(f"{path}: using band {found['VV']} (VV) and band {found['VH']} (VH) "
                         f"of {ds.count}")
        return {n: _source(path, ds, i, n, "description") for n, i in found.items()}
    if count != 2:
        besides = " besides its alpha band" if count < ds.count else ""
        raise InputError(f"{path}: has {count} bands{besides}; expected 2 bands (VV, VH), or "
                         "two single-band files, or --bands VV_INDEX,VH_INDEX to choose two")
    if names[0] and names[0] == names[1]:
        raise InputError(f"{path}: both bands are described as {names[0]}; expected VV and VH")
    if names[0] or names[1]:  # one named: the other is the other polarisation
        other = _one_named(_OTHER_POL_RE, descriptions[1 if names[0] else 0])
        if other:
            named, unnamed = data if names[0] else data[::-1]
            raise InputError(f"{path}: band {named} is {names[0] or names[1]} but band "
                             f"{unnamed} is {other}; expected VV and VH")
        first = names[0] or ("VH" if names[1] == "VV" else "VV")
        order = (first, "VH" if first == "VV" else "VV")
        how = "description"
    else:  # unnamed: ordered by brightness in open_inputs
        order = BAND_NAMES
        how = "position"
    return {n: _source(path, ds, i, n, how) for i, n in zip(data, order)}


def _same_grid(a: str, da, b: str, db) -> None:
    if (da.width, da.height) != (db.width, db.height):
        raise InputError(f"{a} and {b} are on different grids: {da.width}x{da.height} "
                         f"vs {db.width}x{db.height} pixels")
    if not same_crs(da.crs, db.crs):
        raise InputError(f"{a} and {b} are on different grids: CRS {da.crs.to_string()} "
                         f"vs {db.crs.to_string()}")
    # a hundredth of a pixel: a geotransform written in float32 by one export (0.004 px
    # off) is the same grid; half a pixel is not
    tol = 0.01 * min(abs(da.transform.a), abs(da.transform.e))
    if not da.transform.almost_equals(db.transform, precision=tol):
        raise InputError(f"{a} and {b} are on different grids: the geotransforms differ "
                         f"({tuple(da.transform)[:6]} vs {tuple(db.transform)[:6]})")


def _bands_chosen(path: str, ds, bands: tuple[int, int], notes: list[str]
                  ) -> dict[str, BandSource]:
    """``--bands VV_INDEX,VH_INDEX`` (1-based): the user's choice, checked against the file."""
    given = f"--bands {bands[0]},{bands[1]}"
    for i in bands:
        if not 1 <= i <= ds.count:
            raise InputError(f"{path}: has {ds.count} band{'s' if ds.count > 1 else ''}; "
                             f"{given} names band {i} (bands are numbered from 1)")
    if bands[0] == bands[1]:
        raise InputError(f"{path}: {given} gives band {bands[0]} as both VV and VH")
    chosen = dict(zip(BAND_NAMES, bands))
    for name, i in chosen.items():
        text = ds.descriptions[i - 1] or ""
        said = band_name_in(text) or _one_named(_OTHER_POL_RE, text)
        if said and said != name:  # the user may know better (a mislabelled export): say it
            notes.append(f"{path}: band {i} is described as {said}, but {given} uses it as {name}")
    return {n: _source(path, ds, i, n, "--bands") for n, i in chosen.items()}


def open_inputs(paths: list[str], needed: tuple[str, ...] = BAND_NAMES,
                bands: tuple[int, int] | None = None, user: str = "the model",
                nodata: float | None = None) -> InputSet:
    """Open and check the inputs; name their bands. Raises InputError.

    ``bands`` (VV, VH), 1-based, chooses the bands of a single multi-band input
    instead of naming them from their descriptions. ``user`` is what ``needed`` the
    bands, as messages name it. ``nodata`` (``--nodata``) is every band's no-data value
    in place of the files' own.
    """
    if not 1 <= len(paths) <= 2:
        raise InputError(f"expected one 2-band raster or two single-band rasters, got "
                         f"{len(paths)} inputs")
    paths = [str(p) for p in paths]
    if bands is not None and len(paths) != 1:
        raise UsageError(f"--bands chooses the VV and VH bands of one multi-band input; with two "
                         f"inputs ({', '.join(paths)}) each file is one band: leave --bands out")
    datasets: dict[str, rasterio.io.DatasetReader] = {}
    notes: list[str] = []
    try:
        for p in paths:
            if datasets and file_identity(p) == file_identity(paths[0]):
                raise InputError(f"{p}: given twice (the same file as {paths[0]}); give VV "
                                 f"and VH as two different files")
            datasets[p] = open_raster(p, notes)
            check_not_output(p, datasets[p].tags())
        if len(paths) == 1 and bands is not None:
            named = _bands_chosen(paths[0], datasets[paths[0]], bands, notes)
        elif len(paths) == 1:
            p = paths[0]
            named = _bands_of_one(p, datasets[p], notes)
            if len(named) == 1 and set(needed) - set(named):
                give = ("a 2-band raster or two single-band rasters" if len(needed) > 1
                        else f"its {needed[0]} band")
                band = next(iter(named.values()))
                how = ("" if band.named_by != "position" else
                       f", taken as {band.name} for want of a name: a band description or "
                       f"file name with {'VH' if band.name == 'VV' else 'VV'} says otherwise")
                raise InputError(f"{p}: has 1 band ({band.name}{how}); {user} needs "
                                 f"{', '.join(needed)}: give {give}")
        else:
            named = _bands_of_two(paths, datasets, notes)
        # the bands of one file have no order anyone chose; two files were given in an order
        # (VV, VH), kept, and find_units warns if it looks swapped
        if len(paths) == 1 and len(named) == 2 and all(s.named_by == "position"
                                                       for s in named.values()):
            named = _brighter_is_vv(named, datasets, notes)
    except BaseException:
        for ds in datasets.values():
            ds.close()
        raise
    if nodata is not None:
        for name, src in named.items():
            own = "none" if src.nodata is None else f"{src.nodata:g}"
            notes.append(f"{src.path}: band {src.index} ({name}): no data is {nodata:g} "
                         f"(--nodata; the file's nodata value: {own})")
        named = {name: replace(src, nodata=nodata) for name, src in named.items()}
    for name, src in named.items():
        ds = datasets[src.path]
        scale, offset = band_scaling(ds, src.index)
        if (scale, offset) != (1.0, 0.0):
            notes.append(f"{src.path}: band {src.index} ({name}) is stored scaled: values are "
                         f"read as stored x {scale:g} + {offset:g} (its scale and offset)")
        if gdal_masked(ds, src.index):
            notes.append(f"{src.path}: band {src.index} ({name}) has a GDAL mask (internal "
                         "mask or alpha band): the pixels it masks are no data")
    grid = grid_of(datasets[paths[0]])
    return InputSet(paths, named, grid, datasets, notes)


def _bands_of_two(paths: list[str], datasets: dict, notes: list[str]) -> dict[str, BandSource]:
    for p in paths:
        if datasets[p].count != 1:
            raise InputError(f"{p}: has {datasets[p].count} bands; with two inputs each must "
                             "hold one band (VV, then VH)")
    a, b = paths
    _same_grid(a, datasets[a], b, datasets[b])
    named = []
    for p in paths:
        ds = datasets[p]
        by_desc = band_name_in(ds.descriptions[0] or "")
        by_file = band_name_in(os.path.basename(p))
        named.append((by_desc or by_file, "description" if by_desc else "file name"))
    (na, ha), (nb, hb) = named
    if not (na or nb):
        _refuse_hh_hv([(p, f"{datasets[p].descriptions[0] or ''} {os.path.basename(p)}")
                       for p in paths], f"{a} and {b}", "descriptions or file names")
    if na and na == nb:
        raise InputError(f"{a} and {b} are both {na}; expected one VV and one VH")
    if na or nb:
        first = na or ("VH" if nb == "VV" else "VV")
        order = (first, "VH" if first == "VV" else "VV")
        if order[0] == "VH":
            notes.append(f"{a} is VH and {b} is VV (from their {ha if na else hb}); using them so")
        hows = (ha if na else "position", hb if nb else "position")
    else:
        order, hows = BAND_NAMES, ("position", "position")
        notes.append(f"the inputs are not named VV/VH; taking {a} as VV and {b} as VH, the "
                     "order given")
    return {n: _source(p, datasets[p], 1, n, h) for p, n, h in zip(paths, order, hows)}


def observed_in_both(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels with a finite, non-zero value in both bands: where they are compared.
    Exact 0 is mostly an untagged fill beyond the swath (an Earth Engine export's): with
    half a scene of it both medians were 0, and the tie kept a VH-first stack's order."""
    return np.isfinite(a) & np.isfinite(b) & (a != 0) & (b != 0)


def _brighter_is_vv(named: dict[str, BandSource], datasets: dict, notes: list[str]
                    ) -> dict[str, BandSource]:
    """Two bands of one file that nothing names: the brighter is VV.

    Co-polarised backscatter exceeds cross-polarised over land and water alike (C band:
    VH some 5-10 dB below VV; the generator's constants in training/synth/sar.py give
    their sources), so taking a VH-first stack in file order would feed the model VH as
    VV. Medians keep their order in dB, power and amplitude, so the units need not be
    known yet; the pixels are the units sample's (25 windows).
    """
    first, second = named["VV"], named["VH"]
    ds = datasets[first.path]
    reader = WindowReader([(ds, s.index, s.nodata) for s in (first, second)], 0, 0)
    sample = sample_grid(reader, ds.height, ds.width)
    both = observed_in_both(*sample)
    label = [f"band {first.index}", f"band {second.index}"]
    where = f"{first.path}: bands"
    if not both.any():
        notes.append(f"{where} are not named VV/VH and have no valid pixel to tell them apart "
                     f"by: taking {label[0]} as VV and {label[1]} as VH")
        return named
    m = [float(np.median(v[both])) for v in sample]
    vv = 0 if m[0] >= m[1] else 1
    notes.append(f"{where} are not named VV/VH; {label[vv]} is the brighter (median "
                 f"{m[vv]:.4g} against {m[1 - vv]:.4g}), as co-polarised VV is: taking "
                 f"{label[vv]} as VV and {label[1 - vv]} as VH")
    pair = (first, second) if vv == 0 else (second, first)
    return {n: replace(s, name=n, named_by="brightness") for n, s in zip(BAND_NAMES, pair)}
