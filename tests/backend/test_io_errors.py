"""Bad input: one clear line naming the file and the problem, and no output file."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin

from backend.card import CARD_KEY
from backend.engine import PredictOptions, predict
from backend.otsu import OtsuOptions, otsu_map
from backend.errors import (BackendError, CardError, InputError, ModelError, OutputError,
                            UsageError)
from tests.backend.conftest import REPO, Collect, listing, random_db, run_cli, write_raster
from tests.conftest import write_netcdf_bands
from training.toy_models import raw_db_card, threshold_model


@pytest.fixture
def out(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
def good(tmp_path) -> str:
    return write_raster(tmp_path / "good.tif", random_db((64, 80)))


def refused(out: Path, error: type, match: str, inputs, model=None, **kw):
    opts = PredictOptions(inputs=[str(i) for i in inputs], mask=str(out / "m.tif"),
                          probability=str(out / "p.tif"), model=model, **kw)
    with pytest.raises(error) as err:
        predict(opts)
    message = str(err.value)
    assert "\n" not in message
    assert match in message, message
    assert listing(out) == [], "an error must leave no output"
    return message


def test_missing_file(out, models, tmp_path):
    refused(out, InputError, f"{tmp_path}/nope.tif: file not found", [tmp_path / "nope.tif"],
            models["threshold"])


def test_folder_given_as_input(out, models, tmp_path):
    refused(out, InputError, "is a folder, not a raster file", [tmp_path], models["threshold"])


def test_file_that_is_not_a_raster(out, models, tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("not a raster\n")
    refused(out, InputError, f"{text}: not a raster GDAL can read", [text], models["threshold"])


def test_wrong_band_count(out, models, real_chips):
    s2 = real_chips / "S2Hand" / "Spain_7370579_S2Hand.tif"
    refused(out, InputError, f"{s2}: has 13 bands; expected 2 bands (VV, VH)", [s2],
            models["threshold"])


def test_single_band_raster_for_a_two_band_model(out, models, tmp_path):
    vv = write_raster(tmp_path / "only.tif", random_db((32, 32))[:1], descriptions=("VV",))
    refused(out, InputError, "has 1 band (VV); the model needs VV, VH", [vv], models["threshold"])


def test_a_single_unnamed_band_says_it_was_named_by_position(out, models, tmp_path):
    """'has 1 band (VV)' read as a fact about the file; for a VH-only model it was a guess."""
    one = write_raster(tmp_path / "scene.tif", random_db((32, 32))[:1], descriptions=None)
    refused(out, InputError, "has 1 band (VV, taken as VV for want of a name: a band description "
            "or file name with VH says otherwise); the model needs VV, VH", [one], models["threshold"])


def test_vv_and_vh_on_different_grids(out, models, tmp_path):
    b = random_db((50, 60))
    vv = write_raster(tmp_path / "s1_vv.tif", b[:1], descriptions=None)
    for name, kw, what in [("size", dict(bands=b[1:, :40]), "60x50 vs 60x40 pixels"),
                           ("crs", dict(bands=b[1:], crs="EPSG:32632"),
                            "CRS EPSG:32633 vs EPSG:32632"),
                           ("shift", dict(bands=b[1:], origin=(500010.0, 5000000.0)),
                            "the geotransforms differ")]:
        vh = write_raster(tmp_path / f"s1_vh_{name}.tif", descriptions=None, **kw)
        msg = refused(out, InputError, "are on different grids", [vv, vh], models["threshold"])
        assert vv in msg and vh in msg and what in msg
    # 0.004 pixel off, as a geotransform one export rounded to float32: the same grid
    rounded = write_raster(tmp_path / "s1_vh_float32.tif", b[1:], descriptions=None,
                           origin=(500000.04, 5000000.0))
    predict(PredictOptions(inputs=[vv, rounded], mask=str(out / "m.tif"),
                           model=models["threshold"]))
    assert listing(out) == ["m.tif"]


def test_a_lon_first_wgs84_is_the_same_grid_as_epsg_4326(out, models, tmp_path):
    """An ENVI file in OGC:CRS84 (WGS 84, longitude first; GeoPackage rasters read the
    same) beside an EPSG:4326 GeoTIFF (latitude first) on the same grid was refused as
    'different grids'; a NAD83 one still is."""
    b = random_db((40, 50))
    transform = from_origin(-57.5, -6.0, 8.983e-05, 8.983e-05)
    vv = str(tmp_path / "s1_vv.tif")
    profile = dict(width=50, height=40, count=1, dtype="float32", transform=transform)
    with rasterio.open(vv, "w", driver="GTiff", crs="EPSG:4326", **profile) as ds:
        ds.write(b[:1])
    for name, crs in (("nad83", "EPSG:4269"), ("crs84", "OGC:CRS84")):
        vh = str(tmp_path / f"s1_vh_{name}.img")
        with rasterio.open(vh, "w", driver="ENVI", crs=crs, **profile) as ds:
            ds.write(b[1:])
        with rasterio.open(vh) as ds:
            assert ds.crs.to_string() == crs   # what the check compares with EPSG:4326
        if name == "nad83":
            msg = refused(out, InputError, "are on different grids", [vv, vh], models["threshold"])
            assert "CRS EPSG:4326 vs EPSG:4269" in msg
            continue
        predict(PredictOptions(inputs=[vv, vh], mask=str(out / f"{name}.tif"),
                               model=models["threshold"]))
        with rasterio.open(out / f"{name}.tif") as mask:
            assert mask.crs == rasterio.crs.CRS.from_epsg(4326) and mask.transform == transform


def test_two_inputs_must_each_hold_one_band(out, models, good, tmp_path):
    other = shutil.copy(good, tmp_path / "other.tif")
    refused(out, InputError, "has 2 bands; with two inputs each must hold one band",
            [good, other], models["threshold"])


def test_raster_without_georeferencing(out, models, tmp_path):
    plain = write_raster(tmp_path / "plain.tif", random_db((16, 16)), crs=None)
    refused(out, InputError, f"{plain}: has no georeferencing", [plain], models["threshold"])


def test_a_grid_without_a_crs_is_told_how_to_give_it_one(out, models, tmp_path):
    """It was said to have no georeferencing, though it has a geotransform (as a file
    whose CRS an analyst set on its QGIS layer only)."""
    path = str(tmp_path / "no_crs.tif")
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=2,
                       dtype="float32", transform=from_origin(500000, 5000000, 10, 10)) as ds:
        ds.write(random_db((16, 16)))
    msg = refused(out, InputError, f"{path}: has a grid but no CRS", [path], models["threshold"])
    assert "Assign Projection" in msg and "gdal_edit.py -a_srs" in msg


@pytest.mark.parametrize("kind", ["mask", "probability"])
def test_an_output_of_ours_is_refused_as_radar_input(out, models, tmp_path, kind):
    """A run's mask of a scene named ..._VV.tif carries _VV_ in its name: the plugin took
    it for the VV input of the next run, which mapped its 0/1 codes as backscatter."""
    first = tmp_path / "first"
    first.mkdir()
    scene = write_raster(tmp_path / "scene.tif", random_db((32, 32)))
    predict(PredictOptions([scene], mask=str(first / "mask.tif"),
                           probability=str(first / "probability.tif"), model=models["threshold"]))
    vh = write_raster(tmp_path / "vh.tif", random_db((32, 32))[1], descriptions=("VH",))
    made = str(first / f"{kind}.tif")
    msg = refused(out, InputError, f"{made}: is a {kind} written by SAR Flood Mapper, not "
                  "Sentinel-1 backscatter; give the VV and VH scene", [made, vh],
                  models["threshold"])
    assert vh not in msg


def test_a_grd_located_by_control_points_is_sent_to_calibration(out, models, tmp_path):
    """The measurement TIFF of a Sentinel-1 GRD: digital numbers, GCPs, no map grid."""
    from rasterio.control import GroundControlPoint
    path = str(tmp_path / "measurement.tif")
    gcps = [GroundControlPoint(r, c, 10 + c / 1000, 45 - r / 1000)
            for r in (0, 100) for c in (0, 100)]
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=2,
                       dtype="uint16") as ds:
        ds.write(np.full((2, 100, 100), 300, np.uint16))
        ds.gcps = (gcps, rasterio.crs.CRS.from_epsg(4326))
    refused(out, InputError, f"{path}: is located by ground control points only",
            [path], models["threshold"])


def test_an_int16_band_of_db_x100_without_its_scale_is_refused(out, models, tmp_path):
    """Its few pixels above -1 dB were taken as the only data: an all-no-data map, exit 0
    (predict), and Otsu's threshold drawn from them."""
    db = random_db((120, 100), seed=3)
    db[:, :2, :3] = 0.5                              # a few bright pixels survive
    path = write_raster(tmp_path / "x100.tif", np.round(db * 100).astype(np.int16),
                        nodata=-32768)
    message = "of the sampled VV values (from -"
    refused(out, InputError, message, [path], models["threshold"])
    with pytest.raises(InputError, match="needs its GDAL scale"):
        otsu_map(OtsuOptions([path], mask=str(out / "o.tif")))
    with rasterio.open(path, "r+") as ds:
        ds.scales = (0.01, 0.01)
    r = predict(PredictOptions([path], mask=str(out / "m.tif"), model=models["threshold"]))
    assert r["valid_pixels"] == 120 * 100


