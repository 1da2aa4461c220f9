"""Augmentations keep every map of a chip pixel-aligned; jitter touches only the
model's input; the distillation teacher sees the student's geometry un-jittered."""
import math

import pytest
import torch

from training.batches import distill_builder, flora_builder, supervised_builder
from training.config import ConfigError, make_config
from training.transforms import ColourJitter, CropDistort, random_flips, resize

from .tiny_chips import TinyChips


def test_crop_and_flips_move_image_and_label_together():
    label = (torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) > 0.5).long()
    sample = {"x": label[None].float().repeat(2, 1, 1), "label": label}
    plain = CropDistort(32, zoom=(1, 1), aspect=(1, 1))
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        out = random_flips(plain(sample, g), g)
        assert out["x"].shape == (2, 32, 32) and torch.equal(out["x"][0].long(), out["label"])


def test_distorted_and_rescaled_crops_stay_aligned():
    # image and label both hold the column index: after any crop, distortion and
    # rescale, the label (nearest pixel) must be within half a pixel of the image
    # (bilinear); a half-pixel shift between the two resamplings breaks this
    ramp = torch.arange(96).repeat(96, 1)
    sample = {"x": ramp[None].float(), "label": ramp}
    for scale in (1.0, 10 / 16):
        crop = CropDistort(40, zoom=(0.8, 1.2), aspect=(0.75, 4 / 3), scale=scale)
        for seed in range(5):
            out = crop(sample, torch.Generator().manual_seed(seed))
            assert out["label"].shape == (40, 40)
            assert (out["x"][0] - out["label"]).abs().max() <= 0.5 + 1e-4


def test_scale_sets_the_ground_size_of_a_crop():
    # a 16 m model's 32 px crop covers 51.2 px of a 10 m chip
    ramp = torch.arange(128.0).repeat(128, 1)[None]
    crop = CropDistort(32, zoom=(1, 1), aspect=(1, 1), scale=10 / 16)
    out = crop({"x": ramp}, torch.Generator().manual_seed(0))["x"][0]
    assert abs((out[0, -1] - out[0, 0]).item() - 51.2 * 31 / 32) < 1.5


