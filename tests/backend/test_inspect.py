"""``inspect``: bands, mapping, grid and units before a run, as the run itself finds them."""
import json

import numpy as np
import pytest
import rasterio

from backend.engine import PredictOptions, predict
from backend.inspection import describe_text, inspect_inputs
from backend.raster_io import WindowReader, gdal_env
from backend import raster_io
from tests.backend.areas import metres_per_degree_exact
from tests.backend.conftest import cli_peak, listing, random_db, run_cli, write_raster


def _as(values_db: np.ndarray, kind: str) -> np.ndarray:
    power = np.power(10.0, values_db / 10.0)
    return (power if kind == "linear" else np.sqrt(power)).astype(np.float32)


@pytest.mark.parametrize("kind", ["dB", "linear", "amplitude"])
def test_units_and_mapping_are_those_of_a_run(tmp_path, models, kind):
    bands = random_db((120, 100), seed=3)
    data = bands if kind == "dB" else _as(bands, kind)
    src = write_raster(tmp_path / "scene.tif", data)
    p = run_cli("inspect", src, "--json")
    assert p.returncode == 0, p.stderr
    answer = json.loads(p.stdout)
    assert answer["units_detected"] == kind and answer["units_source"] == "values"
    evidence = answer["units"]["VV"]["evidence"]
    assert ("negative" in evidence) if kind == "dB" else (f": {kind}" in evidence)
    assert answer["bands"] == {"VV": {"path": src, "band": 1, "named_by": "description"},
                               "VH": {"path": src, "band": 2, "named_by": "description"}}
    (f,) = answer["files"]
    assert [(b["index"], b["description"], b["dtype"]) for b in f["bands"]] == [
        (1, "VV", "float32"), (2, "VH", "float32")]
    assert (answer["crs"], answer["width"], answer["height"]) == ("EPSG:32633", 100, 120)
    assert answer["pixel_size_m"] == [10.0, 10.0] == f["pixel_size_m"]
    # the run detects the same
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=models["threshold"]))
    assert (r["units_detected"], r["units_source"]) == (kind, "values")
    assert r["bands"] == answer["bands"]


def test_metadata_units_two_files_and_geographic_pixel_size(tmp_path):
    deg = 1 / 3600
    b = random_db((60, 50))
    kw = dict(crs="EPSG:4326", pixel=deg, origin=(10.0, 45.0), descriptions=None)
    vh = write_raster(tmp_path / "S1A_VH.tif", b[1:], units="dB", **kw)
    vv = write_raster(tmp_path / "S1A_VV.tif", b[:1], units="dB", **kw)
    answer = inspect_inputs([vh, vv])   # VH first: the file names say which is which
    assert answer["bands"]["VV"] == {"path": vv, "band": 1, "named_by": "file name"}
    assert answer["bands"]["VH"] == {"path": vh, "band": 1, "named_by": "file name"}
    assert answer["units_detected"] == "dB" and answer["units_source"] == "metadata"
    assert [f["path"] for f in answer["files"]] == [vh, vv]
    assert any("is VH" in n for n in answer["notes"])
    mx, my = metres_per_degree_exact(45.0 - 30 * deg)
    assert answer["pixel_size_m"] == pytest.approx([deg * mx, deg * my], abs=2e-3)


def test_bands_choose_and_describe(tmp_path):
    b = random_db((40, 40))
    angle = np.full((1, 40, 40), 35.0, np.float32)
    src = write_raster(tmp_path / "hyp3.tif", np.concatenate([b[1:], b[:1], angle]),
                       descriptions=("VH", "VV", "angle"))
    named = inspect_inputs([src])
    assert (named["bands"]["VV"]["band"], named["bands"]["VH"]["band"]) == (2, 1)
    assert any("using band 2 (VV) and band 1 (VH) of 3" in n for n in named["notes"])
    chosen = inspect_inputs([src], bands=(1, 2))   # the user says the labels are wrong
    assert chosen["bands"]["VV"] == {"path": src, "band": 1, "named_by": "--bands"}
    assert "band 1 is described as VH, but --bands 1,2 uses it as VV" in " ".join(chosen["notes"])
    assert [d["description"] for d in chosen["files"][0]["bands"]] == ["VH", "VV", "angle"]


