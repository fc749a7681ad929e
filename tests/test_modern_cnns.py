"""Every technique on the CNNs people bring: EfficientNet-B0 (SiLU, squeeze-excite), MobileNetV3 (Hardswish,
hard-sigmoid gates), ConvNeXt (GELU, LayerNorm, 7×7 depthwise), RegNet (grouped convs) and ResNet-50, each loaded the
way a user's fine-tuned model is: `torchvision: ARCH`, `weights: null`, a checkpoint with a 5-class head, labels.

Weights are random (nothing downloads here), with batch-norm statistics measured on images so that activations keep
their scale through the depth, as in a trained network (torchvision's initial running statistics, mean 0 and
variance 1, let the signal shrink or grow block by block until every class gets the same probability). A 64-px input,
tiny data set, few steps: the point is that every technique produces its figures and numbers on each architecture
or says on its page why it does not apply — never a failed job."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from helpers import cli, read_json, write_spec
from generator.techniques import registry

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["alpha", "beta", "gamma", "delta", "epsilon"]
ARCHS = ["efficientnet_b0", "mobilenet_v3_small", "convnext_tiny", "regnet_y_400mf", "resnet50"]

# Small settings for every selectable technique, so each architecture builds in well under a minute on 2 cores
# (with --quick on top, which shortens optimizations and faithfulness checks further).
TECHNIQUES = {
    "predictions": {}, "filters": {"max_filters": 16}, "activations": {"max_channels": 8},
    "saliency": {}, "guided_backprop": {}, "integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 4},
    "occlusion": {"window": 16, "stride": 16}, "gradcam": {}, "guided_gradcam": {}, "saliency_grabcut": {},
    "nearest_neighbors": {}, "embedding": {"grid": 4}, "max_patches": {"per_layer": 2, "top_k": 2},
    "class_visualization": {"max_classes": 1}, "unit_visualization": {"per_layer": 2},
    "fooling": {"steps": 8}, "deepdream": {"octaves": 1, "steps": 2}, "multifaceted": {"max_classes": 1, "facets": 1},
    "feature_inversion": {}, "texture_synthesis_nonparametric": {"images": ["textures"], "size": 24, "window": 5},
    "texture_synthesis": {"images": ["textures"], "random_filters": False},
    "style_transfer": {"styles": ["styles"], "random_filters": False},
}


def calibrated_checkpoint(arch: str, path) -> None:
    """A random `arch` with a 5-class head whose batch-norm statistics come from a forward over noise images."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=len(CLASSES))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 64, 64))
    torch.save({"state_dict": model.eval().state_dict(), "epoch": 3}, path)


def test_every_technique_is_covered_here():
    assert set(TECHNIQUES) == set(registry.selectable())


@pytest.mark.parametrize("arch", ARCHS)
def test_every_technique_on_a_modern_cnn(tmp_path, arch):
    calibrated_checkpoint(arch, tmp_path / "finetuned.pt")
    spec = {
        "title": arch, "output": "out", "cache": "cache", "device": "cpu", "seed": 0,
        "datasets": {"crops": {"samples": ["skimage:chelsea", "skimage:coffee", "skimage:astronaut"], "crops": 3}},
        "images": {"photos": ["skimage:rocket"], "textures": ["skimage:brick"], "styles": ["skimage:gravel"]},
        "models": [{
            "name": "net", "torchvision": arch, "weights": None, "checkpoint": "finetuned.pt", "labels": CLASSES,
            "input": {"size": 64}, "images": ["photos"], "dataset": "crops", "techniques": TECHNIQUES,
        }],
    }
    status = cli("build", write_spec(tmp_path, spec), "--quick")
    out = tmp_path / "out"
    jobs = read_json(out / "build.json")["jobs"]
    failed = [f"{j['technique']} {j['layer'] or ''} {j['image'] or ''}: {j['error']}" for j in jobs
              if j["status"] == "failed"]
    assert not failed and status == 0, "\n".join(failed)
    ran = {j["technique"] for j in jobs}
    manifest = {r["technique"] for r in read_json(out / "manifest.json")["artifacts"]}
    for kind in TECHNIQUES:
        page = (out / "net" / f"{kind}.md").read_text(encoding="utf-8")
        if kind in ran:
            assert kind in manifest, kind
        else:  # not run: the page says why, in a sentence
            assert "Does not apply to net" in page and "was not run on this model: " in page, kind
    # every one of these networks has rectifiers: the guided methods run on all of them
    assert {"guided_backprop", "guided_gradcam"} <= ran
    guided = (out / "net" / "guided_backprop.md").read_text(encoding="utf-8")
    smooth = {"efficientnet_b0": "silu", "mobilenet_v3_small": "hardswish", "convnext_tiny": "gelu"}.get(arch)
    assert ("Smooth rectifiers: the rule used here" in guided) == bool(smooth)
    if smooth:
        assert f"<code>{smooth}</code>" in guided
    # the default layers are blocks of the network, never a normalization's output or a pooled 1×1 map
    layers = {j["layer"] for j in jobs if j["technique"] == "activations"}
    assert len(layers) == 4 and not any("norm" in layer.split(".")[-1] for layer in layers), layers
