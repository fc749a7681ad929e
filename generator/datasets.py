"""Data sets: the many images the data-set views look across. Folders, globs, torchvision data sets on local files and
random crops of sample photos, each with labels, a stratified `limit`, and a digest for cache keys.

Unreadable files are skipped, counted and named (the page lists them) instead of failing the build; nothing is ever
downloaded."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dataclasses
import glob as globlib
import io
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from generator import idx, images as imagelib
from generator.errors import ConvscopeError, one_line

if TYPE_CHECKING:
    from generator.spec import DatasetSpec, Spec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
MNIST_FAMILY = ("FashionMNIST", "MNIST", "KMNIST")


@dataclass
class Dataset:
    name: str
    description: str  # where it came from, in words, for the page
    classes: list[str]
    labels: np.ndarray  # (N,) int64 class index; -1 where unlabelled
    names: list[str]  # one readable name per image
    digest: str
    get: Callable[[int], Image.Image] = field(repr=False)
    skipped: list[dict] = field(default_factory=list)  # {"name", "reason"} of files that could not be read
    notes: list[str] = field(default_factory=list)  # things the reader should know (limit above the size, ...)
    total: int = 0  # images before `limit`
    about: str = ""  # what the data set is and why (the spec's `about`), for the pages

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        return self.get(index)

    def label(self, index: int) -> str:
        k = int(self.labels[index])
        return self.classes[k] if 0 <= k < len(self.classes) else "unlabelled"

    @property
    def labelled(self) -> bool:
        return bool((self.labels >= 0).any())

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}


# How a data set reads image i. Small classes rather than closures so that a Dataset pickles: the figure workers
# (generator/outputs.py) get it whole.
@dataclass(frozen=True)
class _Files:
    paths: list[Path]

    def __call__(self, i: int) -> Image.Image:
        return imagelib.decode(self.paths[i])


@dataclass(frozen=True)
class _Crops:
    photos: list[Image.Image]
    which: list[int]
    boxes: list[tuple[int, int, int, int]]

    def __call__(self, i: int) -> Image.Image:
        return self.photos[self.which[i]].crop(self.boxes[i])


@dataclass(frozen=True)
class _Items:
    data: Any  # a torchvision data set: item i is (image, label)

    def __call__(self, i: int) -> Image.Image:
        item = self.data[i][0]
        return item if isinstance(item, Image.Image) else Image.fromarray(np.asarray(item))


@dataclass(frozen=True)
class _Pictures:
    pictures: np.ndarray  # (N, H, W) uint8
    mode: str

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(self.pictures[i], self.mode)


@dataclass(frozen=True)
class _Remapped:
    get: Callable[[int], Image.Image]
    mapping: np.ndarray

    def __call__(self, i: int) -> Image.Image:
        return self.get(int(self.mapping[i]))


@dataclass(frozen=True)
class _Encoded:
    files: list[bytes]  # each image file's bytes, as read from disk
    names: list[str]

    def __call__(self, i: int) -> Image.Image:
        return imagelib.decode(io.BytesIO(self.files[i]), self.names[i])


def in_memory(data: Dataset) -> Dataset:
    """The data set with its image files' bytes inside it instead of their paths, for workers on other machines
    (generator/ray_executor.py): they read nothing from this machine's disk. Decoded the same way, so the same
    pixels."""
    def carried(get: Callable[[int], Image.Image]) -> Callable[[int], Image.Image]:
        if isinstance(get, _Files):
            return _Encoded([p.read_bytes() for p in get.paths], [str(p) for p in get.paths])
        if isinstance(get, _Remapped):
            return _Remapped(carried(get.get), get.mapping)
        return get
    return dataclasses.replace(data, get=carried(data.get))


def stratified(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of at most `limit` items, spread evenly over the classes (round-robin over a seeded shuffle of each
    class), in ascending order."""
    if limit >= len(labels):
        return np.arange(len(labels))
    order = np.random.default_rng(seed).permutation(len(labels))
    rank = np.empty(len(labels), dtype=np.int64)
    for value in np.unique(labels):
        members = order[labels[order] == value]
        rank[members] = np.arange(len(members))
    chosen = order[np.lexsort((labels[order], rank[order]))][:limit]
    return np.sort(chosen)


