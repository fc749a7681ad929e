"""Faithfulness of attribution maps: deletion/insertion curves and their AUC (Petsiuk et al. 2018), the model
randomization check (Adebayo et al. 2018), their place in AttributionTechnique.run, and the comparison page.
Tiny models and images only: nothing downloads anything or needs a GPU."""
from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers import cli, make_context, read_json, tiny_net, tiny_spec, write_spec
from generator.techniques.attribution import faithfulness as faith
from generator.context import DrawContext
from generator.hooks import hook_count
from generator.models import weights_digest
from generator.pipeline import Result
from generator.templating import Renderer
from generator.report import ModelPages, comparison_page_context
from generator.outputs import draw_comparisons
from generator.techniques import registry
from generator.techniques.attribution.base import AttributionParams, AttributionTechnique
from generator.artifacts import Artifact, Job


def pictures(n: int = 2, size: int = 32) -> dict[str, Image.Image]:
    rng = np.random.default_rng(3)
    return {f"p{i}": Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for i in range(n)}


def params(**kw) -> AttributionParams:
    return AttributionParams(**({"faithfulness_steps": 8} | kw))


# ------------------------------------------------------------------------------------------------ AUC


def test_auc_of_known_curves():
    assert faith.auc([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert faith.auc([0.0, 0.0]) == pytest.approx(0.0)
    assert faith.auc(np.linspace(0, 1, 33)) == pytest.approx(0.5)  # a straight line
    assert faith.auc([1.0, 0.0, 0.0, 0.0, 0.0]) == pytest.approx(0.125)  # drops within the first quarter
    assert faith.auc([0.0, 1.0, 1.0]) == pytest.approx(0.75)
    rows = faith.auc(np.array([[1.0, 1.0], [0.0, 1.0], [0.2, 0.4]]))
    assert np.allclose(rows, [1.0, 0.5, 0.3])
    with pytest.raises(ValueError):
        faith.auc([0.5])


# ------------------------------------------------------------------------------------------------ curves


class RegionModel(nn.Module):
    """A classifier whose class-0 logit depends only on the top-left 8×8 pixels of channel 0."""

    def forward(self, x):
        s = x[:, 0, :8, :8].mean((1, 2))
        return torch.stack([8 * s - 4, torch.zeros_like(s)], 1)


def test_perfect_map_deletes_fastest_and_inserts_fastest():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    x[:, 0, :8, :8] = 1.0
    region = torch.zeros(16, 16)
    region[:8, :8] = 1.0
    noise = torch.rand(16, 16)
    maps = torch.stack([region + 0.01 * noise, noise, -region - 0.01 * noise])  # perfect, random, reversed
    xs, targets = x.repeat(3, 1, 1, 1), torch.zeros(3, dtype=torch.long)
    zeros = torch.zeros_like(xs)
    dele, ins = faith.deletion_insertion(RegionModel(), xs, maps, targets, steps=16, batch=10,
                                         baseline_del=zeros, baseline_ins=zeros)
    assert dele.shape == ins.shape == (3, 17)
    d, i = faith.auc(dele), faith.auc(ins)
    assert d[0] < d[1] < d[2], d
    assert i[0] > i[1] > i[2], i
    p_full, p_empty = 4.0, -4.0  # the log-odds of class 0 against class 1: its logit 8 s − 4 against 0
    assert np.allclose(dele[:, 0], p_full, atol=1e-6) and np.allclose(ins[:, -1], p_full, atol=1e-6)
    assert np.allclose(dele[:, -1], p_empty, atol=1e-6) and np.allclose(ins[:, 0], p_empty, atol=1e-6)
    # The perfect map has removed the whole region after a quarter of the pixels: 4 of 16 steps.
    assert np.allclose(dele[0, 4:], p_empty, atol=1e-6) and np.allclose(ins[0, 4:], p_full, atol=1e-6)


def one_at_a_time(net, x, maps, targets, steps, base_del, base_ins):
    """The curves built the slow, obvious way: a numpy ordering and one image per forward."""
    n, _, h, w = x.shape
    out = np.zeros((2, n, steps + 1))
    for r in range(n):
        order = np.argsort(-maps[r].numpy().ravel(), kind="stable")
        for k in range(steps + 1):
            mask = np.zeros(h * w, dtype=bool)
            mask[order[: round(k * h * w / steps)]] = True
            m = torch.from_numpy(mask.reshape(1, h, w))
            for kind, image in enumerate((torch.where(m, base_del[r], x[r]), torch.where(m, x[r], base_ins[r]))):
                with torch.no_grad():
                    p = net(image[None]).double().softmax(1)[0]
                    out[kind, r, k] = torch.log(p[targets[r]] / (1 - p[targets[r]])).item()
    return out


def test_batched_curves_equal_one_image_at_a_time():
    net = tiny_net(classes=5).eval()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 14, 14)
    maps = torch.round(torch.rand(3, 14, 14) * 6)  # coarse levels: many ties, broken in raster order
    targets = torch.tensor([0, 3, 4])
    dele, ins = faith.deletion_insertion(net, x, maps, targets, steps=7, batch=5)
    expected = one_at_a_time(net, x, maps, targets, 7, torch.zeros_like(x), faith.blur(x))
    assert np.allclose(dele, expected[0], atol=1e-5)
    assert np.allclose(ins, expected[1], atol=1e-5)


class Saturated(nn.Module):
    """A model sure of itself: class 0's logit is 40 + 4 × (mean of channel 0 over the top-left 8 × 8 region), the
    other class's 0. p(class 0) is 1.0 in float32 whatever the pixels, but the log-odds follows the region."""

    def forward(self, x):
        s = x[:, 0, :8, :8].mean((1, 2))
        return torch.stack([40 + 4 * s, torch.zeros_like(s)], 1)


def test_saturated_model_still_ranks_a_good_map_above_a_random_one():
    """Issue 12: on saturated outputs the probability curves are flat at 1.0 for every map; the log-odds curves
    rank the map that points at the evidence above a random one."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    x[:, 0, :8, :8] = 2.0
    region = torch.zeros(16, 16)
    region[:8, :8] = 1.0
    maps = torch.stack([region + 0.01 * torch.rand(16, 16), torch.rand(16, 16)])  # good, random
    xs, targets = x.repeat(2, 1, 1, 1), torch.zeros(2, dtype=torch.long)
    # The probability really is saturated: every step image of either map scores exactly 1.0.
    zeros = torch.zeros_like(xs)
    with torch.no_grad():
        assert (Saturated()(torch.cat([xs, zeros])).softmax(1)[:, 0] == 1.0).all()
    dele, ins = faith.deletion_insertion(Saturated(), xs, maps, targets, steps=8, batch=6, baseline_del=zeros,
                                         baseline_ins=zeros)
    d, i = faith.auc(dele), faith.auc(ins)
    assert d[0] < d[1] - 0.5 and i[0] > i[1] + 0.5, (d, i)
    assert dele[0, 0] == pytest.approx(48.0, abs=1e-3)  # 40 + 4 × 2: the log-odds, not p = 1


def test_log_odds_is_exact_where_the_probability_rounds_to_one():
    logits = torch.tensor([[30.0, 0.0, -5.0], [0.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
    odds = faith.log_odds(logits, torch.tensor([0, 1, 2]))
    assert odds[0].item() == pytest.approx(30 - np.log1p(np.exp(-5)), abs=1e-4)  # p = 1 in float32: log p = 0
    assert odds[1].item() == pytest.approx(np.log(0.5), abs=1e-6)  # 1/3 against 2/3
    p = torch.tensor([2.0, 1.0, 0.0]).double().softmax(0)[2].item()
    assert odds[2].item() == pytest.approx(np.log(p / (1 - p)), abs=1e-5)


def test_constant_maps_are_found():
    maps = np.stack([np.zeros((4, 4)), np.full((4, 4), 0.3), np.eye(4), np.eye(4) * 1e-9])
    assert faith.constant_maps(maps).tolist() == [True, True, False, False]


def test_blur_keeps_constants_and_smooths_noise():
    flat = torch.full((1, 3, 24, 24), 0.7)
    assert torch.allclose(faith.blur(flat), flat, atol=1e-6)
    noise = torch.randn(2, 3, 112, 112)  # σ = 2.5 pixels at half of 224
    blurred = faith.blur(noise)
    assert blurred.shape == noise.shape
    assert blurred.std() < 0.2 * noise.std()


# ------------------------------------------------------------------------------------------------ randomization


class Net(nn.Module):
    """Registration order ≠ forward order, a BatchNorm after a conv, a block list, a head that never runs."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.aux = nn.Linear(8, 3)

    def forward(self, x):
        x = self.blocks(self.bn(self.conv(x)).relu())
        return self.head(x.mean((2, 3)))


def test_randomization_stages_cascade_from_the_logits():
    assert faith.randomization_stages(tiny_net()) == [["fc"], ["conv2"], ["conv1"]]
    net = Net().eval()
    assert faith.randomization_stages(net) == [["aux"], ["blocks.2"], ["blocks.0"], ["conv", "bn"], ["head"]]
    assert faith.randomization_stages(net, torch.zeros(1, 3, 12, 12)) == [
        ["head"], ["blocks.2"], ["blocks.0"], ["conv", "bn"]]
    assert hook_count(net) == 0


def params_of(module: nn.Module, prefix: str) -> list[torch.Tensor]:
    return [p for n, p in module.named_parameters() if n.startswith(prefix + ".")]


def test_randomized_copy_changes_exactly_the_chosen_stages():
    net = tiny_net()
    before = weights_digest(net)
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    stages = faith.randomization_stages(net)
    copy = faith.randomized_copy(net, stages[:2], seed=0)
    assert weights_digest(net) == before
    assert all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())
    for name in ("fc", "conv2"):
        for new, old in zip(params_of(copy, name), params_of(net, name)):
            assert not torch.allclose(new, old), name
    for new, old in zip(params_of(copy, "conv1"), params_of(net, "conv1")):
        assert torch.equal(new, old)
    # Seeded: the same copy twice; a longer cascade extends a shorter one; another seed differs.
    again = faith.randomized_copy(net, stages[:2], seed=0)
    assert weights_digest(again) == weights_digest(copy)
    shorter = faith.randomized_copy(net, stages[:1], seed=0)
    assert torch.equal(shorter.fc.weight, copy.fc.weight)
    assert not torch.equal(faith.randomized_copy(net, stages[:1], seed=1).fc.weight, copy.fc.weight)


