"""What a report was built from, for `build.json`, every page's footer and the "Reproduce this report" page: the
convscope version (and its git commit when it runs from a checkout), the spec's digest, each model's weights digest,
the Python, torch and torchvision versions, the device, the date, and the command line.

The date is the only field that changes between two builds of the same inputs; it honours SOURCE_DATE_EPOCH (the
reproducible-builds convention), so a CI can pin it too."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import shlex
import subprocess
from pathlib import Path
from typing import Any

import torch
import torchvision

from generator import __version__
from generator.models import LoadedModel

PACKAGE = Path(__file__).resolve().parent


def provenance(spec_path: Path, models: list[LoadedModel], device: str, command: list[str]) -> dict[str, Any]:
    return {
        "convscope": __version__,
        "commit": source_commit(),
        "spec": {"file": spec_path.name, "sha256": hashlib.sha256(spec_path.read_bytes()).hexdigest()},
        "models": {m.name: {"source": m.source, "weights": m.weights} for m in models},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device,
        "date": build_date(),
        "command": shlex.join(command),
    }


def build_date() -> str:
    """Today in UTC (YYYY-MM-DD), or SOURCE_DATE_EPOCH's day when it is set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = (dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch.isdigit()
            else dt.datetime.now(dt.timezone.utc))
    return when.strftime("%Y-%m-%d")


def source_commit() -> str | None:
    """The git commit of the convscope source this runs from ("+dirty" with uncommitted changes to it), or None
    when it is not a git checkout (an installed wheel: the version says it all)."""
    try:
        run = lambda *args: subprocess.run(["git", "-C", str(PACKAGE), *args], capture_output=True, text=True,  # noqa: E731
                                           timeout=10, check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def pip_pin(version: str) -> str:
    """A torch version as pip takes it: local labels such as "+cu128" name the wheel's index, not the release."""
    return version.split("+", 1)[0]
