"""The content-addressed artifact store, and what a rebuild recomputes (nothing, one technique, one layer, all)."""
from __future__ import annotations

import json

import numpy as np
import torch

from helpers import cli, read_json, record_arrays, tiny_net, tiny_spec, write_spec
from generator.cache import Cache, cache_key
from generator.artifacts import Artifact


# ------------------------------------------------------------------------------------------------ the store


def test_cache_key_is_stable_and_sensitive():
    a = cache_key(model="m", kind="k", params={"x": 1, "y": [1, 2]}, layer=None)
    assert a == cache_key(layer=None, params={"y": [1, 2], "x": 1}, kind="k", model="m")  # order does not matter
    assert a != cache_key(model="m", kind="k", params={"x": 2, "y": [1, 2]}, layer=None)
    assert a != cache_key(model="m", kind="k", params={"x": 1, "y": [1, 2]}, layer="conv1")
    assert len(a) == 32 and int(a, 16) >= 0


def test_put_get_round_trip(tmp_path):
    cache = Cache(tmp_path / "c")
    art = Artifact({"second": np.arange(6, dtype=np.float32).reshape(2, 3), "first": np.array([1, 2], np.int64)},
                   {"metrics": {"mean": 1.5}, "top": [{"label": "cat"}]})
    key = cache_key(x=1)
    assert cache.get(key) is None
    cache.put(key, art)
    back = cache.get(key)
    assert list(back.arrays) == ["second", "first"]  # order kept: the first array is the main one
    assert np.array_equal(back.main, art.arrays["second"]) and back.main.dtype == np.float32
    assert back.meta == art.meta
    # stored as npz + json, never pickle, and no temporary files left behind
    files = sorted(p.name for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert files == [f"{key}.json", f"{key}.npz"]
    assert json.loads((tmp_path / "c" / key[:2] / f"{key}.json").read_text())["meta"] == art.meta


def test_corrupt_entry_is_a_miss(tmp_path):
    cache = Cache(tmp_path)
    key = cache_key(x=2)
    cache.put(key, Artifact({"a": np.zeros(3)}, {}))
    (tmp_path / key[:2] / f"{key}.npz").write_bytes(b"torn")
    assert cache.get(key) is None
    cache.put(key, Artifact({"a": np.ones(3)}, {}))
    assert np.array_equal(cache.get(key).main, np.ones(3))


# ------------------------------------------------------------------------------------------------ rebuilds


def statuses(project) -> dict[tuple, str]:
    jobs = read_json(project / "out" / "build.json")["jobs"]
    out = {(j["technique"], j["layer"], j["image"]): j["status"] for j in jobs}
    assert len(out) == len(jobs)  # every job is one (technique, layer, image)
    return out


def ran(project) -> set[tuple]:
    return {k for k, s in statuses(project).items() if s == "ran"}


def test_second_build_runs_nothing(project):
    path = write_spec(project, tiny_spec())
    assert cli("build", path) == 0
    first = statuses(project)
    assert set(first.values()) == {"ran"}
    assert {k[0] for k in first} == {"input", "architecture", "predictions", "filters", "activations"}
    assert cli("build", path) == 0
    second = statuses(project)
    assert second.keys() == first.keys()
    assert set(second.values()) == {"cached"}


def test_changing_a_param_reruns_only_that_technique(project):
    assert cli("build", write_spec(project, tiny_spec())) == 0
    before = statuses(project)
    spec = tiny_spec()
    spec["models"][0]["techniques"]["predictions"]["top_k"] = 2
    assert cli("build", write_spec(project, spec)) == 0
    after = statuses(project)
    assert after.keys() == before.keys()
    assert ran(project) == {("predictions", None, "pics/a"), ("predictions", None, "pics/b")}
    assert all(s == "cached" for k, s in after.items() if k[0] != "predictions")
    # the new value is what the pages and the manifest show
    manifest = read_json(project / "out" / "manifest.json")["artifacts"]
    preds = [r for r in manifest if r["technique"] == "predictions"]
    assert len(preds) == 2 and all(r["params"]["top_k"] == 2 for r in preds)
    # all class probabilities kept
    assert all(len(record_arrays(project / "out", r)["probabilities"]) == 4 for r in preds)


def test_adding_a_layer_reruns_only_its_jobs(project):
    assert cli("build", write_spec(project, tiny_spec(layers=["conv1"]))) == 0
    before = statuses(project)
    assert cli("build", write_spec(project, tiny_spec(layers=["conv1", "conv2"]))) == 0
    after = statuses(project)
    new = after.keys() - before.keys()
    assert new == {("filters", "conv2", None), ("activations", "conv2", "pics/a"), ("activations", "conv2", "pics/b")}
    # the architecture table lists the chosen layers, so its one model-wide job depends on them too
    assert ran(project) == new | {("architecture", None, None)}
    assert all(after[k] == "cached" for k in before if k[0] != "architecture")


def test_force_reruns_everything(project):
    path = write_spec(project, tiny_spec())
    assert cli("build", path) == 0
    assert cli("build", path, "--force") == 0
    assert set(statuses(project).values()) == {"ran"}
    assert read_json(project / "out" / "build.json")["force"] is True


def test_a_changed_image_reruns_only_its_jobs(project):
    from helpers import noise_image

    path = write_spec(project, tiny_spec())
    assert cli("build", path) == 0
    noise_image(project / "pics" / "b.png", size=(40, 56), seed=99)
    assert cli("build", path) == 0
    assert {k[2] for k in ran(project)} == {"pics/b"}
    assert {k[0] for k in ran(project)} == {"input", "predictions", "activations"}


def test_a_replaced_checkpoint_reruns_only_its_model(project):
    """The usual reason to rebuild: one model was retrained. Its weights' digest is in every one of its keys, and
    in no other model's."""
    torch.save(tiny_net(seed=1).state_dict(), project / "a.pt")
    torch.save(tiny_net(seed=2).state_dict(), project / "b.pt")
    spec = tiny_spec(checkpoint="a.pt")
    spec["models"].append({**tiny_spec()["models"][0], "name": "tiny-b", "checkpoint": "b.pt"})
    path = write_spec(project, spec)
    assert cli("build", path) == 0
    jobs = read_json(project / "out" / "build.json")["jobs"]
    assert {j["model"] for j in jobs} == {"tiny", "tiny-b"} and {j["status"] for j in jobs} == {"ran"}
    torch.save(tiny_net(seed=3).state_dict(), project / "b.pt")
    assert cli("build", path) == 0
    again = read_json(project / "out" / "build.json")["jobs"]
    assert len(again) == len(jobs)
    assert {j["status"] for j in again if j["model"] == "tiny"} == {"cached"}
    assert {j["status"] for j in again if j["model"] == "tiny-b"} == {"ran"}
    old = {(j["technique"], j["layer"], j["image"]): j["key"] for j in jobs if j["model"] == "tiny-b"}
    assert all(old[(j["technique"], j["layer"], j["image"])] != j["key"] for j in again if j["model"] == "tiny-b")


def test_only_runs_the_named_techniques(project):
    path = write_spec(project, tiny_spec())
    assert cli("build", path, "--only", "filters") == 0
    kinds = {k[0] for k in statuses(project)}
    # the core techniques always run; the others are left out (nothing cached for them yet)
    assert kinds == {"input", "architecture", "filters"}
