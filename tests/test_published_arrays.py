"""Every array of every artifact is published: one build of the tiny model with every technique (small parameters,
a small data set), then manifest.json walked: each record's data file holds exactly the arrays it lists, with their
shapes and dtypes, loadable without pickle, and every array has a meaning its technique declares. A technique that
adds an array without saying what it means fails here."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import cli, colour_folder, make_project, read_json, record_arrays, tiny_spec, write_spec
from generator import outputs
from generator.techniques import registry
from generator.techniques.base import Technique

pytestmark = pytest.mark.usefixtures("one_thread")

ATTRIBUTION = {"faithfulness_steps": 2, "sanity_stages": 1}
TECHNIQUES = {
    "predictions": {"top_k": 2},
    "filters": {},
    "activations": {"max_channels": 4},
    "saliency": dict(ATTRIBUTION),
    "guided_backprop": dict(ATTRIBUTION),
    "integrated_gradients": dict(ATTRIBUTION, steps=2),
    "smoothgrad": dict(ATTRIBUTION, samples=2, of="guided_backprop"),  # the variant with the most arrays
    "occlusion": dict(ATTRIBUTION),
    "gradcam": dict(ATTRIBUTION),
    "guided_gradcam": dict(ATTRIBUTION),
    "saliency_grabcut": dict(ATTRIBUTION, iterations=1, sanity=True),
    "nearest_neighbors": {"k": 2, "queries": 2},
    "embedding": {"grid": 4, "perplexity": 5},
    "max_patches": {"per_layer": 2, "top_k": 2},
    "class_visualization": {"steps": 2, "pixel_steps": 2, "size": 32, "max_classes": 1, "snapshots": [0, 2]},
    "unit_visualization": {"steps": 2, "per_layer": 2, "size": 32},
    "fooling": {"steps": 2},
    "deepdream": {"octaves": 1, "steps": 2, "jitter": 1},
    "multifaceted": {"steps": 2, "max_classes": 1, "facets": 2, "size": 32, "thumbnails": 2},
    "feature_inversion": {"steps": 2, "size": 32},
    "texture_synthesis_nonparametric": {"scale": 16, "source_size": 12, "size": 10, "window": 3},
    "texture_synthesis": {"size": 32, "source_size": 32, "steps": 2, "coarse_steps": 0,
                          "random_kernel_sizes": [3, 5], "random_filter_count": 4},
    "style_transfer": {"size": 32, "style_size": 32, "steps": 2, "coarse_steps": 0, "style_weights": [1.0],
                       "random_kernel_sizes": [3, 5], "random_filter_count": 4},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("arrays"))
    colour_folder(project / "colours", per_class=4)
    spec = tiny_spec(dataset="colours", techniques=TECHNIQUES)
    spec["datasets"] = {"colours": {"folder": "colours"}}
    # A second model for guided backprop's unit mode (a layer's channel instead of a class), without a data set.
    spec["models"].append(dict(tiny_spec()["models"][0], name="unit", techniques={
        "guided_backprop": {"layer": "conv2", "channel": 1, "at": "max"}, "unit_visualization": TECHNIQUES[
            "unit_visualization"]}))
    path = write_spec(project, spec)
    assert cli("build", path) == 0
    return project, path


def records(project: Path) -> list[dict]:
    return read_json(project / "out" / "manifest.json")["artifacts"]


def test_every_technique_ran(built):
    project, _ = built
    assert {r["technique"] for r in records(project)} == set(registry.TECHNIQUES)


def test_every_data_file_holds_what_the_manifest_lists(built):
    project, _ = built
    out = project / "out"
    for r in records(project):
        listed = r["arrays"]
        # every array of the artifact in one .npz, the main one first, each as the manifest lists it
        assert r["data"].endswith(".npz") and all(a["file"] == r["data"] for a in listed), r["data"]
        with zipfile.ZipFile(out / r["data"]) as archive:  # nothing in the file that the manifest does not list
            assert archive.namelist() == [f"{a['name']}.npy" for a in listed], r["data"]
            assert {m.date_time for m in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}  # no build time inside
            assert all(m.compress_type == zipfile.ZIP_DEFLATED for m in archive.infolist())
        with np.load(out / r["data"], allow_pickle=False) as data:
            for a in listed:
                value = data[a["name"]]
                assert list(value.shape) == a["shape"] and str(value.dtype) == a["dtype"], (r["data"], a)
                assert value.dtype != object
                if "computed" in a:  # rounded for publishing: only large float arrays, only to float16
                    assert a["dtype"] == "float16" and a["computed"] in ("float32", "float64"), a
                    assert value.size >= outputs.HALF_FROM, a
                elif value.dtype.kind == "f" and value.size >= outputs.HALF_FROM:
                    assert value.dtype == np.float16 or not np.isfinite(value.astype(np.float16)).all(), a


def test_large_float_arrays_are_published_as_float16_within_its_precision():
    rng = np.random.default_rng(0)
    big = rng.normal(0, 3, outputs.HALF_FROM).astype(np.float32)
    half = outputs.published(big)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), big, rtol=1e-3, atol=1e-7)
    assert outputs.published(big[:-1]).dtype == np.float32  # small arrays keep their precision
    huge = big * 1e5  # beyond float16's range: kept as computed
    assert outputs.published(huge).dtype == np.float32
    ints = np.arange(outputs.HALF_FROM)
    assert outputs.published(ints).dtype == ints.dtype
    record = outputs.array_record("map", big, "x.npz")
    assert record["dtype"] == "float16" and record["computed"] == "float32" and record["shape"] == [outputs.HALF_FROM]


def test_every_array_has_a_meaning(built):
    project, _ = built
    missing = {(r["technique"], a["name"]) for r in records(project) for a in r["arrays"]
               if not (isinstance(a["meaning"], str) and a["meaning"].strip())}
    assert not missing, f"arrays without a meaning in their technique's `arrays`: {sorted(missing)}"


def test_numbers_shown_in_figures_are_published(built):
    project, _ = built
    out = project / "out"

    def arrays(kind: str, model: str = "tiny") -> list[dict]:
        found = [r for r in records(project) if r["technique"] == kind and r["model"] == model]
        assert found, kind
        return [record_arrays(out, r) | {"_record": r} for r in found]

    for a in arrays("saliency"):
        r = a["_record"]
        assert a["map"].shape[0] == len(a["targets"]) == len(a["probabilities"]) == len(a["deletion_auc"])
        assert a["sanity_correlations"].shape == (len(a["targets"]), 1)
        assert r["metrics"]["deletion_auc"] == pytest.approx(float(a["deletion_auc"].mean()), abs=1e-6)
    for a in arrays("integrated_gradients"):
        assert a["completeness"].shape == (len(a["targets"]), 3)
    for unit in arrays("guided_backprop", "unit"):
        assert unit["targets"].tolist() == [1] and unit["activation"].shape == (1,)
        assert unit["position"].shape == (1, 2)
    for a in arrays("unit_visualization"):
        n = len(a["channels"])
        assert a["images"].shape[0] == n and a["before"].shape == a["after"].shape == a["dataset_mean"].shape == (n,)
        assert a["_record"]["metrics"]["mean_after"] == pytest.approx(float(a["after"].mean()), abs=1e-5)
    for plain in arrays("unit_visualization", "unit"):
        assert "dataset_mean" not in plain  # without a data set there is no data-set average
    (cv,) = arrays("class_visualization")
    for method in ("plain", "regularized", "fourier"):
        assert cv[f"{method}_after"].shape == cv["classes"].shape
    assert cv["_record"]["metrics"]["plain_probability"] == pytest.approx(float(cv["plain_after"].mean()), abs=1e-6)
    for a in arrays("nearest_neighbors"):
        assert a["feature_neighbor_labels"].shape == a["feature_neighbors"].shape == a["feature_distances"].shape
        assert a["pixel_neighbors"].shape == a["pixel_distances"].shape
    for a in arrays("max_patches"):
        assert a["labels"].shape == a["images"].shape and len(a["channels"]) == len(a["values"])
    (mf,) = arrays("multifaceted")
    assert mf["before"].shape == mf["after"].shape == mf["sizes"].shape == mf["classes"].shape
    (arch,) = arrays("architecture")
    assert len(arch["names"]) == len(arch["parameters"]) == len(arch["receptive_fields"])
    for a in arrays("style_transfer"):
        assert len(a["results"]) == len(a["style_of"]) == len(a["style_loss"]) == len(a["random_filters"])


def test_a_cached_rebuild_publishes_the_same_arrays(built):
    project, path = built
    before = {r["key"]: (r["arrays"], r["figures"]) for r in records(project)}
    files = {r["data"]: (project / "out" / r["data"]).read_bytes() for r in records(project)}
    assert cli("build", path) == 0
    assert all(j["status"] == "cached" for j in read_json(project / "out" / "build.json")["jobs"])
    assert {r["key"]: (r["arrays"], r["figures"]) for r in records(project)} == before
    # the data files of cached results are copied from the last build, not compressed again
    assert {f: (project / "out" / f).read_bytes() for f in files} == files


class _Declared(Technique):
    arrays = {"map": "exact", "unit-*": "per unit", "*_after": "per method"}


def test_meanings_by_name_and_pattern():
    assert _Declared.meaning("map") == "exact"
    assert _Declared.meaning("unit-3") == "per unit"
    assert _Declared.meaning("plain_after") == "per method"
    assert _Declared.meaning("maps") is None and _Declared.meaning("unit") is None
