"""The default report's build time, as `make report` runs it (pages and the MkDocs site): cold (empty cache), rebuilt
with nothing changed, and rebuilt after one technique parameter changed (only that technique's jobs rerun). Prints
each build's stages (loading and checks, jobs, figures, pages, site) and, for the cold build, the seconds of each
technique. Not a test.

With `--executor ray`: one cold build on each executor instead, side by side (each in its own copy, so neither
finds the other's cache), the Ray one on a Ray started for it on this machine, and their ratio.

With `--against REV`: one cold build of the code at git revision REV (a temporary worktree, run by this virtual
environment with the worktree first on PYTHONPATH) and one of the working tree, one after the other in one run,
without the MkDocs site; seconds per technique side by side with their ratio, and the figures stage. `--only`
restricts both to some techniques (e.g. the synthesis family).

    .venv/bin/python bench/build.py [reports.yml] [--keep FOLDER] [--executor ray] [--against REV] [--only KINDS]

The project is copied to a temporary folder (bench/project.py), so the repository's cache and site are untouched.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

from generator.cli import main as convscope
from project import ROOT, copy_project  # bench/project.py (the script's folder is on sys.path)


def timed_build(spec: Path, *extra: str) -> tuple[float, dict]:
    start = time.perf_counter()
    code = convscope(["build", str(spec), "--site", str(spec.parent / "site"), *extra])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"build failed with exit code {code}")
    return seconds, json.loads((spec.parent / "site_src" / "reports" / "build.json").read_text())


def by_technique(build: dict) -> list[tuple[str, float, int]]:
    """(technique, seconds, jobs run), slowest first, summed over models."""
    seconds: dict[str, float] = defaultdict(float)
    ran: dict[str, int] = defaultdict(int)
    for j in build["jobs"]:
        if j["status"] == "ran":
            seconds[j["technique"]] += j["seconds"]
            ran[j["technique"]] += 1
    return sorted(((k, v, ran[k]) for k, v in seconds.items()), key=lambda row: -row[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", type=Path, default=ROOT / "reports.yml")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary one)")
    ap.add_argument("--executor", choices=["ray"], help="compare a cold build on this executor with a local one")
    ap.add_argument("--against", metavar="REV", help="compare a cold build of the code at this git revision")
    ap.add_argument("--only", help="techniques to build, comma-separated (with --against)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.against:
            compare_revisions(folder, args.spec.resolve(), args.against, args.only)
            return
        if args.executor:
            runs = []
            for name in ("local", args.executor):
                (folder / name).mkdir(exist_ok=True)
                spec = copy_project(folder / name, args.spec.resolve())
                runs.append((f"cold, {name}",) + timed_build(spec, "--executor", name))
            report(runs)
            print(f"\n{args.executor} / local, whole build: {runs[1][1] / runs[0][1]:.2f}; jobs stage: "
                  f"{runs[1][2]['stages']['jobs'] / runs[0][2]['stages']['jobs']:.2f}")
            for name, _, build in runs:
                places = defaultdict(set)
                for j in build["jobs"]:
                    if j["where"]:
                        places[j["model"]].add(f"{j['where'].get('ip') or j['where']['node']} pid {j['where']['pid']}")
                print(f"{name}: " + "; ".join(f"{m} on {', '.join(sorted(p))}" for m, p in places.items()))
            return
        spec = copy_project(folder, args.spec.resolve())
        runs = [("cold (empty cache)",) + timed_build(spec), ("nothing changed",) + timed_build(spec)]
        data = yaml.safe_load(spec.read_text())
        techniques = data["models"][0].setdefault("techniques", {})
        techniques["predictions"] = {"top_k": (techniques.get("predictions") or {}).get("top_k", 5) + 1}
        spec.write_text(yaml.safe_dump(data, sort_keys=False))
        runs.append(("predictions.top_k changed",) + timed_build(spec))
        report(runs)


def cold_build(folder: Path, spec_source: Path, code: Path | None, only: str | None) -> tuple[float, dict]:
    """A cold build (no site) of a copy of the project in `folder`, by the generator in `code` (None: as installed)."""
    spec = copy_project(folder, spec_source)
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code)] + [p for p in [env.get("PYTHONPATH")] if p])
    command = [sys.executable, "-m", "generator", "build", str(spec)] + (["--only", only] if only else [])
    start = time.perf_counter()
    subprocess.run(command, cwd=folder, env=env, check=True)
    return time.perf_counter() - start, json.loads((folder / "site_src" / "reports" / "build.json").read_text())


def compare_revisions(folder: Path, spec: Path, rev: str, only: str | None) -> None:
    tree = folder / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True)
    try:
        (folder / "before").mkdir()
        before = cold_build(folder / "before", spec, tree, only)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    (folder / "after").mkdir()
    after = cold_build(folder / "after", spec, ROOT, only)  # ROOT first: the copy holds a generator/ folder of hooks
    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")
    rows_before = {k: s for k, s, _ in by_technique(before[1])}
    rows_after = {k: s for k, s, _ in by_technique(after[1])}
    print(f"{'technique':<34}{rev[:10]:>12}{'this tree':>12}{'ratio':>8}")
    for kind in sorted(rows_before.keys() | rows_after.keys(), key=lambda k: -rows_before.get(k, 0)):
        b, a = rows_before.get(kind, 0.0), rows_after.get(kind, 0.0)
        print(f"{kind:<34}{b:>12.1f}{a:>12.1f}{(a / b if b else float('nan')):>8.2f}")
    total_b, total_a = sum(rows_before.values()), sum(rows_after.values())
    print(f"{'all jobs':<34}{total_b:>12.1f}{total_a:>12.1f}{total_a / total_b:>8.2f}")
    for stage in ("jobs", "figures"):
        b, a = before[1]["stages"].get(stage, 0.0), after[1]["stages"].get(stage, 0.0)
        print(f"{'stage: ' + stage:<34}{b:>12.1f}{a:>12.1f}{(a / b if b else float('nan')):>8.2f}")
    print(f"{'wall (no site)':<34}{before[0]:>12.1f}{after[0]:>12.1f}{after[0] / before[0]:>8.2f}")


def report(runs: list[tuple[str, float, dict]]) -> None:
    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{'build':<28}{'wall s':>8}{'prepare':>9}{'jobs':>8}{'figures':>9}{'pages':>7}{'site':>7}{'ran':>6}"
          f"{'cached':>8}")
    for name, wall, build in runs:
        st = build.get("stages", {})
        site = wall - build["seconds"]  # after build.json was written: the MkDocs site, and the summary
        counts = {s: sum(j["status"] == s for j in build["jobs"]) for s in ("ran", "cached")}
        print(f"{name:<28}{wall:>8.1f}{st.get('prepare', 0):>9.1f}{st.get('jobs', 0):>8.1f}"
              f"{st.get('figures', 0):>9.1f}{st.get('pages', 0):>7.1f}{site:>7.1f}{counts['ran']:>6}{counts['cached']:>8}")
    print("\ncold build, seconds per technique (jobs run, all models):")
    for kind, seconds, n in by_technique(runs[0][2]):
        print(f"  {kind:<34}{seconds:>8.1f}{n:>5}")


if __name__ == "__main__":
    main()
