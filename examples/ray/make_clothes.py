"""Writes the example's folder data set: `clothes/<class>/<n>.png`, 30 Fashion-MNIST test images per class, from
Debian's dataset-fashion-mnist package (any folder of class sub-folders works the same way).

    ../../.venv/bin/python make_clothes.py [--per-class 30]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from generator.idx import FASHION_MNIST_CLASSES, load_fashion_mnist

ROOT = Path("/usr/share/datasets/fashion-mnist")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=30)
    args = ap.parse_args()
    images, labels = load_fashion_mnist(ROOT, "test")
    out = Path(__file__).resolve().parent / "clothes"
    for k, name in enumerate(FASHION_MNIST_CLASSES):
        folder = out / name.replace("/", "-").replace(" ", "-").lower()
        folder.mkdir(parents=True, exist_ok=True)
        for n, i in enumerate((labels == k).nonzero()[0][:args.per_class]):
            Image.fromarray(images[i], "L").save(folder / f"{n:03d}.png")
    print(f"wrote {args.per_class} images of each of {len(FASHION_MNIST_CLASSES)} classes to {out}")


if __name__ == "__main__":
    main()