def test_all_nan_chip_writes_all_nodata_with_a_warning(out, models, real_chips):
    chip = real_chips / "S1Hand" / "Paraguay_34417_S1Hand.tif"
    rep = Collect()
    r = predict(PredictOptions([str(chip)], mask=str(out / "m.tif"), probability=str(out / "p.tif"),
                               model=models["threshold"]), rep)
    assert r["valid_pixels"] == 0 and r["water_area_km2"] == 0 and r["water_fraction"] == 0
    assert any("no valid pixel" in w and str(chip) in w for w in rep.warnings)
    with rasterio.open(out / "m.tif") as m, rasterio.open(out / "p.tif") as p:
        assert (m.read(1) == 255).all() and np.isnan(p.read(1)).all()


def test_corrupt_onnx(out, good, tmp_path):
    bad = tmp_path / "bad.onnx"
    data = threshold_model().SerializeToString()
    bad.write_bytes(data[: len(data) // 2])
    refused(out, ModelError, f"{bad}: not a loadable ONNX model", [good], str(bad))


def test_missing_model_file(out, good, tmp_path):
    refused(out, ModelError, f"{tmp_path}/none.onnx: model file not found", [good],
            str(tmp_path / "none.onnx"))


def test_model_without_card(out, good, tmp_path):
    model = threshold_model()
    del model.metadata_props[:]
    path = tmp_path / "nocard.onnx"
    onnx.save(model, path)
    refused(out, CardError, f"{path}: no model card", [good], str(path))


def test_card_that_does_not_match_the_graph(out, good, tmp_path):
    model = threshold_model()
    card = raw_db_card("x", margin=0, bands=("VV",))
    onnx.helper.set_model_props(model, {CARD_KEY: card.to_json()})
    path = tmp_path / "mismatch.onnx"
    onnx.save(model, path)
    refused(out, CardError, "has 2 channels but the card lists 1 bands", [good], str(path))


def test_inputs_that_are_both_vv(out, models, tmp_path):
    b = random_db((20, 20))
    a = write_raster(tmp_path / "a_vv.tif", b[:1], descriptions=None)
    c = write_raster(tmp_path / "c_vv.tif", b[1:], descriptions=None)
    refused(out, InputError, "are both VV; expected one VV and one VH", [a, c], models["threshold"])


def test_output_folder_not_writable(models, good, tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses even root
        folder = Path("/sys/fs")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    with pytest.raises(OutputError, match=f"{folder}/m.tif: cannot write in the folder {folder}"):
        predict(PredictOptions([good], mask=str(folder / "m.tif"), model=models["threshold"]))
    assert not (folder / "m.tif").exists()


def test_output_folder_missing(out, models, good):
    refused(out, OutputError, "does not exist", [good], models["threshold"],
            uncertainty=str(out / "no" / "u.tif"))


def test_output_equal_to_input(models, good, tmp_path):
    before = Path(good).read_bytes()
    with pytest.raises(OutputError, match=f"{good}: the mask output is also an input"):
        predict(PredictOptions([good], mask=good, model=models["threshold"]))
    assert Path(good).read_bytes() == before


def test_an_output_reaching_an_input_by_another_path_is_refused(models, good, tmp_path):
    """A hard link stands for every path realpath does not collapse (a bind mount, another
    letter case on a case-insensitive disk, a UNC path and its mapped drive): with
    --overwrite the input was replaced by the mask."""
    other = tmp_path / "same_file.tif"
    os.link(good, other)
    before = Path(good).read_bytes()
    with pytest.raises(OutputError, match=f"{other}: the mask output is also an input"):
        predict(PredictOptions([good], mask=str(other), model=models["threshold"],
                               overwrite=True))
    assert Path(good).read_bytes() == before


def test_one_file_given_as_vv_and_vh_by_two_paths_is_refused(models, tmp_path):
    vv = write_raster(tmp_path / "vv.tif", random_db((64, 80))[:1], descriptions=("VV",))
    os.link(vv, tmp_path / "vh.tif")
    with pytest.raises(InputError, match="vh.tif: given twice \\(the same file as "):
        predict(PredictOptions([vv, str(tmp_path / "vh.tif")], mask=str(tmp_path / "m.tif"),
                               model=models["threshold"]))
    assert not (tmp_path / "m.tif").exists()


def _stack_vrt(path: Path, like: str, sources: tuple[tuple[str, int], ...]) -> Path:
    """A VRT of ``like``'s grid with bands VV and VH: (file beside it, band) each."""
    with rasterio.open(like) as a:
        blocks = "".join(
            f'<VRTRasterBand dataType="Float32" band="{k}"><Description>{name}</Description>'
            f'<SimpleSource><SourceFilename relativeToVRT="1">{file}'
            f'</SourceFilename><SourceBand>{band}</SourceBand></SimpleSource></VRTRasterBand>'
            for k, name, (file, band) in zip((1, 2), ("VV", "VH"), sources))
        path.write_text(f'<VRTDataset rasterXSize="{a.width}" rasterYSize="{a.height}">'
                        f'<SRS>{a.crs.to_wkt()}</SRS><GeoTransform>'
                        f'{", ".join(map(str, a.transform.to_gdal()))}</GeoTransform>'
                        f'{blocks}</VRTDataset>')
    return path


@pytest.mark.parametrize("nested", [False, True])
def test_an_output_may_not_replace_a_vrts_source(models, tmp_path, nested):
    """Nested: a VRT over a VRT (mosaics are built so); GDAL lists one level of sources, and
    --overwrite replaced the radar file under the inner VRT with the mask."""
    vv = write_raster(tmp_path / "vv.tif", random_db((64, 80))[:1], descriptions=("VV",))
    vh = write_raster(tmp_path / "vh.tif", random_db((64, 80), seed=1)[:1], descriptions=("VH",))
    vrt = _stack_vrt(tmp_path / "stack.vrt", vv, (("vv.tif", 1), ("vh.tif", 1)))
    if nested:
        vrt = _stack_vrt(tmp_path / "mosaic.vrt", vv, (("stack.vrt", 1), ("stack.vrt", 2)))
    before = Path(vh).read_bytes()
    with pytest.raises(OutputError, match=f"{vh}: the mask output is a file an input reads"):
        predict(PredictOptions([str(vrt)], mask=vh, model=models["threshold"], overwrite=True))
    assert Path(vh).read_bytes() == before


@pytest.mark.parametrize("name, match", [
    ("m.png", "m.png: the mask output is a GeoTIFF; give it a .tif name"),
    ("afile/m.tif", "afile/m.tif: {out}/afile is a file, not a folder"),
])
def test_output_names_that_cannot_be_a_geotiff_here(out, models, good, name, match):
    (out / "afile").write_text("a file")
    with pytest.raises(OutputError, match=match.format(out=out)):
        predict(PredictOptions([good], mask=str(out / name), model=models["threshold"]))
    assert listing(out) == ["afile"]


def test_existing_output_needs_overwrite(out, models, good):
    (out / "m.tif").write_text("keep me")
    with pytest.raises(OutputError, match="m.tif: exists; use --overwrite to replace it"):
        predict(PredictOptions([good], mask=str(out / "m.tif"), model=models["threshold"]))
    assert (out / "m.tif").read_text() == "keep me"
    # what QGIS (GDAL) kept beside the old file would be read for the new one: statistics,
    # external overviews (QGIS's pyramids; an output this small has no internal ones) and an
    # external mask
    old = write_raster(out / "m.tif", np.full((64, 80), 7, np.uint8), nodata=None, descriptions=None)
    from osgeo import gdal   # (rasterio builds overviews inside the file only)
    gdal.Open(old).BuildOverviews("NEAREST", [2, 4])   # opened read-only: external, as QGIS's
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(old, "r+") as ds:
        ds.write_mask(np.zeros((64, 80), np.uint8))
    (out / "m.tif.aux.xml").write_text("<PAMDataset>stale statistics</PAMDataset>")
    assert listing(out) == ["m.tif", "m.tif.aux.xml", "m.tif.msk", "m.tif.ovr"]
    predict(PredictOptions([good], mask=str(out / "m.tif"), model=models["threshold"],
                           overwrite=True))
    assert listing(out) == ["m.tif"]
    with rasterio.open(out / "m.tif") as m:
        assert m.shape == (64, 80)
        full = m.read(1)
        assert set(np.unique(full)) <= {0, 1, 255} and (m.read_masks(1) > 0).any()
        assert set(np.unique(m.read(1, out_shape=(32, 40)))) <= {0, 1, 255}


def test_cuda_asked_where_there_is_none(out, models, good):
    refused(out, ModelError, "device 'cuda' was asked for, but this onnxruntime build has no "
            "CUDAExecutionProvider", [good], models["threshold"], device="cuda")


def test_auto_falls_back_to_cpu_and_says_why(out, models, good):
    r = predict(PredictOptions([good], mask=str(out / "m.tif"), model=models["threshold"]))
    assert r["device"] == "cpu" and r["provider"] == "CPUExecutionProvider"
    assert any("CUDA not used" in n for n in r["provider_notes"])


def test_extent_outside_the_raster(out, models, good):
    # the raster: 80 x 64 pixels of 10 m from (500000, 5000000) down
    refused(out, InputError, f"{good}: the extent 0,0,10,10 does not overlap the raster "
            "(bounds 500000,4999360,500800,5000000 in EPSG:32633)", [good],
            models["threshold"], extent=(0.0, 0.0, 10.0, 10.0))
    # given in another CRS: both forms, so a swapped latitude and longitude shows
    refused(out, InputError, f"{good}: the extent 45.1,3,45.2,3.1 (in EPSG:4326; ",
            [good], models["threshold"], extent=(45.1, 3.0, 45.2, 3.1), extent_crs="EPSG:4326")


def test_an_extent_partly_outside_the_raster_is_clipped_with_a_note(out, models, good):
    """The outputs came out smaller than asked, and nothing said so."""
    rep = Collect()
    r = predict(PredictOptions([good], mask=str(out / "m.tif"), model=models["threshold"],
                               extent=(500400.0, 4999000.0, 501000.0, 5000000.0)), rep)
    assert (r["width"], r["height"]) == (40, 64)
    assert any("reaches past the raster: the outputs cover only its part inside (40 x 64 "
               "pixels" in m for m in rep.infos), rep.infos
    rep = Collect()
    otsu_map(OtsuOptions([good], mask=str(out / "o.tif"),
                         extent=(500400.0, 4999000.0, 501000.0, 5000000.0)), rep)
    assert any("reaches past the raster" in m for m in rep.infos)
    rep = Collect()
    predict(PredictOptions([good], mask=str(out / "m2.tif"), model=models["threshold"],
                           extent=(500100.0, 4999500.0, 500300.0, 4999900.0)), rep)
    assert not any("reaches past" in m for m in rep.infos)


@pytest.mark.parametrize("kw, match", [
    (dict(threshold=1.5), "threshold 1.5: must lie strictly between 0 and 1"),
    # float32 probabilities: it acted as 1 (no water) or 0 (all water), tagged as such
    (dict(threshold=0.9999999999), r"threshold 0.9999999999: rounds to 1 in the float32 "
     r"probabilities; give one between 1e-7 and 0.9999999"),
    (dict(threshold=1e-46), "threshold 1e-46: rounds to 0 in the float32"),
    (dict(tile_size=100), "tile size 100 must be a positive multiple of 16"),
    (dict(overlap=0, model="smoothed"), "overlap 0 is below twice the model's margin"),
    (dict(batch_size=0), "batch size 0: must be at least 1"),
    # a blend zone wider than a cell used to fail mid-run on an array shape
    (dict(overlap=261, model="smoothed"), "overlap 261 leaves a blend zone (257 px: the "
     "overlap less twice the margin) wider than the tile size 256; give an overlap of at "
     "most 260"),
    (dict(tile_size=4112), "tile size 4112 is above 4096"),
])
def test_bad_options(out, models, good, kw, match):
    kw = {**kw, "model": models[kw.get("model", "threshold")]}
    refused(out, UsageError, match, [good], **kw)


def test_every_error_is_a_backend_error():
    for e in (InputError, OutputError, UsageError, CardError, ModelError):
        assert issubclass(e, BackendError)


def test_corrupt_geotiff_data_fails_when_read(out, models, tmp_path):
    """The header is intact, so it opens; the compressed data is garbage, so reading fails."""
    path = tmp_path / "corrupt.tif"
    bands = random_db((256, 256))
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=2,
                       dtype="float32", crs="EPSG:32633", compress="deflate",
                       transform=rasterio.transform.from_origin(0, 256, 1, 1)) as ds:
        ds.write(bands)
    data = bytearray(path.read_bytes())
    data[2000:200000] = np.random.default_rng(0).integers(0, 256, 198000, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    message = refused(out, InputError, f"{path}: cannot read rows", [path], models["threshold"])
    assert "See previous exception" not in message   # GDAL's own reason, not rasterio's pointer


@pytest.mark.parametrize("pixel, failing", [
    (10.0, "p.tif: cannot be written"),
    (20.0, "m.tif: cannot be written (the model-grid file of the resampling pass")])
def test_a_write_that_fails_midway_gives_one_error_and_no_file(out, models, tmp_path, pixel,
                                                              failing):
    """As a full disk would: the process may write no file beyond 1 MB (RLIMIT_FSIZE), so
    the float probability (9 MB of noise) fails part way through, in the output itself or,
    when resampled, in the model-grid file of the first pass."""
    src = write_raster(tmp_path / "in.tif", random_db((1500, 1500), seed=11), pixel=pixel)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # fail the write, not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    proc = run_cli("predict", src, "--mask", str(out / "m.tif"), "--probability",
                   str(out / "p.tif"), "--model", models["threshold"], "--progress", "json",
                   preexec_fn=limit_file_size)
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode != 0
    assert (last["event"], last["kind"]) == ("error", "OutputError")
    assert failing in last["message"] and "\n" not in last["message"]
    assert listing(out) == [], "a failed write must leave no output"


def test_a_model_grid_file_cut_short_without_an_error_names_the_output(out, models, tmp_path):
    """A disk that fills as the model-grid file of the resampling pass is closed: libtiff
    says so on stderr only, and the second pass failed reading it, an internal error
    (RasterioIOError IReadBlock failed) naming the hidden file. The file, 5.2 MB whole,
    may grow to 5.2e6 bytes here (RLIMIT_FSIZE): its last blocks are lost as it closes."""
    src = write_raster(tmp_path / "in.tif", random_db((600, 600), seed=11), pixel=20.0)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (5_200_000, 5_200_000))

    proc = run_cli("predict", src, "--mask", str(out / "m.tif"), "--model", models["threshold"],
                   "--progress", "json", preexec_fn=limit_file_size)
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (last["event"], last["kind"]) == ("error", "OutputError"), last
    assert last["message"].startswith(f"{out / 'm.tif'}: cannot be written (the model-grid")
    assert "sarflood-tmp" not in last["message"], last["message"]
    assert listing(out) == []


def test_a_model_grid_block_that_does_not_read_back_names_the_output(out, models, tmp_path,
                                                                     monkeypatch):
    """A block of the model-grid file that not_whole passed but GDAL cannot read in the
    second pass was an internal error (RasterioIOError) naming the hidden file."""
    from rasterio.errors import RasterioIOError

    from backend import engine

    def unreadable(*_args):
        raise RasterioIOError("IReadBlock failed at X offset 2, Y offset 3")

    monkeypatch.setattr(engine, "read_scaled", unreadable)
    src = write_raster(tmp_path / "in.tif", random_db((100, 100), seed=3), pixel=20.0)
    with pytest.raises(OutputError) as err:
        predict(PredictOptions([src], mask=str(out / "m.tif"), model=models["threshold"]))
    assert str(err.value).startswith(f"{out / 'm.tif'}: cannot be written (the model-grid")
    assert "it does not read back: IReadBlock failed" in str(err.value)
    assert listing(out) == []


def test_the_model_grid_file_is_removed_where_a_second_signal_waits(out, models, tmp_path,
                                                                     monkeypatch):
    """Its removal ran outside cleaning_up(): a second Ctrl-C or SIGTERM then (which stops
    a run at once otherwise) left the hidden model-grid file behind."""
    from backend import pipeline

    removed = []
    unlink = os.unlink

    def watched(path, *args, **kw):
        if "sarflood-model-grid" in str(path):
            removed.append(pipeline.is_cleaning_up())
        return unlink(path, *args, **kw)

    monkeypatch.setattr(os, "unlink", watched)
    src = write_raster(tmp_path / "in.tif", random_db((100, 100), seed=3), pixel=20.0)
    predict(PredictOptions([src], mask=str(out / "m.tif"), model=models["threshold"]))
    assert removed == [True]


def test_a_geotiff_inside_a_zip_is_read_in_place(out, models, good, tmp_path):
    """ASF HyP3 delivers zips: /vsizip/ paths reach GDAL as given, and name the input."""
    import zipfile
    archive = tmp_path / "hyp3.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(good, "scene/good.tif")
    inside = f"/vsizip/{archive}/scene/good.tif"
    r = predict(PredictOptions([inside], mask=str(out / "zipped.tif"), model=models["threshold"]))
    plain = predict(PredictOptions([good], mask=str(out / "plain.tif"), model=models["threshold"]))
    with rasterio.open(out / "zipped.tif") as a, rasterio.open(out / "plain.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert a.tags()["SARFLOOD_INPUTS"] == inside
    assert r["water_pixels"] == plain["water_pixels"]
    for name in ("zipped.tif", "plain.tif"):
        (out / name).unlink()
    refused(out, InputError, f"/vsizip/{archive}/scene/other.tif: not a raster GDAL can read",
            [f"/vsizip/{archive}/scene/other.tif"], models["threshold"])
    # the archive itself, and an empty file: GDAL's generic 'not recognized' said neither
    refused(out, InputError, f"{archive}: is a zip archive; give the rasters inside it: "
            f"/vsizip/{archive}/scene/good.tif (or unzip it)", [archive], models["threshold"])
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    refused(out, InputError, f"{empty}: is empty (0 bytes)", [empty], models["threshold"])


def test_netcdf_subdatasets_are_read_as_gdal_names_them(out, models, tmp_path):
    """SNAP's NetCDF export: each band is a subdataset (NETCDF:"scene.nc":Sigma0_VV_db), which
    GDAL opens though it is no file path; the bands are named from the variable names."""
    rng = np.random.default_rng(3)
    vv = (-12 + 3 * rng.standard_normal((60, 70))).astype(np.float32)
    vv[20:40, 20:50] = -22
    nc = tmp_path / "snap.nc"
    write_netcdf_bands(nc, {"Sigma0_VV_db": vv, "Sigma0_VH_db": vv - 7})
    names = [f'NETCDF:"{nc}":Sigma0_VH_db', f'NETCDF:"{nc}":Sigma0_VV_db']
    r = predict(PredictOptions(names, mask=str(out / "m.tif"), model=models["threshold"]))
    assert r["bands"]["VV"]["path"] == names[1] and r["bands"]["VV"]["named_by"] == "file name"
    with rasterio.open(out / "m.tif") as m:
        assert m.tags()["SARFLOOD_INPUTS"] == ";".join(names)
        assert m.shape == vv.shape
    (out / "m.tif").unlink()
    refused(out, InputError, f'NETCDF:"{tmp_path}/other.nc":Sigma0_VV_db: not a raster GDAL can '
            "read", [f'NETCDF:"{tmp_path}/other.nc":Sigma0_VV_db'], models["threshold"])


def _graph(nodes, out_type=onnx.TensorProto.FLOAT, out_shape=("N", 1, "H", "W"),
           in_type=onnx.TensorProto.FLOAT, in_shape=("N", 2, "H", "W"), initializers=(),
           card_json=None):
    """A one-input, one-output graph with a raw-dB card (or ``card_json``)."""
    h = onnx.helper
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("s1", in_type, list(in_shape))],
                         [h.make_tensor_value_info("water_probability", out_type,
                                                   list(out_shape))], list(initializers))
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    h.set_model_props(model, {CARD_KEY: card_json or raw_db_card("byo", margin=0).to_json()})
    return model


