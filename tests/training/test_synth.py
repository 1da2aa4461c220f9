"""The synthetic generator: the real layout, determinism, and the physics the paper's effects need."""
import dataclasses
import json

import numpy as np
import pytest
import rasterio

from training import reproduce
from training.cli import main
from training.config import make_config
from training.data import s2index
from training.data.io import read_label, read_s1, read_s2
from training.data.layout import HAND_SPLITS, DatasetError, Layout
from training.data.sets import external_chips, hand_chips, weak_chips
from training.synth import bench, events, noise, sar, scene, writer
from training.synth.landcover import CROP, FLOODED_VEG, OPEN_WATER, URBAN, make_landcover
from training.synth.terrain import PIXEL_M, Terrain, make_terrain

REAL_S1 = "S1Hand/Spain_7370579_S1Hand.tif"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ds"
    manifest = writer.generate(root, chips=6, weak=3, external=3, seed=11)
    return root, manifest


def params(event=events.EVENTS[0], seed=0, **changes) -> events.ChipParams:
    return dataclasses.replace(events.draw(event, np.random.default_rng(seed)), **changes)


def test_layout_and_split_files(dataset):
    root, manifest = dataset
    assert manifest["hand_splits"] == {"train": 3, "valid": 1, "test": 1, "bolivia": 1}
    sizes = {s: len(hand_chips(root, s, s2=True)) for s in HAND_SPLITS}
    assert sizes == manifest["hand_splits"]
    assert len(weak_chips(root)) == 3 and len(external_chips(root)) == 3
    line = (root / "v1.1/splits/flood_handlabeled/flood_test_data.csv").read_text().strip()
    chip = line.split(",")[0][: -len("_S1Hand.tif")]
    assert line == f"{chip}_S1Hand.tif,{chip}_LabelHand.tif"
    bolivia = hand_chips(root, "bolivia")
    assert all(c.chip_id.startswith("SynthBolivia_") for c in bolivia)
    others = hand_chips(root, "train") + weak_chips(root) + external_chips(root)
    assert not any(c.chip_id.startswith("SynthBolivia_") for c in others)
    ids = [r["chip_id"] for r in manifest["chips"]]
    assert len(ids) == len(set(ids)) == 12
    assert (root / writer.MANIFEST).is_file()


def test_files_match_the_real_conventions(dataset, real_chips):
    root, _ = dataset
    chip = hand_chips(root, "train", s2=True)[0]
    with rasterio.open(chip.s1) as s1, rasterio.open(real_chips / REAL_S1) as real:
        assert (s1.width, s1.height, s1.count, s1.dtypes[0]) == (512, 512, 2, "float32")
        assert s1.descriptions == ("VV", "VH") and np.isnan(s1.nodata)
        assert s1.crs == real.crs
        assert s1.transform.a == pytest.approx(real.transform.a) and s1.transform.e == pytest.approx(real.transform.e)
        assert s1.profile["compress"] == real.profile["compress"] == "deflate"
    with rasterio.open(chip.s2) as s2:
        assert (s2.count, s2.dtypes[0], s2.nodata) == (13, "int16", 0)
        assert s2.descriptions[7] == "B8" and s2.descriptions[8] == "B8A"
    with rasterio.open(chip.label) as lab:
        assert (lab.count, lab.dtypes[0], lab.nodata) == (1, "int16", None)
    assert set(np.unique(read_label(chip.label))) <= {-1, 0, 1}
    weak = weak_chips(root)[0]
    assert set(np.unique(read_label(weak.label))) <= {-1, 0, 1}


def test_hand_labels_mark_only_true_water_and_ignore_what_nobody_could_see(dataset):
    root, _ = dataset
    for chip in hand_chips(root, "train", s2=True):
        label, truth = read_label(chip.label), read_label(chip.truth)
        seen = label != -1
        assert (truth[seen & (label == 1)] == 1).all()   # water under plants may be left out
        # where the label is -1 there is thick cloud (bright blue) or no S2
        s2 = read_s2(chip.s2, ("B2",))[0]
        hidden = ~seen
        assert ((s2[hidden] > 2500) | (s2[hidden] == 0)).all()


