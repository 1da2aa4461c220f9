"""Output kinds of the card: a water logit and class scores (logits or probabilities, the
water class in any channel) give the exact probability their numbers mean."""
import dataclasses

import numpy as np
import onnx
import pytest
import rasterio
from onnx import TensorProto, helper, numpy_helper

from backend.engine import PredictOptions, predict
from backend.errors import CardError
from tests.backend.conftest import random_db, run_cli, sigmoid, write_raster
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