def _vv_channel():
    """The VV channel as it comes: raw dB values (about -15), not a probability."""
    starts = onnx.numpy_helper.from_array(np.array([0], np.int64), "starts")
    ends = onnx.numpy_helper.from_array(np.array([1], np.int64), "ends")
    axes = onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")
    return [onnx.helper.make_node("Slice", ["s1", "starts", "ends", "axes"],
                                  ["water_probability"])], [starts, ends, axes]


def test_a_model_that_outputs_logits_is_refused(out, good, tmp_path):
    """Raw scores were taken as probabilities: the mask was 'logit > 0.5', exit 0."""
    nodes, inits = _vv_channel()
    path = tmp_path / "logits.onnx"
    onnx.save(_graph(nodes, initializers=inits), path)
    refused(out, ModelError, "not a probability in 0..1: logits?", [good], str(path))


def test_a_model_that_outputs_nan_is_refused(out, good, tmp_path):
    """NaN turned valid pixels into no data without a word (sqrt of negative dB here)."""
    nodes, inits = _vv_channel()
    nodes[0].output[0] = "vv"
    nodes.append(onnx.helper.make_node("Sqrt", ["vv"], ["water_probability"]))
    path = tmp_path / "nan.onnx"
    onnx.save(_graph(nodes, initializers=inits), path)
    refused(out, ModelError, "holds NaN or infinite values", [good], str(path))