def test_same_chip_for_same_seed_and_different_for_another():
    a = scene.make_chip(params(), np.random.default_rng(5))
    b = scene.make_chip(params(), np.random.default_rng(5))
    c = scene.make_chip(params(), np.random.default_rng(6))
    np.testing.assert_array_equal(a.s1, b.s1)
    np.testing.assert_array_equal(a.s2, b.s2)
    np.testing.assert_array_equal(a.hand, b.hand)
    assert not np.array_equal(a.s1, c.s1)


def test_zstd_writes_the_same_pixels(tmp_path):
    writer.generate(tmp_path / "deflate", chips=4, weak=0, external=0, seed=2)
    writer.generate(tmp_path / "zstd", chips=4, weak=0, external=0, seed=2, compress="zstd")
    assert bench.same_rasters(tmp_path / "deflate", tmp_path / "zstd")
    with rasterio.open(next((tmp_path / "zstd").rglob("*_S2Hand.tif"))) as ds:
        assert ds.profile["compress"] == "zstd"
    with pytest.raises(ValueError, match="unknown compression"):
        writer.generate(tmp_path / "lzw", chips=4, compress="lzw")


def test_refuses_to_overwrite_and_never_clears_real_data(tmp_path, dataset):
    root, _ = dataset
    with pytest.raises(DatasetError, match="pass --overwrite"):
        writer.generate(root, chips=4, weak=0, external=0)
    foreign = tmp_path / "real"
    (foreign / "v1.1").mkdir(parents=True)
    with pytest.raises(DatasetError, match="not a synthetic dataset"):
        writer.generate(foreign, chips=4, weak=0, external=0, overwrite=True)
    assert (foreign / "v1.1").is_dir()


