"""``python -m training evaluate`` and ``figure``: one scoring path for Otsu, models, masks, S2 rules."""
import json
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnx
import pytest
import rasterio
from affine import Affine

from backend.otsu import otsu_threshold
from training import evaluate
from training.cli import main
from training.data.io import read_label, read_s1
from training.data.layout import DatasetError
from training.metrics import Scoreboard
from training.synth import writer
from training.toy_models import threshold_model

from .test_data_layout import corrupt

SPAIN = "Spain_7370579"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate") / "ds"
    writer.generate(root, chips=6, weak=2, external=2, seed=5)
    return root


def hand_folder(root):
    return root / "v1.1/data/flood_events/HandLabeled"


def brute_force_otsu(values: np.ndarray) -> float:
    """Threshold maximising between-class variance, tried at every 0.05 dB."""
    v = values[np.isfinite(values)]
    best, best_t = -1.0, None
    for t in np.arange(-40, 10, 0.05):
        low = v <= t
        w0 = low.mean()
        if 0 < w0 < 1:
            score = w0 * (1 - w0) * (v[low].mean() - v[~low].mean()) ** 2
            if score > best:
                best, best_t = score, t
    return best_t


def test_a_corrupt_block_is_one_line_naming_the_file(data, tmp_path, capsys):
    """Its header is fine, so only reading its pixels finds it: that was a
    RasterioIOError traceback naming no file."""
    copy = tmp_path / "ds"
    shutil.copytree(data, copy)
    s1 = evaluate.load_split(copy, "test")[0][0].s1
    corrupt(s1)
    assert main(["evaluate", "--data", str(copy), "--split", "test", "--otsu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {s1}: corrupt data, its pixels cannot be read") and err.count("\n") == 1


def test_label_masks_score_perfectly(data):
    chips, reference = evaluate.load_split(data, "test")
    board = evaluate.evaluate(chips, evaluate.masks(hand_folder(data) / "LabelHand"))
    assert reference == "LabelHand"
    s = board.summary()
    assert s["iou"] == 1.0 and s["precision"] == 1.0 and s["recall"] == 1.0


def test_otsu_matches_an_independent_otsu(data):
    chips, _ = evaluate.load_split(data, "train")
    chip = chips[0]
    board = evaluate.evaluate([chip], evaluate.otsu("VV"))
    s1 = read_s1(chip.s1)
    t = brute_force_otsu(s1[0])
    mine = Scoreboard()
    mine.add(chip.chip_id, (s1[0] <= t).astype(np.int8), read_label(chip.label), np.isfinite(s1).all(0))
    assert board.summary()["iou"] == pytest.approx(mine.summary()["iou"], abs=0.01)


def test_otsu_per_event_pools_the_events_chips(data, tmp_path):
    test, _ = evaluate.load_split(data, "test")            # one chip: its event's histogram is its own
    per_chip = evaluate.evaluate(test, evaluate.otsu("VH")).summary()
    per_event = evaluate.evaluate(test, evaluate.otsu("VH", "event")).summary()
    assert per_event["tp"] == per_chip["tp"] and per_event["fp"] == per_chip["fp"]
    # the fixture's splits hold one chip per event: a second chip of the first chip's
    # event, its VV 3 dB brighter, gives that event two different histograms
    first, other = evaluate.load_split(data, "train")[0][:2]
    assert evaluate.event_of(first.chip_id) != evaluate.event_of(other.chip_id)
    brighter = tmp_path / "brighter_S1Hand.tif"
    with rasterio.open(first.s1) as src:
        profile, bands = src.profile, src.read()
    bands[0] += 3
    with rasterio.open(brighter, "w", **profile) as dst:
        dst.write(bands)
    second = replace(first, chip_id=f"{evaluate.event_of(first.chip_id)}_999999", s1=brighter)
    chips = [first, second, other]
    vv = {c.chip_id: read_s1(c.s1)[0] for c in chips}
    own = {c.chip_id: otsu_threshold(vv[c.chip_id]) for c in chips}
    pooled = np.concatenate([vv[first.chip_id], vv[second.chip_id]])
    threshold = otsu_threshold(pooled)
    assert threshold == pytest.approx(brute_force_otsu(pooled), abs=0.1)
    assert own[first.chip_id] < threshold < own[second.chip_id]
    method = evaluate.otsu("VV", "event")
    method.prepare(chips)
    for c in chips:
        # the event's two chips at the pooled threshold; the other chip, alone in its
        # event, at its own
        t = own[c.chip_id] if c is other else threshold
        want = (vv[c.chip_id] <= t).astype(np.int8)
        assert c is other or (want != (vv[c.chip_id] <= own[c.chip_id])).any()
        np.testing.assert_array_equal(method.predict(c, read_s1(c.s1)), want, err_msg=c.chip_id)
    with pytest.raises(ValueError, match="unknown Otsu scope"):
        evaluate.otsu("VV", "scene")


# p = sigmoid(-(VV + 15)) is above t where VV < -15 + ln((1 - t) / t)
@pytest.mark.parametrize("threshold, below_db", [(None, -15.0), (0.3, -15.0 + np.log(0.7 / 0.3))])
def test_model_through_the_backend_matches_its_rule(data, tmp_path, threshold, below_db):
    path = tmp_path / "threshold.onnx"
    onnx.save(threshold_model(), path)            # water where VV < -15 dB at the card's 0.5
    chips, _ = evaluate.load_split(data, "test")
    board = evaluate.evaluate(chips, evaluate.model(path, tmp_path, device="cpu",
                                                    threshold=threshold))
    direct = Scoreboard()
    for chip in chips:
        s1 = read_s1(chip.s1)
        direct.add(chip.chip_id, (s1[0] < below_db).astype(np.int8), read_label(chip.label),
                   np.isfinite(s1).all(0))
    assert board.summary()["iou"] == pytest.approx(direct.summary()["iou"], abs=1e-4)
    assert board.summary()["tp"] == pytest.approx(direct.summary()["tp"], rel=1e-3)


def test_weak_and_external_are_scored_against_truth(data):
    chips, reference = evaluate.load_split(data, "weak")
    assert reference == "synthetic truth"
    weak = evaluate.masks(data / "v1.1/data/flood_events/WeaklyLabeled/S2IndexLabelWeak")
    s = evaluate.evaluate(chips, weak).summary()
    assert s["chips"] == 2 and s["iou"] is not None and s["iou"] < 1.0
    ext, _ = evaluate.load_split(data, "external", s2=True)
    ndwi = evaluate.evaluate(ext, evaluate.s2_index("ndwi")).summary()
    from_files = evaluate.evaluate(ext, evaluate.masks(data / "external/LabelWeak")).summary()
    assert ndwi["iou"] == pytest.approx(from_files["iou"])   # the stored labels are that rule


def test_missing_masks_are_listed(data, tmp_path):
    chips, _ = evaluate.load_split(data, "train")
    with pytest.raises(DatasetError, match=r"masks in .*: 3 problems"):
        evaluate.evaluate(chips, evaluate.masks(tmp_path))


def test_masks_on_another_grid_than_their_chip_are_refused(data, tmp_path, capsys):
    """A mask of the chip's size but shifted, or in another CRS, was scored as if it lay
    on the chip."""
    chips, _ = evaluate.load_split(data, "train")
    masks = tmp_path / "masks"
    masks.mkdir()
    for chip in chips:
        shutil.copy(chip.label, masks / f"{chip.chip_id}.tif")
    shifted, other_crs, no_crs = (masks / f"{c.chip_id}.tif" for c in chips[:3])
    with rasterio.open(shifted, "r+") as ds:
        ds.transform = ds.transform @ Affine.translation(3, 0)   # 3 pixels east
    with rasterio.open(other_crs, "r+") as ds:
        ds.crs = "EPSG:32630"
    from osgeo import gdal   # rasterio cannot remove a CRS
    gdal.Open(str(no_crs), gdal.GA_Update).SetProjection("")
    assert main(["evaluate", "--data", str(data), "--split", "train", "--masks", str(masks)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: masks in {masks}: 3 problems"
    assert err[1].startswith(f"  - chip {chips[0].chip_id}: {shifted} lies on another grid than "
                             f"its S1 {chips[0].s1.name} (origin S1 (")
    assert err[2] == (f"  - chip {chips[1].chip_id}: {other_crs} lies on another grid than its "
                      f"S1 {chips[1].s1.name} (CRS S1 EPSG:4326 vs mask EPSG:32630)")
    # a mask without a CRS was said to have "different CRS"
    assert err[3] == (f"  - chip {chips[2].chip_id}: {no_crs} lies on another grid than its "
                      f"S1 {chips[2].s1.name} (CRS S1 EPSG:4326 vs mask none)") and len(err) == 4
    # the same masks back on their grids score perfectly
    for chip in chips[:3]:
        shutil.copy(chip.label, masks / f"{chip.chip_id}.tif")
    assert evaluate.evaluate(chips, evaluate.masks(masks)).summary()["iou"] == 1.0


def test_cli_table_json_and_no_overwrite(data, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["evaluate", "--data", str(data), "--split", "test", "--split", "bolivia",
            "--otsu", "--masks", str(hand_folder(data) / "LabelHand"), "--json", str(out)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[2].startswith("otsu (VV)")      # Otsu is the first row
    doc = json.loads(out.read_text())
    rows = {(r["method"], r["split"]): r for r in doc["results"]}
    assert rows[("masks (LabelHand)", "bolivia")]["iou"] == 1.0
    assert len(rows[("otsu (VV)", "test")]["per_chip"]) == 1
    assert main(args) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(data)]) == 1
    assert "nothing to score" in capsys.readouterr().err
    # refused before scoring (it was a traceback after it)
    assert main(["evaluate", "--data", str(data), "--otsu", "--json", "/proc/x.json"]) == 1
    assert "/proc/x.json: cannot write in /proc" in capsys.readouterr().err


def test_real_chips_with_nothing_to_score(real_chips, tmp_path):
    split = tmp_path / "s.txt"
    split.write_text(f"{SPAIN}\nParaguay_34417\nGhana_83483\n")
    chips, _ = evaluate.load_split(real_chips, "test", split)
    board = evaluate.evaluate(chips, evaluate.otsu("VV"))
    per = board.chips
    assert per["Paraguay_34417"].scored == 0       # no valid radar
    assert per["Ghana_83483"].scored == 0          # nothing labelled
    assert 0.3 < per[SPAIN].iou < 0.9              # Otsu on a real flood chip: right, with errors


def test_a_split_file_names_its_rows_unless_a_split_does(real_chips, tmp_path, capsys):
    split = tmp_path / "spain_chips.csv"
    split.write_text(f"{SPAIN}_S1Hand.tif,{SPAIN}_LabelHand.tif\n")
    for extra, name in (([], "spain_chips"), (["--split", "valid"], "valid")):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--data", str(real_chips), "--split-file", str(split),
                     "--otsu", "--json", str(out), *extra]) == 0
        assert [r["split"] for r in json.loads(out.read_text())["results"]] == [name]
    capsys.readouterr()


def test_a_threshold_without_a_model_is_refused(data, capsys):
    assert main(["evaluate", "--data", str(data), "--otsu", "--threshold", "0.3"]) == 1
    assert "--threshold is a model's probability threshold: give --model too" in \
        capsys.readouterr().err


def test_the_table_keeps_a_long_method_name_whole():
    row = {"method": "model sarflood-student-compact 1.2.0", "split": "test", "iou": 0.5,
           "mean_chip_iou": 0.5, "precision": 0.5, "recall": 0.5, "chips": 3}
    assert "model sarflood-student-compact 1.2.0 test" in evaluate.format_table([row])


def test_the_table_keeps_a_long_split_name_in_its_column():
    """A --split-file's split is named by the user: its column widens to hold it."""
    row = {"method": "otsu", "split": "ghana_holdout_2019", "iou": 0.5,
           "mean_chip_iou": 0.5, "precision": 0.5, "recall": 0.5, "chips": 3}
    head, _, line = evaluate.format_table([row]).splitlines()
    assert line.index("ghana_holdout_2019") == head.index("split")
    assert line.index("50.00") + len("50.00") == head.index("IoU %") + len("IoU %")


def test_figure_png(data, tmp_path, capsys):
    out = tmp_path / "fig.png"
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / f".fig.{gone.pid}.tmp.png").write_bytes(b"half")   # as a SIGKILL leaves it
    assert main(["figure", "--data", str(data), "--split", "train", "--chips", "2", "--out", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]
    import matplotlib.image
    img = matplotlib.image.imread(out)
    assert img.shape[0] > 300 and img.shape[1] > 1000
    assert main(["figure", "--data", str(data), "--out", str(out)]) == 1
    assert "exists" in capsys.readouterr().err


def test_figure_needs_sentinel_2_only_of_the_chips_it_draws(real_chips, tmp_path, capsys):
    """It refused a chip asked for by --chip because other chips of the split had no S2Hand
    file (in ../shared only Spain has one)."""
    split = tmp_path / "two.csv"
    split.write_text("".join(f"{c}_S1Hand.tif,{c}_LabelHand.tif\n" for c in (SPAIN, "Ghana_83483")))
    out = tmp_path / "fig.png"
    assert main(["figure", "--data", str(real_chips), "--split-file", str(split), "--chip", SPAIN,
                 "--out", str(out)]) == 0 and out.is_file()
    assert main(["figure", "--data", str(real_chips), "--split-file", str(split), "--chips", "2",
                 "--out", str(tmp_path / "both.png")]) == 1
    assert "chip Ghana_83483: s2 file missing" in capsys.readouterr().err


def test_figure_names_a_split_files_chips_after_the_file(real_chips, tmp_path, capsys):
    """It called them split 'test' (the --split default), where evaluate says the file's name."""
    split = tmp_path / "my_chips.csv"
    split.write_text("Nope_1_S1Hand.tif,Nope_1_LabelHand.tif\n")
    assert main(["figure", "--data", str(real_chips), "--split-file", str(split),
                 "--out", str(tmp_path / "f.png")]) == 1
    assert f"split 'my_chips' ({split})" in capsys.readouterr().err


def test_figure_names_an_out_it_cannot_write_at_once(tmp_path, capsys):
    """A folder as --out said "exists; pass --overwrite", and an unwritable one failed
    only after the figure was drawn; the data path does not exist, so an answer about it
    would mean the work was done first."""
    nowhere = str(tmp_path / "nowhere")
    for out, extra, text in ((tmp_path, [], f"{tmp_path}: is a folder, not a file"),
                             (tmp_path, ["--overwrite"], f"{tmp_path}: is a folder, not a file"),
                             ("/proc/fig.png", [], "/proc/fig.png: cannot write in /proc")):
        assert main(["figure", "--data", nowhere, "--out", str(out), *extra]) == 1
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1, err


def test_figure_refuses_an_out_without_an_image_suffix_and_no_chips_at_once(tmp_path, capsys):
    """Each ended in a matplotlib traceback ("Format 'tmp' is not supported", "Number of
    rows must be a positive integer"), the first after the figure was drawn; the data
    path does not exist, so an answer about it would mean the work was done first."""
    nowhere = str(tmp_path / "nowhere")
    for args, text in (([f"--out={tmp_path / 'fig'}"], f"--out {tmp_path / 'fig'}: name an "
                        "image file, ending in .png or another suffix matplotlib writes ("),
                       ([f"--out={tmp_path / 'fig.png'}", "--chips", "0"],
                        "--chips 0: give at least 1")):
        assert main(["figure", "--data", nowhere, *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {text}") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_figure_takes_a_model_or_masks_not_both(tmp_path, capsys):
    """Given both, the figure drew the model's predictions and dropped --masks without a word."""
    with pytest.raises(SystemExit) as stopped:
        main(["figure", "--data", str(tmp_path), "--out", str(tmp_path / "fig.png"),
              "--model", "m.onnx", "--masks", str(tmp_path)])
    assert stopped.value.code == 2
    assert "argument --masks: not allowed with argument --model" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_weak_chips_without_any_truth_are_refused_in_one_line(data, tmp_path):
    """The real dataset has no synthetic truth: its 4385 weak chips were each listed as a
    problem (the first ten and the count) instead of saying what can be scored."""
    copy = tmp_path / "real_like"
    shutil.copytree(data, copy)
    shutil.rmtree(copy / "synthetic_truth" / "WeaklyLabeled")
    with pytest.raises(DatasetError) as err:
        evaluate.load_split(copy, "weak")
    assert str(err.value) == (f"split 'weak' can be scored only on synthetic data, against its "
                              f"synthetic_truth files, and {copy} has none; score the "
                              f"hand-labelled splits (train, valid, test, bolivia)")


def test_a_json_that_cannot_be_written_is_one_line_and_the_old_file_is_kept(real_chips, tmp_path):
    """A full disk at the last write was a traceback. A file-size limit (EFBIG, with
    SIGXFSZ ignored) fails the write as a full disk (ENOSPC) would."""
    split = tmp_path / "s.csv"
    split.write_text(f"{SPAIN}_S1Hand.tif,{SPAIN}_LabelHand.tif\n")
    out = tmp_path / "r.json"
    out.write_text("{}")

    def small_files():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    proc = subprocess.run([sys.executable, "-m", "training", "evaluate", "--data",
                           str(real_chips), "--split-file", str(split), "--otsu", "--json",
                           str(out), "--overwrite"], capture_output=True, text=True,
                          preexec_fn=small_files, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (f"error: {out}: cannot be written (File too large); the file "
                           f"there before, if any, is kept\n")
    assert out.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "s.csv"]


def test_a_split_given_twice_is_scored_once_and_a_checkpoint_is_told_to_be_exported(
        data, tmp_path, capsys):
    """--split test --split test printed the rows twice; --model best.pt printed ONNX
    Runtime's protobuf parsing error."""
    out = tmp_path / "r.json"
    assert main(["evaluate", "--data", str(data), "--split", "test", "--split", "test",
                 "--otsu", "--json", str(out)]) == 0
    capsys.readouterr()
    assert [r["split"] for r in json.loads(out.read_text())["results"]] == ["test"]
    best = tmp_path / "best.pt"
    best.write_bytes(b"PK\x03\x04")
    assert main(["evaluate", "--data", str(data), "--model", str(best)]) == 1
    assert capsys.readouterr().err == (
        f"error: --model {best}: a PyTorch checkpoint; evaluate runs exported ONNX models: "
        f"python -m training export {best} --out MODEL.onnx first\n")
