"""DeepDream: the layer's response grows, runs repeat with a seed, a layer without a spatial map is a spec error."""
from __future__ import annotations

import numpy as np
import torch

from helpers import act_net, assert_same_state, make_ctx, model_state
from generator.techniques import registry
from generator.artifacts import Job
from generator.techniques.synthesis.deepdream import layer_norm


def dream(ctx, layer: str, **kw):
    technique = registry.get("deepdream")
    p = technique.Params(**{"octaves": 2, "steps": 6, "jitter": 2, **kw})
    return technique.run(ctx, [Job("tiny", "deepdream", p, layer=layer, image=i) for i in ctx.images])


def test_dreaming_raises_the_layer_norm_and_keeps_pixels_valid():
    ctx = make_ctx(act_net(), images=2)
    before = model_state(ctx.model.module)
    arts = dream(ctx, "act2")
    assert_same_state(before, model_state(ctx.model.module))
    mean = torch.tensor(ctx.model.input.mean).view(1, -1, 1, 1)
    std = torch.tensor(ctx.model.input.std).view(1, -1, 1, 1)
    for art, image in zip(arts, ctx.images):
        m = art.metrics
        assert m["norm_after"] > 1.5 * m["norm_before"]
        x = torch.from_numpy(art.main)[None]
        assert 0 <= x.min() and x.max() <= 1
        with torch.no_grad():
            recomputed = layer_norm(ctx.model.module, "act2", (x - mean) / std)
        assert abs(float(recomputed) - m["norm_after"]) < 1e-4 * m["norm_after"]
        assert m["octaves"] == [23, 32]


def test_same_seed_same_dream():
    a = dream(make_ctx(act_net(), images=1), "act1")[0].main
    b = dream(make_ctx(act_net(), images=1), "act1")[0].main
    np.testing.assert_array_equal(a, b)


def test_a_layer_without_a_spatial_map_is_an_error_naming_the_key():
    ctx = make_ctx(act_net())
    technique = registry.get("deepdream")
    problems = technique.check(ctx.model, technique.Params(layers=["act2", "fc"]))
    assert problems == ["layers[1]: 'fc' has no spatial extent (output (4,)); DeepDream needs a layer with a "
                        "spatial map, such as a conv layer's"]
    assert "did you mean 'act2'" in technique.check(ctx.model, technique.Params(layers=["act3"]))[0]


def test_page(tmp_path):
    ctx = make_ctx(act_net(), images=1)
    technique = registry.get("deepdream")
    p = technique.Params(octaves=1, steps=2)
    from generator.context import DrawContext
    from generator.pipeline import Result
    from generator.templating import Renderer
    from generator.report import ModelPages, technique_page_context
    from generator.outputs import write_outputs

    jobs = [Job("tiny", "deepdream", p, layer="act2", image=i) for i in ctx.images]
    arts = technique.run(ctx, jobs)
    pages = ModelPages(ctx.model, DrawContext(ctx.model, ctx.images), [Result(j, "ran", 0.1, a) for j, a in zip(jobs, arts)])
    write_outputs(tmp_path, pages, lambda n: None)
    text = Renderer().page("pages/deepdream.md.j2", **technique_page_context(pages, "deepdream"))
    assert "## <code>act2</code>" in text and "figures/deepdream/act2__s--p0.png" in text
