"""Otsu on histograms whose answer is known."""
import numpy as np

from backend.otsu import Histogram, otsu_from_histogram, otsu_threshold, water_mask


def test_bimodal_threshold_lies_between_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-22, 1.0, 30000), rng.normal(-8, 1.0, 70000)])
    t = otsu_threshold(values)
    assert -21 < t < -9  # between the modes, more than one sigma from each


def test_threshold_is_the_brute_force_optimum_within_one_bin():
    """Otsu's threshold maximises w0 * w1 * (mu0 - mu1)^2. Found here without a histogram:
    every 0.01 dB step is tried on the raw values; the code's 0.05 dB bins may move it by
    one bin at most."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-20, 2.0, 30000), rng.normal(-10, 2.0, 70000)])
    v = np.sort(values)
    sums = np.concatenate([[0.0], np.cumsum(v)])
    n = len(v)
    candidates = np.linspace(-25.0, -5.0, 2001)   # both classes hold values at every step
    k = np.searchsorted(v, candidates)            # values below each candidate
    between = k * (n - k) * (sums[k] / k - (sums[-1] - sums[k]) / (n - k)) ** 2
    best = candidates[np.argmax(between)]
    assert -16 < best < -14
    assert abs(otsu_threshold(values) - best) <= 0.05


def test_streamed_histogram_equals_one_shot():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(-20, 2, 5000), rng.normal(-9, 2, 5000)])
    hist = Histogram()
    for block in np.array_split(values, 7):
        hist.add(block)
    assert otsu_from_histogram(hist.counts, hist.edges) == otsu_threshold(values)


def test_two_point_masses_split_between_them():
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert otsu_from_histogram(np.array([5, 0, 0, 5]), edges) in (1.0, 2.0, 3.0)


def test_undefined_cases_return_none():
    assert otsu_threshold(np.full(10, np.nan)) is None
    assert otsu_threshold(np.full(10, -15.0)) is None


def test_mask_codes():
    m = water_mask(np.array([-20.0, -5.0, np.nan]), -15.0)
    assert m.tolist() == [1, 0, 255]


def test_otsu_and_predict_count_the_same_pixels_as_no_data(tmp_path, models):
    """A pixel with VV but no VH was no data to predict and valid (dry or water) to otsu:
    the baseline and the model covered different areas. Also a VH of linear power 0 where
    VV has data (below the noise floor) is data to both."""
    from backend.engine import PredictOptions, predict
    from backend.otsu import OtsuOptions, otsu_map
    from tests.backend.conftest import write_raster

    rng = np.random.default_rng(3)
    vv = np.where(rng.random((96, 128)) < 0.3, 10 ** -2.2, 10 ** -0.8).astype(np.float32)
    vh = (vv / 5).astype(np.float32)
    vh[:, :40] = np.nan          # VH missing over a third
    vh[50:60, 60:70] = 0.0       # below the noise floor
    vv[:10] = np.nan
    scene = write_raster(tmp_path / "s1_linear.tif", np.stack([vv, vh]), units="linear")
    m = predict(PredictOptions(inputs=[scene], mask=str(tmp_path / "m.tif"),
                               model=models["threshold"]))
    o = otsu_map(OtsuOptions(inputs=[scene], mask=str(tmp_path / "o.tif")))
    expected = int((np.isfinite(vv) & np.isfinite(vh)).sum())
    assert m["valid_pixels"] == o["valid_pixels"] == expected


def test_a_run_after_a_published_one_can_still_be_stopped_at_once(tmp_path, models, monkeypatch):
    """The demo runs predict, then Otsu, in one process. predict's commit marked the
    outputs as being renamed into place, and the mark stayed for Otsu: a second Ctrl-C
    during Otsu was ignored as if its outputs were already being published."""
    from backend import pipeline, sink
    from backend.engine import PredictOptions, predict
    from backend.otsu import OtsuOptions, otsu_map
    from tests.backend.conftest import random_db, write_raster

    scene = write_raster(tmp_path / "s1.tif", random_db((64, 64), seed=5))
    predict(PredictOptions(inputs=[scene], mask=str(tmp_path / "m.tif"), model=models["threshold"]))
    assert pipeline.outputs_published()
    seen = []
    commit = sink.OutputSink.commit

    def record_then_commit(self, *args, **kwargs):
        seen.append(pipeline.outputs_published())
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(sink.OutputSink, "commit", record_then_commit)
    otsu_map(OtsuOptions(inputs=[scene], mask=str(tmp_path / "o.tif")))
    assert seen == [False]