@pytest.mark.parametrize("case, expected", [
    ("two-class output", "expected (N, 1, H, W) or (N, H, W) for kind water_probability"),
    ("integer output", "is tensor(int64); the backend reads float32"),
    ("float16 input", "is tensor(float16); the backend feeds float32"),
    ("non-square fixed input", "H and W must be equal"),
    ("fixed tile too small for the margin", "fixed 64-pixel tiles, overlapping by twice "
                                            "tiling.margin (40), leave cells under 16 px; give "
                                            "a margin of at most 24"),
])
def test_card_and_predict_agree_on_graphs_the_backend_cannot_run(out, good, tmp_path, case,
                                                                 expected):
    """`backend card` (and the plugin's card box) said valid, then every run failed."""
    h = onnx.helper
    kw = {}
    if case == "two-class output":
        nodes = [h.make_node("Sigmoid", ["s1"], ["water_probability"])]
        kw = dict(out_shape=("N", 2, "H", "W"))
    elif case == "integer output":
        nodes = [h.make_node("ArgMax", ["s1"], ["water_probability"], axis=1, keepdims=0)]
        kw = dict(out_type=onnx.TensorProto.INT64, out_shape=("N", "H", "W"))
    elif case == "float16 input":
        nodes = [h.make_node("Cast", ["s1"], ["x"], to=onnx.TensorProto.FLOAT),
                 h.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1),
                 h.make_node("Sigmoid", ["y"], ["water_probability"])]
        kw = dict(in_type=onnx.TensorProto.FLOAT16)
    else:
        nodes = [h.make_node("ReduceMean", ["s1"], ["y"], axes=[1], keepdims=1),
                 h.make_node("Sigmoid", ["y"], ["water_probability"])]
        kw = dict(in_shape=(1, 2, 64, 32) if case == "non-square fixed input" else (1, 2, 64, 64),
                  card_json=raw_db_card("byo", margin=40).to_json())
    path = tmp_path / "m.onnx"
    onnx.save(_graph(nodes, **kw), path)
    p = run_cli("card", str(path))
    assert p.returncode == 1 and expected in p.stderr, p.stderr
    refused(out, CardError, expected, [good], str(path))


