"""Receptive fields measured by generator.layers against hand-computed and published values."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from generator.layers import ReceptiveField, default_layers, layer_table, receptive_fields


def by_recurrence(layers: list[tuple[int, int, int]]) -> list[tuple[int, int, float]]:
    """The textbook recurrence for a chain of (kernel, stride, padding) layers: field size r, jump j (stride in
    input pixels) and centre of unit 0 (start), starting from a pixel: r=1, j=1, start=0."""
    r, j, start = 1, 1, 0.0
    out = []
    for k, s, p in layers:
        r = r + (k - 1) * j
        start = start + ((k - 1) / 2 - p) * j
        j = j * s
        out.append((r, j, start))
    return out


def small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=1, padding=1),  # 0
        nn.ReLU(),  # 1
        nn.Conv2d(4, 4, 3, stride=2, padding=1),  # 2
        nn.BatchNorm2d(4),  # 3
        nn.MaxPool2d(2, stride=2),  # 4
        nn.Conv2d(4, 6, 5, stride=1, padding=2),  # 5
        nn.AdaptiveAvgPool2d(1),  # 6
    )


def test_small_net_matches_the_recurrence():
    expected = by_recurrence([(3, 1, 1), (3, 2, 1), (2, 2, 0), (5, 1, 2)])
    # the values the recurrence gives, written out, so a broken helper can't hide a broken measurement
    assert expected == [(3, 1, 0.0), (5, 2, 0.0), (7, 4, 1.0), (23, 4, 1.0)]
    rfs = receptive_fields(small_net(), ["0", "1", "2", "3", "4", "5", "6"], channels=3, side=32)
    measured = {name: (rfs[name].size, rfs[name].stride, rfs[name].offset) for name in ("0", "2", "4", "5")}
    assert measured == dict(zip(("0", "2", "4", "5"), expected))
    # element-wise layers keep the field of what feeds them
    assert (rfs["1"].size, rfs["1"].stride) == (3, 1)
    assert (rfs["3"].size, rfs["3"].stride) == (5, 2)
    assert not any(rfs[n].whole for n in ("0", "1", "2", "3", "4", "5"))
    # global pooling sees everything
    assert rfs["6"].whole


def test_field_larger_than_the_input_is_remeasured():
    # 4 convs of 9×9, stride 1: field 33 on a 16-pixel input, so it must grow the probe
    net = nn.Sequential(*[nn.Conv2d(1, 1, 9, padding=4) for _ in range(4)])
    rfs = receptive_fields(net, ["3"], channels=1, side=16)
    assert (rfs["3"].size, rfs["3"].stride, rfs["3"].offset) == by_recurrence([(9, 1, 4)] * 4)[-1] == (33, 1, 0.0)
    assert not rfs["3"].whole


def test_dilated_conv():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=2, dilation=2))
    rfs = receptive_fields(net, ["0", "1"], channels=1, side=32)
    # a dilation-2 3×3 kernel spans 5 pixels: 3 + (5 - 1) = 7
    assert (rfs["1"].size, rfs["1"].stride, rfs["1"].offset) == (7, 1, 0.0)


def test_non_spatial_layer_has_no_field():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 3))
    rfs = receptive_fields(net, ["0", "1", "2"], channels=3, side=32)
    assert rfs["0"].size == 3
    assert rfs["1"] is None and rfs["2"] is None


@pytest.fixture(scope="module")
def alexnet_fields():
    model = torchvision.models.alexnet(weights=None)
    names = [f"features.{i}" for i in (0, 2, 3, 5, 6, 8, 10, 12)]
    return receptive_fields(model, names, channels=3, side=224)


@pytest.mark.parametrize("name, size, stride", [
    ("features.0", 11, 4),    # conv1
    ("features.2", 19, 8),    # pool1
    ("features.3", 51, 8),    # conv2
    ("features.5", 67, 16),   # pool2
    ("features.6", 99, 16),   # conv3
    ("features.8", 131, 16),  # conv4
    ("features.10", 163, 16),  # conv5
    ("features.12", 195, 32),  # pool5
])
def test_alexnet_published_fields(alexnet_fields, name, size, stride):
    rf = alexnet_fields[name]
    assert (rf.size, rf.stride) == (size, stride)
    assert not rf.whole


def test_alexnet_offsets_match_the_recurrence(alexnet_fields):
    chain = [(11, 4, 2), (3, 2, 0), (5, 1, 2), (3, 2, 0), (3, 1, 1), (3, 1, 1), (3, 1, 1), (3, 2, 0)]
    expected = by_recurrence(chain)
    names = [f"features.{i}" for i in (0, 2, 3, 5, 6, 8, 10, 12)]
    for name, (r, j, start) in zip(names, expected):
        rf = alexnet_fields[name]
        assert (rf.size, rf.stride, rf.offset) == (r, j, start), name


def test_layer_table_rows():
    net = small_net()
    rows = layer_table(net, (3, 32, 32), torch.device("cpu"))
    assert [r.name for r in rows] == ["0", "1", "2", "3", "4", "5", "6"]
    assert [r.type for r in rows] == ["Conv2d", "ReLU", "Conv2d", "BatchNorm2d", "MaxPool2d", "Conv2d",
                                      "AdaptiveAvgPool2d"]
    assert [r.shape for r in rows] == [(4, 32, 32), (4, 32, 32), (4, 16, 16), (4, 16, 16), (4, 8, 8), (6, 8, 8),
                                       (6, 1, 1)]
    assert [r.params for r in rows] == [3 * 4 * 9 + 4, 0, 4 * 4 * 9 + 4, 8, 0, 4 * 6 * 25 + 6, 0]
    assert (rows[5].rf.size, rows[5].rf.stride, rows[5].rf.offset) == (23, 4, 1.0)
    assert rows[6].rf.whole
    row = rows[0].as_row()
    assert row["shape"] == [4, 32, 32] and row["rf"]["size"] == 3
    # the table leaves the model as it was: same weights, no hooks, max-pool still a max-pool
    assert isinstance(net[4], nn.MaxPool2d)


def test_layer_table_depth_and_extra():
    net = nn.Sequential(nn.Sequential(nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())), nn.Flatten())
    names = [r.name for r in layer_table(net, (3, 16, 16), torch.device("cpu"), depth=2, extra=["0.0.1"])]
    assert names == ["0", "0.0", "0.0.1", "1"]
    flat = [r for r in layer_table(net, (3, 16, 16), torch.device("cpu")) if r.name == "1"][0]
    assert flat.shape == (2 * 14 * 14,) and flat.rf is None


# ------------------------------------------------------------------------------------------------ box


def test_box_inside_the_image():
    rf = ReceptiveField(size=11, stride=4, offset=3.0)
    # unit (5, 2): centre (3 + 20, 3 + 8) = (23, 11), half 5 → rows 18..28, cols 6..16, end exclusive
    assert rf.box(5, 2, 224, 224) == (18, 6, 29, 17)


def test_box_clipped_at_top_left():
    rf = ReceptiveField(size=11, stride=4, offset=3.0)
    # unit (0, 0): centre 3, field -2..8 → clipped to 0..8
    assert rf.box(0, 0, 224, 224) == (0, 0, 9, 9)


def test_box_clipped_at_bottom_right():
    rf = ReceptiveField(size=23, stride=4, offset=1.0)
    # unit (7, 7) of an 8×8 map on a 32×32 input: centre 29, field 18..40 → clipped to 18..31
    assert rf.box(7, 7, 32, 32) == (18, 18, 32, 32)
    # a non-square image clips rows and columns separately
    assert rf.box(7, 1, 30, 100) == (18, 0, 30, 17)  # cols: centre 5, field -6..16


def test_box_whole():
    rf = ReceptiveField(size=32, stride=0, offset=15.5, whole=True)
    assert rf.box(0, 0, 40, 50) == (0, 0, 40, 50)


@pytest.mark.parametrize("arch, expected", [
    # the stages' outputs, never the pooled 1×1 output; ConvNeXt's stem and downsampling layers (conv + LayerNorm,
    # no nonlinearity) are steps between blocks, not blocks
    ("convnext_tiny", ["features.1", "features.3", "features.5", "features.7"]),
    ("efficientnet_b0", ["features.0", "features.3", "features.5", "features.8"]),
    ("mobilenet_v3_small", ["features.0", "features.4", "features.8", "features.12"]),
    ("resnet50", ["relu", "layer2.1", "layer3.3", "layer4.2"]),
    ("regnet_y_400mf", ["stem.2", "trunk_output.block1", "trunk_output.block3", "trunk_output.block4"]),
])
def test_default_layers_are_blocks_of_modern_cnns(arch, expected):
    model = torchvision.models.get_model(arch, weights=None).eval()
    assert default_layers(model, (3, 64, 64), torch.device("cpu")) == expected
