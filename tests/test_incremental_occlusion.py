"""Incremental occlusion (techniques/attribution/incremental.py): its maps equal one full forward per window (the
path occlusion had before, kept as `full=True`) on residual CNNs, TensorFlow-"SAME" and grouped convolutions,
models it must partly or wholly leave to full forwards, clipped border windows and any batch size; the path that
ran is recorded, and early layers really recompute less than their whole map."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import FunctionalNet, act_net, make_ctx, params, run, torchvision_net
from torch import nn

from generator import batching
from generator.builtin.efficientnet_lite import SameConv2d
from generator.techniques.attribution.incremental import Sweep, Unsupported, pool_window, trace
from generator.techniques.attribution.occlusion import fill_images, occlusion_maps, starts

pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(module: nn.Module, scale: float = 0.2, seed: int = 0) -> nn.Module:
    """Random weights small enough to leave the softmax unsaturated, and batch norms with real statistics (so
    that folding them into the convolutions is tested)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.data.add_(1.0)
    return module.eval()


class ResCNN(nn.Module):
    """conv, batch norm, in-place ReLU, max pooling, a residual block, global pooling, linear."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv_a, self.bn_a = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.stem(x))))
        y = self.conv_b(torch.relu(self.bn_a(self.conv_a(x))))
        x = F.relu(x + y)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SameNet(nn.Module):
    """EfficientNet-style convolutions padding like TensorFlow's "SAME" (asymmetric on odd inputs), depthwise and
    grouped, with strides; a dilated one, a `padding="same"` one with an even kernel, max pooling in ceil mode and
    average pooling over zero padding."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = SameConv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8)
        self.act = nn.ReLU6()
        self.depthwise = SameConv2d(8, 8, 5, stride=2, groups=8)
        self.expand = SameConv2d(8, 16, 1)
        self.grouped = SameConv2d(16, 16, 3, groups=4)
        self.dilated = nn.Conv2d(16, 16, 3, padding=2, dilation=2)
        self.even = nn.Conv2d(16, 16, 4, padding="same")
        self.max = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, 1, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.act(self.bn(self.stem(x)))
        x = self.act(self.expand(self.depthwise(x)))
        x = self.grouped(x) + x
        x = self.avg(self.max(self.even(F.relu(self.dilated(x)))))
        return self.head(x.mean((2, 3)))


class LayerNormNet(nn.Module):
    """SiLU and Hardswish keep the box; a LayerNorm over channels (through a permute) and a `.view` over the
    spatial dimensions are not modelled, so the layers from there run on whole maps."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), \
            nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.hardswish = nn.Hardswish()
        self.fc = nn.Linear(8 * 16 * 16, 4)

    def forward(self, x):
        x = F.silu(self.conv1(x))
        x = self.hardswish(self.conv2(x))
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
        x = F.max_pool2d(self.conv3(x), 2)
        return self.fc(x.view(x.size(0), -1))


class ViewWrittenInto(nn.Module):
    """Takes a view of a map, then writes into the map in place: the view changes too, which the traced graph (an
    op, a new tensor) does not show."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(2, 4)

    def forward(self, x):
        h = self.conv(x)
        first = h[:, :2]
        h.relu_()
        return self.fc(first.mean((2, 3)))


def both(module: nn.Module, window: int, stride: int, size: int = 32, images: int = 2, **kw):
    """(incremental maps, full-forward maps, report) on noise pictures, each explained for its top class."""
    ctx = make_ctx(module, images=images, size=size)
    x = ctx.batch(list(ctx.images))
    with torch.no_grad():
        targets = ctx.model.module(x).argmax(1)
    fill = fill_images(ctx, x, params("occlusion", fill="mean"))
    report: dict = {}
    ours = occlusion_maps(ctx.model, x, targets, fill, window, stride, report=report, **kw)
    full = occlusion_maps(ctx.model, x, targets, fill, window, stride, full=True, **kw)
    assert full.abs().max() > 1e-2  # the comparison means something
    return ours, full, report


def assert_equal_maps(ours: torch.Tensor, full: torch.Tensor) -> None:
    assert ours.shape == full.shape
    assert (ours - full).abs().max() < 1e-4


