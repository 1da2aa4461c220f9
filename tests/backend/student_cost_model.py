"""An untrained model with the cost of the shipped student, for the README's benchmark.

``python -m tests.backend.student_cost_model OUT.onnx [WIDTH]`` builds
``training.models`` compact separable encoder-decoder (the student the product
ships, width 1.0 by default) with its random initial weights, exports it the way
``training/export.py`` does (P(water), dynamic N/H/W, one file) and adds a card
with the export's tiling (512 px tiles, 64 px margin, size multiple 16). Its
output means nothing; its compute per pixel is the student's, which is what the
benchmark's raw-versus-end-to-end comparison needs.
"""
from __future__ import annotations

import sys
import warnings

import onnx
import torch

from backend.card import CARD_KEY, BandSpec, ModelCard
from training.data.conventions import S1_BANDS, S1_WINDOWS
from training.export import INPUT, OUTPUT, _Probability
from training.models import build_model

TILE_SIZE, MARGIN = 512, 64   # the export's default card tiling


def write(path: str, width: float = 1.0) -> None:
    torch.manual_seed(0)
    model = build_model({"arch": "compact", "in_channels": 2, "width": width}).eval()
    dyn = torch.export.Dim.DYNAMIC
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Probability(model).eval(), (torch.zeros(1, 2, 128, 128),), dynamo=True,
            input_names=[INPUT], output_names=[OUTPUT], opset_version=18,
            dynamic_shapes={"x": {0: dyn, 2: dyn, 3: dyn}}, external_data=False, verbose=False)
    program.save(path, external_data=False)
    card = ModelCard(
        name="student-cost-untrained", version="0.0.0", task="water_segmentation",
        description=f"compact student (width {width:g}) with random weights: for timing only",
        bands=tuple(BandSpec(b, "dB", S1_WINDOWS[b], S1_WINDOWS[b][0],
                             S1_WINDOWS[b][1] - S1_WINDOWS[b][0]) for b in S1_BANDS),
        input_name=INPUT, output_name=OUTPUT, output_kind="water_probability",
        default_threshold=0.5, pixel_size_m=10.0, tile_size=TILE_SIZE, margin=MARGIN,
        size_multiple=16, training_data="none: untrained", metrics={}, license="MIT")
    proto = onnx.load(path)
    onnx.helper.set_model_props(proto, {CARD_KEY: card.to_json()})
    onnx.save(proto, path)


if __name__ == "__main__":
    write(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