def load(spec: Spec, name: str) -> Dataset:
    """One data set of the spec; raises ConvscopeError naming the spec key."""
    ds = spec.datasets[name]
    where = f"datasets.{name}"
    loader = {"folder": _folder, "glob": _glob, "torchvision": _torchvision, "samples": _samples}[ds.source]
    try:
        data = loader(spec, ds, f"{where}.{ds.source}")
    except ConvscopeError as exc:
        raise ConvscopeError(exc.where or where, exc.message) from None
    data.name = name
    data.about = ds.about or ""
    if ds.classes is not None:
        found = int(data.labels.max()) + 1 if len(data.labels) and data.labels.max() >= 0 else 0
        if found > len(ds.classes):
            raise ConvscopeError(f"{where}.classes", f"{len(ds.classes)} names for {found} classes in the data set")
        data.classes = list(ds.classes)
    if len(data.labels) == 0:
        raise ConvscopeError(where, f"no readable images ({data.description})"
                             + (f"; {len(data.skipped)} unreadable, e.g. {data.skipped[0]['name']}" if data.skipped else ""))
    data.total = len(data.labels)
    if ds.limit is not None:
        if ds.limit > len(data.labels):
            data.notes.append(f"limit {ds.limit} is more than the {len(data.labels)} images there are: all are used")
        keep = stratified(data.labels, ds.limit, ds.seed)
        data = _subset(data, keep)
    data.digest = hashlib.sha256(
        f"{data.digest}|{ds.limit}|{ds.seed}|{data.classes}".encode()).hexdigest()[:24]
    return data


def _subset(data: Dataset, keep: np.ndarray) -> Dataset:
    return Dataset(data.name, data.description, data.classes, data.labels[keep], [data.names[i] for i in keep],
                   data.digest, _Remapped(data.get, keep.copy()), data.skipped, data.notes, data.total, data.about)


def _readable(path: Path) -> str | None:
    """Why a file cannot be read as an image, or None. `verify` checks the structure without decoding it all."""
    try:
        with Image.open(path) as im:
            im.verify()
        return None
    except Exception as exc:  # Pillow raises many types for broken files
        return one_line(exc)


def _files(paths: list[Path], labels: list[int], classes: list[str], names: list[str], description: str) -> Dataset:
    ok_paths, ok_labels, ok_names, skipped = [], [], [], []
    h = hashlib.sha256()
    for path, label, name in zip(paths, labels, names):
        reason = _readable(path)
        if reason:
            skipped.append({"name": name, "reason": reason})
            continue
        ok_paths.append(path)
        ok_labels.append(label)
        ok_names.append(name)
        h.update(f"{name}|{label}|".encode() + hashlib.sha256(path.read_bytes()).digest())
    return Dataset("", description, classes, np.asarray(ok_labels, dtype=np.int64), ok_names, h.hexdigest()[:24],
                   _Files(ok_paths), skipped)


