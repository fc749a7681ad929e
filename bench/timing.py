"""Timing shared by the benchmarks: best of several runs, with CUDA synchronized around each."""
from __future__ import annotations

import time

import torch


def timed(fn, repeat: int = 1):
    """(best seconds of `repeat` runs, the last result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out