@pytest.mark.parametrize("score", ["log_odds", "probability"])
def test_residual_cnn_equals_full_forwards(score):
    ours, full, report = both(seeded(ResCNN()), 8, 4, score=score)
    assert_equal_maps(ours, full)
    assert report["path"] == "incremental"  # fails if the sweep silently fell back to full forwards
    assert 0 < report["recomputed_flops"] < 1 and 0 < report["recomputed_positions"] < 1


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("size", [64, 65])
def test_same_padding_grouped_and_strided_convolutions(size):
    net = seeded(SameNet())
    ours, full, report = both(net, 8, 8, size=size)
    assert_equal_maps(ours, full)
    assert report["path"] == "incremental"
    assert net.act.inplace is False  # the sweep runs an in-place copy of it, never the module itself


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_found_the_padding_of_same_convolutions():
    """The probe finds TF "SAME" padding, the odd pixel after: on 64 px a 3 × 3 stride-2 convolution pads 0 before
    and 1 after, on 32 px a 5 × 5 stride-2 one 1 and 2, on 16 px a 3 × 3 one 1 and 1."""
    sweep = sweep_of(seeded(SameNet()), 64, 8, 8)
    assert sweep.windows[node(sweep, "stem")].pads == (0, 1, 0, 1)
    assert sweep.windows[node(sweep, "depthwise")].pads == (1, 2, 1, 2)
    assert sweep.windows[node(sweep, "grouped")].pads == (1, 1, 1, 1)
    assert sweep.windows[node(sweep, "even")].pads == (1, 2, 1, 2)  # PyTorch's own "same" also pads more after
    assert sweep.windows[node(sweep, "max")].pads == (0, 1, 0, 1)  # ceil mode: 16 px give 8 windows of 3, stride 2


def test_ceil_mode_pooling_pads_with_minus_infinity():
    pool = nn.MaxPool2d(3, 2, ceil_mode=True)
    window = pool_window(pool, torch.Size([1, 1, 8, 8]), pool(torch.zeros(1, 1, 8, 8)).shape)
    assert window.pads == (0, 1, 0, 1) and window.fill == float("-inf")
    x = torch.randn(1, 2, 8, 8)
    assert torch.equal(window.whole(x), pool(x))


def test_position_mixing_ops_run_on_whole_maps_and_stay_exact():
    net = seeded(LayerNormNet())
    sweep = exact_incremental_sweep(net, 6, 4)
    assert sweep.state[node(sweep, "conv2")] == "box"
    assert sweep.state[node(sweep, "norm")] == "whole" and sweep.state[node(sweep, "conv3")] == "whole"


def test_torchvision_resnet18():
    """In-place ReLUs, padded max pooling, and 1 × 1 stride-2 shortcuts that read every other row only."""
    ours, full, report = both(torchvision_net("resnet18"), 16, 16, size=96)
    assert_equal_maps(ours, full)
    assert report["path"] == "incremental"


def test_clipped_border_windows():
    # 30 px, window 8, stride 5: windows start at 0, 5, …, 25, and the last one is clipped at the border.
    assert starts(30, 8, 5)[-1] + 8 > 30
    ours, full, report = both(seeded(ResCNN()), 8, 5, size=30)
    assert_equal_maps(ours, full)
    assert report["path"] == "incremental"


@pytest.mark.parametrize("batch", [1, 5])
def test_any_number_of_windows_per_batch(batch):
    ours, full, _ = both(seeded(ResCNN()), 8, 4, batch=batch)
    assert_equal_maps(ours, full)


def test_in_place_ops_whose_result_is_dropped():
    """`x.relu_()` with its result unused still changes what follows (helpers.FunctionalNet)."""
    ours, full, report = both(FunctionalNet(inplace=True).eval(), 8, 4)
    assert_equal_maps(ours, full)
    assert report["path"] == "incremental"


def test_model_fx_cannot_trace_gets_full_forwards():
    class LenNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = act_net(scale=0.15)

        def forward(self, x):
            return self.body(x).view(len(x), -1)  # len() of a traced tensor fails

    ours, full, report = both(LenNet().eval(), 8, 4)
    assert report["path"].startswith("full forwards (torch.fx cannot trace it")
    assert torch.equal(ours, full)


def test_traced_graph_that_misreads_the_model_gets_full_forwards():
    ours, full, report = both(seeded(ViewWrittenInto(), scale=0.5), 8, 4)
    assert report["path"] == "full forwards (the traced model's logits differ from the model's)"
    assert_equal_maps(ours, full)


def test_window_that_changes_everything_gets_full_forwards():
    _, _, report = both(seeded(ResCNN()), 32, 32)
    assert report["path"].startswith("full forwards (a window changes 100%")


def sweep_of(module: nn.Module, size: int, window: int, stride: int) -> Sweep:
    ctx = make_ctx(module, images=1, size=size)
    x = ctx.batch(list(ctx.images))
    with torch.no_grad():
        return Sweep(ctx.model, x, window, [starts(size, window, stride)] * 2)


def exact_incremental_sweep(net: nn.Module, window: int, stride: int) -> Sweep:
    """The incremental path ran on `net` (32 px) and its maps equal full forwards'; its sweep, to look inside."""
    ours, full, report = both(net, window, stride)
    assert_equal_maps(ours, full)
    assert report["path"] == "incremental"
    return sweep_of(net, 32, window, stride)


def node(sweep: Sweep, target: str):
    return next(n for n in sweep.nodes if n.target == target)


