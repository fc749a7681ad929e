"""Grad-CAM and Guided Grad-CAM: equal to pytorch-grad-cam before and after its scaling, batched equal to one row
at a time, the default layer, bad layers caught before running, in-place operations, nothing left behind."""
from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
from helpers import (torchvision_net, Raises, act_net, assert_same_state, brute_force_guided, make_ctx, model_state, params,
                      render_page, run)
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from generator.hooks import hook_count
from generator.techniques import registry
from generator.techniques.attribution.gradcam import default_layer, grad_cam, upsample


def batch(ctx, module=None):
    x = ctx.batch(list(ctx.images))
    with torch.no_grad():
        return x, (module or ctx.model.module)(x).argmax(1)


def reference(module, layer, x, targets):
    """pytorch-grad-cam's GradCAM: (its final min-max-scaled maps at input size, its raw layer-resolution maps
    Σ_k w_k A_k before ReLU and scaling, with w from its own get_cam_weights). It backpropagates a loss, so it
    gets a copy of the model whose weights require grad (ours does not need them to)."""
    module = copy.deepcopy(module).requires_grad_(True)
    target_layer = dict(module.named_modules())[layer]
    with ReferenceGradCAM(model=module, target_layers=[target_layer]) as cam:
        scaled = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        weights = cam.get_cam_weights(x, target_layer, None, acts, grads)
        raw = cam.get_cam_image(x, target_layer, None, acts, grads)
    return scaled, raw, weights


def min_max(maps: np.ndarray) -> np.ndarray:
    lo = maps.min(axis=(1, 2), keepdims=True)
    hi = maps.max(axis=(1, 2), keepdims=True)
    return (maps - lo) / (hi - lo + 1e-7)  # the epsilon of pytorch-grad-cam's scale_cam_image


@pytest.mark.parametrize("layer", ["act2", "conv2", "conv1", "pool"])
def test_matches_pytorch_grad_cam(layer):
    ctx = make_ctx(act_net(), images=3)
    x, targets = batch(ctx)
    targets[1] = (targets[1] + 1) % 4  # not only top-1 classes
    low = grad_cam(ctx.model, x, targets, layer).numpy()
    scaled, raw, _ = reference(ctx.model.module, layer, x, targets)
    # Before any scaling: our layer-resolution map is ReLU of theirs.
    assert low.max() > 1e-3
    assert np.abs(low - np.maximum(raw, 0)).max() < 1e-6
    # After: our upsampled map, min-max scaled per map, is their output (bilinear resizing commutes with an
    # affine rescaling, so scaling before or after the resize gives the same map).
    ours = registry.get("gradcam").attribute(ctx, x, targets, params("gradcam", layer=layer)).numpy()
    assert ours.shape == scaled.shape == (3, 32, 32)
    assert np.abs(min_max(ours) - scaled).max() < 1e-4


def test_resnet18_matches_pytorch_grad_cam_at_its_default_layer():
    net = torchvision_net("resnet18")
    ctx = make_ctx(net, images=2, size=224)  # layer4 is 7 × 7 at 224 px (2 × 2 at 64 px: then layer2, 8 × 8)
    assert default_layer(ctx.model) == "layer4"
    x, targets = batch(ctx)
    ours = registry.get("gradcam").attribute(ctx, x, targets, params("gradcam")).numpy()
    scaled, _, _ = reference(net, "layer4", x, targets)
    assert np.abs(min_max(ours) - scaled).max() < 1e-4


def test_batch_equals_one_row_at_a_time():
    ctx = make_ctx(act_net(), images=3)
    x, top = batch(ctx)
    rows = torch.tensor([0, 0, 1, 2])
    targets = torch.tensor([int(top[0]), (int(top[0]) + 2) % 4, int(top[1]), int(top[2])])
    p = params("gradcam")
    together = registry.get("gradcam").attribute(ctx, x[rows], targets, p)
    for k in range(len(rows)):
        alone = registry.get("gradcam").attribute(ctx, x[rows[k]:rows[k] + 1], targets[k:k + 1], p)
        assert torch.allclose(together[k], alone[0], atol=1e-6)
    assert not torch.allclose(together[0], together[1])  # two classes of one image: two different maps


