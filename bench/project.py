"""A copy of the repository's report project in a temporary folder, for benchmarks that build the default report:
the spec (its relative paths made absolute, its output inside the copy's site_src so MkDocs publishes it, a cache of
its own), mkdocs.yml, site_src without its reports, and the MkDocs hooks."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCE_PREFIX = re.compile(r"^(skimage|sklearn|dataset):")


def absolute(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def absolutize(data: dict, base: Path) -> dict:
    """The spec's relative paths (image files and globs, data-set folders, checkpoints, label files) made absolute,
    so the copy in the temporary folder finds what the original does."""
    for name, entries in (data.get("images") or {}).items():
        data["images"][name] = [e if SOURCE_PREFIX.match(e) else absolute(e, base) for e in entries]
    for ds in (data.get("datasets") or {}).values():
        for key in ("root", "folder", "glob"):
            if isinstance(ds.get(key), str):
                ds[key] = absolute(ds[key], base)
    for ms in data.get("models") or []:
        for key in ("checkpoint", "labels"):
            if isinstance(ms.get(key), str):
                ms[key] = absolute(ms[key], base)
        if isinstance(ms.get("checkpoints"), dict):  # a series: entry → checkpoint file
            ms["checkpoints"] = {k: absolute(v, base) if isinstance(v, str) else v for k, v in ms["checkpoints"].items()}
    return data


def copy_project(folder: Path, spec: Path = ROOT / "reports.yml") -> Path:
    """The project under `folder`; returns its spec's path. Build it with `--site folder/site`."""
    data = absolutize(yaml.safe_load(spec.read_text()), spec.parent)
    data.update(output="site_src/reports", cache="cache")
    shutil.copytree(ROOT / "site_src", folder / "site_src", ignore=shutil.ignore_patterns("reports"))
    shutil.copy(ROOT / "mkdocs.yml", folder / "mkdocs.yml")
    (folder / "generator").mkdir()
    shutil.copy(ROOT / "generator" / "mkdocs_hooks.py", folder / "generator" / "mkdocs_hooks.py")
    path = folder / "reports.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
