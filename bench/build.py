"""How much the cache saves: the default report built cold, rebuilt with nothing changed, and rebuilt after one
technique parameter changed (only that technique's jobs rerun). Prints seconds and ratios; not a test.

    .venv/bin/python bench/build.py [reports.yml]
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from generator.cli import main as convscope

ROOT = Path(__file__).resolve().parent.parent


def timed_build(spec: Path) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    code = convscope(["build", str(spec)])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"build failed with exit code {code}")
    jobs = json.loads((spec.parent / "out" / "build.json").read_text())["jobs"]
    counts = {s: sum(j["status"] == s for j in jobs) for s in ("ran", "cached", "failed")}
    return seconds, counts


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "reports.yml"
    data = yaml.safe_load(source.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.yml"
        data.update(output="out", cache="cache")
        spec.write_text(yaml.safe_dump(data))
        cold, c1 = timed_build(spec)
        warm, c2 = timed_build(spec)
        model = data["models"][0]
        techniques = model.setdefault("techniques", {}) or {}
        techniques["predictions"] = {"top_k": (techniques.get("predictions") or {}).get("top_k", 5) + 1}
        model["techniques"] = techniques
        spec.write_text(yaml.safe_dump(data))
        changed, c3 = timed_build(spec)
        shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
    print(f"\n{'build':<34}{'seconds':>9}{'ran':>6}{'cached':>8}{'vs cold':>9}")
    for name, secs, c in (("cold (empty cache)", cold, c1), ("nothing changed", warm, c2),
                          ("predictions.top_k changed", changed, c3)):
        print(f"{name:<34}{secs:>9.1f}{c['ran']:>6}{c['cached']:>8}{secs / cold:>9.2f}")


if __name__ == "__main__":
    main()