def test_run_names_the_layer_and_explains_each_target():
    ctx = make_ctx(act_net(), images=2)
    arts = run("gradcam", ctx, targets=["cat", 2])
    for art in arts:
        assert art.meta["layer"] == "act2"
        assert [t["label"] for t in art.meta["targets"]] == ["cat", "car"]
        assert art.main.shape == (2, 32, 32) and (art.main >= 0).all()


def test_default_layer_is_the_last_spatial_one_before_pooling():
    assert default_layer(make_ctx(act_net()).model) == "act2"  # gap is AdaptiveAvgPool2d(4): not a layer to explain
    # The last one at least 7 × 7 where there is one: ResNet's and VGG's last stage at 224 px; AlexNet's last conv
    # (13 × 13) rather than its 6 × 6 max-pool; at 64 px the last stage of each is 2 × 2 or less, so an earlier one.
    for arch, size, expected in (("resnet18", 224, "layer4"), ("vgg11", 224, "features"),
                                 ("alexnet", 224, "features.11"), ("resnet18", 64, "layer2"),
                                 ("vgg11", 64, "features.14"), ("alexnet", 64, "features.4")):
        assert default_layer(make_ctx(torchvision_net(arch), size=size).model) == expected
    # act_net at 12 px: act2 is 6 × 6, act1 12 × 12; at 6 px no layer is 7 × 7: the last spatial one all the same.
    assert default_layer(make_ctx(act_net(), size=12).model) == "act1"
    strided = nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 4, 3, stride=2, padding=1)), ("act", nn.ReLU()),
                                         ("flat", nn.Flatten()), ("fc", nn.Linear(4 * 4 * 4, 4))])).eval()
    assert default_layer(make_ctx(strided, size=8).model) == "act"  # 4 × 4


def fashion_like_net() -> nn.Sequential:
    """The Fashion-MNIST network's shape at 28 px: conv stages at 28, 14 and 7 px, then a max-pool to 3 × 3 that
    the classifier flattens (no global pooling anywhere)."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 4, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(4, 6, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(6, 8, 3, padding=1)), ("relu3", nn.ReLU()), ("pool3", nn.MaxPool2d(2)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(8 * 3 * 3, 4)),
    ])).eval()


def test_default_layer_is_the_last_stage_of_7_px_not_the_3_px_pool_after_it():
    """Issue 12: on the Fashion-MNIST network Grad-CAM ran at the 3 × 3 max-pool output (blank or corner maps); the
    default is now the last conv stage of at least 7 × 7 beside it."""
    ctx = make_ctx(fashion_like_net(), images=1, size=28)
    assert default_layer(ctx.model) == "relu3"  # 8 × 7 × 7; pool3 (3 × 3) used to be the default
    (art,) = run("gradcam", ctx)
    assert art.meta["layer"] == "relu3" and art.meta["layer_shape"] == [8, 7, 7]
    assert art.meta["layer_rule"] and "7 × 7" in art.meta["layer_rule"]
    assert run("gradcam", ctx, layer="pool3")[0].meta["layer_rule"] is None  # a named layer is no default


class Negative(nn.Module):
    """Class 0's logit is minus the sum of a ReLU feature map: every Grad-CAM weight is negative, every activation
    non-negative, so class 0's Grad-CAM is all zeros; class 1's is not."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()

    def forward(self, x):
        s = self.act(self.conv(x)).mean((1, 2, 3))
        return torch.stack([-s, s, 0 * s, 0 * s], 1)