def test_a_box_larger_than_the_chip_is_padded_as_no_data():
    """A box larger than the chip was clipped to it, so a zoom out became the whole chip
    at a finer pixel than drawn (the paper preset trained at 10.4-16 m, mean 14.9 m,
    and inferred at 16 m). Now the box keeps its drawn size, no data outside the chip."""
    ramp = torch.arange(32).repeat(32, 1)              # the column index
    sample = {"x": torch.stack([ramp.T, ramp]).float() + 1, "label": ramp,
              "valid": torch.ones(32, 32, dtype=torch.bool),
              "mask": torch.ones(32, 32, dtype=torch.bool)}
    crop = CropDistort(32, zoom=(2, 2), aspect=(1, 1))  # a 64 px box on a 32 px chip
    for seed in range(8):
        out = crop(sample, torch.Generator().manual_seed(seed))
        inside = out["valid"]
        rows, cols = inside.any(1).nonzero()[:, 0], inside.any(0).nonzero()[:, 0]
        # the chip is a 16 x 16 block of the crop: 2 chip pixels a crop pixel, as drawn
        assert inside.sum() == 16 * 16 and len(rows) == len(cols) == 16
        assert torch.equal(out["mask"], inside) and (out["x"][:, ~inside] == 0).all()
        assert (out["label"][~inside] == -1).all() and (out["label"][inside] >= 0).all()
        # inside, the chip resampled at that scale (the fill not blended into its
        # edge: nothing below the chip's 1), the label still on the image
        block = out["x"][:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert 1 <= block.min() and block.max() <= 32
        assert torch.allclose(block[1, 1:-1, 2:-1] - block[1, 1:-1, 1:-2], torch.tensor(2.0))
        assert torch.allclose(block[0, 2:-1, 1:-1] - block[0, 1:-2, 1:-1], torch.tensor(2.0))
        label = out["label"][rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert (block[1, :, 1:-1] - 1 - label[:, 1:-1]).abs().max() <= 0.5 + 1e-4


def test_every_map_of_the_builders_is_no_data_outside_the_chip():
    chip = TinyChips(1, size=48, seed=2)[0]
    chip["s1"], chip["s2"] = chip["s1"].clamp(min=0.05), chip["s2"].clamp(min=0.05)
    chip["valid"] = torch.ones(48, 48, dtype=torch.bool)   # data everywhere on the chip
    chip["label"] = chip["label"].clamp(min=0)
    cfg = make_config("cpu", {"crop": 32, "zoom": "2,2", "aspect": "1,1"})  # 64 px boxes
    for seed in range(4):
        def build(builder, *args):
            return builder(cfg, *args)(chip, torch.Generator().manual_seed(seed))
        outside = build(supervised_builder, ("s1",), "label")["label"] == -1
        assert outside.sum() == 32 * 32 - 24 * 24
        for out in (build(supervised_builder, ("s1", "s2"), "label"),
                    build(distill_builder, ("s1",), ("s1", "s2")),
                    build(flora_builder, ("s1",), ("rgb", "ndvi"))):
            for key in ("x", "x_teacher"):
                if key in out:
                    assert (out[key][:, outside] == 0).all() and (out[key][:, ~outside] != 0).all()
            for key in ("valid", "valid_optical"):
                if key in out:
                    assert torch.equal(out[key], ~outside)
            if "label" in out:
                assert torch.equal(out["label"] == -1, outside)


def test_a_box_inside_the_chip_is_cut_as_before():
    """The cpu preset's boxes (83-185 px) always fit its 512 px chips: their crops must
    stay the chip cut at the drawn box and resampled, draw for draw, so that the
    committed cpu runs can be reproduced."""
    cfg = make_config("cpu")
    crop = CropDistort(cfg.crop, tuple(cfg.zoom), tuple(cfg.aspect))
    chip = TinyChips(1, size=512, seed=3)[0]
    sample = {"x": chip["s1"], "label": chip["label"], "valid": chip["valid"]}
    (z0, z1), (a0, a1) = cfg.zoom, (math.log(cfg.aspect[0]), math.log(cfg.aspect[1]))
    for seed in range(40):
        out = crop(sample, torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)    # the same draws, in the same order
        zoom = z0 + (z1 - z0) * float(torch.rand((), generator=g))
        ratio = math.exp(a0 + (a1 - a0) * float(torch.rand((), generator=g)))
        bh = round(cfg.crop * zoom / math.sqrt(ratio))
        bw = round(cfg.crop * zoom * math.sqrt(ratio))
        top = int(torch.randint(0, 512 - bh + 1, (), generator=g))
        left = int(torch.randint(0, 512 - bw + 1, (), generator=g))
        for k, v in sample.items():
            cut = resize(v[..., top:top + bh, left:left + bw], (cfg.crop, cfg.crop))
            assert out[k].dtype == v.dtype and torch.equal(out[k], cut), (seed, k)


def test_jitter_keeps_no_data_at_zero():
    x = torch.rand(2, 16, 16)
    valid = torch.ones(16, 16, dtype=torch.bool)
    valid[:4] = False
    x[:, :4] = 0
    out = ColourJitter(0.1, 0.2)(x, valid, torch.Generator().manual_seed(0))
    assert torch.all(out[:, :4] == 0) and not torch.allclose(out[:, 4:], x[:, 4:])


def test_jitter_per_sensor_keeps_the_sign_of_band_differences():
    # a 2-band S1 and a 4-band S2 stacked, as the teacher sees them
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 32, 32, generator=g)
    valid = torch.ones(32, 32, dtype=torch.bool)
    out = ColourJitter(0.1, 0.2)(x, valid, torch.Generator().manual_seed(1), [2, 4])
    # within a sensor every band difference is scaled by one gain (no shift):
    # green - NIR keeps its sign, so NDWI's water / not-water split survives
    for lo, hi in ((0, 2), (2, 6)):
        d_in = x[lo + 1:hi] - x[lo]
        d_out = out[lo + 1:hi] - out[lo]
        gain = (d_out * d_in).sum() / (d_in * d_in).sum()
        assert 0.8 <= gain <= 1.2
        assert torch.allclose(d_out, gain * d_in, atol=1e-5)
    # the two sensors draw their own gain and bias
    s1_shift = (out[:2] - x[:2]).mean()
    s2_shift = (out[2:] - x[2:]).mean()
    assert abs(s1_shift - s2_shift) > 1e-4


def test_jitter_per_channel_shifts_bands_independently():
    x = torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(3))
    valid = torch.ones(32, 32, dtype=torch.bool)
    out = ColourJitter(0.1, 0.2)(x, valid, torch.Generator().manual_seed(1), [1, 1, 1, 1])
    d_in, d_out = x[1:] - x[0], out[1:] - out[0]
    gain = (d_out * d_in).sum() / (d_in * d_in).sum()
    assert not torch.allclose(d_out, gain * d_in, atol=1e-3)
    # the same draws as a gain and a bias per channel taken in one go: the runs of
    # the committed table (jitter_groups=channel) are reproduced exactly
    g = torch.Generator().manual_seed(1)
    gains = 1 + 0.2 * (2 * torch.rand(4, 1, 1, generator=g) - 1)
    biases = 0.1 * (2 * torch.rand(4, 1, 1, generator=g) - 1)
    mean = x.mean(dim=(1, 2), keepdim=True)
    assert torch.allclose(out, mean + gains * (x - mean) + biases, atol=1e-6)
    with pytest.raises(ValueError, match="do not add up"):
        ColourJitter()(x, valid, torch.Generator(), [2, 1])


