"""Figures drawn for the column they are shown in, grids of four, the sidebar by family, a figure on the home page."""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from helpers import REPO, cli, copy_site_setup, make_project, tiny_spec, write_spec
from generator.techniques.dataset import figures as dataset_figures
from generator import figures, mkdocs_hooks
from generator.report import model_nav
from generator.techniques import registry

COLUMN_PX = 690  # Material's content column at its default layout, in CSS pixels
MIN_PX = 9  # the smallest text a reader can read at 1×, in CSS pixels


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved while the test runs: (figure's text sizes in CSS pixels, PNG path)."""
    seen = []
    save = figures._save

    def spy(fig, path):
        sizes = [t.get_fontsize() * figures.DISPLAY_PPI / 72 for t in fig.findobj(plt.Text)
                 if t.get_text().strip() and t.get_visible()]
        save(fig, path)
        seen.append((sizes, Path(path)))

    monkeypatch.setattr(figures, "_save", spy)
    monkeypatch.setattr(dataset_figures, "_save", spy)
    return seen


def _shown_width(path: Path) -> int:
    """The CSS width the site gives a PNG (its own width when it is not drawn at 2×)."""
    return mkdocs_hooks.css_size(path)[0]


def _photo(size=224, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_figures_fit_the_column_legible_at_1x_and_sharp_at_2x(tmp_path, drawn):
    picture, maps = _photo(), np.random.default_rng(1).random((2, 224, 224)).astype(np.float32)
    long = "ReLU(Σ_k w_k A_k): how strongly each place supports the class (bright = more)"
    figures.attribution_rows(picture, maps, ["tabby", "tiger cat"], tmp_path / "a.png", "Grad-CAM at _act_head", long)
    figures.occlusion_rows(picture, maps - 0.5, ["tabby", "tiger cat"], tmp_path / "o.png", "occlusion", long, 56)
    figures.channel_grid(np.random.default_rng(2).random((48, 7, 7)), list(range(48)), np.zeros(48, bool),
                         tmp_path / "c.png", "_act_head: 48 of 1280 channels")
    figures.prediction_bars(picture, ["tabby", "tiger cat", "Egyptian cat"], [0.6, 0.3, 0.1], tmp_path / "p.png")
    dataset_figures.patch_grid([[_photo(40, i) for i in range(8)]] * 2, ["channel 3", "channel 9"],
                               [[f"{i}.25 · Ankle boot" for i in range(8)]] * 2, tmp_path / "g.png")
    dataset_figures.neighbor_rows([_photo(28)], [[_photo(28, i) for i in range(6)]], [[_photo(28, i) for i in range(6)]],
                                  tmp_path / "n.png", ["test/3 (Trouser)"], [["Trouser · 0.12"] * 6],
                                  [["Pullover · 3.1"] * 6], [[True] * 6], [[False] * 6])
    assert len(drawn) == 6
    for sizes, path in drawn:
        png = Image.open(path)
        shown = _shown_width(path)
        assert shown <= COLUMN_PX + 20, (path.name, shown)  # never shrunk by more than the page's margin
        assert png.width >= 1.8 * shown, (path.name, png.width, shown)  # 2× density: sharp on a 2× screen
        assert round(png.info["dpi"][0]) == figures.DPI
        assert min(sizes) >= MIN_PX * shown / max(shown, COLUMN_PX), (path.name, min(sizes))


def test_colour_bars_are_compact(tmp_path, drawn):
    """A long colour-bar label once stretched each row by 40%: rows are now as tall as their panels."""
    picture, maps = _photo(), np.random.default_rng(1).random((1, 224, 224)).astype(np.float32)
    long = "drop in p(class) when covered: red = evidence for the class, blue = against " * 2
    figures.occlusion_rows(picture, maps, ["tabby"], tmp_path / "o.png", "occlusion", long, 56)
    png = np.asarray(Image.open(tmp_path / "o.png").convert("L"))
    assert png.shape[0] < 0.5 * png.shape[1]  # three square panels in a row, a bar and two lines of footnote
    blank_rows = (png > 250).all(axis=1).mean()
    assert blank_rows < 0.25, blank_rows


def test_grids_have_four_columns(tmp_path, drawn):
    assert [figures.grid_columns(n) for n in (1, 3, 4, 5, 8, 12)] == [1, 3, 4, 4, 4, 4]
    figures.picture_row([_photo(64, i) for i in range(8)], [f"#{i}" for i in range(8)], tmp_path / "r.png")
    fig_axes = plt.get_fignums()  # closed by _save
    assert not fig_axes
    png = np.asarray(Image.open(tmp_path / "r.png").convert("L"))
    # two rows of four: the picture columns are found where a column of pixels is not all white
    inked = ~(png > 250).all(axis=0)
    starts = np.flatnonzero(inked[1:] & ~inked[:-1])
    assert len(starts) + int(inked[0]) == 4
    rows = ~(png > 250).all(axis=1)
    tall = np.diff(np.flatnonzero(np.diff(rows.astype(int)) != 0))
    assert (tall > png.shape[1] / 6).sum() == 2  # two bands of pictures


def test_small_inputs_are_enlarged_with_crisp_pixels(tmp_path):
    from generator.techniques.input import Input

    digit = np.zeros((28, 28, 3), np.uint8)
    digit[::2] = 255
    figures.save_picture(digit, tmp_path / "d.png", min_side=160)
    png = np.asarray(Image.open(tmp_path / "d.png"))
    assert png.shape[:2] == (168, 168) and set(np.unique(png)) == {0, 255}  # nearest: no grey in between
    assert "min_side=160" in Path(Input.draw.__code__.co_filename).read_text()


def test_sidebar_follows_the_families_in_the_overviews_order():
    kinds = ["style_transfer", "saliency", "predictions", "nearest_neighbors", "max_patches", "class_visualization",
             "gradcam", "filters"]
    nav = model_nav("m", kinds, {"max_patches": ("Units by layer", ["units-a.md"])}, {"saliency": "comparison.md"})
    titles = [next(iter(f)) for f in nav["nav"]]
    assert titles == [t for t in registry.FAMILIES if t in titles]  # the overview's order
    assert titles[0] == "What it sees" and titles[-1] == "What it remembers, and style"
    pages = {next(iter(f)): next(iter(f.values())) for f in nav["nav"]}
    # within a family, the spec's order; the unit pages right after the top patches
    assert pages["What it sees"] == ["predictions.md", "max_patches.md", {"Units by layer": ["units-a.md"]}, "filters.md"]
    assert pages["Why it decides"] == ["saliency.md", "gradcam.md", "comparison.md"]
    assert all(registry.family(k) != registry.OTHER_FAMILY for k in registry.TECHNIQUES)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = copy_site_setup(make_project(tmp_path_factory.mktemp("legible")))
    spec = tiny_spec()
    # the spec lists an attribution method before the first family's techniques: the sidebar reorders them
    spec["models"][0]["techniques"] = {"saliency": {}, "predictions": {"top_k": 3}, "activations": {"max_channels": 8}}
    spec["output"] = "site_src/reports"
    assert cli("build", write_spec(root, spec), "--site", root / "site") == 0
    return root


def test_built_sidebar_is_grouped_by_family(site):
    nav = json.loads((site / "site_src" / "reports" / ".nav.json").read_text())
    assert [next(iter(f)) for f in nav["models"][0]["nav"]] == ["What it sees", "Why it decides"]
    titles = [registry.get(k).title for k in ("predictions", "activations", "saliency")]

    def sidebar(page: str) -> str:
        html = (site / "site" / "reports" / "tiny" / page).read_text(encoding="utf-8")
        return html[html.index("md-nav--primary"):]

    # navigation.prune: each page's sidebar holds the links of its own family, and the other families' titles
    seen = sidebar("predictions.html")
    order = [seen.index(s) for s in ("What it sees", titles[0], titles[1], "Why it decides")]
    assert order == sorted(order)
    why = sidebar("saliency.html")
    assert why.index("What it sees") < why.index("Why it decides") < why.index(titles[2])
    assert not (site / "site" / ".nav.json").exists()  # read by the hook, never published
    model_md = (site / "site_src" / "reports" / "tiny" / "index.md").read_text(encoding="utf-8")
    assert model_md.index("### What it sees") < model_md.index("### Why it decides")


def test_home_page_shows_a_figure_of_the_report(site):
    home = (site / "site" / "index.html").read_text(encoding="utf-8")
    img = re.search(r'<img[^>]*src="(reports/overview\.webp)"[^>]*>', home)
    assert img, "the home page shows the report's overview figure"
    assert (site / "site" / img.group(1)).is_file()
    width = re.search(r'width="(\d+)"', img.group(0))
    assert width and int(width.group(1)) <= COLUMN_PX + 20  # shown at the scale it was drawn for (2× density)


def test_figures_in_pages_get_their_css_width(site):
    html = (site / "site" / "reports" / "tiny" / "predictions.html").read_text(encoding="utf-8")
    widths = [int(w) for w in re.findall(r'<img[^>]*width="(\d+)"', html)]
    assert widths and all(w <= COLUMN_PX + 20 for w in widths)


def test_a_grayscale_data_set_feeds_an_rgb_model(tmp_path):
    """Fashion-MNIST (28-px 'L' images) as the data set of an RGB model (EfficientNet-Lite0 in the default report):
    each image upsampled to the input size and repeated into three equal channels, and the feature pass runs."""
    import torch

    from helpers import tiny_net
    from generator import images as imagelib
    from generator.datasets import Dataset
    from generator.techniques.dataset.feature_pass import FeatureStore
    from generator.models import LoadedModel
    from generator.spec import InputSpec

    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), "L") for _ in range(6)]
    data = Dataset("grey", "grey", ["a", "b"], np.arange(6) % 2, [f"g{i}" for i in range(6)], "g0", lambda i: pics[i])
    spec = InputSpec(size=32, resize=32, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])
    x = imagelib.preprocess(data.image(0), spec)
    assert x.shape == (3, 32, 32)
    raw = x * torch.tensor(spec.std).view(3, 1, 1) + torch.tensor(spec.mean).view(3, 1, 1)
    torch.testing.assert_close(raw[0], raw[1], atol=1e-5, rtol=0)  # grey stays grey: equal channels
    torch.testing.assert_close(raw[1], raw[2], atol=1e-5, rtol=0)
    model = LoadedModel("m", tiny_net().eval(), spec, None, None, "test", "digest", torch.device("cpu"))
    store = FeatureStore(model, data, tmp_path, ["relu2"], batch_size=4)
    assert store.layer("relu2").vectors.shape[0] == 6 and np.isfinite(store.layer("relu2").vectors).all()
    assert store.pixels().shape == (6, 3 * 32 * 32)


