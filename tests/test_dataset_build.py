"""Whole builds with a data set: the data-set views' pages, unit pages, image sets drawn from a data set, a cached
rebuild that reuses every figure, a changed data set that reruns only the data-set views, and --skip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from helpers import cli, colour_folder, read_json, tiny_spec, write_spec

VIEWS = {"nearest_neighbors": {"k": 3, "queries": 3}, "embedding": {"grid": 4, "perplexity": 5},
         "max_patches": {"per_layer": 2, "top_k": 3}}


def data_spec(**model) -> dict:
    spec = tiny_spec(dataset="colours", **model)
    spec["models"][0]["techniques"] = {"activations": {"max_channels": 4}, **VIEWS}
    spec["datasets"] = {"colours": {"folder": "colours"}}
    spec["images"]["from-data"] = ["dataset:colours/0", "dataset:colours/7"]
    return spec


def test_data_set_views_build_pages_and_reuse_everything(project: Path):
    colour_folder(project / "colours")
    (project / "colours" / "green" / "2b.png").write_bytes(b"broken")
    path = write_spec(project, data_spec())
    assert cli("build", path) == 0
    out = project / "out" / "tiny"
    for page in ("nearest_neighbors", "embedding", "max_patches", "units-conv1", "units-relu2"):
        assert (out / f"{page}.md").is_file(), page
    text = (out / "nearest_neighbors.md").read_text()
    assert "15 images" in text and "A small data set" in text
    assert "1 unreadable file(s) skipped" in text and "green/2b.png" in text
    assert "[Unit page](units-relu2.md)" in (out / "max_patches.md").read_text()
    assert "\n\n| channel | largest |" in (out / "units-relu2.md").read_text()  # a table, not part of a paragraph
    manifest = read_json(project / "out" / "manifest.json")["artifacts"]
    patches = [r for r in manifest if r["technique"] == "max_patches"]
    assert {r["layer"] for r in patches} == {"conv1", "relu2"}
    for r in patches:
        assert len(r["figures"]) == 1 + 2 * 2 and all((project / "out" / f).is_file() for f in r["figures"].values())
    images = {j["image"] for j in read_json(project / "out" / "build.json")["jobs"] if j["image"]}
    assert {"from-data/colours-0", "from-data/colours-7"} <= images  # image-set entries taken from the data set

    before = {f: (project / "out" / f).read_bytes() for r in manifest for f in r["figures"].values()}
    assert cli("build", path) == 0
    jobs = read_json(project / "out" / "build.json")["jobs"]
    assert all(j["status"] == "cached" for j in jobs)
    assert all((project / "out" / f).read_bytes() == b for f, b in before.items())  # every figure reused

    Image.fromarray(np.zeros((24, 24, 3), dtype=np.uint8)).save(project / "colours" / "red" / "4.png")
    assert cli("build", path) == 0
    ran = {j["technique"] for j in read_json(project / "out" / "build.json")["jobs"] if j["status"] == "ran"}
    assert ran == set(VIEWS)  # a changed data set reruns the data-set views only


def test_skip_leaves_a_model_and_its_missing_data_out(project: Path, capsys):
    spec = data_spec()
    spec["datasets"]["colours"] = {"torchvision": "FashionMNIST", "root": "nowhere"}
    spec["images"].pop("from-data")
    other = dict(spec["models"][0], name="plain", dataset=None, techniques={"predictions": {}})
    spec["models"].append(other)
    path = write_spec(project, spec)
    assert cli("build", path) == 2
    assert "datasets.colours.root: folder not found" in capsys.readouterr().err
    assert cli("build", path, "--skip", "tiny") == 0
    assert (project / "out" / "plain" / "predictions.md").is_file()
    assert not (project / "out" / "tiny").exists()
    assert cli("build", path, "--skip", "tinny") == 2
    assert "did you mean 'tiny'?" in capsys.readouterr().err
