"""IDX files (the MNIST / Fashion-MNIST format, plain or gzipped) → numpy arrays, and the Fashion-MNIST splits.

An IDX file is a 4-byte magic number — two zero bytes, a type code, the number of dimensions — then one big-endian
uint32 per dimension, then the values, big-endian, in C order.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Literal

import numpy as np

from generator.errors import ConvscopeError

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# IDX type code → big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
_PREFIXES = {"train": "train", "test": "t10k"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file, gzipped or not (told apart by content, not by name), in native byte order."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConvscopeError(str(path), f"cannot read the IDX file ({exc.strerror or exc})") from None
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ConvscopeError(str(path), f"corrupt gzip data ({exc})") from None
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, where: str = "") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file; `where` names it in errors."""
    if len(raw) < 4:
        raise ConvscopeError(where, f"not an IDX file: {len(raw)} bytes, shorter than the 4-byte header")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise ConvscopeError(where, f"not an IDX file: bad magic number 0x{raw[:4].hex()} (expected 0x0000TTDD)")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise ConvscopeError(where, f"not an IDX file: unknown type code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise ConvscopeError(where, "not an IDX file: zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ConvscopeError(where, f"truncated IDX header: {ndim} dimensions need {header} bytes, found {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        shape = "×".join(map(str, dims))
        raise ConvscopeError(
            where, f"IDX size mismatch: shape {shape} of {dtype.name} needs {expected} bytes of data, found {found}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _find(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def load_fashion_mnist(root: str | Path, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of a Fashion-MNIST split.

    `root` holds `train-images-idx3-ubyte(.gz)` etc. directly (the Debian package's layout) or in
    `FashionMNIST/raw/` (torchvision's).
    """
    if split not in _PREFIXES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    root = Path(root)
    prefix = _PREFIXES[split]
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find(root, s) for s in stems]
    if any(p is None for p in paths):
        missing = ", ".join(s + "(.gz)" for s, p in zip(stems, paths) if p is None)
        raise ConvscopeError(
            str(root),
            f"no Fashion-MNIST files ({missing}) here; install the Debian package dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist)",
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.dtype != np.uint8 or images.ndim != 3:
        found = f"{images.dtype} {images.shape}"
        raise ConvscopeError(str(paths[0]), f"expected uint8 images of shape (N, H, W), found {found}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ConvscopeError(str(paths[1]), f"expected {len(images)} labels, found shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise ConvscopeError(str(paths[1]), f"labels outside 0..{len(FASHION_MNIST_CLASSES) - 1}")
    return images, labels.astype(np.int64)
