"""Image sets: files, globs and built-in samples; decoding any Pillow-readable file; preprocessing for a model."""
from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

import glob
import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

from generator.errors import ConvscopeError, did_you_mean

if TYPE_CHECKING:
    from generator.spec import InputSpec, Spec

# Samples whose files ship inside the packages (no download): scikit-image's data folder and scikit-learn's.
SKIMAGE_SAMPLES = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina",
    "rocket", "text",
)
SKLEARN_SAMPLES = ("china", "flower")
GLOB_CHARS = re.compile(r"[*?\[]")
INTERPOLATION = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC, "nearest": InterpolationMode.NEAREST}


@dataclass
class ImageRecord:
    id: str  # "<set>/<name>", unique in a build; used in cache keys, file names and pages
    set: str
    name: str
    source: str  # the spec entry or file it came from
    image: Image.Image  # decoded, upright, 8-bit RGB
    digest: str  # of the decoded pixels, so re-encoding or renaming a file does not invalidate results


def decode(path: Path | BinaryIO, name: str | None = None) -> Image.Image:
    """Any Pillow-readable file (a path, or its bytes as a file object called `name` in errors) as upright 8-bit
    RGB: EXIF rotation applied, alpha composited on white, palette and grayscale expanded, 16-bit and float scaled
    to 0..255."""
    where = name or str(path)
    try:
        with warnings.catch_warnings():
            # Above Pillow's limit (Image.MAX_IMAGE_PIXELS) an image is refused, not only warned about: a small file
            # can declare billions of pixels (a decompression bomb) and take the memory of the whole build.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
    except FileNotFoundError:
        raise ConvscopeError(where, "file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ConvscopeError(where, f"the image is larger than Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} "
                                        f"pixels (a decompression bomb?): {str(exc).split(' exceeds')[0]}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConvscopeError(where, f"cannot decode as an image ({exc})") from None
    return to_rgb8(im)


def to_rgb8(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        if im.mode == "F":
            lo, hi = float(a.min()), float(a.max())
            a, top = a - lo, (hi - lo) or 1.0
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGB" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def sample(entry: str) -> Image.Image:
    kind, name = entry.split(":", 1)
    if kind == "skimage":
        if name not in SKIMAGE_SAMPLES:
            raise ConvscopeError("", f"no bundled scikit-image sample '{name}'; {did_you_mean(name, SKIMAGE_SAMPLES, 'samples')}")
        import skimage.data

        array = getattr(skimage.data, name)()
    elif kind == "sklearn":
        if name not in SKLEARN_SAMPLES:
            raise ConvscopeError("", f"no scikit-learn sample '{name}'; {did_you_mean(name, SKLEARN_SAMPLES, 'samples')}")
        from sklearn.datasets import load_sample_image

        array = load_sample_image(f"{name}.jpg")
    else:
        raise ConvscopeError("", f"unknown sample source '{kind}'; use skimage:NAME or sklearn:NAME")
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8) if array.dtype.kind == "f" else array.astype(np.uint8)
    return to_rgb8(Image.fromarray(array))


def digest(im: Image.Image) -> str:
    return hashlib.sha256(f"{im.size}".encode() + im.tobytes()).hexdigest()[:24]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "image"


DATASET_ENTRY = re.compile(r"^dataset:([A-Za-z0-9][A-Za-z0-9_.-]*)/(\d+)$")


def dataset_names(image_sets: dict[str, list[str]]) -> list[str]:
    """Data sets that image-set entries draw from (`dataset:NAME/INDEX`)."""
    return list(dict.fromkeys(m.group(1) for entries in image_sets.values() for e in entries
                              if (m := DATASET_ENTRY.match(e))))


def load_sets(spec: Spec, names: list[str] | None = None, datasets: dict | None = None,
              ) -> tuple[dict[str, list[ImageRecord]], list[str]]:
    """Decode every image of the named sets (all by default). Returns the sets and the problems found, each
    naming the spec key and the file, so that all of them can be reported at once. `datasets` are the loaded
    data sets that `dataset:NAME/INDEX` entries pick images from."""
    sets: dict[str, list[ImageRecord]] = {}
    problems: list[str] = []
    for set_name, entries in spec.images.items():
        if names is not None and set_name not in names:
            continue
        records: list[ImageRecord] = []
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            where = f"images.{set_name}[{i}]"
            try:
                loaded = [(source, load()) for source, load in _expand(spec, entry, where, datasets or {})]
            except ConvscopeError as exc:
                problems.append(f"{where}: {exc.message}" if exc.where in ("", where) else f"{where}: {exc.where}: {exc.message}")
                continue
            for source, im in loaded:
                name = _slug(source.split(":", 1)[1].replace("/", "-") if source.startswith("dataset:")
                             else Path(source.split(":")[-1]).stem)
                while name in seen:
                    name += "_"
                seen.add(name)
                records.append(ImageRecord(f"{set_name}/{name}", set_name, name, source, im, digest(im)))
        sets[set_name] = records
    return sets, problems


def _expand(spec: Spec, entry: str, where: str, datasets: dict | None = None):
    if entry.startswith("dataset:"):
        match = DATASET_ENTRY.match(entry)
        if not match:
            raise ConvscopeError(where, f"'{entry}' is not of the form dataset:NAME/INDEX")
        name, index = match.group(1), int(match.group(2))
        if name not in spec.datasets:
            raise ConvscopeError(where, f"no data set '{name}'; {did_you_mean(name, spec.datasets, 'data sets')}")
        data = (datasets or {}).get(name)
        if data is None:  # it failed to load: that problem is reported under its own key
            raise ConvscopeError(where, f"data set '{name}' could not be loaded")
        if index >= len(data):
            raise ConvscopeError(where, f"data set '{name}' has {len(data)} images (0 to {len(data) - 1})")
        yield entry, lambda: to_rgb8(data.image(index))
        return
    if re.match(r"^(skimage|sklearn):", entry):
        yield entry, lambda: sample(entry)
        return
    if GLOB_CHARS.search(entry):
        pattern = str(spec.resolve(entry))
        matches = sorted(glob.glob(pattern, recursive=True))
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise ConvscopeError(where, f"the pattern '{entry}' matches no file")
        for m in matches:
            yield m, (lambda m=m: decode(Path(m)))
        return
    path = spec.resolve(entry)
    if not path.is_file():
        raise ConvscopeError(where, f"file not found: {path}")
    yield str(path), lambda: decode(path)


def crop(im: Image.Image, input_spec: InputSpec) -> Image.Image:
    """The part of the image the model sees: shorter side resized, centre-cropped to a square."""
    t = TF.resize(im, input_spec.resize_to, interpolation=INTERPOLATION[input_spec.interpolation], antialias=True)
    t = TF.center_crop(t, [input_spec.size, input_spec.size])
    return t.convert(input_spec.mode)


def preprocess(im: Image.Image, input_spec: InputSpec) -> torch.Tensor:
    """(C, H, W) float tensor ready for the model."""
    t = TF.to_dtype(TF.to_image(crop(im, input_spec)), torch.float32, scale=True)
    return TF.normalize(t, input_spec.mean, input_spec.std)


def display(x: torch.Tensor | np.ndarray, input_spec: InputSpec) -> np.ndarray:
    """Undo normalization: a model input (C, H, W) as an (H, W, 3) uint8 picture."""
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    mean = np.asarray(input_spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(input_spec.std, dtype=np.float32)[:, None, None]
    a = np.clip((a * std + mean) * 255.0 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a
