"""The reader on the real Sen1Floods11 v1.1 chips in ../shared (format fixtures, never trained on)."""
import numpy as np
import pytest
import rasterio
import torch

from training.data.conventions import normalise_s1, normalise_s2
from training.data.datasets import hand_labeled
from training.data.io import grid_of, ground_pixel_m, read_label, read_s1, read_s2
from training.data.layout import DatasetError, Layout
from training.data.sets import hand_chips

SPAIN, PARAGUAY, GHANA = "Spain_7370579", "Paraguay_34417", "Ghana_83483"


@pytest.fixture()
def split_csv(tmp_path):
    def write(*chips: str, name: str = "flood_test_data.csv") -> str:
        path = tmp_path / name
        path.write_text("".join(f"{c}_S1Hand.tif,{c}_LabelHand.tif\n" for c in chips))
        return str(path)
    return write


def test_flat_folder_is_a_hand_labelled_layout(real_chips):
    layout = Layout.find(real_chips)
    assert layout.hand == real_chips
    assert (layout.hand / "S1Hand" / f"{SPAIN}_S1Hand.tif").is_file()
    # training reads the split files of the v1.1 layout, which a flat folder lacks
    with pytest.raises(DatasetError, match="a flat folder of hand-labelled chips without "
                                           "flood_train_data.csv: training and reproduce need"):
        hand_chips(real_chips, "train")


def test_s1_bands_selected_by_name_and_nan_kept(real_chips):
    path = real_chips / "S1Hand" / f"{SPAIN}_S1Hand.tif"
    s1 = read_s1(path)
    with rasterio.open(path) as ds:
        assert ds.descriptions == ("VV", "VH")
        raw = ds.read()
    assert s1.shape == (2, 512, 512) and s1.dtype == np.float32
    np.testing.assert_array_equal(s1, raw)
    empty = read_s1(real_chips / "S1Hand" / f"{PARAGUAY}_S1Hand.tif")
    assert np.isnan(empty).all()


def test_s2_teacher_bands_are_b2_b3_b4_b8(real_chips):
    path = real_chips / "S2Hand" / f"{SPAIN}_S2Hand.tif"
    s2 = read_s2(path, ("B2", "B3", "B4", "B8"))
    with rasterio.open(path) as ds:
        raw = ds.read([2, 3, 4, 8])
        assert ds.dtypes[0] == "int16" and ds.nodata == 0
    np.testing.assert_array_equal(s2, raw)
    assert read_s2(path).shape == (13, 512, 512)


def test_labels_keep_minus_one(real_chips):
    spain = read_label(real_chips / "LabelHand" / f"{SPAIN}_LabelHand.tif")
    assert set(np.unique(spain)) == {-1, 0, 1}
    assert (spain == 1).sum() == 70035   # the count the fixture README's chip holds
    ghana = read_label(real_chips / "LabelHand" / f"{GHANA}_LabelHand.tif")
    assert (ghana == -1).all()


def test_appendix_a_normalisation():
    db = np.array([[[-30.0, -20.0, -10.0, 0.0, 5.0, np.nan]],
                   [[-40.0, -30.0, -15.0, 0.0, 5.0, -20.0]]], np.float32)
    x, valid = normalise_s1(db)
    np.testing.assert_allclose(x[0, 0], [0, 0, 0.5, 1, 1, 0])
    np.testing.assert_allclose(x[1, 0], [0, 0, 0.5, 1, 1, 0])   # the NaN pixel is 0 in both bands
    assert valid.tolist() == [[True] * 5 + [False]]
    s2 = np.array([[[0, 1500, 3000, 6000]]] * 4, np.int16)
    y, s2_valid = normalise_s2(s2)
    np.testing.assert_allclose(y[:, 0], [[0, 0.5, 1, 1]] * 4)
    assert s2_valid.tolist() == [[False, True, True, True]]


def test_grids_equal_within_float_noise(real_chips):
    # Sen1Floods11's S1 and label transforms differ in the 15th digit: the same grid
    s1 = grid_of(real_chips / "S1Hand" / f"{SPAIN}_S1Hand.tif")
    label = grid_of(real_chips / "LabelHand" / f"{SPAIN}_LabelHand.tif")
    assert s1.transform != label.transform
    assert s1.mismatch(label) is None


