"""Batch sizes for many-image forwards (generator/batching.py): on the CPU, the largest activation map of a batch
stays within the cache budget."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from generator import batching
from generator.hooks import hook_count


def model_of(module: nn.Module) -> SimpleNamespace:
    return SimpleNamespace(module=module, logits=module)


def test_the_largest_map_is_measured_at_its_widest_layer():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 96, 1), nn.AdaptiveAvgPool2d(1))
    sample = torch.rand(1, 3, 40, 40)
    assert batching.largest_activation_bytes(net, sample) == 96 * 40 * 40 * 4
    assert hook_count(net) == 0


def test_cpu_batches_fill_the_cache_budget_in_powers_of_two():
    wide = nn.Sequential(nn.Conv2d(3, 96, 3, padding=1), nn.Flatten(), nn.LazyLinear(10))
    sample = torch.rand(1, 3, 112, 112)
    per_image = 96 * 112 * 112 * 4  # 4.8 MB: five fit in 24 MiB, the power of two below is 4
    n = batching.images_per_forward(model_of(wide), sample, 10_000)
    assert n == 4 and n * per_image <= batching.CPU_CACHE_BUDGET < 2 * n * per_image
    tiny = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    assert batching.images_per_forward(model_of(tiny), torch.rand(1, 1, 28, 28), 10_000) == batching.CPU_MAX_IMAGES
    assert batching.images_per_forward(model_of(tiny), torch.rand(1, 1, 28, 28), 7) == 7  # never more than asked
    huge = nn.Sequential(nn.Conv2d(3, 512, 3, padding=1))
    assert batching.images_per_forward(model_of(huge), torch.rand(1, 3, 128, 128), 100) == 1


def test_gradient_batches_follow_the_cache_on_the_cpu():
    wide = nn.Sequential(nn.Conv2d(3, 96, 3, padding=1), nn.Flatten(), nn.LazyLinear(10))
    sample = torch.rand(1, 3, 112, 112)
    assert batching.images_per_gradient(model_of(wide), sample, 64) == 4
    assert batching.images_per_gradient(model_of(wide), sample, 3) == 3