def test_randomized_copy_resets_norm_layers_and_modules_without_reset():
    class Scale(nn.Module):  # a parameter and no reset_parameters
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.full((4,), 3.0) + torch.arange(4.0))

        def forward(self, x):
            return x * self.gain.view(1, -1, 1, 1)

    net = nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 4, 3)), ("bn", nn.BatchNorm2d(4)), ("scale", Scale())]))
    with torch.no_grad():
        net.bn.weight.fill_(2.0)
        net.bn.running_mean.fill_(5.0)
    copy = faith.randomized_copy(net, [["scale"], ["conv", "bn"]], seed=0)
    assert torch.equal(copy.bn.weight, torch.ones(4)) and torch.equal(copy.bn.running_mean, torch.zeros(4))
    assert not torch.equal(copy.scale.gain, net.scale.gain)
    assert float(net.bn.running_mean[0]) == 5.0


def test_rank_correlation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 12))
    assert faith.rank_correlation(a, a) == pytest.approx(1.0)
    assert faith.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert faith.rank_correlation(a, np.exp(a)) == pytest.approx(1.0)  # ranks only: any increasing function
    assert abs(faith.rank_correlation(a, rng.normal(size=(12, 12)))) < 0.3
    assert np.isnan(faith.rank_correlation(a, np.zeros_like(a)))


