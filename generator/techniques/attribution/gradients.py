"""What the gradient techniques share (saliency, guided backprop, integrated gradients, SmoothGrad, Grad-CAM,
GrabCut): class gradients of a batch, the channel reduction of Simonyan's map, and the display clipping of their
figures."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from pydantic import Field

from generator import figures
from generator.artifacts import Artifact, Job
from generator.batching import images_per_gradient
from generator.techniques.attribution.base import CLIP_PERCENTILE, display_maps, target_labels
from generator.techniques.attribution.rectifiers import guided_relus



def class_gradients(model, x: torch.Tensor, targets: torch.Tensor, guided: bool = False) -> torch.Tensor:
    """∂ logit[target] / ∂ input for each row of x (N, C, H, W) → (N, C, H, W).

    Rows are independent (the model is in eval mode), so one backward of the sum of the chosen logits gives every
    row's gradient. `torch.autograd.grad` asks for the input's gradient only: parameters' `.grad` and
    `requires_grad` are never touched. `guided=True` runs the forward under `guided_relus()` and raises
    `NoReluError` when the model has no ReLU-family activation."""
    leaf = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        with guided_relus() if guided else nullcontext() as mode:
            # A non-leaf copy: a model that modifies its input in place (a leading in-place ReLU) still works.
            logits = model.logits(leaf.clone())
        if guided:
            mode.require(model.name)
        score = logits.gather(1, targets.view(-1, 1).to(logits.device)).sum()
        (grad,) = torch.autograd.grad(score, leaf)
    return grad


def channel_max_abs(grad: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, H, W): the largest absolute value over channels (Simonyan's saliency map)."""
    return grad.abs().amax(dim=1)


def saliency_map(model, x: torch.Tensor, targets: torch.Tensor, guided: bool = False) -> torch.Tensor:
    """Simonyan's map of each row: max over channels of |∂ logit[target] / ∂ x| (of the guided gradient with
    `guided`), (N, C, H, W) → (N, H, W)."""
    return channel_max_abs(class_gradients(model, x, targets, guided=guided))


def batch_field(what: str):
    """The `batch` parameter of a technique that pushes many copies of each image through forward and backward."""
    return Field(None, ge=1, le=4096, description=f"{what} per forward/backward pass (default: sized to the CPU's "
                                                  "cache; 32 on CUDA)")


def copy_batches(rows: int, copies: int, batch: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (row, copy) indices of `copies` copies of each of `rows` rows (noisy copies, path points), `batch` pairs
    at a time in row-major order: two index tensors per pass."""
    for start in range(0, rows * copies, batch):
        flat = torch.arange(start, min(start + batch, rows * copies), device=device)
        yield flat // copies, flat % copies


def gradient_batch(model, x: torch.Tensor, per_image: int, given: int | None = None) -> int:
    """Copies per forward/backward pass for `per_image` copies of each row of x: `given`, else sized to the device."""
    return given or images_per_gradient(model, x[:1], len(x) * per_image)


def draw_guided(art: Artifact, job: Job, env, path: Path, title: str, meaning: str, **kw) -> bool:
    """The image | colour gradient (`guided` array) | map figure of the guided methods, the map clipped at the 99th
    percentile for display."""
    figures.guided_rows(env.picture(job.image), art.arrays["guided"], display_maps(art.main, signed=False),
                        target_labels(art), path, title, meaning, CLIP_PERCENTILE, **kw)
    return True