@pytest.mark.parametrize("case, args, message", [
    ("three", ["{three}"], "{three}: has 3 bands; expected 2 bands (VV, VH)"),
    ("lone VH", ["{vh}"], "{vh}: has 1 band (VH); inspect needs VV: give its VV band"),
    ("text", ["{text}"], "{text}: not a raster GDAL can read"),
    ("grids", ["{one}", "{shifted}"], "{one} and {shifted} are on different grids"),
    ("range", ["{three}", "--bands", "4,2"], "{three}: has 3 bands; --bands 4,2 names band 4"),
    ("zero", ["{three}", "--bands", "0,2"], "{three}: has 3 bands; --bands 0,2 names band 0"),
    ("twice", ["{three}", "--bands", "2,2"], "{three}: --bands 2,2 gives band 2 as both VV and VH"),
    ("pair", ["{one}", "{vh}", "--bands", "1,2"], "--bands chooses the VV and VH bands of one"),
    ("hh/hv", ["{hhhv}"], "{hhhv}: band 1 is HH and band 2 is HV (from the band descriptions); "
                          "the model reads VV and VH"),
    ("vv/hv", ["{vvhv}"], "{vvhv}: band 1 is VV but band 2 is HV; expected VV and VH"),
    ("hh, hv", ["{hh}", "{hv}"], "{hh} and {hv}: {hh} is HH and {hv} is HV (from the "
                                 "descriptions or file names)"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, case, args, message):
    b = random_db((30, 30))
    files = {
        "three": write_raster(tmp_path / "three.tif", np.concatenate([b, b[:1]]),
                              descriptions=None),
        "one": write_raster(tmp_path / "one.tif", b[:1], descriptions=("VV",)),
        "vh": write_raster(tmp_path / "vh.tif", b[1:], descriptions=("VH",)),
        "shifted": write_raster(tmp_path / "shifted.tif", b[1:], descriptions=("VH",),
                                origin=(500010.0, 5000000.0)),
        "hhhv": write_raster(tmp_path / "hhhv.tif", b, descriptions=("Sigma0_HH", "Sigma0_HV")),
        "vvhv": write_raster(tmp_path / "vvhv.tif", b, descriptions=("VV", "HV")),
        "hh": write_raster(tmp_path / "S1B_EW_HH.tif", b[:1], descriptions=None),
        "hv": write_raster(tmp_path / "S1B_EW_HV.tif", b[1:], descriptions=None),
        "text": tmp_path / "text.tif"}
    files["text"].write_text("no raster\n")
    before = listing(tmp_path)
    p = run_cli("inspect", *[a.format(**files) for a in args], "--json")
    assert p.returncode == 1 and p.stdout == ""
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("error: ") and message.format(**files) in line, line
    if case == "pair":
        assert str(files["one"]) in line and str(files["vh"]) in line
    assert listing(tmp_path) == before


def test_a_single_band_is_described_as_the_vv_a_vv_only_model_reads(tmp_path):
    """The run dialog asks before a run of a VV-only model on a single-band layer; inspect
    refused the band as the VV/VH models do, and the dialog showed that refusal."""
    b = random_db((40, 40))
    vv = write_raster(tmp_path / "scene.tif", b[:1], descriptions=("VV",))
    answer = inspect_inputs([vv])
    assert answer["bands"] == {"VV": {"path": vv, "band": 1, "named_by": "description"}}
    assert answer["units_detected"] == "dB" and set(answer["units"]) == {"VV"}
    assert "VV: " in describe_text(answer) and "VH" not in describe_text(answer)


def test_strip_files_give_the_same_sample_read_row_by_row(tmp_path, monkeypatch):
    """Compressed files in strips are sampled a row of windows at a time: same pixels."""
    bands = random_db((700, 650), seed=4, nan_frac=0.01)
    src = tmp_path / "strips.tif"
    with rasterio.open(src, "w", driver="GTiff", width=650, height=700, count=2,
                       dtype="float32", crs="EPSG:32633", compress="deflate",
                       transform=rasterio.transform.from_origin(0, 0, 10, 10)) as ds:
        ds.write(bands)
    with gdal_env(), rasterio.open(src) as ds:
        assert ds.block_shapes[0][1] == 650   # strips: blocks of whole rows
        reader = WindowReader([(ds, 1, None), (ds, 2, None)], row_off=7, col_off=9)
        by_rows = raster_io.sample_grid(reader, 680, 630)
        monkeypatch.setattr(raster_io, "STRIP_SAMPLE_BYTES", 0)   # window by window
        by_windows = raster_io.sample_grid(reader, 680, 630)
    assert by_rows.shape == (2, 25 * 128 * 128)
    np.testing.assert_array_equal(by_rows, by_windows)


def test_data_the_windows_miss_is_found_in_strips_read_within_the_budget(tmp_path, monkeypatch):
    """Strips wider than STRIP_SAMPLE_BYTES are read in parts: the same pixels are found,
    and a strip that fits is read whole, its pixels in the order they were found before."""
    bands = np.full((2, 300, 2000), np.nan, np.float32)
    patches = random_db((20, 40), seed=5)
    bands[:, 10:14, 1700:1720] = patches[:, :4, :20]   # cols between the sample's windows
    bands[:, 200:220, 150:190] = patches
    src = write_raster(tmp_path / "patches.tif", bands)
    valid = np.isfinite(bands).all(axis=0)

    def found(reader) -> np.ndarray:
        sample = raster_io.sample_grid(reader, 300, 2000)
        return sample[:, np.isfinite(sample).all(axis=0)]

    with gdal_env(), rasterio.open(src) as ds:
        reader = WindowReader([(ds, 1, None), (ds, 2, None)], 0, 0)
        np.testing.assert_array_equal(found(reader), bands[:, valid])
        budget = 2 * 128 * 500 * 4   # strips of 128 rows read 500 columns at a time
        monkeypatch.setattr(raster_io, "STRIP_SAMPLE_BYTES", budget)
        boxes, read = [], reader.read
        monkeypatch.setattr(reader, "read", lambda *box: boxes.append(box) or read(*box))
        parts = found(reader)
    assert max(2 * (r1 - r0) * (c1 - c0) * 4 for r0, r1, c0, c1 in boxes) <= budget
    np.testing.assert_array_equal(parts[:, np.lexsort(parts)],
                                  bands[:, valid][:, np.lexsort(bands[:, valid])])


def test_a_sparse_file_of_no_data_declaring_a_huge_width_is_inspected_in_little_memory(tmp_path):
    """A sparse GeoTIFF of a few KB, all no data, 400,000 px wide: inspect (which the run
    dialog runs on every layer) read strips of its whole width looking for data, 0.95 GB
    at its peak here (2.2 GB at 1,000,000 px); ~0.25 GB now, ~0.09 GB on a small file."""
    src = tmp_path / "sparse.tif"
    with rasterio.open(src, "w", driver="GTiff", width=400_000, height=256, count=2,
                       dtype="float32", nodata=float("nan"), crs="EPSG:32630",
                       transform=rasterio.transform.from_origin(400000, 5000000, 10, 10),
                       tiled=True, blockxsize=512, blockysize=512, sparse_ok=True,
                       compress="deflate", bigtiff="YES") as ds:
        ds.descriptions = ("VV", "VH")
    assert src.stat().st_size < 100_000
    rc, stdout, stderr, peak = cli_peak("inspect", str(src), "--json")
    assert rc == 0, stderr
    assert peak < 400, f"peak {peak:.0f} MB"
    answer = json.loads(stdout)
    assert answer["width"] == 400_000 and answer["units_detected"] is None
    assert {u["evidence"] for u in answer["units"].values()} == {"the band holds no valid pixel"}


def test_notes_are_text_when_the_zero_rule_applies_to_a_sample_without_zeros(tmp_path):
    """zero_note has nothing to say then; a None among the notes broke the plugin's
    tooltip (TypeError in the run dialog)."""
    from backend.inspection import inspect_inputs
    from tests.backend.conftest import random_db, write_raster
    path = write_raster(tmp_path / "untagged.tif", random_db((80, 90), seed=2), nodata=None)
    answer = inspect_inputs([path])
    assert all(isinstance(n, str) for n in answer["notes"]), answer["notes"]