def test_a_graph_that_rejects_the_tile_size_gives_one_line(out, good, tmp_path):
    """An ONNX Runtime failure inside run() was reported as an internal error with a traceback."""
    shape = onnx.numpy_helper.from_array(np.array([1, 1, 64, 64], np.int64), "shape")
    nodes = [onnx.helper.make_node("ReduceMean", ["s1"], ["y"], axes=[1], keepdims=1),
             onnx.helper.make_node("Reshape", ["y", "shape"], ["z"]),
             onnx.helper.make_node("Sigmoid", ["z"], ["water_probability"])]
    path = tmp_path / "fixed_reshape.onnx"
    onnx.save(_graph(nodes, initializers=[shape]), path)
    refused(out, ModelError, "ONNX Runtime could not run the graph on a batch of shape",
            [good], str(path))


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["tiling"].update(size_multple=16), "tiling.size_multple: unknown field"),
    (lambda d: d.update(desciption="typo"), "desciption: unknown field"),
    (lambda d: d.update(name=" "), "name: must not be empty"),
])
def test_card_mistakes_that_were_silently_accepted(tmp_path, mutate, expected):
    doc = json.loads(raw_db_card("byo", margin=1).to_json())
    mutate(doc)
    model = threshold_model()
    onnx.helper.set_model_props(model, {CARD_KEY: json.dumps(doc)})
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    p = run_cli("card", str(path))
    assert p.returncode == 1 and expected in p.stderr, p.stderr