def test_the_default_reports_lite0_data_set_is_a_real_multi_class_one():
    import yaml

    spec = yaml.safe_load((REPO / "reports.yml").read_text())
    lite = next(m for m in spec["models"] if m["name"] == "efficientnet-lite0")
    data = spec["datasets"][lite["dataset"]]
    assert data.get("torchvision") == "FashionMNIST" and "crops" not in data and "samples" not in data
    assert 1000 <= data["limit"] <= 2000 and data["about"]  # affordable on a CPU, and the pages say what and why


def test_skip_a_missing_data_set_keeps_its_model(tmp_path):
    """Without Debian's Fashion-MNIST, `make report` leaves out the data set: the model still builds, and its
    data-set views say why they do not apply."""
    root = make_project(tmp_path)
    spec = tiny_spec(dataset="fashion")
    spec["models"][0]["techniques"] = {"predictions": {"top_k": 2}, "nearest_neighbors": {"k": 2, "queries": 2}}
    spec["datasets"] = {"fashion": {"torchvision": "FashionMNIST", "root": "nowhere"}}
    path = write_spec(root, spec)
    assert cli("build", path) == 2
    assert cli("build", path, "--skip", "fashion") == 0
    page = (root / "out" / "tiny" / "nearest_neighbors.md").read_text(encoding="utf-8")
    assert "fashion" in page and "was left out of this build" in page
    assert (root / "out" / "tiny" / "predictions.md").is_file()
