"""Loading a model from a file that is not to be trusted: its external data, and the session
`backend card` makes."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data

from backend.errors import ModelError
from backend.model import OnnxModel, external_data_refusal
from tests.backend.conftest import cli_peak
from training.toy_models import threshold_model


@pytest.fixture
def external(tmp_path) -> dict[str, str]:
    """The threshold model with its weights in weights.bin beside it ("inside"), the same
    weights named from another folder ("outside", ../own/weights.bin) and the model as it is."""
    model = threshold_model()
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    (tmp_path / "own").mkdir()
    inside = tmp_path / "own" / "inside.onnx"
    onnx.save(model, inside)
    outside = onnx.load(inside, load_external_data=False)
    for tensor in outside.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../own/weights.bin"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "outside.onnx").write_bytes(outside.SerializeToString())
    onnx.save(threshold_model(), tmp_path / "plain.onnx")
    return {name: str(path) for name, path in (
        ("inside", inside), ("outside", tmp_path / "elsewhere" / "outside.onnx"),
        ("plain", tmp_path / "plain.onnx"))}


def test_an_onnxruntime_before_1_24_refuses_every_model_with_external_data(external):
    """ONNX Runtime before 1.24 read external data from any path a model named: a crafted model
    copied /etc/passwd into its probability GeoTIFF. The plugin's installer gets 1.19 on Python
    3.9 and 1.23 on 3.10."""
    for name in ("inside", "outside"):
        why = external_data_refusal(external[name], "1.23.2")
        assert why == (
            f"{external[name]}: the model keeps weights in external data (files it names, whose "
            "bytes ONNX Runtime loads as tensors), and onnxruntime 1.23.2 loads them from any "
            "path, even outside the model's folder: a crafted model could copy a file you can "
            "read into its output. Use onnxruntime >= 1.24 (Python >= 3.11), which refuses "
            "paths outside the model's folder, or a model with its weights inside the .onnx file")
        assert external_data_refusal(external[name], "1.9.0")   # 9 < 24, not "9" > "2"
        assert external_data_refusal(external[name], "1.24.1") is None   # it checks itself
    assert external_data_refusal(external["plain"], "1.19.2") is None


def test_a_metadata_key_named_location_is_taken_for_external_data(tmp_path):
    """The scan's one known false positive, refused with the same message."""
    model = threshold_model()
    kept = {p.key: p.value for p in model.metadata_props}
    helper.set_model_props(model, {**kept, "location": "Bolivia"})
    onnx.save(model, tmp_path / "located.onnx")
    assert "keeps weights in external data" in external_data_refusal(
        str(tmp_path / "located.onnx"), "1.23.2")


def test_the_installed_onnxruntime_loads_external_data_from_the_models_folder_only(external):
    """From 1.24 ONNX Runtime checks the paths itself, and the backend adds nothing."""
    assert external_data_refusal(external["inside"], ort.__version__) is None
    model = OnnxModel(external["inside"], device="cpu")
    vv = np.full((1, 2, 16, 16), -17.0, np.float32)
    np.testing.assert_allclose(model.infer(vv), 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    with pytest.raises(ModelError) as err:
        OnnxModel(external["outside"], device="cpu")
    message = str(err.value)
    assert message.startswith(f"{external['outside']}: not a loadable ONNX model (")
    assert "External data path" in message and "\n" not in message


FOLDED_FLOATS = 62_500_000   # 250 MB of float32


def _folding_model(path) -> str:
    """The threshold model whose bias adds the sum of FOLDED_FLOATS zeros, a ConstantOfShape
    that graph optimisation folds into a constant as the session is created."""
    model = threshold_model()
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array([1, FOLDED_FLOATS], np.int64),
                                                     "big_shape"))
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    nodes = [helper.make_node("ConstantOfShape", ["big_shape"], ["big"], value=zero),
             helper.make_node("ReduceSum", ["big"], ["big_sum"], keepdims=0),
             helper.make_node("Add", ["logit_b", "big_sum"], ["logit_b_plus"])]
    for node in graph.node:
        node.input[:] = ["logit_b_plus" if i == "logit_b" else i for i in node.input]
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)   # in topological order
    onnx.save(model, path)
    return str(path)


def _card_peak_mb(model: str) -> float:
    rc, _, stderr, peak = cli_peak("card", model)
    assert rc == 0, stderr
    return peak


def test_the_card_command_does_not_run_the_graphs_constants(tmp_path):
    """`backend card`, which the plugin runs whenever a model is chosen, created a fully
    optimised session: constant folding made a 1.7 KB model allocate 2 GB as it loaded."""
    onnx.save(threshold_model(), tmp_path / "plain.onnx")
    extra = (_card_peak_mb(_folding_model(tmp_path / "folding.onnx"))
             - _card_peak_mb(str(tmp_path / "plain.onnx")))
    assert extra < 100, f"card took {extra:.0f} MB more than the same model without the constant"
