"""Data-set views, ours vs peers, in one run on the same inputs: feature extraction against a plain DataLoader
loop, exact nearest-neighbour search against scikit-learn's NearestNeighbors, and our t-SNE (openTSNE on exact
neighbours) against stock openTSNE and scikit-learn's TSNE. Checks that the neighbour searches agree. Prints tables
with the ratios; not a test.

    .venv/bin/python bench/dataset.py [--only features,nn,tsne] [--repeat 3] [--points 10000] [--device cpu]
                                      [--tsne-repeat 1] [--tsne-default]

features: the Fashion-MNIST model on `--images` test images and EfficientNet-Lite0 on 224-px crops of sample photos
(a 40th as many), the penultimate layer and the first ReLU recorded, `--batch` images per forward.

nn: Fashion-MNIST pixels (scaled to 0..1) projected on 256 principal components, float32: the 10 000 test images are
the base, 1 000 training images the queries, k = 10, Euclidean and cosine distances. Each timing is the best of
`--repeat` runs, the sides interleaved. scikit-learn runs with its defaults (its brute force spreads over every core
through OpenMP); "default" is NearestNeighbors' algorithm="auto", resolved as printed.

tsne: the first `--points` Fashion-MNIST test images, PCA to 50, perplexity 30, PCA initialization, `--jobs` threads
each: ours (openTSNE on exact neighbours, our schedule: 125 + 250 iterations up to 10 000 points) against stock
openTSNE (Annoy neighbours, its default 250 + 500) and scikit-learn's TSNE (Barnes-Hut, its default 250 + 750);
`--tsne-default` adds ours on openTSNE's default schedule, to tell the schedule's share of the gain from the
neighbours'. The runs go round-robin `--tsne-repeat` times (default once: a run is up to a minute), the best time
counts; each line gives the process CPU time too (all threads) and the load average before and after, since the
machine is shared. Quality: trustworthiness at k = 5 (scikit-learn's, on a seeded 5 000-point subset) and the
fraction of each point's 5 nearest neighbours in the map that share its class.

Sections are functions in SECTIONS, run in order; `--only` picks some. A section takes the parsed arguments and
returns its rows for the summary.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from generator.techniques.dataset import tsne as projection
from generator.idx import DEBIAN_ROOT, load_fashion_mnist
from generator.techniques.dataset.knn import nearest
from timing import timed  # bench/timing.py (the script's folder is on sys.path)


def interleaved(fns: dict, repeat: int) -> tuple[dict, dict]:
    """Each function timed `repeat` times, round-robin, so a change of machine load hits all alike."""
    seconds = {name: float("inf") for name in fns}
    results = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t, results[name] = timed(fn)
            seconds[name] = min(seconds[name], t)
    return seconds, results


def fashion_vectors(split: str, n: int, dims: int, basis=None):
    """(vectors (n, dims) float32, labels, pictures, fitted PCA) of the first n images of a Fashion-MNIST split."""
    from sklearn.decomposition import PCA

    images, labels = load_fashion_mnist(DEBIAN_ROOT, split)
    x = images[:n].reshape(n, -1).astype(np.float32) / 255.0
    basis = basis or PCA(dims, random_state=0).fit(x)
    return basis.transform(x).astype(np.float32), labels[:n], images[:n], basis


def nn(args) -> list[tuple]:
    from sklearn.neighbors import NearestNeighbors

    base, _, _, basis = fashion_vectors("test", 10_000, 256)
    queries = fashion_vectors("train", 1_000, 256, basis)[0]
    print(f"nearest neighbours: base {base.shape}, queries {queries.shape}, k = {args.k}, device {args.device}, "
          f"{torch.get_num_threads()} torch threads")
    rows = []
    for metric, sk_metric in (("l2", "euclidean"), ("cosine", "cosine")):
        brute = NearestNeighbors(n_neighbors=args.k, algorithm="brute", metric=sk_metric).fit(base)
        default = NearestNeighbors(n_neighbors=args.k, metric=sk_metric).fit(base)
        seconds, out = interleaved({
            "ours": lambda: nearest(queries, base, args.k, metric=metric, device=args.device),
            "brute": lambda: brute.kneighbors(queries),
            "default": lambda: default.kneighbors(queries),
        }, args.repeat)
        index, dist = out["ours"]
        for peer, what in (("brute", 'algorithm="brute"'), ("default", f'default ("auto" → {default._fit_method})')):
            peer_dist, peer_index = out[peer]
            rows.append((f"k-NN {metric}", f"scikit-learn {what}", seconds["ours"], seconds[peer],
                         f"same indices {np.mean(index == peer_index):.4%}, "
                         f"max |Δd| {np.abs(dist - peer_dist).max():.1e}"))
    return rows


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far, every thread counted."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tsne(args) -> list[tuple]:
    from openTSNE import TSNE as OpenTSNE
    from sklearn.manifold import TSNE as SkTSNE

    vectors, labels, _, _ = fashion_vectors("test", args.points, 50)
    n = len(vectors)
    ours_name = (f"ours (openTSNE, exact k-NN, {projection.EARLY_ITER} + "
                 f"{projection.plain_iterations(n)} iterations)")
    print(f"t-SNE: {vectors.shape} Fashion-MNIST PCA vectors, perplexity 30, {args.jobs} threads")

    def ours_default():
        """Ours on openTSNE's default schedule and grid: 250 + 500 iterations, at least 50 intervals."""
        kept, projection.MIN_INTERVALS = projection.MIN_INTERVALS, 50
        try:
            return projection.tsne(vectors, seed=0, n_jobs=args.jobs, device=args.device, early_iter=250, n_iter=500)
        finally:
            projection.MIN_INTERVALS = kept

    runs = {
        ours_name: lambda: projection.tsne(vectors, seed=0, n_jobs=args.jobs, device=args.device),
        "openTSNE (Annoy k-NN, 250 + 500 iterations)": lambda: np.asarray(OpenTSNE(
            perplexity=30, initialization="pca", random_state=0, n_jobs=args.jobs).fit(vectors)),
        "scikit-learn TSNE (Barnes-Hut, 250 + 750)": lambda: SkTSNE(
            perplexity=30, init="pca", learning_rate="auto", random_state=0, n_jobs=args.jobs).fit_transform(vectors),
    }
    if args.tsne_default:
        runs["ours on openTSNE's default schedule (250 + 500)"] = ours_default
    best = {name: float("inf") for name in runs}
    points = {}
    for _ in range(args.tsne_repeat):
        for name, fn in runs.items():
            load, cpu = os.getloadavg()[0], _cpu_seconds()
            seconds, points[name] = timed(fn)
            best[name] = min(best[name], seconds)
            print(f"  {name}: {seconds:.1f} s, {_cpu_seconds() - cpu:.1f} s CPU, load {load:.2f} → "
                  f"{os.getloadavg()[0]:.2f} ({time.strftime('%H:%M:%S')})", flush=True)
    rows = []
    for name in runs:
        trust = projection.trustworthiness(vectors, points[name], k=5)
        agree = projection.knn_label_agreement(points[name], labels, k=5)
        print(f"  {name}: best {best[name]:.1f} s, trustworthiness {trust:.4f}, 5-NN label agreement {agree:.4f}")
        rows.append(("t-SNE", name, best[ours_name], best[name],
                     f"trustworthiness {trust:.4f}, 5-NN labels {agree:.4f}"))
    return rows


