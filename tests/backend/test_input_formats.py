"""Input formats analysts bring: SNAP's NetCDF and BEAM-DIMAP exports, HyP3 zips, scaled
integers. Each is read, or refused with one line that says what to pass instead."""
import numpy as np
import pytest
import rasterio

from backend.engine import PredictOptions, predict
from backend.errors import InputError
from tests.backend.conftest import Collect, listing


@pytest.fixture
def out(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


LAT_LON = (("lat", {"units": "degrees_north"}), ("lon", {"units": "degrees_east"}))


def write_cf_netcdf(path, bands: dict, axes=LAT_LON, start=(0.3, 10.0), step=9e-5) -> None:
    """A NetCDF4-CF file as SNAP exports one on a geographic grid: each band a variable on
    1-D coordinate variables (``axes``: name and attributes, rows first), no grid_mapping."""
    from osgeo import gdal
    ds = gdal.GetDriverByName("netCDF").CreateMultiDimensional(str(path))
    root = ds.GetRootGroup()
    shape = next(iter(bands.values())).shape
    dims = []
    for (name, attributes), n, first, sign in zip(axes, shape, start, (-1, 1)):
        dim = root.CreateDimension(name, None, None, n)
        axis = root.CreateMDArray(name, [dim], gdal.ExtendedDataType.Create(gdal.GDT_Float64))
        axis.Write(first + sign * step * np.arange(n))
        for key, value in attributes.items():
            axis.CreateAttribute(key, [], gdal.ExtendedDataType.CreateString()).Write(value)
        dims.append(dim)
    for name, band in bands.items():
        var = root.CreateMDArray(name, dims, gdal.ExtendedDataType.Create(gdal.GDT_Float32))
        var.Write(band.astype(np.float32))
    del ds


def refusal(out, model: str, inputs) -> str:
    """The one-line InputError a run on ``inputs`` fails with; it leaves no output."""
    with pytest.raises(InputError) as err:
        predict(PredictOptions([str(i) for i in inputs], mask=str(out / "m.tif"), model=model))
    assert "\n" not in str(err.value) and listing(out) == []
    return str(err.value)


def _db_scene(shape=(60, 70), seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vv = (-12 + 3 * rng.standard_normal(shape)).astype(np.float32)
    vv[20:40, 20:50] = -22
    return vv


@pytest.mark.parametrize("axes", [LAT_LON, (("lat", {"standard_name": "latitude"}),
                                             ("lon", {"standard_name": "longitude"}))])
def test_snap_netcdf_on_lat_lon_coordinates_is_read_as_wgs84(out, models, tmp_path, axes):
    """GDAL gives a geotransform but no CRS for 1-D lat/lon coordinates without a
    grid_mapping variable (SNAP's NetCDF4-CF export): in degrees by CF, that is WGS 84."""
    vv = _db_scene()
    nc = tmp_path / "snap.nc"
    write_cf_netcdf(nc, {"Sigma0_VV_db": vv, "Sigma0_VH_db": vv - 7}, axes)
    with rasterio.open(f'NETCDF:"{nc}":Sigma0_VV_db') as ds:
        assert ds.crs is None and not ds.transform.is_identity   # what GDAL makes of it
        transform = ds.transform
    names = [f'NETCDF:"{nc}":Sigma0_VV_db', f'NETCDF:"{nc}":Sigma0_VH_db']
    rep = Collect()
    predict(PredictOptions(names, mask=str(out / "m.tif"), model=models["threshold"]), rep)
    with rasterio.open(out / "m.tif") as m:
        assert m.crs.to_epsg() == 4326
        assert m.transform.almost_equals(transform)
        np.testing.assert_array_equal(m.read(1), (vv < -15).astype(np.uint8))
    assert any(f"{names[0]}: has no CRS" in i and "read as WGS 84 (EPSG:4326)" in i
               for i in rep.infos), rep.infos


def test_netcdf_without_crs_in_other_units_is_refused(out, models, tmp_path):
    """Coordinates that CF does not call degrees (metres here) say nothing of the CRS."""
    nc = tmp_path / "local.nc"
    axes = [(n, {"units": "m", "standard_name": f"projection_{n}_coordinate"}) for n in "yx"]
    write_cf_netcdf(nc, {"Sigma0_VV_db": _db_scene()}, axes, start=(5e6, 5e5), step=10.0)
    assert refusal(out, models["vv_only"], [nc]).startswith(f"{nc}: has a grid but no CRS")


def test_netcdf_of_several_variables_lists_its_subdatasets(out, models, tmp_path):
    """A NetCDF file of several variables is no raster itself: the message names each
    variable as a subdataset that can be passed (it said 'no geotransform')."""
    vv = _db_scene()
    nc = tmp_path / "snap.nc"
    write_cf_netcdf(nc, {"Sigma0_VV_db": vv, "Sigma0_VH_db": vv - 7, "incidence": vv * 0 + 35})
    names = [f'NETCDF:"{nc}":{v}' for v in ("Sigma0_VV_db", "Sigma0_VH_db", "incidence")]
    message = refusal(out, models["threshold"], [nc])
    assert message.startswith(f"{nc}: holds 3 subdatasets")
    assert message.endswith(" ".join(f"'{n}'" for n in names)), message
    predict(PredictOptions(names[:2], mask=str(out / "m.tif"), model=models["threshold"]))


def test_backscatter_stored_as_integers_x_10000_is_refused_with_its_scale(out, models, tmp_path):
    """Linear sigma0 x 10000 in uint16 with no scale tag (a SNAP or Earth Engine export)
    reads as uncalibrated numbers: refused, saying which scale makes them backscatter;
    with that scale set (gdal_edit.py -scale 0.0001) the file is mapped."""
    from backend.units import convert
    from tests.backend.conftest import random_db, write_raster
    stored = np.round(convert(random_db((64, 80), seed=4), "dB", "linear") * 10000)
    src = write_raster(tmp_path / "x10000.tif", stored.astype(np.uint16), nodata=None)
    message = refusal(out, models["threshold"], [src])
    assert message.startswith(f"{src}: the VV median is ")
    vv_db = 10 * np.log10(np.median(stored[0]) / 10000)
    assert f"linear sigma0 x 10000 as integers (a common SNAP or Earth Engine export; the " \
           f"median would be {vv_db:.1f} dB)" in message, message
    assert "gdal_translate -a_scale 0.0001 IN.tif OUT.tif" in message
    with rasterio.open(src, "r+") as ds:
        ds.scales = (1e-4, 1e-4)
    predict(PredictOptions([src], mask=str(out / "m.tif"), model=models["threshold"]))
    with rasterio.open(out / "m.tif") as m:
        expected = 10 * np.log10(stored[0] * 1e-4) < -15
        np.testing.assert_array_equal(m.read(1), expected.astype(np.uint8))


def test_a_hyp3_zip_is_refused_naming_its_vv_and_vh_inside_its_folder(out, models, tmp_path):
    """An ASF HyP3 zip holds a folder named like the product with ..._VV.tif and ..._VH.tif
    (and DEM and maps): the advice names those /vsizip/ paths (it gave ZIP/NAME.tif, with no
    folder), and they are read."""
    import zipfile
    from tests.backend.conftest import random_db, write_raster
    product = "S1A_IW_20230301T053516_DVP_RTC30_G_gpuned_5F2A"
    bands = random_db((64, 80), seed=5)
    files = {"VV": bands[0], "VH": bands[1], "dem": bands[0] * 0 + 120, "ls_map": bands[0] * 0}
    archive = tmp_path / f"{product}.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for suffix, band in files.items():
            tif = write_raster(tmp_path / f"{suffix}.tif", band, descriptions=None)
            z.write(tif, f"{product}/{product}_{suffix}.tif")
        z.writestr(f"{product}/{product}.README.md.txt", "HyP3 RTC product")
    inside = [f"/vsizip/{archive}/{product}/{product}_{b}.tif" for b in ("VV", "VH")]
    assert refusal(out, models["threshold"], [archive]) == (
        f"{archive}: is a zip archive; give the rasters inside it: {inside[0]} {inside[1]} "
        "(or unzip it)")
    r = predict(PredictOptions(inside, mask=str(out / "m.tif"), model=models["threshold"]))
    assert r["bands"]["VV"]["path"] == inside[0] and r["bands"]["VH"]["path"] == inside[1]


DIM = """<?xml version="1.0" encoding="ISO-8859-1"?>
<Dimap_Document name="{name}.dim">
    <Metadata_Id>
        <METADATA_FORMAT version="2.12.1">DIMAP</METADATA_FORMAT>
        <METADATA_PROFILE>BEAM-DATAMODEL-V1</METADATA_PROFILE>
    </Metadata_Id>
    <Raster_Dimensions><NCOLS>80</NCOLS><NROWS>64</NROWS><NBANDS>2</NBANDS></Raster_Dimensions>
    <Data_Access>
        <DATA_FILE_FORMAT>ENVI</DATA_FILE_FORMAT>
        <Data_File>
            <DATA_FILE_PATH href="{name}.data/Sigma0_VH.hdr" /><BAND_INDEX>0</BAND_INDEX>
        </Data_File>
        <Data_File>
            <DATA_FILE_PATH href="{name}.data/Sigma0_VV.hdr" /><BAND_INDEX>1</BAND_INDEX>
        </Data_File>
    </Data_Access>
</Dimap_Document>
"""


def test_a_beam_dimap_header_is_refused_naming_the_img_files_to_give(out, models, tmp_path):
    """SNAP's .dim is an XML header; GDAL's DIMAP driver fails on it (with a message about
    ENVI headers, or a missing file): the message names the .data folder's .img files,
    which are read, or says the folder is missing."""
    from backend.units import convert
    from tests.backend.conftest import random_db
    name = "S1A_IW_GRDH_Orb_Cal_TC"
    dim = tmp_path / f"{name}.dim"
    dim.write_text(DIM.format(name=name))
    data = tmp_path / f"{name}.data"
    expected = ("is the header of SNAP's BEAM-DIMAP format (.dim), which GDAL does not read "
                "as a raster; ")
    export = "or export GeoTIFF from SNAP (File > Export > GeoTIFF)"
    assert refusal(out, models["threshold"], [dim]) == (
        f"{dim}: {expected}its bands are in the folder {data}, which is missing (copy it with "
        f"the .dim and give its .img files), {export}")
    data.mkdir()
    bands = convert(random_db((64, 80), seed=6), "dB", "linear")
    for band, pol in zip(bands, ("VV", "VH")):   # as SNAP writes them: ENVI, a .hdr beside
        with rasterio.open(data / f"Sigma0_{pol}.img", "w", driver="ENVI", width=80, height=64,
                           count=1, dtype="float32", crs="EPSG:32633",
                           transform=rasterio.transform.from_origin(5e5, 5e6, 10, 10)) as ds:
            ds.write(band, 1)
    (data / "vector_data").mkdir()
    images = [str(data / f"Sigma0_{pol}.img") for pol in ("VV", "VH")]
    assert refusal(out, models["threshold"], [dim]) == (
        f"{dim}: {expected}give the .img files of its .data folder: {images[0]} {images[1]}; "
        f"{export}")
    r = predict(PredictOptions(images, mask=str(out / "m.tif"), model=models["threshold"]))
    assert r["units_detected"] == "linear"


# on the model's grid, finer (a float VH with NaN tags: GDAL's read-time average) and coarser
@pytest.mark.parametrize("vh_type, pixel", [("int16", 10.0), ("int16", 5.0), ("float64", 5.0),
                                            ("int16", 20.0)])
def test_a_vrt_stacking_bands_of_two_types_is_read(out, models, tmp_path, vh_type, pixel):
    """gdalbuildvrt -separate over a Float32 VV and an Int16 or Float64 VH makes one dataset
    whose bands differ in type; reading both in one call stopped every run with "internal
    error: more than one 'dtype' found". Its mask is the one of the same bands in one
    Float32 file, on the model's grid and resampled to it."""
    from osgeo import gdal
    from tests.backend.conftest import random_db, write_raster
    vv = random_db((64, 80), seed=5)[0]
    vh = np.round(vv - 7).astype(vh_type)
    nodata = float("nan") if vh_type == "float64" else None
    vv_file = write_raster(tmp_path / "vv.tif", vv.astype(np.float32), nodata=nodata,
                           pixel=pixel, descriptions=("VV",))
    vh_file = write_raster(tmp_path / "vh.tif", vh, nodata=nodata, pixel=pixel,
                           descriptions=("VH",))
    vrt = tmp_path / "stack.vrt"
    gdal.BuildVRT(str(vrt), [str(vv_file), str(vh_file)], separate=True).FlushCache()
    with rasterio.open(vrt) as ds:
        assert ds.dtypes == ("float32", vh_type)
    same = write_raster(tmp_path / "same.tif", np.stack([vv, vh]).astype(np.float32),
                        nodata=nodata, pixel=pixel)
    for scene, mask in ((vrt, out / "m.tif"), (same, out / "same.tif")):
        predict(PredictOptions([scene], mask=str(mask), model=models["threshold"]))
    with rasterio.open(out / "m.tif") as m, rasterio.open(out / "same.tif") as want:
        np.testing.assert_array_equal(m.read(1), want.read(1))
        if pixel == 10.0:
            np.testing.assert_array_equal(m.read(1), (vv < -15).astype(np.uint8))