def test_builders_jitter_per_sensor_unless_asked_per_channel():
    chip = TinyChips(1, size=48, seed=2)[0]
    for groups, per_sensor in (("sensor", True), ("channel", False)):
        cfg = make_config("cpu", {"crop": 48, "zoom": "1,1", "aspect": "1,1", "jitter_groups": groups})
        out = supervised_builder(cfg, ("s1", "s2"), "label")(chip, torch.Generator().manual_seed(5))
        plain = supervised_builder(make_config("cpu", {"crop": 48, "zoom": "1,1", "aspect": "1,1",
                                                        "brightness": 0, "contrast": 0}),
                                   ("s1", "s2"), "label")(chip, torch.Generator().manual_seed(5))
        v = chip["valid"]
        d_in = (plain["x"][3] - plain["x"][4])[v]   # two S2 bands
        d_out = (out["x"][3] - out["x"][4])[v]
        gain = (d_out * d_in).sum() / (d_in * d_in).sum()
        assert torch.allclose(d_out, gain * d_in, atol=1e-4) == per_sensor
    with pytest.raises(ConfigError, match="jitter_groups"):
        make_config("cpu", {"jitter_groups": "band"})


def test_distillation_pairs_are_aligned_and_only_the_student_is_jittered():
    cfg = make_config("cpu", {"crop": 32})
    build = distill_builder(cfg, ("s1",), ("s1", "s2"))
    chip = TinyChips(1, size=48, seed=2)[0]
    out = build(chip, torch.Generator().manual_seed(4))
    v = out["valid"]
    assert out["x"].shape == (2, 32, 32) and out["x_teacher"].shape == (6, 32, 32)
    # the student's S1 is an affine map of the teacher's S1, channel by channel:
    # same pixels (geometry shared), different values (jitter on the student only)
    for c in range(2):
        s, t = out["x"][c][v], out["x_teacher"][c][v]
        a = torch.stack([t, torch.ones_like(t)], 1)
        coef = torch.linalg.lstsq(a, s[:, None]).solution[:, 0]
        assert (a @ coef - s).abs().max() < 1e-4
        assert not torch.allclose(coef, torch.tensor([1.0, 0.0]), atol=1e-3)


