"""Multifaceted feature visualization: the facets are scikit-learn's k-means of the class's penultimate features; each
start is the mean of its members' preprocessed crops; the class probability rises from it; a batch of classes is the
same as one run per class; grayscale models work; unknown classes are spec errors; the page renders."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.cluster import KMeans
from torch import nn

from helpers import tiny_net, COLOURS, colour_dataset, data_context, assert_same_state, model_state
from generator import images as imagelib
from generator.datasets import Dataset
from generator.spec import InputSpec
from generator.artifacts import Job
from generator.techniques.synthesis.multifaceted import Multifaceted, MultifacetedParams

LABELS = [*COLOURS, "other"]  # the data set's classes are the model's (plus one): membership by label
FAST = dict(steps=12, lr=0.05)


def run(ctx, **kw):
    return Multifaceted().run(ctx, [Job("m", "multifaceted", MultifacetedParams(**kw))])[0]


def crops01(ctx, indices) -> np.ndarray:
    """The members as the model sees them, in [0, 1] pixels: (n, C, H, W)."""
    spec = ctx.model.input
    mean = torch.tensor(spec.mean).view(-1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1)
    return np.stack([(imagelib.preprocess(ctx.dataset.image(int(i)), spec) * std + mean).numpy() for i in indices])


def test_facets_are_kmeans_clusters_and_start_at_their_mean_images(tmp_path: Path):
    data = colour_dataset(per_class=9)
    ctx, _ = data_context(tiny_net(), data, tmp_path, ["gap"], labels=LABELS)
    before = model_state(ctx.model.module)
    art = run(ctx, classes=["green", "red"], facets=3, thumbnails=2, **FAST)
    assert_same_state(before, model_state(ctx.model.module))
    assert art.meta["membership"] == "label" and art.meta["layer"] == "gap"
    assert art.arrays["classes"].tolist() == [1, 1, 1, 0, 0, 0]
    vectors = np.asarray(ctx.features.layer("gap").vectors, dtype=np.float32)
    facet = 0
    for c in (1, 0):
        idx = np.flatnonzero(data.labels == c)
        km = KMeans(n_clusters=3, random_state=ctx.seed, n_init=10).fit(vectors[idx])
        sizes = np.bincount(km.labels_, minlength=3)
        for cluster in np.argsort(-sizes, kind="stable"):  # largest facet first
            member = idx[km.labels_ == cluster]
            np.testing.assert_array_equal(np.flatnonzero(art.arrays["assignment"] == facet), member)
            assert art.meta["facets"][facet]["size"] == len(member)
            dist = np.linalg.norm(vectors[member] - km.cluster_centers_[cluster], axis=1)
            nearest = member[np.argsort(dist, kind="stable")[:2]]
            shown = art.arrays["members"][facet]
            np.testing.assert_array_equal(shown[shown >= 0], nearest)
            np.testing.assert_allclose(art.arrays["means"][facet], crops01(ctx, member).mean(0), atol=1e-6)
            facet += 1
    assert (art.arrays["assignment"][data.labels == 2] == -1).all()  # blue was not asked for
    assert art.arrays["facets"].shape == art.arrays["means"].shape == (6, 3, 32, 32)


def test_probability_rises_from_every_mean_image(tmp_path: Path):
    ctx, _ = data_context(tiny_net(), colour_dataset(per_class=6), tmp_path, ["gap"], labels=LABELS)
    art = run(ctx, classes=["red", "blue"], facets=2, steps=30, lr=0.05, tv=0)  # a random net: TV would win
    for f in art.meta["facets"]:
        assert f["after"] > f["before"], f
    assert art.metrics["risen"] == art.metrics["facets"] == 4
    x = torch.from_numpy(art.arrays["facets"])  # what the page reports is the untransformed image's softmax
    with torch.no_grad():
        p = ctx.model.logits(normalize(ctx, x)).softmax(1)
    np.testing.assert_allclose(p[torch.arange(4), torch.from_numpy(art.arrays["classes"])].numpy(),
                               [f["after"] for f in art.meta["facets"]], rtol=1e-5)


def normalize(ctx, x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(ctx.model.input.mean).view(1, -1, 1, 1)
    std = torch.tensor(ctx.model.input.std).view(1, -1, 1, 1)
    return (x - mean) / std


def test_one_batch_of_classes_equals_one_run_per_class(tmp_path: Path):
    """Each facet's TV weight is relative to its own class score's gradient, so batching changes nothing."""
    ctx, _ = data_context(tiny_net(), colour_dataset(per_class=6), tmp_path, ["gap"], labels=LABELS)
    both = run(ctx, classes=["red", "blue"], facets=2, **FAST)
    assert all(f["tv_weight"] > 0 for f in both.meta["facets"])
    red = run(ctx, classes=["red"], facets=2, **FAST)
    blue = run(ctx, classes=["blue"], facets=2, **FAST)
    np.testing.assert_allclose(both.arrays["facets"], np.concatenate([red.arrays["facets"], blue.arrays["facets"]]),
                               atol=1e-5)
    np.testing.assert_array_equal(both.arrays["members"], np.concatenate([red.arrays["members"],
                                                                          blue.arrays["members"]]))


def test_default_classes_and_membership_by_prediction(tmp_path: Path):
    """Class names that are not the model's: members are the images the model predicts as the class, and the
    default classes are the most predicted."""
    data = colour_dataset(per_class=6)
    ctx, _ = data_context(tiny_net(), data, tmp_path, ["gap"], labels=["cat", "dog", "car", "tree"])
    art = run(ctx, max_classes=2, facets=2, steps=1)
    assert art.meta["membership"] == "prediction"
    with torch.no_grad():
        x = torch.stack([imagelib.preprocess(data.image(i), ctx.model.input) for i in range(len(data))])
        top = ctx.model.logits(x).argmax(1).numpy()
    counts = np.bincount(top, minlength=4)
    expected = [int(c) for c in np.argsort(-counts, kind="stable")[:2] if counts[c] > 0]
    assert [c["index"] for c in art.meta["classes"]] == expected
    for f, c in enumerate(art.arrays["classes"]):
        assert (top[art.arrays["assignment"] == f] == c).all()
    assert sorted(np.flatnonzero(art.arrays["assignment"] >= 0)) == sorted(np.flatnonzero(np.isin(top, expected)))


def test_facets_shrink_to_the_images_a_class_has(tmp_path: Path):
    ctx, _ = data_context(tiny_net(), colour_dataset(per_class=2), tmp_path, ["gap"], labels=LABELS)
    art = run(ctx, classes=["red", "other"], facets=3, thumbnails=4, steps=1)
    assert art.meta["classes"] == [{"index": 0, "label": "red", "images": 2, "facets": 2}]
    assert art.meta["empty"] == ["other"]
    assert art.arrays["members"].shape == (2, 4) and (art.arrays["members"][:, 1:] == -1).all()


def gray_net() -> nn.Sequential:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 8, 3, padding=1)), ("relu1", nn.ReLU()), ("pool", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 8, 3, padding=1)), ("relu2", nn.ReLU()), ("flat", nn.Flatten()),
        ("fc1", nn.Linear(8 * 14 * 14, 16)), ("relu3", nn.ReLU()), ("fc", nn.Linear(16, 4)),
    ]))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net.eval()


def test_a_grayscale_fixed_size_model_works_and_its_page_renders(tmp_path: Path, monkeypatch):
    """One channel, 28 × 28, a classifier that accepts no other size (so `size` is ignored and the padded, zoomed
    image is resampled back to 28 px): the Fashion-MNIST shape."""
    from generator.pipeline import Result
    from generator.templating import Renderer
    from generator.report import ModelPages, technique_page_context
    from generator.outputs import write_outputs
    from generator.techniques import registry

    colour = colour_dataset(per_class=5, size=28)
    data = Dataset("grey", "grey colours", colour.classes, colour.labels, colour.names, "grey0",
                   lambda i: colour.image(i).convert("L"))
    ctx, draw = data_context(gray_net(), data, tmp_path, ["relu3"], size=28, labels=LABELS)
    ctx.model.input = draw.model.input = InputSpec(size=28, resize=28, mean=[0.3], std=[0.35], mode="L")
    art = run(ctx, classes=["green", "blue"], facets=2, thumbnails=3, steps=20, lr=0.02, size=40)
    assert art.meta["layer"] == "relu3" and art.meta["size"] == 28
    assert art.arrays["facets"].shape == art.arrays["means"].shape == (4, 1, 28, 28)
    assert all(f["after"] > f["before"] for f in art.meta["facets"])

    monkeypatch.setitem(registry.TECHNIQUES, "multifaceted", Multifaceted())
    job = Job("m", "multifaceted", MultifacetedParams(classes=["green", "blue"], facets=2, thumbnails=3, steps=20,
                                                      lr=0.02))
    pages = ModelPages(ctx.model, draw, [Result(job, "ran", 0.1, art)])
    write_outputs(tmp_path / "out", pages, lambda n: None)
    figure = next((tmp_path / "out").rglob("*.png"))
    assert Image.open(figure).size[0] > 300
    text = Renderer().page("pages/multifaceted.md.j2", **technique_page_context(pages, "multifaceted"))
    assert "Nguyen, Yosinski & Clune 2016" in " ".join(text.split()) and "*labelled*" in text
    assert "### green" in text and "### blue" in text and "figure" in text


def test_unknown_class_is_an_error_with_a_suggestion(tmp_path: Path):
    ctx, _ = data_context(tiny_net(), colour_dataset(per_class=2), tmp_path, ["gap"], labels=LABELS)
    technique = Multifaceted()
    assert technique.check(ctx.model, MultifacetedParams(classes=["red", "gren", 9])) == [
        "classes[1]: no class 'gren' in m; did you mean 'green'?",
        "classes[2]: class index 9 is out of range (the model has 4 classes)"]
    assert technique.check(ctx.model, MultifacetedParams()) == []


def test_quick_shrinks_the_work():
    q = MultifacetedParams().quick()
    assert q.steps <= 24 and q.facets <= 2 and q.max_classes <= 2
    with pytest.raises(ValueError):
        MultifacetedParams(facets=0)