def _folder(spec: Spec, ds: DatasetSpec, where: str) -> Dataset:
    root = spec.resolve(ds.folder)
    if not root.is_dir():
        raise ConvscopeError(where, f"folder not found: {root}")
    classes, paths, labels = [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            labels += [len(classes)] * len(files)
            paths += files
            classes.append(sub.name)
    if not paths:
        raise ConvscopeError(where, f"no class sub-folders with images in {root} (expected {root}/<class>/<image>)")
    names = [str(p.relative_to(root)) for p in paths]
    return _files(paths, labels, classes, names, f"image folder {root}, {len(classes)} classes (one per sub-folder)")


def _glob(spec: Spec, ds: DatasetSpec, where: str) -> Dataset:
    pattern = str(spec.resolve(ds.glob))
    paths = sorted(Path(m) for m in globlib.glob(pattern, recursive=True) if Path(m).is_file())
    if not paths:
        raise ConvscopeError(where, f"the pattern '{ds.glob}' matches no file")
    if ds.labels_from_parent:
        classes = sorted({p.parent.name for p in paths})
        labels = [classes.index(p.parent.name) for p in paths]
    else:
        classes, labels = [], [-1] * len(paths)
    names = [str(p) for p in paths]
    return _files(paths, labels, classes, names, f"files matching {ds.glob}")


def _samples(spec: Spec, ds: DatasetSpec, where: str) -> Dataset:
    """Each photo is a class; with `crops` > 1 its images are random square crops (35–85% of the shorter side),
    so neighbours and top patches have something to find even in a handful of photos."""
    photos, classes = [], []
    for i, entry in enumerate(ds.samples):
        try:
            loaded = list(imagelib._expand(spec, entry, f"{where}[{i}]"))
            photos += [load() for _, load in loaded]
        except ConvscopeError as exc:
            raise ConvscopeError(f"{where}[{i}]", exc.message) from None
        classes += [Path(source.split(":")[-1]).stem for source, _ in loaded]
    boxes, labels, names = [], [], []
    for p, (photo, cls) in enumerate(zip(photos, classes)):
        w, h = photo.size
        for c in range(ds.crops):
            if ds.crops == 1:
                boxes.append((0, 0, w, h))
            else:
                rng = np.random.default_rng([ds.seed, p, c])
                side = int(min(w, h) * rng.uniform(0.35, 0.85))
                x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
                boxes.append((x, y, x + side, y + side))
            labels.append(p)
            names.append(f"{cls}#{c}")
    h = hashlib.sha256(repr(boxes).encode())
    for photo in photos:
        h.update(imagelib.digest(photo).encode())
    get = _Crops(photos, labels, boxes)
    what = f"{ds.crops} random crops of each of {len(photos)} photos" if ds.crops > 1 else f"{len(photos)} photos"
    return Dataset("", what, classes, np.asarray(labels, dtype=np.int64), names, h.hexdigest()[:24], get)


def _torchvision(spec: Spec, ds: DatasetSpec, where: str) -> Dataset:
    root = spec.resolve(ds.root)
    key = where.rsplit(".", 1)[0] + ".root"
    if not root.exists():
        hint = "; install the Debian package dataset-fashion-mnist" if ds.torchvision == "FashionMNIST" else ""
        raise ConvscopeError(key, f"folder not found: {root}{hint}")
    if ds.torchvision in MNIST_FAMILY:
        return _mnist_family(root, ds, key)
    import torchvision.datasets as tvd

    cls = getattr(tvd, ds.torchvision)
    try:
        if ds.torchvision == "ImageFolder":
            data = cls(str(root))
        elif ds.torchvision in ("SVHN", "STL10"):
            data = cls(str(root), split=ds.split, download=False)
        else:
            data = cls(str(root), train=ds.split == "train", download=False)
    except Exception as exc:  # torchvision says "Dataset not found or corrupted. You can use download=True ..."
        raise ConvscopeError(key, f"cannot read {ds.torchvision} at {root} ({one_line(exc)}); "
                             "convscope never downloads: put the files there") from None
    targets = getattr(data, "targets", None)
    if targets is None:
        targets = getattr(data, "labels", None)
    labels = np.asarray(targets if targets is not None else [data[i][1] for i in range(len(data))], dtype=np.int64)
    classes = [str(c) for c in getattr(data, "classes", [])] or [str(k) for k in range(int(labels.max()) + 1)]
    get = _Items(data)

    names = [f"{ds.split}/{i}" for i in range(len(labels))]
    digest = hashlib.sha256(f"{ds.torchvision}|{root.resolve()}|{ds.split}|{len(labels)}".encode() + labels.tobytes())
    return Dataset("", f"torchvision {ds.torchvision} ({ds.split} split) at {root}", classes, labels, names,
                   digest.hexdigest()[:24], get)


def _mnist_family(root: Path, ds: DatasetSpec, key: str) -> Dataset:
    """The MNIST family in IDX files, read directly: the Debian layout (files in `root`) or torchvision's
    (`root/<Class>/raw`), gzipped or not."""
    prefix = "train" if ds.split == "train" else "t10k"
    found = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        candidates = [folder / name for folder in (root, root / ds.torchvision / "raw") for name in (stem + ".gz", stem)]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            hint = " (install the Debian package dataset-fashion-mnist)" if ds.torchvision == "FashionMNIST" else ""
            raise ConvscopeError(key, f"no {stem}(.gz) in {root} or {root / ds.torchvision / 'raw'}{hint}")
        found.append(path)
    try:
        pictures, labels = idx.read_idx(found[0]), idx.read_idx(found[1]).astype(np.int64)
    except ConvscopeError as exc:
        raise ConvscopeError(key, f"{exc.where}: {exc.message}") from None
    if pictures.ndim != 3 or len(labels) != len(pictures):
        raise ConvscopeError(key, f"{found[0].name} holds {pictures.shape}, {found[1].name} {len(labels)} labels")
    if ds.torchvision == "FashionMNIST":
        classes = list(idx.FASHION_MNIST_CLASSES)
    elif ds.torchvision == "MNIST":
        classes = [str(d) for d in range(10)]
    else:
        import torchvision.datasets as tvd

        classes = list(tvd.KMNIST.classes)
    if len(labels) and labels.max() >= len(classes):
        raise ConvscopeError(key, f"label {int(labels.max())} in {found[1].name}, but {ds.torchvision} has "
                                  f"{len(classes)} classes")
    digest = hashlib.sha256(pictures.tobytes() + labels.tobytes()).hexdigest()[:24]
    names = [f"{ds.split}/{i}" for i in range(len(labels))]
    return Dataset("", f"{ds.torchvision} {ds.split} split ({root})", classes, labels, names, digest,
                   _Pictures(pictures, "L"))