def test_a_card_key_given_twice_is_refused(tmp_path):
    text = raw_db_card("byo", margin=1).to_json()
    text = text.replace('"name": "byo",', '"name": "byo", "name": "other",', 1)
    model = threshold_model()
    onnx.helper.set_model_props(model, {CARD_KEY: text})
    onnx.save(model, tmp_path / "m.onnx")
    p = run_cli("card", str(tmp_path / "m.onnx"))
    assert p.returncode == 1 and "name: given twice" in p.stderr, p.stderr


def test_metadata_that_is_not_utf8_is_one_line(tmp_path):
    model = threshold_model()
    model.metadata_props.add(key="author", value="x")
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    data = path.read_bytes().replace(b"author", b"auth\xe9r", 1)
    path.write_bytes(data)
    p = run_cli("card", str(path))
    assert p.returncode == 1 and "metadata is not UTF-8 text" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_impossible_or_unusable_grids_are_refused(out, models, tmp_path):
    """A review's cases: latitudes past the poles (a 10.9 GB model grid after 10 min),
    1 km pixels upsampled 100x into 'water' (exit 0), a local CRS (internal error)."""
    db = random_db((60, 50), seed=5)
    past_pole = write_raster(tmp_path / "pole.tif", db, crs="EPSG:4326", pixel=0.5,
                             origin=(10.0, 100.0))
    refused(out, InputError, "beyond the poles", [past_pole], models["threshold"])
    coarse = write_raster(tmp_path / "coarse.tif", db, pixel=1000.0)
    refused(out, InputError, "over 4x the 10 m the model was trained at", [coarse],
            models["threshold"])
    local = 'LOCAL_CS["engineering",UNIT["metre",1]]'
    local_path = write_raster(tmp_path / "local.tif", db, crs=local)
    refused(out, InputError, "neither geographic nor projected", [local_path],
            models["threshold"])
    forty = write_raster(tmp_path / "forty.tif", db, pixel=40.0)   # GRD medium resolution
    r = predict(PredictOptions([forty], mask=str(out / "m.tif"), model=models["threshold"]))
    assert r["valid_pixels"] == 60 * 50


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c.update(pixel_size_m=1e-300), "pixel_size_m: must be from 0.1 to 10000 m"),
    (lambda c: c["inputs"]["bands"][0].update(scale=1e-320), "must be at least 1e-30 in size"),
    (lambda c: c["inputs"]["bands"][0].update(clip=[float("-inf"), 0]), "-Infinity is not a JSON number"),
    (lambda c: c["training"]["metrics"].update(iou=float("nan")), "NaN is not a JSON number"),
])
def test_card_numbers_that_cannot_work_are_refused(tmp_path, edit, expected):
    """1e-300 m crashed the resampler; NaN metrics made `card --json` print invalid JSON."""
    import json as _json
    card = _json.loads(raw_db_card("byo", margin=1).to_json())
    card.setdefault("training", {}).setdefault("metrics", {})
    edit(card)
    model = threshold_model()
    onnx.helper.set_model_props(model, {CARD_KEY: _json.dumps(card)})
    onnx.save(model, tmp_path / "m.onnx")
    p = run_cli("card", str(tmp_path / "m.onnx"))
    assert p.returncode == 1 and expected in p.stderr, p.stderr


