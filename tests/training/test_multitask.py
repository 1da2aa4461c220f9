"""The methods of seed papers 002 (chip-classification pretraining) and 003 (FLoRA-style
feature distillation with SAR-to-optical reconstruction): their losses, on values
whose result is known, and their runs: train, resume, hand over, export."""
import json
import math
import re

import pytest
import torch

from training.batches import stack_inputs
from training.checkpoint import load_checkpoint, save_checkpoint
from training.losses import (charbonnier, dice_loss, feature_distillation_loss,
                             fft_magnitude_loss, ssim_loss)
from training.multitask import holds_water
from training.train import Interrupted, RunError, train

from .test_export import cli
from .test_train import step_losses, tiny_data, tiny_run

torch.set_num_threads(1)


def images(seed=0, shape=(2, 3, 32, 32)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_charbonnier_is_the_smooth_absolute_difference():
    a, valid = images(), torch.ones(2, 32, 32, dtype=torch.bool)
    assert charbonnier(a, a, valid, eps=1e-3).item() == pytest.approx(1e-3)
    assert charbonnier(a, a + 0.5, valid, eps=1e-3).item() == pytest.approx(
        math.sqrt(0.25 + 1e-6), rel=1e-6)
    valid[:, :, 16:] = False   # only the valid half counts
    b = a.clone()
    b[..., 16:] += 9.0
    assert charbonnier(a, b, valid, eps=1e-3).item() == pytest.approx(1e-3)


def test_ssim_is_zero_for_the_same_image_and_grows_with_noise():
    a, valid = images(), torch.ones(2, 32, 32, dtype=torch.bool)
    assert ssim_loss(a, a, valid).item() == pytest.approx(0.0, abs=1e-5)
    noisy = [ssim_loss(a, (a + s * images(1)).clamp(0, 1), valid).item() for s in (0.1, 0.5)]
    assert 0.0 < noisy[0] < noisy[1] <= 2.0


def test_fft_magnitude_ignores_a_circular_shift_but_not_a_contrast_change():
    a, valid = images(), torch.ones(2, 32, 32, dtype=torch.bool)
    shifted = torch.roll(a, shifts=(5, 11), dims=(-2, -1))
    assert fft_magnitude_loss(shifted, a, valid).item() == pytest.approx(0.0, abs=1e-5)
    assert fft_magnitude_loss(0.5 * a, a, valid).item() > 0.01


def test_dice_of_a_half_sure_network_on_half_water_is_one_half():
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    label[:, :2] = 1
    logits = torch.zeros(1, 2, 4, 4)   # p = 0.5 everywhere
    assert dice_loss(logits, label).item() == pytest.approx(0.5)   # 1 - 2 * 4 / (8 + 8)
    sure = torch.stack([1 - label, label], 1).float() * 50
    assert dice_loss(sure, label).item() == pytest.approx(0.0, abs=1e-6)
    label[:, :, 2:] = -1   # ignored pixels take no part
    assert dice_loss(logits, label).item() == pytest.approx(0.5)


def test_feature_distillation_is_scale_free_and_two_for_orthogonal_features():
    """The mean over levels: 2 for orthogonal unit vectors at every level."""
    s = torch.randn(2, 8, 4, 4)
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    assert feature_distillation_loss([s], [3 * s], valid).item() == pytest.approx(0, abs=1e-6)
    a, b = torch.zeros(2, 8, 4, 4), torch.zeros(2, 8, 4, 4)
    a[:, 0], b[:, 1] = 1.0, 1.0
    assert feature_distillation_loss([a, a], [b, b], valid).item() == pytest.approx(2.0)


def test_a_crop_holds_water_from_one_percent_of_its_labelled_pixels():
    label = torch.zeros(10, 10, dtype=torch.long)
    assert holds_water(label).item() == 0.0
    label[0, 0] = 1                       # 1 % of 100
    assert holds_water(label).item() == 1.0
    label[5:, :] = -1
    label[0, 0] = 0
    assert holds_water(label).item() == 0.0
    assert holds_water(torch.full((4, 4), -1)).item() == -1.0


def test_rgb_is_b4_b3_b2_of_the_s2_input():
    s2 = torch.arange(4.0)[:, None, None].expand(4, 2, 2)   # B2, B3, B4, B8 = 0, 1, 2, 3
    x = stack_inputs({"s2": s2, "ndvi": torch.full((1, 2, 2), 7.0)}, ("rgb", "ndvi"))
    assert x[:, 0, 0].tolist() == [2.0, 1.0, 0.0, 7.0]
    batched = stack_inputs({"s2": s2[None], "ndvi": torch.full((1, 1, 2, 2), 7.0)},
                           ("rgb", "ndvi"), dim=1)
    assert torch.equal(batched[0], x)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1") / "cls"
    # seed 1: its (untrained) decoder differs from a seed-0 stage 2's initial one
    summary, _ = train(tiny_run("chip_classifier", seed=1), tiny_data(), out, progress=False)
    return out, summary


def test_the_chip_classifier_is_selected_on_its_tile_accuracy(stage1):
    out, summary = stage1
    assert summary["iou_valid"] is None and 0.0 <= summary["accuracy_valid"] <= 1.0
    assert load_checkpoint(out / "best.pt")["best"]["accuracy_valid"] == summary["accuracy_valid"]
    logged = [(int(step), float(value)) for step, value in
              re.findall(r"valid step (\d+) accuracy (\S+)", (out / "train.log").read_text())]
    assert [step for step, _ in logged] == [3, 6]
    # the first of the best (max keeps the first of equals)
    assert (summary["best_step"], summary["accuracy_valid"]) == max(logged, key=lambda sv: sv[1])


def test_the_chip_classifier_is_not_exported(stage1, tmp_path):
    out, _ = stage1
    proc = cli("training", "export", str(out / "best.pt"), "--out", str(tmp_path / "c.onnx"))
    assert proc.returncode == 1 and "maps no water: export its stage 2" in proc.stderr
    assert not (tmp_path / "c.onnx").exists()


def test_stage_two_starts_from_the_stage_one_encoder_only(stage1, tmp_path):
    out, _ = stage1
    cls = load_checkpoint(out / "best.pt")["model"]
    with pytest.raises(Interrupted):
        train(tiny_run("pretrained", lr=1e-12), tiny_data(), tmp_path / "pre", progress=False,
              init=out / "best.pt", stop_at=1)
    started = load_checkpoint(tmp_path / "pre" / "last.pt")["model"]
    encoder = [k for k in cls if k.split(".")[0].startswith("stage") and "num_batches" not in k
               and "running" not in k]
    assert encoder and all(torch.allclose(started[k], cls[k], atol=1e-6) for k in encoder)
    assert not torch.equal(started["classifier.weight"], cls["classifier.weight"])


def test_the_pretraining_checkpoint_is_required_and_checked(stage1, tmp_path):
    out, _ = stage1
    with pytest.raises(RunError, match="needs --init CHECKPOINT"):
        train(tiny_run("pretrained"), tiny_data(), tmp_path / "a", progress=False)
    with pytest.raises(RunError, match="takes no --init"):
        train(tiny_run("hand"), tiny_data(), tmp_path / "b", progress=False, init=out / "best.pt")
    doc = load_checkpoint(out / "best.pt")
    doc["model"] = {k: v[:1] if v.ndim else v for k, v in doc["model"].items()}
    save_checkpoint(tmp_path / "narrow.pt", doc)
    with pytest.raises(RunError, match="its encoder does not fit this network"):
        train(tiny_run("pretrained"), tiny_data(), tmp_path / "c", progress=False,
              init=tmp_path / "narrow.pt")
    assert not any((tmp_path / n).exists() for n in "abc")


@pytest.fixture(scope="module")
def optical_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("optical") / "teacher"
    train(tiny_run("optical_teacher"), tiny_data(), out, progress=False)
    return out / "best.pt"


def test_flora_resumes_with_its_heads_and_exports_the_s1_network(optical_teacher, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_run("flora"), tiny_data(2), straight, teacher=optical_teacher, progress=False)
    with pytest.raises(Interrupted):
        train(tiny_run("flora"), tiny_data(2), split, teacher=optical_teacher, progress=False,
              stop_at=2)
    assert "heads" in load_checkpoint(split / "last.pt")
    train(tiny_run("flora"), tiny_data(2), split, teacher=optical_teacher, progress=False)
    a, b = step_losses(straight), step_losses(split)
    assert sorted(a) == list(range(1, 7)) and a == b

    out = tmp_path / "flora.onnx"
    proc = cli("training", "export", str(straight / "best.pt"), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["max_abs_diff"] < 1e-4 and report["backend_predict"]["event"] == "result"


def test_chip_accuracy_is_the_balanced_accuracy_over_tiles():
    """Whole chips nearly all hold water: 'always yes' scored 0.99 on them."""
    from torch import nn

    from training.train import chip_accuracy
    label = torch.zeros(64, 64, dtype=torch.long)
    label[:32, :32] = 1                      # one tile of four holds water
    chip = {"id": "c", "s1": torch.stack([label.float(), label.float()]), "label": label}

    class Oracle(nn.Module):                 # "yes" where a quarter of the tile is water
        def forward(self, x):
            return x[:, 0].mean(dim=(1, 2)) - 0.25

    class AlwaysYes(nn.Module):
        def forward(self, x):
            return torch.ones(len(x))
    args = ([chip, chip], ("s1",), 2, torch.device("cpu"), 1.0, 32)
    assert chip_accuracy(Oracle(), *args) == 1.0            # both recalls 1
    assert chip_accuracy(AlwaysYes(), *args) == 0.5          # yes recall 1, no recall 0
    # the paper preset's crop (321 px at 16 m) is more than a 64 px chip: no tile was
    # scored and no checkpoint chosen; tiles are now at most half a chip
    assert chip_accuracy(Oracle(), *args[:-1], 200) == 1.0


def test_init_takes_only_a_stage_one_checkpoint(stage1, tmp_path):
    """Any compact S1 checkpoint (a hand_compact or flora run's) started a pretrained run."""
    other = tmp_path / "hand"
    train(tiny_run("hand_compact"), tiny_data(), other, progress=False)
    with pytest.raises(RunError, match="a checkpoint of a hand_compact run; give the best.pt "
                                       "of a chip_classifier run"):
        train(tiny_run("pretrained"), tiny_data(), tmp_path / "pre", progress=False,
              init=other / "best.pt")
    assert not (tmp_path / "pre").exists()


def test_a_method_of_the_compact_network_on_deeplab_is_one_line(stage1, tmp_path):
    """--set compact_arch=deeplab... ended chip_classifier and flora runs in a traceback
    (a ValueError from the trainee) and left an empty run folder; pretrained blamed its
    valid --init."""
    from dataclasses import replace

    from training.models import DEEPLAB
    for method, init in (("chip_classifier", None), ("pretrained", stage1[0] / "best.pt")):
        run = tiny_run(method)
        run = replace(run, config=replace(run.config, compact_arch=DEEPLAB))
        with pytest.raises(RunError, match="compact"):
            train(run, tiny_data(), tmp_path / method, progress=False, init=init)
        assert not (tmp_path / method).exists()


def test_a_finished_student_asked_for_with_another_teacher_is_refused(optical_teacher, tmp_path):
    """It returned the old result, trained from another teacher, as if it were asked for."""
    out = tmp_path / "flora"
    train(tiny_run("flora"), tiny_data(2), out, teacher=optical_teacher, progress=False)
    other = tmp_path / "other.pt"
    doc = load_checkpoint(optical_teacher)
    doc["best"] = {"step": -1}   # another file: other bytes
    save_checkpoint(other, doc)
    for gone in (None, "last.pt"):   # finished with and without its resume checkpoint
        if gone:
            (out / gone).unlink()
        with pytest.raises(RunError, match="was trained from another teacher than"):
            train(tiny_run("flora"), tiny_data(2), out, teacher=other, progress=False)
    summary, _ = train(tiny_run("flora"), tiny_data(2), out, teacher=optical_teacher,
                       progress=False)
    assert summary["teacher_sha256"]


def test_the_card_of_a_seed_paper_run_names_its_paper_and_data(stage1, tmp_path):
    from training.export import build_card

    train(tiny_run("pretrained"), tiny_data(), tmp_path / "pre", progress=False,
          init=stage1[0] / "best.pt")
    card = build_card(load_checkpoint(tmp_path / "pre" / "best.pt"), {}, "0.0.1", 8)
    assert "landslide classification pretraining" in card.description
    assert "Garg" not in card.description and "stage 1, chip_classifier" in card.training_data


def test_flora_trains_in_bfloat16_with_its_losses_in_float32(optical_teacher, tmp_path):
    # FFT and SSIM of a bf16 reconstruction: the forward pass hands them float32
    summary, _ = train(tiny_run("flora", precision="bfloat16"), tiny_data(2), tmp_path,
                       teacher=optical_teacher, progress=False)
    assert summary["steps"] == 6 and all(math.isfinite(v) for v in step_losses(tmp_path).values())
