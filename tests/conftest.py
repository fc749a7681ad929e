"""Shared fixtures. The helpers they use (tiny CNNs, tiny pictures, specs in tmp_path with a tmp cache) live in
tests/helpers.py, which tests import directly. Nothing here downloads anything or needs a GPU."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from helpers import make_project


@pytest.fixture(scope="module")
def one_thread():
    """For modules of many small optimizations: on a shared 2-core machine two intra-op threads make such runs many
    times slower (the modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _forget_factory_modules():
    """Factory modules are imported by name; each test writes its own `tinymod.py`, so forget earlier ones."""
    for name in ("tinymod", "badmod", "brokenmod"):
        sys.modules.pop(name, None)
    yield
    for name in ("tinymod", "badmod", "brokenmod"):
        sys.modules.pop(name, None)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)