def test_early_layers_recompute_less_than_their_map():
    sweep = sweep_of(seeded(ResCNN()), 64, 8, 4)
    for name, side in (("stem", 64), ("pool", 32), ("conv_a", 32), ("conv_b", 32)):
        box = sweep.boxes[node(sweep, name)]
        assert sweep.state[node(sweep, name)] == "box" and box.area < side * side / 4
    # The stem: an 8 px window reaches 10 rows of a 3 × 3 convolution's output (8 + 1 on each side).
    assert sweep.boxes[node(sweep, "stem")].rows.size == 10
    assert sweep.state[node(sweep, "head")] == "whole"
    assert sweep.recomputed()["flops"] < 0.5
    # Batch norms folded into the convolutions before them, whose fresh outputs the ReLU then overwrites.
    assert not any(n.target in ("bn", "bn_a") for n in sweep.nodes)
    assert node(sweep, "relu") in sweep.in_place


def test_forward_of_two_inputs_is_unsupported():
    class TwoInputs(nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(Unsupported, match="takes 2 inputs"):
        trace(TwoInputs())


def test_technique_records_the_path():
    ctx = make_ctx(seeded(ResCNN()), images=2)
    arts = run("occlusion", ctx, window=8, stride=4)
    info = arts[0].meta["occlusion"]
    assert info["path"] == "incremental" and 0 < info["recomputed_flops"] < 1


def test_windows_go_through_the_sweep_in_cache_sized_batches(monkeypatch):
    sizes = []
    logits = Sweep.logits
    monkeypatch.setattr(Sweep, "logits", lambda self, kept, windows: sizes.append(len(windows)) or logits(
        self, kept, windows))
    sweep = sweep_of(seeded(ResCNN()), 32, 8, 4)
    largest = max(sweep._bytes_per_window(n) for n in sweep.nodes)
    monkeypatch.setattr(batching, "CPU_CACHE_BUDGET", 5 * largest)  # room for 5: rounded down to 4
    assert sweep.windows_per_batch(49) == 4
    ours, full, _ = both(seeded(ResCNN()), 8, 4)
    assert sizes == [4] * 12 + [1] + [4] * 12 + [1]  # 49 windows of each of the 2 images
    assert_equal_maps(ours, full)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_full_forwards_on_the_cpu():
    net = seeded(SameNet())
    ctx = make_ctx(net, images=2, size=64)
    x = ctx.batch(list(ctx.images))
    with torch.no_grad():
        targets = net(x).argmax(1)
    fill = fill_images(ctx, x, params("occlusion", fill="mean"))
    full = occlusion_maps(ctx.model, x, targets, fill, 8, 8, full=True)
    net.cuda()
    ctx.model.device = torch.device("cuda")
    report: dict = {}
    try:
        gpu = occlusion_maps(ctx.model, x.cuda(), targets.cuda(), fill.cuda(), 8, 8, report=report)
    finally:
        net.cpu()
    assert report["path"] == "incremental"
    assert_equal_maps(gpu.cpu(), full)


class ConcatNet(nn.Module):
    """Two branches concatenated along the channels (Inception, DenseNet, SqueezeNet), one of them narrower."""

    def __init__(self):
        super().__init__()
        self.stem, self.pool = nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2)
        self.narrow, self.wide = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 8, 5, padding=2)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        x = self.pool(F.relu(self.stem(x)))
        x = F.relu(torch.cat([self.narrow(x), self.wide(x)], 1))
        return self.head(x.mean((2, 3)))


def test_channel_concatenation_keeps_the_union_box():
    net = seeded(ConcatNet())
    sweep = exact_incremental_sweep(net, 8, 4)
    cat = next(n for n in sweep.nodes if n.target is torch.cat)
    assert sweep.state[cat] == "box" and sweep.boxes[cat] == sweep.boxes[node(sweep, "wide")]


class StandardizedConv2d(nn.Conv2d):
    """Standardizes its weight in the forward (BiT, NFNets): not a convolution of `weight` itself."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def standardized_net(kernel: int) -> nn.Module:
    return seeded(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                StandardizedConv2d(8, 8, kernel, padding=kernel // 2), nn.ReLU(),
                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)), scale=0.1)


def test_convolution_subclass_the_probe_rejects_runs_on_whole_maps():
    """3 × 3: no padding reproduces its output from `weight`, so it runs as itself, on whole maps."""
    net = standardized_net(3)
    sweep = exact_incremental_sweep(net, 8, 4)
    assert node(sweep, "2") not in sweep.windows and sweep.state[node(sweep, "2")] == "whole"


def test_convolution_subclass_the_sizes_leave_unprobed_is_caught_by_the_logits():
    """1 × 1: the sizes allow one padding, so nothing probes the forward; the traced pass's logits then differ from
    the model's, and the windows get full forwards."""
    ours, full, report = both(standardized_net(1), 8, 4)
    assert report["path"] == "full forwards (the traced model's logits differ from the model's)"
    assert_equal_maps(ours, full)
