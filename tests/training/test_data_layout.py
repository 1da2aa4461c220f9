"""Layout resolution and bad-input reporting: every problem up front, never an IndexError."""
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from training.data.datasets import ChipDataset
from training.data.io import read_label, read_mask, read_s1, read_s2
from training.data.layout import MAX_LISTED, DatasetError, Layout, parse_split
from training.data.sets import external_chips, hand_chips, weak_chips

PX = 8.983152841195215e-05


def tif(path: Path, data: np.ndarray, origin=(10.0, 5.0), nodata=None, descriptions=(),
        **options) -> Path:
    data = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs="EPSG:4326",
                       transform=from_origin(*origin, PX, PX), nodata=nodata, **options) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions, start=1):
            ds.set_band_description(i, d)
    return path


def hand_chip(root: Path, chip: str, size: int = 8, label_origin=(10.0, 5.0)) -> None:
    hand = root / "v1.1/data/flood_events/HandLabeled"
    tif(hand / "S1Hand" / f"{chip}_S1Hand.tif", np.full((2, size, size), -12, np.float32),
        nodata=float("nan"), descriptions=("VV", "VH"))
    tif(hand / "LabelHand" / f"{chip}_LabelHand.tif", np.zeros((size, size), np.int16), origin=label_origin)


def corrupt(path: Path) -> None:
    """Zero the second quarter of a compressed raster: its header stays readable, some of
    its blocks do not."""
    data = bytearray(path.read_bytes())
    n = len(data)
    data[n // 4: n // 2] = bytes(n // 2 - n // 4)
    path.write_bytes(bytes(data))


def split(root: Path, name: str, lines: list[str]) -> Path:
    path = root / "v1.1/splits/flood_handlabeled" / f"flood_{name}_data.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{ln}\n" for ln in lines))
    return path


def test_layout_accepts_dataset_root_or_v11_folder(tmp_path):
    hand_chip(tmp_path, "A_1")
    assert Layout.find(tmp_path).hand == tmp_path / "v1.1/data/flood_events/HandLabeled"
    assert Layout.find(tmp_path / "v1.1").root == tmp_path


