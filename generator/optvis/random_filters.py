"""A single layer of random multi-scale filters: a texture model with no training at all (Ustyuzhaninov, Brendel,
Gatys & Bethge 2017, "What does it take to generate natural textures?", ICLR).

Their finding: Gram matrices of ONE convolutional layer of RANDOM filters, rectified, synthesize natural textures
about as well as a trained VGG — provided the filters come in several sizes (their "multi-scale" model: sizes 3 to
55, 128 filters each). The trained network's features are not what makes Gatys et al.'s textures work; the
multi-scale structure and the non-linearity are. That makes this network the yardstick of the texture and style
pages: the model's own features are shown next to what this untrained network gives, and each measures the other.

The network here (one `Scale` module per width k, named "k3", "k5", …, each → ReLU, recorded like any model layer
by `generator.hooks.record_outputs`; its layers are "scales.k3", …):
- widths 3, 5, 7, 11, 15, 23, 37 px (the paper's list without 55: at the 128–256 px we synthesize, a 55 px filter
  sees much of the image and costs the most), `filters` = 128 per width, 3 input channels (1 for grayscale);
- weights i.i.d. standard normal, each filter scaled to unit L2 norm, so that every width responds at the same
  magnitude to white noise and the Gram losses of the widths are comparable; no bias; "valid" convolution (no
  padding), so that the source's borders do not enter its statistics;
- widths above 11 px are applied to the image downsampled 2× (15, 23 px: 7 and 11 px kernels) or 4× (37 px: a
  9 px kernel), with an antialiasing (triangle) filter — a pyramid, as in multi-scale texture models. A 37 px
  filter at full resolution costs 37² multiply-adds per position and filter, the 9 px one 9² at 1/16 of the
  positions (about 270× less). What it gives up: the large filters no longer see single-pixel detail (the small
  ones do). Unlike strided or subsampled filters, the pyramid's filters see every position of their level, so the
  optimizer cannot hide a pattern between sampled positions;
- the input is the [0, 1] image minus 0.5 over 0.5 (the `Network` wrapper of `generator.optvis.matching`), so the
  filters see dark and bright alike.

Deterministic: the weights are drawn from a CPU `torch.Generator` seeded with `seed`, the same on every device.
How the pyramid was chosen (timings, what was tried): site_src/tuning.md#matching-and-random-filters."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

KERNEL_SIZES = (3, 5, 7, 11, 15, 23, 37)
FILTERS = 128
LABEL = "random multi-scale filters"


def level_for(kernel: int, pyramid: bool = True) -> int:
    """Pyramid level of a kernel size: 0 (full resolution) up to 11 px, 1 (2× averaged) up to 23, else 2 (4×)."""
    if not pyramid or kernel <= 11:
        return 0
    return 1 if kernel <= 23 else 2


def reduced(kernel: int, level: int) -> int:
    """The odd kernel size at `level` that spans about `kernel` full-resolution pixels (15 → 7, 23 → 11, 37 → 9)."""
    return kernel if level == 0 else 2 * (kernel // 2 ** (level + 1)) + 1


class Scale(nn.Module):
    """One kernel size: average-pool by 2^level (none at level 0), conv (no bias, valid), ReLU."""

    def __init__(self, weight: torch.Tensor, level: int = 0, size: int | None = None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.level = int(level)
        self.size = int(size or weight.shape[-1])  # the extent in full-resolution pixels

    @property
    def kernel(self) -> int:
        return self.weight.shape[-1] * 2 ** self.level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.level:  # antialiased (triangle-filter) downsampling: shift-invariant enough that no block grid shows
            f = 2 ** self.level
            x = F.interpolate(x, size=(x.shape[-2] // f, x.shape[-1] // f), mode="bilinear", antialias=True,
                              align_corners=False)
        return F.relu(F.conv2d(x, self.weight))

    def extra_repr(self) -> str:
        k = self.weight.shape[-1]
        where = "full resolution" if not self.level else f"the image averaged {2 ** self.level}×"
        return f"{self.weight.shape[1]}→{self.weight.shape[0]}, {k}×{k} on {where} (spans {self.kernel} px)"


class RandomFilters(nn.Module):
    """One layer of random rectified filters at several sizes; `forward` returns the list of scale outputs (the
    matching code records them by name: `layers`). Images smaller than a kernel skip that scale's module."""

    def __init__(self, kernel_sizes: Sequence[int] = KERNEL_SIZES, filters: int = FILTERS, channels: int = 3,
                 seed: int = 0, pyramid: bool = True):
        super().__init__()
        generator = torch.Generator().manual_seed(int(seed))
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.seed = int(seed)
        scales = OrderedDict()
        for k in self.kernel_sizes:
            level = level_for(k, pyramid)
            side = reduced(k, level)
            w = torch.randn(filters, channels, side, side, generator=generator, dtype=torch.float32)
            w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            scales[f"k{k}"] = Scale(w, level, k)
        self.scales = nn.ModuleDict(scales)

    @property
    def layers(self) -> list[str]:
        """The recordable layers, one per kernel size: "scales.k3", "scales.k5", …"""
        return [f"scales.{name}" for name in self.scales]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [scale(x) for scale in self.scales.values() if min(x.shape[-2:]) >= scale.kernel]

    def min_size(self) -> int:
        return max(self.kernel_sizes)


def random_filters(channels: int = 3, seed: int = 0, kernel_sizes: Sequence[int] = KERNEL_SIZES,
                   filters: int = FILTERS, pyramid: bool = True,
                   device: torch.device | str | None = None) -> RandomFilters:
    net = RandomFilters(kernel_sizes, filters, channels, seed, pyramid).eval()
    return net.to(device) if device is not None else net