def test_dataset_items_on_real_chips(real_chips, split_csv):
    ds = hand_labeled(real_chips, "test", s2=False, split_file=split_csv(SPAIN, PARAGUAY, GHANA))
    spain, paraguay, ghana = (ds[i] for i in range(3))
    assert [spain["id"], paraguay["id"], ghana["id"]] == [SPAIN, PARAGUAY, GHANA]
    for item in (spain, paraguay, ghana):
        assert item["s1"].dtype == torch.float32 and item["label"].dtype == torch.int64
        assert item["valid"].dtype == torch.bool
        assert 0.0 <= item["s1"].min() and item["s1"].max() <= 1.0
    # Paraguay: no valid radar -> nothing to learn from, label -1 everywhere
    assert not paraguay["valid"].any() and (paraguay["label"] == -1).all()
    assert (paraguay["s1"] == 0).all()
    # Ghana: nothing labelled
    assert (ghana["label"] == -1).all()
    # Spain: water kept where S1 is valid (70035 of the chip's 512 x 512 pixels)
    assert abs((spain["label"] == 1).float().mean() - 70035 / 512 ** 2) < 0.002


def test_chips_are_read_on_10_m_ground_pixels_as_the_backend_reads_them(real_chips, split_csv):
    """Sen1Floods11's EPSG:4326 chips are 7.9 m wide in Spain: the backend resamples such
    an input to a 10 m model's grid, and a network trained on the chip's own grid learnt
    other ground than it is shown (IoU 52.2 through the backend, 54.6 on the chip grid)."""
    ds = hand_labeled(real_chips, "test", s2=True, split_file=split_csv(SPAIN))
    spain = ds[0]
    height_m, width_m = ground_pixel_m(real_chips / "S1Hand" / f"{SPAIN}_S1Hand.tif")
    assert 7.8 < width_m < 8.0 and 9.9 < height_m < 10.0
    shape = (round(512 * height_m / 10), round(512 * width_m / 10))
    for key in ("valid", "label", "s2_valid"):
        assert tuple(spain[key].shape) == shape
    assert tuple(spain["s1"].shape) == (2, *shape) and tuple(spain["s2"].shape) == (4, *shape)
    assert set(spain["label"].unique().tolist()) <= {-1, 0, 1}
    # within the backend's 5 %: read as it is
    ghana = hand_labeled(real_chips, "test", s2=False, split_file=split_csv(GHANA))[0]
    assert tuple(ghana["valid"].shape) == (512, 512)


def test_chips_of_several_ground_grids_are_scored_together(real_chips, split_csv):
    from training.train import chip_batches
    ds = hand_labeled(real_chips, "test", s2=False, split_file=split_csv(GHANA, SPAIN, PARAGUAY))
    sizes = [tuple(b["valid"].shape) for b in chip_batches(ds, 4)]
    assert [s[0] for s in sizes] == [1, 1, 1] and sizes[0][1:] == (512, 512)


def test_dataset_with_s2_on_spain(real_chips, split_csv):
    item = hand_labeled(real_chips, "test", split_file=split_csv(SPAIN))[0]
    assert item["s2_valid"].all() and item["s2"].shape[:1] == (4,)
    assert 0.0 < item["s2"].mean() < 1.0


def test_missing_s2_is_reported_for_every_chip(real_chips, split_csv):
    with pytest.raises(DatasetError) as err:
        hand_chips(real_chips, "test", split_file=split_csv(SPAIN, PARAGUAY, GHANA), s2=True)
    msg = str(err.value)
    assert "2 problems" in msg
    assert f"{PARAGUAY}_S2Hand.tif" in msg and f"{GHANA}_S2Hand.tif" in msg


def test_txt_split_with_chip_ids(real_chips, tmp_path):
    path = tmp_path / "flood_test_data.txt"
    path.write_text(f"{SPAIN}\n\n{GHANA}_S1Hand.tif\n")
    chips = hand_chips(real_chips, "test", split_file=path)
    assert [c.chip_id for c in chips] == [SPAIN, GHANA]


def test_real_chips_pass_the_linear_power_check_and_their_linear_copies_do_not(real_chips, tmp_path):
    """S1 in linear power read as dB clipped every pixel to the top of the window: the
    network saw a constant image, Otsu scored 8.4 IoU instead of 18.7, and nothing said so."""
    for path in sorted((real_chips / "S1Hand").glob("*.tif")):
        db = read_s1(path)
        if not np.isfinite(db).any():
            continue  # Paraguay's chip holds no S1 data
        with rasterio.open(path) as ds:
            profile = ds.profile
        linear = tmp_path / path.name
        with rasterio.open(linear, "w", **profile) as ds:
            ds.write(10 ** (db / 10))
            ds.descriptions = ("VV", "VH")
        with pytest.raises(DatasetError, match=f"^{linear}: VV holds 0 of \\d+ values below 0 "
                                               "dB .*linear power\\? .*convert with 10\\*log10$"):
            read_s1(linear)