# ------------------------------------------------------------------------------------------------ in run()


class EdgeDetector(AttributionTechnique):
    """Ignores the model entirely: the map is the input's intensity. The randomization check must flag it."""

    kind, title, summary = "edges", "Edge detector", "input intensity"

    def attribute(self, ctx, x, targets, params):
        return x.abs().sum(1)


class Gradient(AttributionTechnique):
    """|∂ logit / ∂ x|, max over channels: a map that depends on the weights."""

    kind, title, summary = "gradient", "Gradient", "plain gradient"

    def attribute(self, ctx, x, targets, params):
        leaf = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            score = ctx.model.logits(leaf).gather(1, targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, leaf)
        return grad.abs().amax(1)


def run(technique, module, p, n=2):
    ctx = make_context(module, pictures(n))
    jobs = [Job("m", technique.kind, p, image=image) for image in ctx.images]
    return ctx, technique.run(ctx, jobs)


def test_run_adds_curves_aucs_and_correlations():
    net = tiny_net()
    before = weights_digest(net)
    ctx, arts = run(Gradient(), net, params(targets=[0, 2]))
    assert weights_digest(net) == before and hook_count(net) == 0
    for art in arts:
        assert list(art.arrays) == ["map", "targets", "probabilities", "deletion", "deletion_auc", "insertion",
                                    "insertion_auc", "sanity_correlations"]
        assert art.arrays["deletion"].shape == art.arrays["insertion"].shape == (2, 9)
        assert art.arrays["targets"].tolist() == [0, 2]
        assert art.arrays["probabilities"].tolist() == pytest.approx([t["probability"] for t in art.meta["targets"]])
        assert art.arrays["deletion_auc"].tolist() == pytest.approx([t["deletion_auc"] for t in art.meta["targets"]])
        assert np.allclose(art.arrays["sanity_correlations"], [t["sanity_correlations"] for t in art.meta["targets"]])
        m = art.metrics
        aucs = [t["deletion_auc"] for t in art.meta["targets"]]
        assert m["deletion_auc"] == pytest.approx(np.mean(aucs))
        assert aucs[0] == pytest.approx(faith.auc(art.arrays["deletion"][0]))
        assert len(m["sanity_correlations"]) == 3 and m["sanity_correlation"] == m["sanity_correlations"][-1]
        assert all(len(t["sanity_correlations"]) == 3 for t in art.meta["targets"])
        assert m["sanity_flag"] is False and not any(t["sanity_flag"] for t in art.meta["targets"])
        assert art.meta["sanity"]["stages"] == [["fc"], ["conv2"], ["conv1"]]
        json.dumps(art.meta, allow_nan=False)  # what the cache and the manifest store