def test_labels_are_ignored_where_the_input_has_no_data():
    cfg = make_config("cpu", {"crop": 48, "zoom": "1,1", "aspect": "1,1"})
    chip = TinyChips(1, size=48, seed=2)[0]
    chip["label"] = chip["label"].clamp(min=0)  # the reader's -1 removed on purpose
    out = supervised_builder(cfg, ("s1",), "label")(chip, torch.Generator().manual_seed(0))
    assert (out["label"] == -1).sum() == (~chip["valid"]).sum()


def test_both_builders_crop_the_same_ground_at_the_models_pixel_size():
    """The paper preset trains at 16 m on 10 m chips: a 32 px crop covers 51.2 chip
    pixels. The distillation builder dropped the scale, so its students (and the
    teacher's input) saw 10 m crops but were scored and exported at 16 m."""
    chip = TinyChips(1, size=128, seed=2)[0]
    ramp = torch.arange(128.0).repeat(128, 1)
    chip["s1"] = ramp.repeat(2, 1, 1)
    chip["s2"] = ramp.repeat(len(chip["s2"]), 1, 1)
    chip["valid"] = chip["s2_valid"] = torch.ones(128, 128, dtype=torch.bool)
    cfg = make_config("cpu", {"crop": 32, "zoom": "1,1", "aspect": "1,1", "brightness": 0,
                              "contrast": 0})
    g = torch.Generator
    sup = supervised_builder(cfg, ("s1",), "label", 10 / 16)(chip, g().manual_seed(0))["x"]
    dis = distill_builder(cfg, ("s1",), ("s1", "s2"), 10 / 16)(chip, g().manual_seed(0))
    for x in (sup[0], dis["x"][0], dis["x_teacher"][0], dis["x_teacher"][2]):
        span = (x.max() - x.min()).item()
        assert abs(span - 51.2 * 31 / 32) < 1.5, span


def test_the_student_sees_s1_wherever_s1_has_data_and_s2_holes_leave_the_loss_alone():
    """The student's S1 was multiplied by the S1-and-S2 mask in the jitter: wherever S2 had
    no data it saw S1 as 0 (the teacher the real value), holes it never meets at inference."""
    chip = TinyChips(1, size=48, seed=2)[0]    # S1 has no data in a corner
    chip["s2"] = chip["s2"].clamp(min=0.05)
    chip["s2"][:, :16] = 0.0                   # and S2 none on a band of rows
    chip["s2_valid"] = torch.ones(48, 48, dtype=torch.bool)
    chip["s2_valid"][:16] = False
    cfg = make_config("cpu", {"crop": 48, "zoom": "1,1", "aspect": "1,1"})
    out = distill_builder(cfg, ("s1",), ("s1", "s2"))(chip, torch.Generator().manual_seed(4))
    # the reader's no-data fill is 0: where the teacher's un-jittered maps are not, there is data
    s1, s2 = out["x_teacher"][0] != 0, out["x_teacher"][2] != 0
    assert s1.sum() == chip["valid"].sum() and (s1 & ~s2).sum() == 16 * 48 - 16
    assert torch.equal(out["valid"], s1 & s2)  # the loss mask: both sensors have data
    for c in range(2):   # one gain and bias over all of S1's data, the S2 hole included
        s, t = out["x"][c][s1], out["x_teacher"][c][s1]
        a = torch.stack([t, torch.ones_like(t)], 1)
        coef = torch.linalg.lstsq(a, s[:, None]).solution[:, 0]
        assert (a @ coef - s).abs().max() < 1e-4
        assert (out["x"][c][s1 & ~s2] != 0).all()