def test_an_all_zero_map_is_labelled_and_never_scored(tmp_path):
    from generator.context import DrawContext
    from generator.pipeline import Result
    from generator.templating import Renderer
    from generator.report import ModelPages, technique_page_context
    from generator.report import comparison_page_context
    from generator.outputs import write_outputs, draw_comparisons
    from generator.artifacts import Job

    ctx = make_ctx(Negative(), images=1)
    jobs = {k: [Job("tiny", k, params(k, targets=["cat", "dog"], faithfulness=True, faithfulness_steps=4), image=i)
                for i in ctx.images] for k in ("gradcam", "saliency")}
    arts = {k: registry.get(k).run(ctx, js) for k, js in jobs.items()}
    (cam,) = arts["gradcam"]
    zero, live = cam.meta["targets"]
    assert not cam.main[0].any() and cam.main[1].any()
    assert zero["constant_map"] == "all zeros" and "constant_map" not in live
    assert zero["deletion_auc"] is None and zero["insertion_auc"] is None  # not scored ...
    assert np.isnan(cam.arrays["deletion_auc"][0]) and np.isnan(cam.arrays["deletion"][0]).all()
    assert live["deletion_auc"] is not None and np.isfinite(cam.arrays["insertion"][1]).all()  # ... the other is
    assert cam.meta["unmet"] == ["cat: the map is all zeros: it ranks no pixel above another, so it is not scored"]
    from generator.techniques.attribution.base import target_labels
    assert "⚠ all zeros: not scored" in target_labels(cam)[0] and "⚠" not in target_labels(cam)[1]
    # The page lists it under the warning; the comparison page shows it but ranks only the scored maps.
    results = [Result(j, "ran", 0.1, a) for k in jobs for j, a in zip(jobs[k], arts[k])]
    pages = ModelPages(ctx.model, DrawContext(ctx.model, ctx.images), results)
    write_outputs(tmp_path, pages, lambda n: None)
    text = Renderer().page("pages/gradcam.md.j2", **technique_page_context(pages, "gradcam"))
    assert "did not reach their goal" in text and "all zeros" in text
    # Explaining "cat" first: Grad-CAM's map is blank, saliency's is not.
    draw_comparisons(tmp_path, pages)
    page = comparison_page_context(pages, ["gradcam", "saliency"])
    rows = {row["kind"]: row for row in page["images"][0]["rows"]}
    assert rows["gradcam"]["deletion_rank"] is None and rows["gradcam"]["insertion_rank"] is None
    assert rows["saliency"]["deletion_rank"] == 1
    overall = {row["kind"]: row for row in page["overall"]}
    assert overall["gradcam"]["deletion_auc"] is None
    comparison = Renderer().page("pages/comparison.md.j2", **page)
    assert "not scored" in comparison


def test_non_convolutional_layer_is_a_check_error():
    model = make_ctx(act_net()).model
    technique = registry.get("gradcam")
    (problem,) = technique.check(model, params("gradcam", layer="fc"))
    assert problem.startswith("layer:") and "'fc'" in problem and "convolutional" in problem and "act2" in problem
    (problem,) = technique.check(model, params("gradcam", layer="flat"))
    assert "'flat'" in problem and "[128]" in problem
    (problem,) = technique.check(model, params("gradcam", layer="conv3"))
    assert "no module 'conv3'" in problem
    assert technique.check(model, params("gradcam", layer="conv1")) == []
    assert technique.check(model, params("gradcam")) == []


def test_layer_after_global_pooling_is_a_check_error():
    net = nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 4, 3)), ("act", nn.ReLU()), ("gap", nn.AdaptiveAvgPool2d(1)),
                                     ("flat", nn.Flatten()), ("fc", nn.Linear(4, 4))]))
    (problem,) = registry.get("gradcam").check(make_ctx(net).model, params("gradcam", layer="gap"))
    assert "1 × 1" in problem and "'act'" in problem


def test_bad_layer_caught_by_validate(project, capsys):
    from helpers import cli, tiny_spec, write_spec

    spec = write_spec(project, tiny_spec(techniques={"gradcam": {"layer": "fc"}}))
    assert cli("validate", spec) != 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "techniques.gradcam.layer" in text and "'fc'" in text and "convolutional" in text


def test_hooks_removed_when_the_forward_raises():
    ctx = make_ctx(Raises(), images=1)
    x = ctx.batch(list(ctx.images))
    for kind in ("gradcam", "guided_gradcam"):
        with pytest.raises(ValueError, match="boom"):
            registry.get(kind).attribute(ctx, x, torch.tensor([0]), params(kind, layer="body.act1"))
        assert hook_count(ctx.model.module) == 0
        assert torch.overrides._get_current_function_mode_stack() == []
    with pytest.raises(ValueError, match="boom"):
        default_layer(ctx.model)  # the dry forward's hooks, too
    assert hook_count(ctx.model.module) == 0


