"""Model shapes, skips and the probability head, on real forward passes."""
import pytest
import torch

from training.models import ModelSpecError, build_model, display_name
from training.models.deeplab import DeepLabV3Plus

torch.set_num_threads(1)


@pytest.mark.parametrize("arch,width", [("deeplabv3plus_xception65", 0.125), ("compact", 0.5)])
@pytest.mark.parametrize("channels", [2, 6])
def test_logits_match_input_size_for_2_and_6_channels(arch, width, channels):
    model = build_model({"arch": arch, "in_channels": channels, "width": width}).eval()
    for h, w in [(64, 64), (67, 45)]:  # odd sizes too: tiles at scene edges are not multiples
        with torch.no_grad():
            y = model(torch.randn(2, channels, h, w))
        assert y.shape == (2, 2, h, w)


def test_xception65_has_65_layers_and_paper_size_at_width_1():
    model = build_model({"arch": "deeplabv3plus_xception65", "in_channels": 2})
    enc = model.encoder
    # 2 stem convs + 3 entry blocks x 3 + 16 middle blocks x 3 + exit block 3 + 3 exit convs
    separable = [m for m in enc.modules() if type(m).__name__ == "SeparableConv"]
    stem_convs = [m for m in enc.stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(stem_convs) + len(separable) == 65
    # DeepLabv3+/Xception-65 has about 41 M parameters (2-channel input, 2 classes)
    n = sum(p.numel() for p in model.parameters())
    assert 40e6 < n < 42.5e6, n


def test_decoder_skips_are_at_stride_4_and_2_and_encoder_at_16():
    model = DeepLabV3Plus(2, width=0.125).eval()
    with torch.no_grad():
        feats = model.encoder(torch.randn(1, 2, 128, 128))
    assert feats["s2"].shape[-2:] == (64, 64)
    assert feats["s4"].shape[-2:] == (32, 32)
    assert feats["s16"].shape[-2:] == (8, 8)
    # each decoder stage consumes its skip: the refined map comes out at the skip's size
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.shape
        return hook

    model.decode4.register_forward_hook(record("s4"))
    model.decode2.register_forward_hook(record("s2"))
    with torch.no_grad():
        model(torch.randn(1, 2, 128, 128))
    assert seen["s4"][-2:] == (32, 32) and seen["s2"][-2:] == (64, 64)


@pytest.mark.parametrize("arch", ["deeplabv3plus_xception65", "compact"])
def test_water_probability_equals_softmax_of_logits(arch):
    model = build_model({"arch": arch, "in_channels": 2, "width": 0.125}).eval()
    x = torch.randn(2, 2, 48, 80)
    with torch.no_grad():
        expect = torch.softmax(model(x), dim=1)[:, 1:2]
        got = model.water_probability(x)
    assert torch.allclose(got, expect, atol=1e-6)


def test_width_names_the_variant():
    assert display_name({"arch": "deeplabv3plus_xception65", "width": 0.25}) \
        == "DeepLabv3+/Xception-65 (width 0.25)"
    assert display_name({"arch": "deeplabv3plus_xception65", "width": 1.0}) \
        == "DeepLabv3+/Xception-65"


@pytest.mark.parametrize("spec,msg", [
    ({"arch": "unet", "in_channels": 2}, "unknown architecture 'unet'"),
    ({"arch": "compact", "in_channels": 0}, "in_channels must be a positive integer"),
    ({"arch": "compact", "in_channels": 2, "depth": 3}, "unknown keys ['depth']"),
    ({"arch": "compact", "in_channels": 2, "zero_init_residual": True}, "DeepLab only"),
])
def test_bad_specs_are_refused(spec, msg):
    with pytest.raises(ModelSpecError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        build_model(spec)


@pytest.mark.parametrize("zero", [True, False])
def test_zero_init_residual_starts_every_xception_block_as_its_shortcut(zero):
    torch.manual_seed(0)
    model = build_model({"arch": "deeplabv3plus_xception65", "in_channels": 2, "width": 0.125,
                         "rates": [1, 2, 4], "zero_init_residual": zero}).train()
    enc = model.encoder
    blocks = [enc.entry1, enc.entry2, enc.entry3, *enc.middle, enc.exit_block]
    assert len(blocks) == 20
    for block in blocks[3:]:   # the middle and exit blocks; the entry blocks change size
        x = torch.randn(2, block.convs[0].depthwise.in_channels, 16, 16)
        with torch.no_grad():
            out, _ = block(x)
            shortcut = block.shortcut(x)
        assert torch.equal(out, shortcut) == zero
    # only the initialisation differs: a zero-init network still learns every weight
    assert all(p.requires_grad for p in model.parameters())