def test_map_that_ignores_the_model_is_flagged_and_a_gradient_is_not():
    _, edges = run(EdgeDetector(), tiny_net(), params())
    _, grads = run(Gradient(), tiny_net(), params())
    for e, g in zip(edges, grads):
        assert e.metrics["sanity_correlation"] == pytest.approx(1.0)
        assert e.metrics["sanity_flag"] is True and e.meta["targets"][0]["sanity_flag"] is True
        assert g.metrics["sanity_correlation"] < faith.SANITY_THRESHOLD
        assert g.metrics["sanity_flag"] is False


def test_checks_can_be_switched_off_and_quick_shrinks_them():
    _, arts = run(Gradient(), tiny_net(), params(faithfulness=False, sanity=False), n=1)
    assert list(arts[0].arrays) == ["map", "targets", "probabilities"]
    assert "deletion_auc" not in arts[0].metrics and "sanity_flag" not in arts[0].metrics
    quick = AttributionParams().quick()
    assert (quick.faithfulness_steps, quick.sanity_stages) == (8, 1)
    _, arts = run(Gradient(), tiny_net(), quick, n=1)
    assert arts[0].arrays["deletion"].shape == (1, 9) and len(arts[0].metrics["sanity_correlations"]) == 1


# ------------------------------------------------------------------------------------------------ comparison page


def attribution_kinds() -> list[str]:
    return [k for k, t in registry.TECHNIQUES.items() if isinstance(t, AttributionTechnique)]


def fake_result(kind: str, image: str, deletion: float, insertion: float, corr: float | None) -> Result:
    """An attribution result as AttributionTechnique.run makes it; `corr=None`: the randomization check was off."""
    rng = np.random.default_rng(len(kind))
    curve = lambda area: np.full((1, 9), area, dtype=np.float32)  # noqa: E731  (a flat curve has AUC = its level)
    target = {"index": 1, "label": "dog", "probability": 0.8, "deletion_auc": deletion, "insertion_auc": insertion}
    meta = {"targets": [target], "target": "dog", "metrics": {"deletion_auc": deletion, "insertion_auc": insertion},
            "faithfulness": {"steps": 8, "deletion_baseline": "zero", "insertion_baseline": "blur"}}
    if corr is not None:
        target.update(sanity_correlations=[0.9, corr], sanity_flag=corr > 0.5)
        meta["metrics"].update(sanity_correlations=[0.9, corr], sanity_correlation=corr, sanity_flag=corr > 0.5)
        meta["sanity"] = {"stages": [["fc"], ["conv2"]], "threshold": 0.5, "measure": "spearman"}
    arrays = {"map": rng.random((1, 32, 32)).astype(np.float32), "deletion": curve(deletion), "insertion": curve(insertion)}
    return Result(Job("m", kind, AttributionParams(), image=image), "ran", 0.1, Artifact(arrays, meta))


