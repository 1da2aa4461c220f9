"""Shared test set-up: headless Qt, the real Sen1Floods11 fixture chips, tiny exact models."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# QGIS aborts without a display unless Qt renders offscreen; set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if "XDG_RUNTIME_DIR" not in os.environ:
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-")

REPO = Path(__file__).resolve().parents[1]
SHARED_CHIPS = REPO.parent / "shared" / "data" / "sen1floods11"


@pytest.fixture(scope="session")
def real_chips(tmp_path_factory) -> Path:
    """A copy of the real Sen1Floods11 v1.1 chips beside the checkout (format fixtures only).

    A copy, because GDAL writes statistics (``.aux.xml``) beside a raster that QGIS
    renders, and nothing may be written into ``../shared``.
    """
    if not SHARED_CHIPS.is_dir():
        pytest.fail(f"{SHARED_CHIPS} is missing: the tests need ../shared beside the checkout")
    copy = tmp_path_factory.mktemp("shared") / SHARED_CHIPS.name
    shutil.copytree(SHARED_CHIPS, copy)
    return copy


def write_netcdf_bands(path, bands: dict) -> None:
    """A NetCDF file on an EPSG:4326 grid of about 10 m holding each of ``bands`` (name ->
    2-D array) as a variable, as SNAP's NetCDF4-CF export does, with a grid_mapping variable
    besides (SNAP's own has only the lat/lon coordinates: tests/backend/test_input_formats.py);
    GDAL and QGIS open each as a subdataset, NETCDF:"<file>":<name>."""
    import numpy as np
    from osgeo import gdal, osr
    ds = gdal.GetDriverByName("netCDF").CreateMultiDimensional(str(path))
    root = ds.GetRootGroup()
    ny, nx = next(iter(bands.values())).shape
    dims = []
    for name, n, start, step in (("lat", ny, 40.0, -9e-5), ("lon", nx, -3.0, 9e-5)):
        dim = root.CreateDimension(name, None, None, n)
        axis = root.CreateMDArray(name, [dim], gdal.ExtendedDataType.Create(gdal.GDT_Float64))
        axis.Write(start + step * np.arange(n))
        dims.append(dim)
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    for name, band in bands.items():
        var = root.CreateMDArray(name, dims, gdal.ExtendedDataType.Create(gdal.GDT_Float32))
        var.Write(band.astype(np.float32))
        var.SetSpatialRef(wgs84)
    del ds
