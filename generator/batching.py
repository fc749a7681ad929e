"""How many images one forward takes when a technique has many to push through a model: occlusion's windows, the
step images of the deletion and insertion curves, a data set's images.

On CUDA: as many as `CUDA_MEMORY_SHARE` of the free memory holds, from a probe forward's peak memory. On the CPU (and
MPS): as many as keep the batch's largest activation map within the processor's cache, rounded down to a power of
two. There a forward's cost is memory traffic as much as arithmetic. Measured on EfficientNet-Lite0 at 224 px
(channels-last, 2 cores, 32 MiB L3), milliseconds per image: 33 one at a time, 21 in batches of 4, 28 of 8, 44 of
32, 53 of 64. Its largest activation, 96 channels at 112 × 112, is 4.8 MB per image, so the budget gives 4; a
Fashion-MNIST network's maps are a few hundred kB and get 64.
"""
from __future__ import annotations

import torch
from torch import nn

from generator.hooks import record_outputs

CPU_CACHE_BUDGET = 24 * 2**20  # bytes of the largest activation map of a batch: most of a 32 MiB L3 cache
CPU_MAX_IMAGES = 256
CUDA_MAX_IMAGES = 1024
CUDA_MEMORY_SHARE = 0.5  # of the free device memory, for one batch's activations
CUDA_GRADIENT_IMAGES = 32


def largest_activation_bytes(module: nn.Module, sample: torch.Tensor) -> int:
    """Bytes of the largest tensor any submodule outputs for one image (`sample`: (1, C, H, W))."""
    names = [n for n, _ in module.named_modules() if n]
    with torch.no_grad(), record_outputs(module, names) as outputs:
        module(sample)
    tensors = [t for out in outputs.values() for t in (out if isinstance(out, (tuple, list)) else (out,))
               if isinstance(t, torch.Tensor)]
    return max([sample.numel() * sample.element_size()] + [t.numel() * t.element_size() for t in tensors])


def images_per_gradient(model, sample: torch.Tensor, todo: int) -> int:
    """Images per forward and backward pass: on the CPU as for a forward (measured on EfficientNet-Lite0,
    integrated gradients with 32 path points: 1.7–2.1 s in batches of 4, 3.6–5.1 s in batches of 32); on CUDA
    `CUDA_GRADIENT_IMAGES`, since a backward keeps every activation and a forward's peak says little about it."""
    if sample.device.type == "cuda":
        return max(1, min(CUDA_GRADIENT_IMAGES, todo))
    return images_per_forward(model, sample, todo)


def images_per_forward(model, sample: torch.Tensor, todo: int) -> int:
    """Images per forward for `todo` images like `sample` (one image, (1, C, H, W), on the model's device) through
    `model` (a LoadedModel: `.module`, `.logits`)."""
    if sample.device.type != "cuda":
        fits = CPU_CACHE_BUDGET // largest_activation_bytes(model.module, sample)
        fits = 1 << (max(1, fits).bit_length() - 1)  # powers of two: oneDNN's kernels run them best
        return max(1, min(fits, CPU_MAX_IMAGES, todo))
    probe = min(8, todo)
    torch.cuda.synchronize(sample.device)
    before = torch.cuda.memory_allocated(sample.device)
    torch.cuda.reset_peak_memory_stats(sample.device)
    with torch.no_grad():
        model.logits(sample.expand(probe, *sample.shape[1:]).clone())
    per_image = max((torch.cuda.max_memory_allocated(sample.device) - before) / probe, 1)
    free, _ = torch.cuda.mem_get_info(sample.device)
    return max(1, min(int(CUDA_MEMORY_SHARE * free / per_image), CUDA_MAX_IMAGES, todo))