def test_comparison_page_ranks_methods_and_draws_one_figure_per_image(tmp_path):
    kinds = attribution_kinds()
    if len(kinds) < 2:
        pytest.skip("fewer than two attribution techniques registered")
    a, b = kinds[:2]
    ctx = make_context(tiny_net(), pictures(2))
    images = list(ctx.images)
    pages = ModelPages(ctx.model, DrawContext(ctx.model, ctx.images), [
        fake_result(a, images[0], 0.30, 0.40, 0.9), fake_result(b, images[0], 0.10, 0.70, 0.1),
        fake_result(a, images[1], 0.20, 0.50, 0.8), fake_result(b, images[1], 0.25, 0.45, None),
    ])
    draw_comparisons(tmp_path, pages)
    page = comparison_page_context(pages, ["predictions", a, b])
    assert page is not None and len(page["images"]) == 2
    first = page["images"][0]
    assert (tmp_path / "m" / first["figure"]).is_file()
    assert [row["kind"] for row in first["rows"]] == [b, a]  # lower deletion AUC first
    assert [row["insertion_rank"] for row in first["rows"]] == [1, 2]
    assert [row["flag"] for row in first["rows"]] == [False, True]
    assert [row["kind"] for row in page["images"][1]["rows"]] == [a, b]
    overall = {row["kind"]: row for row in page["overall"]}
    assert overall[a]["deletion_auc"] == pytest.approx(0.25) and overall[a]["flagged"] == 2
    assert (overall[b]["flagged"], overall[b]["checked"]) == (0, 1)
    assert page["images"][1]["rows"][1]["flag"] is None
    text = Renderer().page("pages/comparison.md.j2", **page)
    assert text.startswith("# Attribution comparison")
    assert "**flagged**" in text and "passes" in text and "not checked" in text and first["figure"] in text
    # One attribution method is not a comparison.
    assert comparison_page_context(ModelPages(ctx.model, pages.draw, pages.results[:1]), [a, b]) is None


def test_build_writes_the_comparison_page_and_links_it(project):
    spec = tiny_spec(techniques={
        "predictions": {"top_k": 3},
        "saliency": {"faithfulness_steps": 4, "sanity_stages": 2},
        "guided_backprop": {"faithfulness_steps": 4, "sanity_stages": 2},
    })
    assert cli("build", write_spec(project, spec)) == 0
    model = project / "out" / "tiny"
    page = (model / "comparison.md").read_text(encoding="utf-8")
    assert page.startswith("# Attribution comparison")
    assert "[Attribution comparison](comparison.md)" in (model / "index.md").read_text(encoding="utf-8")
    assert len(list((model / "figures" / "comparison").glob("*.png"))) == 2
    records = [r for r in read_json(project / "out" / "manifest.json")["artifacts"] if r["technique"] == "saliency"]
    assert records and all(set(r["metrics"]) >= {"deletion_auc", "insertion_auc", "sanity_flag"} for r in records)
    # Rebuilt with nothing changed, the comparison figures are copied from the last build, not drawn again;
    # a changed method redraws them.
    drawn = {p.name: p.stat().st_mtime_ns for p in (model / "figures" / "comparison").glob("*.png")}
    listed = read_json(project / "out" / "manifest.json")["comparisons"]
    assert len(listed) == 2
    assert cli("build", write_spec(project, spec)) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (model / "figures" / "comparison").glob("*.png")} == drawn
    assert read_json(project / "out" / "manifest.json")["comparisons"] == listed
    spec["models"][0]["techniques"]["saliency"]["faithfulness_steps"] = 5
    assert cli("build", write_spec(project, spec)) == 0
    again = read_json(project / "out" / "manifest.json")["comparisons"]
    assert [r["figure"] for r in again] == [r["figure"] for r in listed]
    assert all(a["digest"] != b["digest"] for a, b in zip(again, listed))
    # One attribution technique: no comparison page, no link.
    spec["models"][0]["techniques"].pop("guided_backprop")
    assert cli("build", write_spec(project, spec)) == 0
    assert not (model / "comparison.md").exists()
    assert "comparison.md" not in (model / "index.md").read_text(encoding="utf-8")
