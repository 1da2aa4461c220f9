"""Hand-built ONNX models whose output is known exactly (no torch, no training), for tests.

- ``threshold_model`` computes ``p = sigmoid(-(VV_dB + 15))`` and
  ``smoothed_threshold_model`` the same after a k x k mean filter, so a test can
  compute the expected probability in numpy (tests check numbers, not shapes);
- ``demo_model`` builds ``resources/models/sarflood-demo-threshold.onnx``, a smoothed
  VV/VH threshold carded as hand-set, not trained. It was the default model before a
  trained one was bundled (``make demo`` now runs the model named in
  ``resources/models/DEFAULT``); it stays for tests, which check that the bundled file
  is what this function builds.

Run ``python -m training.toy_models OUT.onnx`` to write the demo model.
"""
from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from backend.card import CARD_KEY, BandSpec, ModelCard

OPSET = 17
# A window wide enough that real Sentinel-1 dB values pass through unclipped,
# so the test models see raw dB (offset 0, scale 1).
RAW_DB_CLIP = (-80.0, 40.0)


def raw_db_card(name: str, margin: int, bands=("VV", "VH"), tile_size: int = 256,
                pixel_size_m: float = 10.0, threshold: float = 0.5, **kw) -> ModelCard:
    """A card that feeds the graph plain dB values of the given bands."""
    return ModelCard(
        name=name, version="1.0.0", task="water_segmentation",
        description=kw.pop("description", "Exact test model; not trained."),
        bands=tuple(BandSpec(b, "dB", RAW_DB_CLIP, 0.0, 1.0) for b in bands),
        input_name="s1", output_name="water_probability", output_kind="water_probability",
        default_threshold=threshold, pixel_size_m=pixel_size_m, tile_size=tile_size,
        margin=margin, size_multiple=kw.pop("size_multiple", 1),
        training_data=kw.pop("training_data", "none: hand-set weights"),
        metrics=kw.pop("metrics", {}), license=kw.pop("license", "MIT"), **kw)


def _model(nodes, initializers, card: ModelCard, n_bands: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, card.name,
        [helper.make_tensor_value_info(card.input_name, TensorProto.FLOAT,
                                       ["N", n_bands, "H", "W"])],
        [helper.make_tensor_value_info(card.output_name, TensorProto.FLOAT,
                                       ["N", 1, "H", "W"])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="sarflood.training.toy_models")
    model.ir_version = 8  # readable by every onnxruntime >= 1.10
    helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.checker.check_model(model)
    return model


def _linear_logit(weights: list[float], bias: float, prefix: str, src: str, dst: str):
    """1x1 conv: logit = sum_c w_c * x_c + bias, channel-mixing to one channel."""
    w = numpy_helper.from_array(np.array(weights, np.float32).reshape(1, -1, 1, 1), f"{prefix}_w")
    b = numpy_helper.from_array(np.array([bias], np.float32), f"{prefix}_b")
    return helper.make_node("Conv", [src, w.name, b.name], [dst]), [w, b]


def threshold_model(card: ModelCard | None = None, threshold_db: float = -15.0) -> onnx.ModelProto:
    """``p = sigmoid(-(VV - threshold_db))`` per pixel, by default ``sigmoid(-(VV + 15))``
    (VV is channel 0, in raw dB). Margin 0."""
    card = card or raw_db_card("test-threshold", margin=0)
    n = len(card.bands)
    # -(VV - t) = -VV + t; for t = -15 dB that is -(VV + 15)
    conv, inits = _linear_logit([-1.0] + [0.0] * (n - 1), threshold_db, "logit",
                                card.input_name, "logit")
    sig = helper.make_node("Sigmoid", ["logit"], [card.output_name])
    return _model([conv, sig], inits, card, n)


def smoothed_threshold_model(card: ModelCard | None = None, kernel: int = 5,
                             weights=(-1.0, 0.0), bias: float = -15.0) -> onnx.ModelProto:
    """``p = sigmoid(w . mean_kxk(x) + bias)``, zero-padded mean filter.

    Its receptive field reaches ``kernel // 2`` pixels, so a card margin of at
    least that makes tiled output identical to a single-tile run.
    """
    if kernel % 2 != 1:
        raise ValueError("kernel must be odd")
    card = card or raw_db_card(f"test-smoothed-{kernel}", margin=kernel // 2)
    n = len(card.bands)
    half = kernel // 2
    box = numpy_helper.from_array(np.full((n, 1, kernel, kernel), 1.0 / kernel ** 2, np.float32),
                                  "box_w")
    # depthwise conv = per-band mean filter
    mean = helper.make_node("Conv", [card.input_name, box.name], ["smooth"], group=n,
                            pads=[half, half, half, half])
    conv, inits = _linear_logit(list(weights), bias, "logit", "smooth", "logit")
    sig = helper.make_node("Sigmoid", ["logit"], [card.output_name])
    return _model([mean, conv, sig], [box, *inits], card, n)


def demo_model() -> onnx.ModelProto:
    """The former stand-in default model: a 5x5 mean of VV and VH in dB, then a logistic threshold.

    Open water is dark in both polarisations (specular reflection); the weights put the
    decision near VV = -16 dB, VH = -23 dB, in the range of published SAR water thresholds.
    """
    card = raw_db_card(
        "sarflood-demo-threshold", margin=8, tile_size=512,
        description=("Stand-in demo model, hand-set and NOT trained: 5x5 mean filter of "
                     "VV and VH (dB), then sigmoid(-0.5*(VV+16) - 0.3*(VH+23)). "
                     "The default before the distilled student; kept for tests."),
        training_data="none: hand-set weights (SAR water is dark in VV and VH)")
    return smoothed_threshold_model(card, kernel=5, weights=(-0.5, -0.3),
                                    bias=-0.5 * 16.0 - 0.3 * 23.0)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m training.toy_models OUT.onnx", file=sys.stderr)
        return 2
    onnx.save(demo_model(), argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
