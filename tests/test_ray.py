"""The Ray executor (`--executor ray`) on a local Ray of two CPUs: the same manifest as a local build from the same
spec, one cache for both, and failures as isolated as locally (a job that raises, a job that kills its worker).
`make test` installs Ray (the `test` extra); without it these tests are skipped, saying so."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import cli, colour_folder, read_json, tiny_spec, write_spec
from generator import datasets as datalib
from generator.errors import ConvscopeError
from generator.ray_executor import import_ray, parse_executor
from generator.spec import Spec

TECHNIQUES = {"predictions": {"top_k": 3}, "filters": {}, "activations": {"max_channels": 4}, "saliency": {},
              "occlusion": {"window": 8, "stride": 8}}

# A model that kills its process (as a segfault or the out-of-memory killer would) on bright inputs only.
CRASHMOD = '''
import os
from tinymod import build as _build
from torch import nn


class Crash(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _build()

    def forward(self, x):
        if bool((x.detach().flatten(1).mean(1) > 1.0).any()):
            os._exit(3)
        return self.net(x)


def build():
    return Crash()
'''


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'convscope[ray]'; make test does)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def two_models(project: Path) -> Path:
    """Two models on a colour data set (its views run on the workers too) and three images, one of them bright."""
    colour_folder(project / "colours", per_class=4)
    Image.new("RGB", (40, 40), (250, 250, 250)).save(project / "pics" / "bright.png")
    spec = tiny_spec(techniques=dict(TECHNIQUES, nearest_neighbors={"k": 3, "queries": 3}), dataset="colours")
    spec["images"]["pics"].append("pics/bright.png")
    spec["datasets"] = {"colours": {"folder": "colours"}}
    spec["models"].append(dict(spec["models"][0], name="tiny10", factory="tinymod:build10", dataset=None,
                               techniques=TECHNIQUES))
    return write_spec(project, spec)


def statuses(project: Path) -> dict[tuple, str]:
    return {(j["model"], j["technique"], j["layer"], j["image"]): j["status"]
            for j in read_json(project / "out" / "build.json")["jobs"]}


def test_a_ray_build_gives_a_local_build_s_manifest_and_shares_its_cache(project, local_ray):
    spec = two_models(project)
    assert cli("build", spec) == 0
    local = read_json(project / "out" / "manifest.json")
    assert {j["where"]["executor"] for j in read_json(project / "out" / "build.json")["jobs"]} == {"local"}
    shutil.rmtree(project / "out")
    shutil.rmtree(project / "cache")

    assert cli("build", spec, "--executor", "ray") == 0
    assert read_json(project / "out" / "manifest.json") == local
    build = read_json(project / "out" / "build.json")
    assert build["executor"]["name"] == "ray" and build["executor"]["per_model"] == {"CPU": 1.0, "GPU": 0.0}
    ran = [j for j in build["jobs"] if j["status"] == "ran"]
    assert len(ran) == len(build["jobs"]) > 40
    workers = {m: {j["where"]["pid"] for j in ran if j["model"] == m} for m in ("tiny", "tiny10")}
    assert all(len(pids) == 1 for pids in workers.values()), workers  # one worker per model, loaded once
    assert workers["tiny"] != workers["tiny10"] and not {j["where"]["pid"] for j in ran} & {__import__("os").getpid()}
    assert {j["where"]["executor"] for j in ran} == {"ray"} and all(j["where"]["ip"] for j in ran)

    assert cli("build", spec) == 0  # a local build after it finds every result in the cache the workers filled
    assert set(statuses(project).values()) == {"cached"}


def test_a_job_that_raises_on_a_ray_worker_fails_alone(project, local_ray):
    Image.new("RGB", (40, 40), (250, 250, 250)).save(project / "pics" / "bright.png")
    spec = tiny_spec(factory="tinymod:build_tripwire", layers=["net.conv1", "net.relu2"], techniques=TECHNIQUES)
    spec["images"]["pics"].append("pics/bright.png")
    path = write_spec(project, spec)
    assert cli("build", path) == 1
    local = statuses(project)
    assert cli("build", path, "--executor", "ray", "--force") == 1
    on_ray = statuses(project)
    assert on_ray == local
    failed = [k for k, status in on_ray.items() if status == "failed"]
    assert failed and all(k[3] == "pics/bright" for k in failed)  # only the bright image's jobs
    assert sum(s == "ran" for s in on_ray.values()) > 2 * len(failed)  # the dark images' jobs of the same batches
    errors = {j["error"] for j in read_json(project / "out" / "build.json")["jobs"] if j["status"] == "failed"}
    assert errors == {"ValueError: tripwire: this input is too bright"}


def test_a_job_that_kills_its_ray_worker_fails_alone(project, local_ray):
    (project / "crashmod.py").write_text(CRASHMOD)
    Image.new("RGB", (40, 40), (250, 250, 250)).save(project / "pics" / "bright.png")
    spec = tiny_spec(factory="crashmod:build", layers=["net.relu2"],
                     techniques={"predictions": {"top_k": 3}, "saliency": {}})
    spec["images"]["pics"].append("pics/bright.png")
    assert cli("build", write_spec(project, spec), "--executor", "ray") == 1
    jobs = read_json(project / "out" / "build.json")["jobs"]
    failed = [j for j in jobs if j["status"] == "failed"]
    assert {(j["technique"], j["image"]) for j in failed} == {("predictions", "pics/bright"),
                                                              ("saliency", "pics/bright")}
    assert all(j["error"].startswith("its Ray worker died while running it") for j in failed)
    ran = {(j["technique"], j["image"]) for j in jobs if j["status"] == "ran"}
    assert {("predictions", "pics/a"), ("saliency", "pics/b")} <= ran
    page = (project / "out" / "tiny" / "saliency.md").read_text()
    assert "its Ray worker died" in page


def test_executor_choices_are_checked_in_one_line(project, capsys, monkeypatch):
    assert parse_executor("ray:10.0.0.5:6379") == ("ray", "10.0.0.5:6379")
    assert parse_executor("local") == ("local", None)
    assert cli("build", write_spec(project, tiny_spec()), "--executor", "rya") == 2
    assert capsys.readouterr().err.strip() == "error: --executor: 'rya' is not an executor; use local, ray or ray:ADDRESS"
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ConvscopeError, match=r"needs Ray, which is not installed here: pip install 'convscope\[ray\]'"):
        import_ray()
    with pytest.raises(Exception, match="executor"):
        Spec.model_validate(dict(tiny_spec(), executor="dask"))


def test_a_data_set_carried_in_memory_reads_the_same_pixels_without_its_files(tmp_path):
    """What a worker on another machine gets: the files' bytes, decoded as from disk, also through `limit`."""
    colour_folder(tmp_path / "colours", per_class=4)
    spec = Spec.model_validate({"models": [{"name": "m", "builtin": "efficientnet-lite0"}],
                                "datasets": {"c": {"folder": "colours", "limit": 6}}})
    spec._path = tmp_path / "spec.yml"
    data = datalib.load(spec, "c")
    carried = datalib.in_memory(data)
    before = [np.asarray(data.image(i)) for i in range(len(data))]
    shutil.rmtree(tmp_path / "colours")
    assert all(np.array_equal(np.asarray(carried.image(i)), a) for i, a in enumerate(before))
    assert carried.digest == data.digest and carried.names == data.names
    with pytest.raises(ConvscopeError, match="file not found"):
        data.image(0)


def test_resources_the_cluster_lacks_are_one_line_errors(project, local_ray, capsys):
    path = write_spec(project, tiny_spec())
    assert cli("build", path, "--executor", "ray", "--device", "cuda") == 2
    assert capsys.readouterr().err.strip() == ("error: device: 'cuda' asked for, but the Ray cluster has no GPU to give "
                                               "each model's worker (ray.gpus_per_model)")
    assert cli("build", write_spec(project, dict(tiny_spec(), executor="ray", ray={"cpus_per_model": 8}))) == 2
    assert "each model's worker asks for 8 CPU and 0 GPU, but the cluster has 2 CPU and 0 GPU" in capsys.readouterr().err
    assert local_ray.is_initialized()  # a Ray the build did not start is left running
    assert not (project / "out").exists()