def features(args) -> list[tuple]:
    """Feature extraction, images/s: our feature store (one pass, every layer, reduced on the device, the next batch
    decoded while this one runs) against a plain DataLoader loop that records the same layers with hooks and keeps
    the outputs (what one writes by hand), on the same preprocessing and batch size."""
    import tempfile
    from pathlib import Path

    from PIL import Image
    from torch.utils.data import DataLoader

    from generator import images as imagelib
    from generator.datasets import Dataset
    from generator.techniques.dataset.feature_pass import FeatureStore, penultimate
    from generator.hooks import record_outputs
    from generator.models import ModelLoader
    from generator.checks import ReportSpec

    spec = ReportSpec.parse({"models": [{"name": "fashion", "builtin": "fashion-mnist-net"},
                                  {"name": "lite", "builtin": "efficientnet-lite0"}]})
    pictures, labels = load_fashion_mnist(DEBIAN_ROOT, "test")
    rows = []
    for index, n in ((0, args.images), (1, max(64, args.images // 40))):
        model = ModelLoader(spec, torch.device(args.device)).load(index)
        layers = [penultimate(model), next(name for name, m in model.module.named_modules()
                                           if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)))]
        if index == 0:
            data = Dataset("fashion", "", [], labels[:n], [str(i) for i in range(n)], "bench",
                           lambda i: Image.fromarray(pictures[i], "L"))
        else:  # the photo crops of the default report, cycled to n images
            photos = [imagelib.sample(f"skimage:{k}") for k in ("chelsea", "coffee", "rocket", "astronaut")]
            data = Dataset("photos", "", [], np.zeros(n, dtype=np.int64), [str(i) for i in range(n)], "bench-photos",
                           lambda i: photos[i % 4].crop((i % 7 * 10, i % 5 * 10, i % 7 * 10 + 300, i % 5 * 10 + 300)))

        def ours():
            with tempfile.TemporaryDirectory() as tmp:
                FeatureStore(model, data, Path(tmp), layers, batch_size=args.batch).extract([])
                return sum(f.stat().st_size for f in Path(tmp).rglob("*.npy"))

        class Items(torch.utils.data.Dataset):
            def __len__(self):
                return len(data)

            def __getitem__(self, i):
                return imagelib.preprocess(data.image(i), model.input)

        def plain():
            kept = {name: [] for name in layers}
            for x in DataLoader(Items(), batch_size=args.batch):
                with torch.no_grad(), record_outputs(model.module, layers) as outs:
                    model.module(x.to(model.device))
                for name in layers:
                    kept[name].append(outs[name].cpu())
            return {name: torch.cat(v) for name, v in kept.items()}

        seconds, out = interleaved({"ours": ours, "plain": plain}, args.repeat)
        kept = {"ours": out["ours"], "plain": sum(v.numel() * v.element_size() for v in out["plain"].values())}
        what = f"{model.name}: {n} images, layers {', '.join(layers)}"
        print(f"feature extraction, {what}: ours {n / seconds['ours']:.0f} images/s, "
              f"DataLoader loop {n / seconds['plain']:.0f} images/s")
        rows.append(("features", f"DataLoader loop, {model.name} ({n} images)", seconds["ours"], seconds["plain"],
                     f"{n / seconds['ours']:.0f} vs {n / seconds['plain']:.0f} images/s; kept "
                     f"{kept['ours'] / 2**20:.1f} vs {kept['plain'] / 2**20:.1f} MiB"))
    return rows


# The benchmark's sections, in the order they run; add one by writing `def name(args) -> rows` and listing it.
SECTIONS = {"features": features, "nn": nn, "tsne": tsne}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run, of {', '.join(SECTIONS)}")
    ap.add_argument("--repeat", type=int, default=3, help="runs per nearest-neighbour timing (the best counts)")
    ap.add_argument("--k", type=int, default=10, help="neighbours per query")
    ap.add_argument("--images", type=int, default=10_000, help="Fashion-MNIST images for feature extraction "
                                                                "(EfficientNet-Lite0 gets a 40th of them)")
    ap.add_argument("--batch", type=int, default=64, help="batch size of both feature extraction loops")
    ap.add_argument("--points", type=int, default=10_000, help="t-SNE points")
    ap.add_argument("--jobs", type=int, default=projection._jobs(), help="t-SNE threads (default: every core)")
    ap.add_argument("--tsne-repeat", type=int, default=1, help="t-SNE runs per side, round-robin (the best counts)")
    ap.add_argument("--tsne-default", action="store_true", help="also time ours on openTSNE's default schedule")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    rows = []
    for name in SECTIONS:
        if name in chosen:
            rows += SECTIONS[name](args)
            print()
    print(f"{'what':<14}{'vs':<52}{'ours s':>9}{'peer s':>9}{'peer/ours':>11}  check")
    for what, peer, ours_s, peer_s, check in rows:
        print(f"{what:<14}{peer:<52}{ours_s:>9.3f}{peer_s:>9.3f}{peer_s / ours_s:>10.2f}×  {check}")


if __name__ == "__main__":
    main()