def test_an_interrupted_synth_is_named_and_replaced_with_overwrite(tmp_path, monkeypatch, capsys):
    """The partial dataset had no manifest yet: --overwrite refused it as "not a synthetic
    dataset this tool wrote", and nothing said how to get rid of it."""
    write, calls = writer.make_and_write, []

    def interrupted_at_the_third_chip(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return write(*args)

    monkeypatch.setattr(writer, "make_and_write", interrupted_at_the_third_chip)
    root = tmp_path / "ds"
    assert main(["synth", "--out", str(root), "--chips", "4", "--weak-chips", "0",
                 "--external-chips", "0"]) == 130
    assert (f"interrupted: a partial dataset is left in {root}; rerun with --overwrite"
            in capsys.readouterr().err)
    monkeypatch.undo()
    with pytest.raises(DatasetError, match="holds a partial synthetic dataset .*pass --overwrite"):
        writer.generate(root, chips=4, weak=0, external=0)
    writer.generate(root, chips=4, weak=0, external=0, overwrite=True)
    assert json.loads((root / writer.MANIFEST).read_text())["complete"]
    assert sum(len(hand_chips(root, s)) for s in HAND_SPLITS) == 4


def test_an_out_folder_that_cannot_be_written_is_one_line(tmp_path, capsys):
    """A read-only place gave a PermissionError traceback."""
    (tmp_path / "afile").write_text("x")
    for out, text in (("/proc/synth", "error: /proc/synth: cannot write in /proc"),
                      (tmp_path / "afile", "afile: is a file, not a folder")):
        assert main(["synth", "--out", str(out), "--chips", "4"]) == 1
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1, err


def test_a_set_of_no_chips_is_left_out_as_in_a_dataset_without_it(tmp_path):
    """``--external-chips 0`` wrote an empty external set that reproduce neither skipped
    (as it does a dataset without external/) nor accepted ("lists no chips")."""
    root = tmp_path / "ds"
    writer.generate(root, chips=4, weak=0, external=0)
    layout = Layout.standard(root)
    assert not layout.external.exists() and not layout.weak.exists()
    assert sorted(p.name for p in layout.truth.iterdir()) == ["HandLabeled"]
    chosen, left_out = reproduce.select(None, root)
    assert [m.name for m in chosen] == ["otsu", "hand", "teacher"]
    no_weak, no_ed = ("the data has no weakly labelled set",
                      "the data has no external set (the paper's ED is not public)")
    assert left_out == {"weak": no_weak, "weak_ed": no_weak, "student": no_ed,
                        "student_compact": no_ed}
    # the table says why, and what brings the rows back
    doc = reproduce.table_doc({}, {}, {}, root, make_config("cpu"), 1, {"test": [0]}, 0.0,
                              left_out)
    reproduce.write_table(doc, tmp_path / "results")
    md = (tmp_path / "results" / "table1.md").read_text()
    assert (f"Not run (weak, weak_ed): {no_weak}. Those rows train on it; Sen1Floods11's "
            "weakly labelled chips (v1.1/data/flood_events/WeaklyLabeled) bring them back") in md
    assert f"Not run (student, student_compact): {no_ed}." in md
    with pytest.raises(DatasetError, match="S1Weak: weakly labelled folder not found"):
        weak_chips(root)   # as a real dataset without its weak set, not "holds no chips"


def test_speckle_has_sentinel1_grd_looks():
    s = sar.speckle(np.random.default_rng(0), (2, 512, 512))
    assert s.mean() == pytest.approx(1.0, abs=0.01)
    assert s.mean() ** 2 / s.var() == pytest.approx(sar.ENL, rel=0.05)
    # neighbouring pixels are correlated (the resolution cell spans about two pixels)
    assert np.corrcoef(s[0, :, :-1].ravel(), s[0, :, 1:].ravel())[0, 1] > 0.3


def _scene_stats(p: events.ChipParams, seed: int = 1):
    rng = np.random.default_rng(seed)
    t = make_terrain(p, 256, rng)
    lc = make_landcover(p, t, rng)
    tex = noise.fractal(rng, 256, 1.5, 4.0)
    s1, _ = sar.simulate(p, t, lc, tex, rng)
    return t, lc, s1


def test_class_backscatter_ordering(monkeypatch):
    monkeypatch.setattr(sar, "FV_LOW_DB", (5.0, 5.0))     # a chip whose crops gain 5 dB when flooded
    p = params(events.EVENTS[5], seed=2, wind_ms=0.0, mountain=False, relief_m=2.0,
               urban_frac=0.15, flood_frac=0.3, grass_height_m=1.0)
    _, lc, s1 = _scene_stats(p)
    vv = lambda c: np.median(s1[0][lc.cls == c])  # noqa: E731
    assert vv(OPEN_WATER) < -20                    # calm water is dark
    assert vv(URBAN) > vv(CROP) + 6                # towns are bright
    fv_under = lc.under[lc.cls == FLOODED_VEG]
    assert (fv_under == CROP).sum() > 100
    dry_same = np.median(s1[0][(lc.cls == CROP)])
    wet = np.median(s1[0][(lc.cls == FLOODED_VEG) & (lc.under == CROP)])
    assert 3 < wet - dry_same < 7                  # double bounce


def test_wind_brightens_open_water_in_vv_far_more_than_in_vh():
    calm = _scene_stats(params(flood_frac=0.4, wind_ms=0.0))
    windy = _scene_stats(params(flood_frac=0.4, wind_ms=9.0))
    water = calm[1].cls == OPEN_WATER
    assert water.sum() > 1000
    d_vv = np.median(windy[2][0][water]) - np.median(calm[2][0][water])
    d_vh = np.median(windy[2][1][water]) - np.median(calm[2][1][water])
    assert d_vv > 5 and d_vh < d_vv / 2


def test_radar_shadow_and_layover_on_a_ridge():
    size = 64
    x = np.arange(size) * PIXEL_M
    # a ridge: 45 deg up, then 70 deg down (steeper than 90 - 37 deg: shadow)
    ridge = np.minimum(x * np.tan(np.radians(45)), (x[-1] - x) * np.tan(np.radians(70)) + 100)
    h = np.tile(ridge, (size, 1)).astype(np.float32)
    gy, gx = np.gradient(h, PIXEL_M)
    t = Terrain(height=h, hand=h, river_dist=h, stage=0.0, water=h < 0, depth=h, permanent=h < 0, gx=gx, gy=gy)
    cos_loc, shadow, layover = sar.geometry(t, 37.0, look_from_east=False)
    crest = int(np.argmax(ridge))
    assert shadow[:, crest + 2:].any() and not shadow[:, :crest].any()
    assert layover[:, :crest].any()                # the 45 deg foreslope is steeper than 37 deg
    _, shadow_e, layover_e = sar.geometry(t, 37.0, look_from_east=True)
    assert not shadow_e.any()                      # seen from the east the steep side faces the radar
    assert layover_e[:, crest:].any()


def test_mountains_darken_like_water_for_otsu():
    p = params(events.EVENTS[2], seed=4, mountain=True, relief_m=140.0, flood_frac=0.0,
               incidence_deg=40.0)
    t, lc, s1 = _scene_stats(p)
    _, shadow, _ = sar.geometry(t, p.incidence_deg, p.look_from_east)
    assert shadow.mean() > 0.001
    assert np.median(s1[0][shadow]) < -22          # as dark as calm water


def test_optics_and_weak_labels_err_where_indices_do():
    p = params(events.EVENTS[0], seed=3, cloud_frac=0.3, flood_frac=0.4, grass_height_m=1.2)
    chip = scene.make_chip(p, np.random.default_rng(9))
    s2 = chip.s2
    water = chip.truth == 1
    assert np.median(s2index.mndwi(s2)[water & (chip.hand != -1)]) > 0.3
    weak = s2index.s1f11_weak(s2)
    clear = chip.hand != -1
    agree = (weak[clear] == chip.truth[clear]).mean()
    assert 0.7 < agree < 0.999                      # mostly right, but not the truth
    assert (weak == -1).any()                       # thick cloud screened out
    ndwi = s2index.ndwi_weak(s2)
    # no cloud screen in the NDWI labels: -1 only where S2 has no data
    np.testing.assert_array_equal(ndwi == -1, (s2 == 0).any(axis=0))


def _bolivia_chip_and_landcover():
    """A Bolivia chip with much flooded vegetation, and its land cover (the same draws)."""
    p = params(events.BOLIVIA, seed=1, cloud_frac=0.0, flood_frac=0.4, grass_height_m=2.0)
    chip = scene.make_chip(p, np.random.default_rng(2))
    rng = np.random.default_rng(2)
    return chip, make_landcover(p, make_terrain(p, scene.SIZE, rng), rng)


def test_weak_labels_miss_flooded_vegetation():
    chip, lc = _bolivia_chip_and_landcover()
    weak = s2index.s1f11_weak(chip.s2)
    fv = lc.cls == FLOODED_VEG
    assert fv.sum() > 1000
    recall_fv = (weak[fv] == 1).mean()
    recall_open = (weak[lc.cls == OPEN_WATER] == 1).mean()
    assert recall_open > 0.9 and recall_fv < recall_open - 0.3


def test_hand_labels_show_the_water_a_labeller_sees():
    chip, lc = _bolivia_chip_and_landcover()
    seen = chip.hand != -1
    hidden = lc.canopy > scene.HIDING_CANOPY
    assert (hidden & seen).sum() > 1000
    # flooded forest and dense emergent crops: water in the truth, dry in the hand label
    assert (chip.truth[hidden] == 1).all() and (chip.hand[hidden & seen] == 0).all()
    # everywhere else the labeller sees the truth
    np.testing.assert_array_equal(chip.hand[seen & ~hidden], chip.truth[seen & ~hidden])
    assert chip.stats["hidden_share_of_water"] == pytest.approx(hidden.sum() / chip.truth.sum())


def test_bolivia_has_more_flooded_vegetation_and_wind():
    def mean_stat(event, key, n=4):
        vals = []
        for i in range(n):
            rng = np.random.default_rng([21, i])
            chip = scene.make_chip(events.draw(event, rng), rng)
            vals.append(chip.stats[key])
        return float(np.mean(vals))
    train_events = [e for e in events.EVENTS if e.name in ("SynthDelta", "SynthValley", "SynthPeriurban")]
    fv_train = np.mean([mean_stat(e, "flooded_veg_share_of_water", 2) for e in train_events])
    assert mean_stat(events.BOLIVIA, "flooded_veg_share_of_water") > fv_train + 0.1
    assert events.BOLIVIA.wind_ms[0] > max(e.wind_ms[0] for e in events.EVENTS)


def test_bench_reports_speed_and_determinism():
    # determinism: the same seed written by one and by two worker processes is identical
    result = bench.bench(chips=1, seed=0)
    assert result["deterministic"] and result["other_seed_differs"]
    assert result["hand"]["chips"] == 1 and result["all"]["chips_per_s"] > 0


def test_bench_json_is_not_overwritten_and_bad_values_are_one_line(tmp_path, capsys):
    """--json replaced an existing file silently, and one in a missing folder ended in a
    traceback after the whole bench; --chips -1 and --seed -1 went on to tracebacks."""
    out = tmp_path / "bench.json"
    out.write_text("mine")
    for args, text in ((["--json", out], f"{out}: exists; pass --overwrite to replace it"),
                       (["--json", tmp_path / "no" / "b.json"],
                        f"{tmp_path / 'no' / 'b.json'}: the folder {tmp_path / 'no'} does not "
                        f"exist"),
                       (["--chips", "-1"], "--chips -1: give at least 1"),
                       (["--chips", "0"], "--chips 0: give at least 1"),
                       (["--seed", "-1"], "--seed -1: give 0 or more")):
        assert main(["bench-synth", *map(str, args)]) == 1
        assert capsys.readouterr().err == f"error: {text}\n"
    assert out.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    assert main(["bench-synth", "--chips", "1", "--json", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["hand"]["chips"] == 1


def test_manifest_records_every_chip(dataset):
    root, manifest = dataset
    saved = json.loads((root / writer.MANIFEST).read_text())
    assert saved["seed"] == 11 and len(saved["chips"]) == 12
    rec = saved["chips"][0]
    assert {"chip_id", "set", "split", "params", "stats"} <= rec.keys()
    assert 0.0 <= rec["stats"]["water_frac"] <= 1.0
    s1 = read_s1(weak_chips(root)[0].s1)
    assert s1.shape == (2, 512, 512)


def test_manifest_scores_each_sets_labels_against_the_truth(dataset):
    root, manifest = dataset
    quality = manifest["label_quality"]
    assert set(quality) == {"hand", "weak", "external"}
    def recount(chips):  # from the written files: (tp, fp, fn) of the labels against the truth
        tp = fp = fn = 0
        for chip in chips:
            label, truth = read_label(chip.label), read_label(chip.truth)
            scored = label != -1
            tp += int(((label == 1) & (truth == 1)).sum())
            fp += int(((label == 1) & (truth == 0) & scored).sum())
            fn += int(((label == 0) & (truth == 1) & scored).sum())
        return tp, fp, fn
    # hand labels mark only true water; their recall is what plants hide from the labeller
    tp, fp, fn = recount(c for s in HAND_SPLITS for c in hand_chips(root, s))
    assert fp == 0 and quality["hand"]["precision"] == 1.0
    assert quality["hand"]["recall"] == round(tp / (tp + fn), 4)
    # the weak set's counts match its rule against the truth
    tp, fp, fn = recount(weak_chips(root))
    assert quality["weak"]["iou"] == round(tp / (tp + fp + fn), 4)
    assert quality["weak"]["recall"] == round(tp / (tp + fn), 4)
    assert quality["weak"]["iou"] < 1.0
