"""Minibatch CKA between every pair of layers of two networks, ours (generator/similarity.py: MinibatchCKA) against
the peer package torch-cka 0.21 (`torch_cka.CKA(...).compare(dataloader1, dataloader2)`), in one run on the same
models, images and batches. Prints wall and CPU time, peak memory, the ratios (ours / peer) and the largest
difference between the two CKA matrices. Not a test.

    cd bench && ../.venv/bin/python compare.py [--images 2000] [--batch 100] [--size 64] [--threads 1] [--repeat 1]
                                               [--sides forwards,ours,peer,peer_no_grad,peer_f64]

Models: two torchvision ResNet-18s with random weights (`resnet18(weights=None)` after torch.manual_seed(0) and (1)),
in eval mode. Layers (the peer's naming, `named_modules` names): conv1, layer1, layer2, layer3, layer4, avgpool, fc
— 7 × 7 pairs. Images: `--images` N(0, 1) random images (seeded; the same for every side) of `--size` px: 64 rather
than ResNet's 224 so that 2 000 images through two ResNets fit in minutes on a CPU (conv1's output is still
64 × 32 × 32 = 65 536 features an image). Batches of `--batch` in order, so both sides see identical minibatches.

Each side runs in its own `multiprocessing` spawn child (a fresh interpreter: its ru_maxrss is its own peak RSS,
torch's allocations included, which tracemalloc would not see); the child builds models and images, notes its peak
RSS so far, runs, and reports the peak again, its wall and CPU seconds. Sides, one after another:
- forwards only: both models over the batches with the same hooks, no CKA (what every side pays anyway);
- ours: MinibatchCKA fed by forward hooks, one pass, under torch.no_grad(); Gram matrices of the batch-centred
  features in float32, the HSIC terms and sums in float64, one Gram matrix per layer and batch;
- torch-cka: as its README calls it. What it computes (torch_cka/cka.py, read for this): for each batch,
  `K = X Xᵀ` of the uncentred flattened features, diagonal zeroed, and the unbiased HSIC of Song et al. 2012 in
  Nguyen et al. 2021's form (`_HSIC`, "Eq (3)" of arXiv 2010.15327), each term divided by the number of batches and
  summed; CKA = mean HSIC(K, L) / sqrt(mean HSIC(K, K) · mean HSIC(L, L)) — the same estimator as ours. But in
  float32 (the features' dtype and a float32 accumulator), with L = Y Yᵀ recomputed for every (i, j) pair (n_a · n_b
  Gram matrices a batch instead of n_a + n_b), and `compare` does not disable autograd, so each batch's forward
  graph (and the HSIC arithmetic's) is kept until the next batch replaces the features;
- torch-cka under torch.no_grad(): the same call inside `with torch.no_grad():`, to separate autograd's share;
- torch-cka with its `_HSIC` in float64 (a subclass with the same formula, under no_grad), to separate float32's
  share of the difference. The unbiased HSIC of uncentred Gram matrices adds and subtracts terms that grow with the
  features' mean; deep ReLU features of random images have a mean several times their spread across the batch (here
  |mean| / spread ≈ 3 at layer1 to ≈ 8 at avgpool and fc), so the terms cancel to a small fraction of their size and
  float32 leaves errors of the order of 0.1 in CKA. Ours centres each batch's features first, which leaves the
  unbiased HSIC unchanged in exact arithmetic (the estimator is invariant to K_ij → K_ij + a_i + a_j + c) and takes
  the cancellation away.
Other things seen in torch-cka 0.21's code: it registers its hooks at construction and never removes them; it
orders the features by the order the hooks fire, not by the layers list (the same here); a last batch of 3 examples
divides by zero (N (N − 3)); `pip install torch-cka==0.21` declares no dependencies, though it imports tqdm (which
comes here with torch-lucent, in the same `bench` extra) and matplotlib (a dependency of ours).
Seen in this benchmark: torch-cka runs faster with autograd on than under no_grad (repeatably, by ~1 CPU s in 1 000
images, while a bare ResNet forward costs the same either way); not investigated (allocation pattern, perhaps).
The peer's own progress bar is turned off (TQDM_DISABLE=1). The machine may be shared: the load average is printed
at the start and after each side; CPU seconds are less sensitive to load than wall seconds.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time

import numpy as np

LAYERS = ["conv1", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
SIDES = {
    "forwards": "forwards only (no CKA)",
    "ours": "ours (MinibatchCKA)",
    "peer": "torch-cka 0.21",
    "peer_no_grad": "torch-cka 0.21 + no_grad",
    "peer_f64": "torch-cka, float64 _HSIC",
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _setup(args):
    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(torchvision.models.resnet18(weights=None).eval())
    images = torch.randn(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(2))
    return nets, images


def _hooked(net, store: dict):
    return [net.get_submodule(name).register_forward_hook(
        lambda module, inputs, output, name=name: store.__setitem__(name, output)) for name in LAYERS]


def _forwards(nets, images, batch: int, cka=None) -> None:
    import torch

    stores = [{}, {}]
    for net, store in zip(nets, stores):
        _hooked(net, store)
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start:start + batch]
            for net in nets:
                net(x)
            if cka is not None:
                cka.update([stores[0][n] for n in LAYERS], [stores[1][n] for n in LAYERS])
            stores[0].clear()
            stores[1].clear()


def _ours(nets, images, batch: int) -> np.ndarray:
    from generator.similarity import MinibatchCKA  # imported before the clock starts (see _child)

    cka = MinibatchCKA(len(LAYERS), len(LAYERS))
    _forwards(nets, images, batch, cka)
    return cka.result()


def _peer(nets, images, batch: int, no_grad: bool, float64: bool = False) -> np.ndarray:
    import contextlib

    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from torch_cka import CKA  # imported before the clock starts (see _child)

    class CKA64(CKA):
        """torch-cka with its `_HSIC` (the same formula, copied) in float64; its Gram matrices stay float32."""

        def _HSIC(self, K, L):
            K, L = K.double(), L.double()
            N = K.shape[0]
            ones = torch.ones(N, 1, dtype=torch.float64, device=K.device)
            result = torch.trace(K @ L)
            result += ((ones.t() @ K @ ones @ ones.t() @ L @ ones) / ((N - 1) * (N - 2))).item()
            result -= ((ones.t() @ K @ L @ ones) * 2 / (N - 2)).item()
            return (1 / (N * (N - 3)) * result).item()

    loader = DataLoader(TensorDataset(images), batch_size=batch, shuffle=False)
    cka = (CKA64 if float64 else CKA)(nets[0], nets[1], model1_name="ResNet-18 seed 0", model2_name="ResNet-18 seed 1",
              model1_layers=LAYERS, model2_layers=LAYERS, device="cpu")
    with torch.no_grad() if no_grad else contextlib.nullcontext():
        cka.compare(loader, loader)
    out = cka.export()
    assert out["model1_layers"] == LAYERS and out["model2_layers"] == LAYERS, out["model1_layers"]
    return out["CKA"].detach().double().numpy()


def _child(side: str, args, queue) -> None:
    os.environ["TQDM_DISABLE"] = "1"  # the peer's progress bar
    if side == "ours":
        import generator.similarity  # noqa: F401
    elif side.startswith("peer"):
        import torch_cka  # noqa: F401  (imports matplotlib and tqdm)
    nets, images = _setup(args)
    before, cpu = _peak_mib(), _cpu_seconds()
    start = time.perf_counter()
    if side == "forwards":
        _forwards(nets, images, args.batch)
        matrix = None
    elif side == "ours":
        matrix = _ours(nets, images, args.batch)
    else:
        matrix = _peer(nets, images, args.batch, no_grad=side != "peer", float64=side == "peer_f64")
    seconds = time.perf_counter() - start
    queue.put(dict(seconds=seconds, cpu=_cpu_seconds() - cpu, before=before, peak=_peak_mib(), matrix=matrix))


def run_side(side: str, args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(side, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    if proc.exitcode:
        raise RuntimeError(f"{side}: child exited with {proc.exitcode}")
    return out


def _matrix(title: str, m: np.ndarray) -> None:
    print(f"\n{title} (rows: model A = seed 0, columns: model B = seed 1)")
    print(" " * 9 + "".join(f"{n:>9}" for n in LAYERS))
    for name, row in zip(LAYERS, m):
        print(f"{name:>9}" + "".join(f"{v:9.4f}" for v in row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--size", type=int, default=64, help="image side in px (64: CPU; ResNet's own is 224)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side, round robin; the best time is kept")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}")
    args = ap.parse_args()
    sides = args.sides.split(",")

    import torch
    print(f"ResNet-18 (random weights, seeds 0 and 1) × 2, {len(LAYERS)} × {len(LAYERS)} layer pairs, "
          f"{args.images} images of {args.size} px, batches of {args.batch}, {args.threads} torch thread(s) per side; "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start",
          flush=True)
    results = {}
    for rep in range(args.repeat):  # round robin, so that a busy spell of the machine hits every side alike
        for side in sides:
            r = run_side(side, args)
            print(f"  {SIDES[side]}: {r['seconds']:.1f} s, {r['cpu']:.1f} s CPU, load average "
                  f"{os.getloadavg()[0]:.2f} after", flush=True)
            if side in results:  # best time of the repeats; the highest peak
                best = results[side]
                r = dict(r, seconds=min(r["seconds"], best["seconds"]), cpu=min(r["cpu"], best["cpu"]),
                         peak=max(r["peak"], best["peak"]), before=min(r["before"], best["before"]))
            results[side] = r
    base = results.get("forwards", {}).get("cpu")

    ours = results.get("ours", {}).get("matrix")
    print(f"\n{'side' + (f' (best of {args.repeat})' if args.repeat > 1 else ''):<26}{'wall s':>8}{'CPU s':>8}"
          f"{'CPU - fwd':>10}{'peak RSS MiB':>14}{'+ in run MiB':>14}{'max |Δ| vs ours':>17}")
    for side in sides:
        r = results[side]
        delta = ("" if r["matrix"] is None or ours is None or side == "ours"
                 else f"{np.abs(r['matrix'] - ours).max():.2e}")
        extra = "" if base is None or side == "forwards" else f"{r['cpu'] - base:.1f}"
        print(f"{SIDES[side]:<26}{r['seconds']:8.1f}{r['cpu']:8.1f}{extra:>10}{r['peak']:14.0f}"
              f"{r['peak'] - r['before']:14.0f}{delta:>17}")
    print("(CPU - fwd: CPU seconds beyond the forward passes; + in run: peak RSS growth during the timed run)")
    if "ours" in results:
        o = results["ours"]
        for side in ("peer", "peer_no_grad"):
            if side in results:
                p = results[side]
                beyond = ("" if base is None
                          else f", CPU beyond the forwards {(o['cpu'] - base) / (p['cpu'] - base):.2f}")
                print(f"ours / {SIDES[side]}: wall {o['seconds'] / p['seconds']:.2f}, CPU {o['cpu'] / p['cpu']:.2f}"
                      f"{beyond}, peak RSS {o['peak'] / p['peak']:.2f}, RSS added in the run "
                      f"{(o['peak'] - o['before']) / max(p['peak'] - p['before'], 1e-9):.2f}")
    if ours is not None:
        _matrix("CKA, ours", ours)
        for side in ("peer", "peer_no_grad", "peer_f64"):
            if side in results:
                _matrix(f"{SIDES[side]} − ours", results[side]["matrix"] - ours)
                break
    print(f"\nload average {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min) at the end")


if __name__ == "__main__":
    main()
