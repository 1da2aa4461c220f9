"""Output kinds of the card: a water logit and class scores (logits or probabilities, the
water class in any channel) give the exact probability their numbers mean; and each kind
of file the backend writes is taken only where that kind is wanted."""
from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import onnx
import pytest
import rasterio
from onnx import TensorProto, helper, numpy_helper

from backend.corrections import correct_mask
from backend.engine import PredictOptions, predict
from backend.errors import CardError, InputError, UsageError
from backend.finalize import finalize
from backend.stats import mask_stats
from tests.backend.conftest import UTM, Collect, random_db, run_cli, sigmoid, write_raster
from training.toy_models import RAW_DB_CLIP, raw_db_card

SCALE = numpy_helper.from_array(np.array([-1.0, 0.0], np.float32).reshape(1, 2, 1, 1), "w")
BIAS = numpy_helper.from_array(np.array([-15.0], np.float32), "b")


def _graph(kind: str, water_channel: int | None = None, classes: int = 2) -> onnx.ModelProto:
    """The water logit -(VV + 15), as the kind asks: alone, or beside dry classes of logit 0
    (class_probabilities: softmaxed in the graph)."""
    card = dataclasses.replace(raw_db_card(f"kind-{kind}", margin=0), output_kind=kind,
                               water_channel=water_channel)
    nodes = [helper.make_node("Conv", ["s1", "w", "b"], ["water_logit"])]
    channels = 1
    if water_channel is not None:
        channels = classes
        nodes.append(helper.make_node("Mul", ["water_logit", "zero"], ["dry_logit"]))
        order = ["dry_logit"] * classes
        order[water_channel] = "water_logit"
        last = "scores" if kind == "class_probabilities" else "water_probability"
        nodes.append(helper.make_node("Concat", order, [last], axis=1))
        if kind == "class_probabilities":
            nodes.append(helper.make_node("Softmax", ["scores"], ["water_probability"], axis=1))
    else:
        nodes.append(helper.make_node("Identity", ["water_logit"], ["water_probability"]))
    zero = numpy_helper.from_array(np.zeros(1, np.float32), "zero")
    graph = helper.make_graph(
        nodes, "kinds", [helper.make_tensor_value_info("s1", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [helper.make_tensor_value_info("water_probability", TensorProto.FLOAT,
                                       ["N", channels, "H", "W"])], [SCALE, BIAS, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"sarflood_card": card.to_json()})
    return model


@pytest.mark.parametrize("kind, water_channel, classes", [
    ("water_logit", None, 2),
    ("class_logits", 1, 2),
    ("class_logits", 0, 3),
    ("class_probabilities", 2, 3),
])
def test_each_kind_gives_the_water_probability(tmp_path, kind, water_channel, classes):
    x = random_db((90, 70), seed=3, nan_frac=0.02)
    x[0, :5, 0] = [-99.0, 80.0, -15.0, 60.0, -90.0]   # far into both tails
    src = write_raster(tmp_path / "s1.tif", x)
    path = tmp_path / "m.onnx"
    onnx.save(_graph(kind, water_channel, classes), path)
    r = predict(PredictOptions([str(src)], mask=str(tmp_path / "mask.tif"),
                               probability=str(tmp_path / "p.tif"), model=str(path)))
    assert r["outputs"]["probability"]
    with rasterio.open(tmp_path / "p.tif") as ds:
        p = ds.read(1)
    # the card clips VV to RAW_DB_CLIP; each dry class of logit 0 weighs 1 against e^logit
    logit = -(np.clip(x[0].astype(np.float64), *RAW_DB_CLIP) + 15)
    expected = sigmoid(logit - np.log(classes - 1)) if water_channel is not None else sigmoid(logit)
    valid = np.isfinite(x).all(axis=0)
    assert np.array_equal(np.isnan(p), ~valid)
    np.testing.assert_allclose(p[valid], expected[valid], atol=2e-7)


def test_a_water_channel_beyond_the_graph_is_refused_by_card_and_predict(tmp_path):
    path = tmp_path / "m.onnx"
    model = _graph("class_logits", 1, 2)
    card = dataclasses.replace(raw_db_card("kind-class_logits", margin=0),
                               output_kind="class_logits", water_channel=2)
    helper.set_model_props(model, {"sarflood_card": card.to_json()})
    onnx.save(model, path)
    expected = "has 2 channels; the card's output.water_channel is 2"
    p = run_cli("card", str(path))
    assert p.returncode == 1 and expected in p.stderr, p.stderr
    src = write_raster(tmp_path / "s1.tif", random_db((20, 20)))
    with pytest.raises(CardError, match=expected):
        predict(PredictOptions([str(src)], mask=str(tmp_path / "mask.tif"), model=str(path)))
    assert not (tmp_path / "mask.tif").exists()


def test_card_prints_the_water_channel(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_graph("class_logits", 0, 3), path)
    p = run_cli("card", str(path))
    assert p.returncode == 0, p.stderr
    assert "(class_logits, water channel 0)" in p.stdout


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, models) -> dict[str, str]:
    """A run's mask, uint8 and float32 probability and uncertainty, of a scene whose
    probabilities crowd around 0.5 (the threshold model: p = sigmoid(-(VV + 15)))."""
    d = tmp_path_factory.mktemp("outputs")
    x = random_db((40, 50), seed=5, nan_frac=0.02)
    p = np.linspace(0.47, 0.53, x[0].size).reshape(x[0].shape)
    x[0] = np.where(np.isnan(x[0]), np.nan, -15 - np.log(p / (1 - p)))
    src = write_raster(d / "s1.tif", x)
    out = {k: str(d / f"{k}.tif") for k in ("mask", "p8", "pf", "uncertainty")}
    predict(PredictOptions([src], mask=out["mask"], probability=out["p8"],
                           probability_dtype="uint8", model=models["threshold"]))
    predict(PredictOptions([src], mask=None, probability=out["pf"],
                           uncertainty=out["uncertainty"], model=models["threshold"]))
    corrections = d / "fix.geojson"
    ring = [[500100, 4999700], [500300, 4999700], [500300, 4999900], [500100, 4999700]]
    corrections.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"properties": {"name": UTM}},
        "features": [{"type": "Feature", "properties": {"water": 1},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return {**out, "corrections": str(corrections)}


@pytest.mark.parametrize("given, kind, advice", [
    ("p8", "a probability", "finalize it into a mask first"),
    ("pf", "a probability", "finalize it into a mask first"),
    ("uncertainty", "an uncertainty", "use the run's mask"),
])
def test_correct_and_stats_refuse_a_probability_or_an_uncertainty(tmp_path, outputs, given,
                                                                   kind, advice):
    """A uint8 probability's codes 0..250 once passed for mask codes: corrected into a
    'mask' of values 0..250, and counted with code 1 as water."""
    path = outputs[given]
    expected = re.escape(f"{path}: is {kind} written by SAR Flood Mapper, not a water mask; "
                         f"{advice}")
    with pytest.raises(InputError, match=expected):
        correct_mask(path, outputs["corrections"], str(tmp_path / "c.tif"))
    with pytest.raises(InputError, match=expected):
        mask_stats(path)
    assert os.listdir(tmp_path) == []


def test_correct_refuses_a_uint8_probability_in_one_line(tmp_path, outputs):
    p = run_cli("correct", outputs["p8"], "--corrections", outputs["corrections"],
                "--out", str(tmp_path / "c.tif"))
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode == 1 and len(errors) == 1, p.stderr
    assert f"{outputs['p8']}: is a probability written by SAR Flood Mapper" in errors[0]
    assert os.listdir(tmp_path) == []


def test_an_untagged_mask_of_another_tool_is_still_corrected_and_counted(tmp_path, outputs):
    m = np.zeros((40, 50), np.uint8)
    m[:, :10], m[:5] = 1, 255
    other = write_raster(tmp_path / "other.tif", m, nodata=255, descriptions=None)
    r = correct_mask(other, outputs["corrections"], str(tmp_path / "c.tif"))
    assert r["corrected_pixels"] > 0
    assert mask_stats(other)["water_pixels"] == 35 * 10


@pytest.mark.parametrize("key", ["SARFLOOD_THRESHOLD", "SARFLOOD_FINALIZED", "SARFLOOD_OUTPUT",
                                 "SARFLOOD_MASK_CODES", "SARFLOOD_CORRECTIONS",
                                 "sarflood_threshold", "Sarflood_Output"])
def test_finalize_refuses_a_tag_it_sets_itself(tmp_path, outputs, key):
    """GDAL's tag keys ignore case: sarflood_threshold=0.3 replaced the mask's
    SARFLOOD_THRESHOLD, and a later correct dropped the threshold altogether."""
    with pytest.raises(UsageError, match=f"tag {key}: finalize sets {key.upper()} itself"):
        finalize(outputs["pf"], 0.5, str(tmp_path / "f.tif"), tags={key: "0.9"})
    assert os.listdir(tmp_path) == []


def test_finalize_refuses_a_lower_case_spelling_of_an_inherited_run_tag(tmp_path, outputs):
    with pytest.raises(UsageError, match="tag sarflood_model: GDAL reads tag keys without case"):
        finalize(outputs["pf"], 0.5, str(tmp_path / "f.tif"), tags={"sarflood_model": "x"})
    assert os.listdir(tmp_path) == []
    finalize(outputs["pf"], 0.5, str(tmp_path / "f.tif"), tags={"SARFLOOD_REVIEW": "ok",
                                                               "analyst": "me"})


def test_finalize_refuses_a_threshold_tag_in_one_line(tmp_path, outputs):
    p = run_cli("finalize", outputs["pf"], "--threshold", "0.5", "--mask",
                str(tmp_path / "f.tif"), "--tag", "SARFLOOD_THRESHOLD=0.9")
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode == 1 and len(errors) == 1, p.stderr
    assert "tag SARFLOOD_THRESHOLD: finalize sets SARFLOOD_THRESHOLD itself" in errors[0]
    assert os.listdir(tmp_path) == []


def test_a_finalized_uint8_probability_matches_the_run_but_within_half_a_code(tmp_path,
                                                                              outputs):
    """round(250 p) cannot tell 0.4985 from 0.5015: the pixels whose code lies on the
    other side of the threshold differ from the run's mask, and finalize says so."""
    said = Collect()
    finalize(outputs["p8"], 0.5, str(tmp_path / "f.tif"), reporter=said)
    with rasterio.open(outputs["pf"]) as ds:
        p = ds.read(1)
    with rasterio.open(outputs["mask"]) as run, rasterio.open(tmp_path / "f.tif") as ds:
        differ = run.read(1) != ds.read(1)
        tags = ds.tags()
    assert differ.any() and np.abs(p[differ] - 0.5).max() < 0.5 / 250
    assert any("except where the probability lay within half a step (0.002)" in line
               for line in said.infos), said.infos
    # a mask's tags describe the mask: the probability's code scale is not one of them
    assert "SARFLOOD_PROBABILITY_SCALE" not in tags and tags["SARFLOOD_OUTPUT"] == "mask"
