"""Comparing models in a build: a checkpoint series and a `comparisons:` entry make pages whose numbers are in the
manifest; identical checkpoints compare as identical, a copy with permuted channels as the same function; replacing
one checkpoint reruns only that model's jobs and the comparisons with it; bad comparisons are one-line errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from helpers import cli, colour_folder, permuted_twin, read_json, record_arrays, tiny_net, tiny_spec, write_spec

TECHNIQUES = {"predictions": {"top_k": 3}, "gradcam": {}}


def save(net: torch.nn.Module, path: Path) -> None:
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))


def series_project(project: Path, **checkpoints) -> Path:
    colour_folder(project / "colours", per_class=6)
    spec = tiny_spec(techniques=TECHNIQUES, dataset="colours", checkpoints=checkpoints)
    spec["datasets"] = {"colours": {"folder": "colours"}}
    return write_spec(project, spec)


def pair_arrays(project: Path, a: str, b: str) -> dict[str, np.ndarray]:
    record = next(r for r in read_json(project / "out" / "manifest.json")["artifacts"]
                  if r["technique"] == "model_comparison" and r["models"] == [a, b])
    return record_arrays(project / "out", record)


def test_a_series_of_identical_permuted_and_retrained_checkpoints(project):
    net = tiny_net(seed=0)
    save(net, project / "same.safetensors")
    save(permuted_twin(net, torch.tensor([3, 0, 7, 1, 6, 2, 5, 4])), project / "perm.safetensors")
    save(tiny_net(seed=1), project / "other.safetensors")
    save(net, project / "final.safetensors")
    path = series_project(project, same="same.safetensors", perm="perm.safetensors", other="other.safetensors",
                          final="final.safetensors")
    assert cli("build", path) == 0
    same = pair_arrays(project, "tiny-same", "tiny-final")
    assert np.allclose(same["cka"].diagonal(), 1.0, atol=1e-5)  # the same weights: each layer identical
    assert (same["top1"][0] == same["top1"][1]).all() and np.allclose(same["weight_change"], 0)
    assert np.allclose(same["unit_correlation/conv1"], 1.0, atol=1e-5)
    records = {tuple(r["models"]): r for r in read_json(project / "out" / "manifest.json")["artifacts"]
               if r["technique"] == "model_comparison"}
    assert records[("tiny-same", "tiny-final")]["metrics"]["agreement"] == 1.0
    assert records[("tiny-same", "tiny-final")]["metrics"]["flips"] == []

    perm = pair_arrays(project, "tiny-perm", "tiny-final")
    assert (perm["top1"][0] == perm["top1"][1]).all() and (perm["image_top1"][0] == perm["image_top1"][1]).all()
    assert abs(perm["cka"][0, 0] - 1.0) < 1e-5  # conv1: the same representation, channels reordered
    assert perm["weight_change"][0] > 0.5 and not np.allclose(perm["unit_correlation/conv1"], 1.0)

    other = pair_arrays(project, "tiny-other", "tiny-final")
    assert other["cka"][1, 1] < 0.99 and other["weight_change"].min() > 0.5

    page = (project / "out" / "comparisons" / "tiny.md").read_text()
    for text in ("## Across the series", "## tiny-perm → tiny-final", "### Representation similarity", "### Weights",
                 "### Units", "### Attributions", "tiny-same-vs-tiny-final-cka.png"):
        assert text in page, text
    assert "[tiny](comparisons/tiny.md)" in (project / "out" / "index.md").read_text()
    assert "../comparisons/tiny.md" in (project / "out" / "tiny-perm" / "index.md").read_text()
    for figure in read_json(project / "out" / "manifest.json")["artifacts"][-1]["figures"].values():
        assert (project / "out" / figure).is_file()


def test_replacing_one_checkpoint_reruns_only_its_model_and_its_comparisons(project):
    for name, seed in (("e1", 1), ("e2", 2), ("final", 3)):
        save(tiny_net(seed=seed), project / f"{name}.safetensors")
    path = series_project(project, e1="e1.safetensors", e2="e2.safetensors", final="final.safetensors")
    assert cli("build", path) == 0
    save(tiny_net(seed=4), project / "e1.safetensors")
    assert cli("build", path) == 0
    build = read_json(project / "out" / "build.json")
    ran = {j["model"] for j in build["jobs"] if j["status"] == "ran"}
    assert ran == {"tiny-e1"} and all(j["status"] == "cached" for j in build["jobs"] if j["model"] != "tiny-e1")
    pairs = {tuple(c["models"]): c["status"] for c in build["comparisons"]}
    assert pairs == {("tiny-e1", "tiny-final"): "ran", ("tiny-e2", "tiny-final"): "cached"}


def test_comparison_mistakes_are_one_line_errors_naming_the_key(project, capsys):
    spec = tiny_spec()
    spec["datasets"] = {"colours": {"folder": "pics"}}
    spec["comparisons"] = [{"models": ["tiny", "tinny"], "dataset": "colours"}, {"models": ["tiny", "tiny"],
                                                                                 "dataset": "colour"}]
    assert cli("build", write_spec(project, spec)) == 2
    err = capsys.readouterr().err
    assert "comparisons[0].models[1]: no model 'tinny'; did you mean 'tiny'?" in err
    assert "comparisons[1].models: a model is listed twice" in err
    assert "comparisons[1].dataset: no data set 'colour'; did you mean 'colours'?" in err and "Traceback" not in err
    spec["comparisons"] = [{"models": ["tiny", "tiny"]}]
    assert cli("build", write_spec(project, spec)) == 2
    assert "comparisons[0].dataset: Field required" in capsys.readouterr().err
    both = tiny_spec(checkpoint="a.pt", checkpoints={"x": "a.pt", "y": "b.pt"})
    assert cli("build", write_spec(project, both)) == 2
    assert "give 'checkpoint' (one model) or 'checkpoints' (a series), not both" in capsys.readouterr().err


def test_a_series_without_a_data_set_shows_what_needs_none(project):
    save(tiny_net(seed=0), project / "a.safetensors")
    save(tiny_net(seed=1), project / "b.safetensors")
    spec = tiny_spec(techniques=TECHNIQUES, checkpoints={"a": "a.safetensors", "b": "b.safetensors"})
    assert cli("build", write_spec(project, spec)) == 0
    page = (project / "out" / "comparisons" / "tiny.md").read_text()
    assert "names no data set" in page and "### Weights" in page and "### Representation similarity" not in page
    arrays = pair_arrays(project, "tiny-a", "tiny-b")
    assert "cka" not in arrays and arrays["weight_change"].shape == (3,)


def test_a_comparison_s_data_set_is_loaded_even_when_no_model_names_it(project):
    colour_folder(project / "colours", per_class=3)
    spec = tiny_spec(techniques={"predictions": {"top_k": 3}})
    spec["models"].append(dict(spec["models"][0], name="ten", factory="tinymod:build10"))
    spec["datasets"] = {"colours": {"folder": "colours"}}
    spec["comparisons"] = [{"models": ["ten", "tiny"], "dataset": "colours"}]
    assert cli("build", write_spec(project, spec)) == 0
    arrays = pair_arrays(project, "ten", "tiny")
    assert arrays["cka"].shape == (2, 2) and arrays["top1"].shape == (2, 9)
    page = (project / "out" / "comparisons" / "ten-vs-tiny.md").read_text()
    assert "measured on the data set **colours** (9 images)" in page and "not the same architecture" in page