class AddsInPlace(nn.Module):
    """conv → bn → (x += 1; relu_) → head: the explained layer's output is changed in place after it returns."""

    def __init__(self, inplace: bool):
        super().__init__()
        body = act_net()
        self.conv1, self.act1, self.pool, self.conv2 = body.conv1, body.act1, body.pool, body.conv2
        self.bn = nn.BatchNorm2d(8).eval()
        self.gap, self.fc = body.gap, body.fc
        self.inplace = inplace

    def forward(self, x):
        x = self.conv2(self.pool(self.act1(self.conv1(x))))
        x = self.bn(x)
        if self.inplace:
            x += 0.1
            x.relu_()
        else:
            x = torch.relu(x + 0.1)
        return self.fc(torch.flatten(self.gap(x), 1))


def test_in_place_changes_after_the_layer_do_not_change_the_map():
    a, b = AddsInPlace(inplace=True), AddsInPlace(inplace=False)
    b.load_state_dict(a.state_dict())
    ctx_a, ctx_b = make_ctx(a), make_ctx(b)
    x, targets = batch(ctx_a)
    ours_a = grad_cam(ctx_a.model, x, targets, "bn")
    ours_b = grad_cam(ctx_b.model, x, targets, "bn")
    assert ours_a.abs().max() > 1e-3
    assert torch.allclose(ours_a, ours_b, atol=1e-6)


@pytest.mark.parametrize("arch", ["resnet18", "vgg11", "alexnet"])
@pytest.mark.parametrize("kind", ["gradcam", "guided_gradcam"])
def test_in_place_relu_models(arch, kind):
    net = torchvision_net(arch)
    ctx = make_ctx(net, images=2, size=64)
    before = model_state(net)
    x, targets = batch(ctx)
    maps = registry.get(kind).attribute(ctx, x, targets, params(kind))
    assert_same_state(before, model_state(net))
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all() and (maps >= 0).all()


@pytest.mark.parametrize("act,kw,upper,slope", [(nn.ReLU, {}, float("inf"), 0.0), (nn.ReLU6, {}, 6.0, 0.0),
                                                (nn.ReLU, {"inplace": True}, float("inf"), 0.0),
                                                (nn.LeakyReLU, {"negative_slope": 0.1}, float("inf"), 0.1)])
def test_guided_gradcam_is_gradcam_times_guided_backprop(act, kw, upper, slope):
    net = act_net(act, **kw)
    ctx = make_ctx(net, images=2)
    x, targets = batch(ctx)
    arts = run("guided_gradcam", ctx)
    cam = upsample(grad_cam(ctx.model, x, targets, "act2"), (32, 32))
    for i, art in enumerate(arts):
        # Guided backprop written out by hand in helpers.py (ReLU6 passes gradient only below 6, LeakyReLU its slope).
        guided = brute_force_guided(net, x[i:i + 1], int(targets[i]), upper=upper, slope=slope)
        product = cam[i:i + 1, None] * guided
        assert art.meta["layer"] == "act2"
        assert np.abs(art.arrays["guided"] - product.numpy()).max() < 1e-6
        assert np.abs(art.main - product.abs().amax(1).numpy()).max() < 1e-6
        assert art.main.max() > 0


def test_model_left_as_it_was_and_pages_render(tmp_path):
    ctx = make_ctx(act_net(), images=2)
    before = model_state(ctx.model.module)
    for kind in ("gradcam", "guided_gradcam"):
        text = render_page(kind, ctx, tmp_path / kind)
        assert "How to read this" in text and "<code>act2</code>" in text
        assert len(list((tmp_path / kind / "tiny" / "figures" / kind).glob("*.png"))) == 2
    assert_same_state(before, model_state(ctx.model.module))


def test_sanity_check_runs_on_randomized_copies():
    ctx = make_ctx(act_net(), images=1)
    before = model_state(ctx.model.module)
    (art,) = run("gradcam", ctx, sanity=True, sanity_stages=2)
    assert len(art.metrics["sanity_correlations"]) == 2
    assert_same_state(before, model_state(ctx.model.module))
