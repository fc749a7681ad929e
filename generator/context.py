"""What a technique sees while it runs (RunContext) and what figures see while they draw (DrawContext)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from generator import images as imagelib
from generator.datasets import Dataset
from generator.errors import ConvscopeError
from generator.techniques.dataset.feature_pass import FeatureStore
from generator.images import ImageRecord
from generator.models import LoadedModel


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConvscopeError("device", f"'{name}' asked for, but this machine has no CUDA device; use auto or cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConvscopeError("device", f"'{name}' asked for, but there are {torch.cuda.device_count()} CUDA device(s)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConvscopeError("device", "'mps' asked for, but this machine has no Apple GPU; use auto or cpu")
    return torch.device(name)


@dataclass
class RunContext:
    model: LoadedModel
    images: dict[str, ImageRecord]  # id → record: the model's images and those of the sets its techniques name
    quick: bool = False
    seed: int = 0
    dataset: Dataset | None = None
    features: FeatureStore | None = None  # the data set's features, extracted once for all data-set views
    own: list[str] | None = None  # ids of the model's own images (None: all of `images`)
    _inputs: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def own_images(self) -> list[str]:
        """The model's own images (its `images:` sets), without the sets that single techniques name."""
        return list(self.images) if self.own is None else list(self.own)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def input(self, image_id: str) -> torch.Tensor:
        """The preprocessed (C, H, W) input of one image, on the device."""
        if image_id not in self._inputs:
            x = imagelib.preprocess(self.images[image_id].image, self.model.input)
            self._inputs[image_id] = x.to(self.device)
        return self._inputs[image_id]

    def set_ids(self, set_name: str) -> list[str]:
        """Ids of one image set's images, in spec order."""
        return [i for i, r in self.images.items() if r.set == set_name]

    def batch(self, image_ids: list[str]) -> torch.Tensor:
        return torch.stack([self.input(i) for i in image_ids])

    def probabilities(self, images: torch.Tensor, classes: list[int]) -> np.ndarray:
        """Softmax probability of element b's class b, for (B, C, H, W) images in [0, 1] pixels (synthesis results,
        without any random transform): what the synthesis pages report."""
        with torch.no_grad():
            probs = self.model.logits(self.model.normalize(images.to(self.device).float())).float().softmax(1)
        return probs[torch.arange(len(classes)), torch.tensor(classes)].cpu().numpy()


@dataclass
class DrawContext:
    """Lets a figure show an artifact beside the image it came from, without computing anything."""

    model: LoadedModel
    images: dict[str, ImageRecord]
    dataset: Dataset | None = None

    def picture(self, image_id: str) -> np.ndarray:
        """The crop the model saw, as (H, W, 3) uint8."""
        crop = imagelib.crop(self.images[image_id].image, self.model.input).convert("RGB")
        return np.asarray(crop)

    def image_name(self, image_id: str) -> str:
        return self.images[image_id].name

    def dataset_picture(self, index: int) -> np.ndarray:
        """Data-set image `index` as the model saw it: (H, W, 3) uint8, or (H, W) for a grayscale model."""
        return np.asarray(imagelib.crop(self.dataset.image(index), self.model.input))