def test_an_unreadable_model_is_named_as_unreadable(models):
    """ONNX Runtime called it 'not a loadable ONNX model'. Root reads any file, so as
    root the command runs as user nobody (setpriv, util-linux)."""
    # /tmp itself: pytest's folder and `make test`'s TMPDIR are closed to other users
    folder = tempfile.mkdtemp(dir="/tmp")
    try:
        os.chmod(folder, 0o755)
        locked = os.path.join(folder, "locked.onnx")
        shutil.copy(models["threshold"], locked)
        os.chmod(locked, 0)
        as_user = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
                   if os.geteuid() == 0 else [])
        p = subprocess.run([*as_user, sys.executable, "-m", "backend", "card", locked],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        assert p.returncode == 1
        assert f"error: {locked}: cannot be read (Permission denied)" in p.stderr, p.stderr
    finally:
        shutil.rmtree(folder)


def test_while_renaming_outputs_a_killed_run_could_be_undone(tmp_path, models, monkeypatch):
    """As each output is renamed into place, the file it replaces is kept aside (kind
    ``kept``) and one that replaces none is marked (``new``), so that whoever started a run
    killed between two renames can put the outputs back as they were; none stays after."""
    from backend import sink
    scene = write_raster(tmp_path / "scene.tif", random_db((40, 40)))
    (tmp_path / "m.tif").write_bytes(b"an earlier mask")
    seen = []
    publish = sink.GeoTiffOut.publish

    def look_then_publish(self):
        seen.append((os.path.basename(self.path), sorted(
            p.name.split(".sarflood-")[1] for p in tmp_path.iterdir()
            if p.name.startswith(f".{os.path.basename(self.path)}.") and ".sarflood-" in p.name)))
        publish(self)

    monkeypatch.setattr(sink.GeoTiffOut, "publish", look_then_publish)
    predict(PredictOptions([scene], mask=str(tmp_path / "m.tif"),
                           probability=str(tmp_path / "p.tif"), model=models["threshold"],
                           overwrite=True))
    assert sorted(seen) == [("m.tif", ["kept", "tmp"]), ("p.tif", ["new", "tmp"])]
    assert not [p for p in tmp_path.iterdir() if ".sarflood-" in p.name]



@pytest.mark.parametrize("change", ["removed", "renamed"])
def test_an_output_folder_changed_during_the_run_is_said_and_keeps_nothing(tmp_path, models,
                                                                          monkeypatch, change):
    """It said 'the written file does not read back: No such file or directory'; and the
    temporary files were removed by their path, which a rename had changed: about 60 MB of
    hidden files stayed in the renamed folder of a 3072 px run."""
    from backend import raster_io
    scene = write_raster(tmp_path / "scene.tif", random_db((40, 40)))
    out, renamed = tmp_path / "out", tmp_path / "renamed"
    out.mkdir()
    finish = raster_io.GeoTiffOut.finish

    def change_the_folder_then_finish(self):   # what the analyst did meanwhile
        if out.exists():
            shutil.rmtree(out) if change == "removed" else out.rename(renamed)
        finish(self)

    monkeypatch.setattr(raster_io.GeoTiffOut, "finish", change_the_folder_then_finish)
    with pytest.raises(OutputError) as err:
        predict(PredictOptions([scene], mask=str(out / "m.tif"), probability=str(out / "p.tif"),
                               model=models["threshold"]))
    assert str(err.value).startswith(f"{out / 'm.tif'}: cannot be written (its folder {out} was "
                                     "removed or renamed during the run")
    assert not out.exists() and (change == "removed" or listing(renamed) == [])


@pytest.mark.parametrize("driver, name, kw", [("GTiff", "cut.tif", {}),
                                               ("GTiff", "cut_tiled.tif", {"tiled": True}),
                                               ("ENVI", "cut.img", {})])
def test_an_uncompressed_raster_cut_short_is_refused(out, models, tmp_path, driver, name, kw):
    """GDAL reads zeros past the end of an uncompressed file cut short (a GeoTIFF read with
    GTIFF_DIRECT_IO, a raw ENVI file): the missing 40 % was mapped as 0 power, exit 0."""
    path, first = tmp_path / name, tmp_path / f"first_{name}"
    with rasterio.open(first, "w", driver=driver, width=300, height=200, count=2,
                       dtype="float32", crs="EPSG:32633",
                       transform=rasterio.transform.from_origin(0, 2000, 10, 10)) as ds:
        ds.write(random_db((200, 300)))
        ds.descriptions = ("VV", "VH")
    # copied as SNAP and GDAL's CreateCopy write a GeoTIFF: header first, then the pixels
    rasterio.shutil.copy(first, path, driver=driver, **kw)
    whole = path.read_bytes()
    path.write_bytes(whole[: int(len(whole) * 0.6)])
    refused(out, InputError, f"{path}: is cut short", [path], models["threshold"])
    path.write_bytes(whole)   # the file whole is read
    predict(PredictOptions(inputs=[str(path)], mask=str(out / "m.tif"), model=models["threshold"]))


def test_an_output_name_too_long_for_its_hidden_files_is_refused_first(out, models, good):
    """A 244-byte name is legal, but the hidden files beside it (.NAME.<pid>-<hex>.sarflood-tmp)
    are not: GDAL's open failed, then the cleanup raised ENAMETOOLONG, an internal error."""
    limit = os.pathconf(out, "PC_NAME_MAX") - 40
    too_long = out / ("a" * (limit - 3) + ".tif")
    with pytest.raises(OutputError, match=rf"the mask output's name is too long: at most {limit} "
                                          "bytes here"):
        predict(PredictOptions([good], mask=str(too_long), model=models["threshold"]))
    assert listing(out) == []
    longest = out / ("a" * (limit - 4) + ".tif")
    predict(PredictOptions([good], mask=str(longest), model=models["threshold"]))
    assert listing(out) == [longest.name]


def test_outputs_are_checked_where_os_has_no_pathconf(out, models, good, monkeypatch):
    """os.pathconf is Unix only: on Windows every run that writes a file died on its absence
    (an internal error, AttributeError) before doing anything. NTFS takes 255 characters."""
    monkeypatch.delattr(os, "pathconf")
    predict(PredictOptions([good], mask=str(out / "m.tif"), model=models["threshold"]))
    assert listing(out) == ["m.tif"]
    with pytest.raises(OutputError, match="the mask output's name is too long: at most 215 bytes"):
        predict(PredictOptions([good], mask=str(out / ("a" * 250 + ".tif")), model=models["threshold"]))