def test_layout_rejects_missing_and_foreign_folders(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        Layout.find(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="not a Sen1Floods11 folder"):
        Layout.find(tmp_path)


def test_split_problems_are_all_listed_with_line_numbers(tmp_path):
    hand_chip(tmp_path, "A_1")
    hand_chip(tmp_path, "B_2", size=16)                     # grid differs from its label below
    tif(tmp_path / "v1.1/data/flood_events/HandLabeled/LabelHand/B_2_LabelHand.tif",
        np.zeros((8, 8), np.int16))
    hand_chip(tmp_path, "C_3", label_origin=(11.0, 5.0))    # label shifted by a degree
    split(tmp_path, "test", ["A_1_S1Hand.tif,A_1_LabelHand.tif",
                             "not a chip",
                             "A_1_S1Hand.tif,A_1_LabelHand.tif",
                             "D_4_S1Hand.tif,D_4_LabelHand.tif",
                             "B_2_S1Hand.tif,B_2_LabelHand.tif",
                             "C_3_S1Hand.tif,C_3_LabelHand.tif",
                             "E_5_S1Hand.tif,E_5_Label.tif"])
    with pytest.raises(DatasetError) as err:
        hand_chips(tmp_path, "test")
    msg = str(err.value)
    assert "7 problems" in msg
    assert "line 2: cannot read a chip from 'not a chip'" in msg
    assert "line 3: chip A_1 already listed on line 1" in msg
    assert "line 7: cannot read a chip" in msg                      # label name does not match
    assert "chip D_4: s1 file missing" in msg and "chip D_4: label file missing" in msg
    # each value named: "(origin (10, 5) vs (11, 5))" left the reader to guess which was s1's
    assert "chip B_2: label grid differs from s1 (size s1 16x16 vs label 8x8)" in msg
    assert ("chip C_3: label grid differs from s1 (origin s1 (10.00000000, 5.00000000) vs "
            "label (11.00000000, 5.00000000)): ") in msg


def test_chip_ids_need_not_be_event_and_number(tmp_path):
    """An analyst's own chip 'myscene_S1Hand.tif' was refused: ids had to hold an
    underscore, as Sen1Floods11's Event_Chip do, and no document said so."""
    hand_chip(tmp_path, "myscene")
    hand_chip(tmp_path, "Spain_7370579")
    split(tmp_path, "test", ["myscene_S1Hand.tif,myscene_LabelHand.tif",
                             "Spain_7370579_S1Hand.tif,Spain_7370579_LabelHand.tif"])
    assert [c.chip_id for c in hand_chips(tmp_path, "test")] == ["myscene", "Spain_7370579"]


def test_many_problems_show_the_first_few_and_the_count(tmp_path):
    hand_chip(tmp_path, "A_1")
    split(tmp_path, "train", [f"X_{i}_S1Hand.tif,X_{i}_LabelHand.tif" for i in range(30)])
    with pytest.raises(DatasetError) as err:
        hand_chips(tmp_path, "train")
    msg = str(err.value)
    assert msg.splitlines()[0].endswith("60 problems")
    assert len(msg.splitlines()) == 1 + MAX_LISTED + 1
    assert msg.splitlines()[-1] == f"  - ... and {60 - MAX_LISTED} more"


def test_unknown_split_missing_split_file_and_empty_split(tmp_path):
    hand_chip(tmp_path, "A_1")
    with pytest.raises(DatasetError, match="unknown split 'holdout'"):
        hand_chips(tmp_path, "holdout")
    with pytest.raises(DatasetError, match="split file not found"):
        hand_chips(tmp_path, "valid")
    split(tmp_path, "valid", [""])
    with pytest.raises(DatasetError, match="lists no chips"):
        hand_chips(tmp_path, "valid")


def test_unreadable_file_is_reported_not_raised_deep(tmp_path):
    hand_chip(tmp_path, "A_1")
    (tmp_path / "v1.1/data/flood_events/HandLabeled/LabelHand/A_1_LabelHand.tif").write_bytes(b"not a tiff")
    split(tmp_path, "test", ["A_1_S1Hand.tif,A_1_LabelHand.tif"])
    with pytest.raises(DatasetError, match="chip A_1: .*A_1_LabelHand.tif: not a readable raster"):
        hand_chips(tmp_path, "test")


def test_headers_the_readers_refuse_are_reported_before_any_pixel_is_read(tmp_path):
    """S2 band names or count, an integer S1 and a label of two bands each surfaced only
    when the chip was first read, mid-training, as a traceback."""
    hand = tmp_path / "v1.1/data/flood_events/HandLabeled"
    chips = ("A_1", "B_2", "C_3", "D_4", "E_5")
    for c in chips:
        hand_chip(tmp_path, c)
        tif(hand / "S2Hand" / f"{c}_S2Hand.tif", np.ones((13, 8, 8), np.int16))  # unnamed: B1..B12
    tif(hand / "S2Hand/A_1_S2Hand.tif", np.ones((4, 8, 8), np.int16),
        descriptions=("B1", "B2", "B3", "B4"))
    tif(hand / "S2Hand/B_2_S2Hand.tif", np.ones((10, 8, 8), np.int16))
    tif(hand / "S1Hand/C_3_S1Hand.tif", np.zeros((2, 8, 8), np.int16), descriptions=("VV", "VH"))
    tif(hand / "LabelHand/D_4_LabelHand.tif", np.zeros((2, 8, 8), np.int16))
    split(tmp_path, "train", [f"{c}_S1Hand.tif,{c}_LabelHand.tif" for c in chips])
    with pytest.raises(DatasetError) as err:
        hand_chips(tmp_path, "train", s2=True)
    lines = str(err.value).splitlines()
    assert lines[0].endswith("4 problems") and len(lines) == 5
    assert re.search(r"chip A_1: .*A_1_S2Hand.tif: bands B8 not found", lines[1])
    assert re.search(r"chip B_2: .*B_2_S2Hand.tif: 10 unnamed bands; expected 13", lines[2])
    assert re.search(r"chip C_3: .*C_3_S1Hand.tif: Sentinel-1 values are int16", lines[3])
    assert re.search(r"chip D_4: .*D_4_LabelHand.tif: a label has 1 band, this file has 2", lines[4])
    # S2 is checked only where it is read
    with pytest.raises(DatasetError) as err:
        hand_chips(tmp_path, "train")
    assert str(err.value).splitlines()[0].endswith("2 problems")


def test_what_shows_only_in_the_pixels_names_the_file_when_read(tmp_path):
    """The up-front check reads headers only; a corrupt block was a RasterioIOError
    naming no file, in training and in evaluate."""
    hand_chip(tmp_path, "A_1", size=64)
    s1 = tif(tmp_path / "v1.1/data/flood_events/HandLabeled/S1Hand/A_1_S1Hand.tif",
             np.random.default_rng(0).normal(-12, 3, (2, 64, 64)).astype(np.float32),
             descriptions=("VV", "VH"), compress="deflate")
    corrupt(s1)
    split(tmp_path, "test", ["A_1_S1Hand.tif,A_1_LabelHand.tif"])
    dataset = ChipDataset(hand_chips(tmp_path, "test"))
    with pytest.raises(DatasetError, match=f"^{re.escape(str(s1))}: corrupt data, its pixels "
                                           "cannot be read .*band 1"):
        dataset[0]


def test_raster_contents_are_checked(tmp_path):
    three = tif(tmp_path / "three.tif", np.zeros((3, 4, 4), np.float32))
    with pytest.raises(DatasetError, match="three.tif: 3 unnamed bands; expected 2"):
        read_s1(three)
    named = tif(tmp_path / "named.tif", np.zeros((2, 4, 4), np.float32), descriptions=("HH", "HV"))
    with pytest.raises(DatasetError, match="named.tif: bands VV, VH not found .bands are HH, HV"):
        read_s1(named)
    ints = tif(tmp_path / "ints.tif", np.zeros((2, 4, 4), np.int16))
    with pytest.raises(DatasetError, match="ints.tif: Sentinel-1 values are int16"):
        read_s1(ints)
    with pytest.raises(DatasetError, match="named.tif: bands B2 not found"):
        read_s2(named, ("B2",))
    label = tif(tmp_path / "label.tif", np.array([[0, 1], [2, 7]], np.int16))
    with pytest.raises(DatasetError, match="label.tif: label holds values 2, 7; expected only -1, 0, 1"):
        read_label(label)
    with pytest.raises(DatasetError, match="label.tif: a mask has 1 band|label.tif: mask holds values"):
        read_mask(label)
    with pytest.raises(DatasetError, match="gone.tif: file not found"):
        read_label(tmp_path / "gone.tif")


def test_nodata_tags_become_nan_and_minus_one(tmp_path):
    s1 = tif(tmp_path / "s1.tif", np.array([[[-9999, -10]], [[-20, -9999]]], np.float32),
             nodata=-9999, descriptions=("VV", "VH"))
    out = read_s1(s1)
    assert np.isnan(out[0, 0, 0]) and np.isnan(out[1, 0, 1]) and out[0, 0, 1] == -10
    mask = tif(tmp_path / "mask.tif", np.array([[0, 1, 255]], np.uint8))
    assert read_mask(mask).tolist() == [[0, 1, -1]]
    lab = tif(tmp_path / "lab.tif", np.array([[0, 1, 9]], np.uint8), nodata=9)
    assert read_label(lab).tolist() == [[0, 1, -1]]


def test_weak_and_external_sets_report_missing_parts(tmp_path):
    root = tmp_path / "d"
    (root / "v1.1").mkdir(parents=True)
    with pytest.raises(DatasetError, match="S1Weak: weakly labelled folder not found"):
        weak_chips(root)
    weak = root / "v1.1/data/flood_events/WeaklyLabeled"
    tif(weak / "S1Weak" / "A_1_S1Weak.tif", np.zeros((2, 4, 4), np.float32), descriptions=("VV", "VH"))
    with pytest.raises(DatasetError, match="S2IndexLabelWeak: folder not found"):
        weak_chips(root)
    (weak / "S2IndexLabelWeak").mkdir()
    with pytest.raises(DatasetError, match="chip A_1: label file missing: .*A_1_S2IndexLabelWeak.tif"):
        weak_chips(root)
    with pytest.raises(DatasetError, match="external_train_data.csv"):
        external_chips(root)


def test_a_split_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Excel's "CSV UTF-8" and Windows tools begin the file with one: the first line was
    refused as "cannot read a chip from '\\ufeffX_S1Hand.tif,...'"."""
    for name, text in (("s.csv", "USA_2_S1Hand.tif,USA_2_LabelHand.tif\r\n"), ("s.txt", "USA_2\n")):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert parse_split(path, "S1Hand", "LabelHand") == (["USA_2"], [])


def test_parse_split_reads_csv_and_txt(tmp_path):
    csv_path = tmp_path / "s.csv"
    csv_path.write_text("Sri-Lanka_1_S1Hand.tif, Sri-Lanka_1_LabelHand.tif\n\nUSA_2_S1Hand.tif,USA_2_LabelHand.tif\n")
    assert parse_split(csv_path, "S1Hand", "LabelHand") == (["Sri-Lanka_1", "USA_2"], [])
    txt = tmp_path / "s.txt"
    txt.write_text("Sri-Lanka_1\nUSA_2_S1Hand.tif\n")
    assert parse_split(txt, "S1Hand", "LabelHand") == (["Sri-Lanka_1", "USA_2"], [])


def test_a_v1_1_download_under_another_name_is_told_to_be_renamed(tmp_path):
    root = tmp_path / "sen1floods11"
    (root / "data/flood_events").mkdir(parents=True)
    (root / "splits").mkdir()
    with pytest.raises(DatasetError, match="holds v1.1's data/ and splits/ under another name; "
                                           "rename it v1.1"):
        Layout.find(root)


def test_hand_splits_that_share_a_chip_are_refused_before_training(tmp_path):
    """A valid or test split listing train chips trained and scored without a word: the
    table's test IoU then counted chips the network had learnt."""
    from training.methods import get_method
    from training.rundata import open_run_data
    from training.synth import writer

    root = tmp_path / "ds"
    writer.generate(root, chips=8, weak=0, external=0, seed=5)
    splits = root / "v1.1/splits/flood_handlabeled"
    train = (splits / "flood_train_data.csv").read_text().splitlines()
    with open(splits / "flood_test_data.csv", "a") as f:
        f.write(train[0] + "\n")
    chip = train[0].split("_S1Hand")[0]
    with pytest.raises(DatasetError, match=rf"share 1 chip\(s\): {chip} \(train and test\)"):
        open_run_data(root, get_method("hand"), cache=False)
