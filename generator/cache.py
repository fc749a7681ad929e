"""Content-addressed store of artifacts: arrays in .npz, metadata in .json (never pickle)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from generator.artifacts import Artifact
from generator.errors import one_line


def cache_key(**parts: Any) -> str:
    """A stable digest of everything a result depends on (model digest, technique, version, params, inputs)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.unreadable: list[str] = []  # "file: why" of each entry found torn or corrupt (then recomputed)

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.npz", folder / f"{key}.json"

    def get(self, key: str) -> Artifact | None:
        npz, meta = self._paths(key)
        if not (npz.is_file() and meta.is_file()):
            return None
        try:
            with np.load(npz, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            info = json.loads(meta.read_text())
            order = info.get("order", list(arrays))
            return Artifact({k: arrays[k] for k in order}, info["meta"])
        except Exception as exc:  # a torn or corrupt entry is a miss, recomputed and overwritten
            self.unreadable.append(f"{npz.parent.name}/{npz.stem}: {one_line(exc)}")
            return None

    def put(self, key: str, art: Artifact) -> None:
        npz, meta = self._paths(key)
        npz.parent.mkdir(parents=True, exist_ok=True)
        _atomic(npz, lambda f: np.savez(f, **art.arrays))
        _atomic(meta, lambda f: f.write(json.dumps({"order": list(art.arrays), "meta": art.meta}).encode()))


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
