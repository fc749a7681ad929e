"""`convscope build|validate|schema|serve`: parse arguments, wire the stages, print one-line errors."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from generator import __version__
from generator.errors import ConvscopeError, SpecErrors, cannot_write
from generator.build import BuildOptions, build
from generator.checks import ReportSpec, json_schema, prepare


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convscope", description="Build a browsable report of what is inside a CNN.")
    p.add_argument("--version", action="version", version=f"convscope {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="run the techniques and write the pages (and the site with --site)")
    s = sub.add_parser("serve", help="build, then preview the site with mkdocs serve")
    for cmd in (b, s):
        cmd.add_argument("spec", nargs="?", default="reports.yml", type=Path)
        cmd.add_argument("--only", type=_csv, help="techniques to run, comma-separated (others come from the cache)")
        cmd.add_argument("--models", type=_csv, help="models to run, comma-separated (others come from the cache)")
        cmd.add_argument("--skip", type=_csv, help="models to leave out of this build entirely, or data sets to leave out "
                                                    "(their models' data-set views then say they do not apply), comma-separated")
        cmd.add_argument("--device", help="override the spec's device: auto, cpu, cuda, cuda:N, mps")
        cmd.add_argument("--executor", metavar="local|ray[:ADDRESS]",
                         help="where jobs run: here (local) or on Ray, a local one or the cluster at ADDRESS "
                              "(overrides the spec's executor and ray.address)")
        cmd.add_argument("--force", action="store_true", help="ignore the cache and recompute")
        cmd.add_argument("--quick", action="store_true", help="smaller sizes and fewer steps, for previews and tests")
        cmd.add_argument("--mkdocs", type=Path, help="MkDocs config (default: mkdocs.yml beside the spec)")
    b.add_argument("--site", type=Path, help="also run `mkdocs build --strict` into this folder")
    for cmd in (b, s):
        cmd.add_argument("--no-data", dest="data", action="store_false",
                         help="leave the data files (.npz) out of the site; they stay in the output folder")
    s.add_argument("--addr", default="127.0.0.1:8000", help="address for mkdocs serve")
    v = sub.add_parser("validate", help="check a spec, its files, models and layers without running anything")
    v.add_argument("spec", nargs="?", default="reports.yml", type=Path)
    sub.add_parser("schema", help="print the spec's JSON Schema (for editor completion)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser().parse_args(argv)
    args.argv = argv
    console = Console(stderr=True)
    try:
        return _dispatch(args, console)
    except SpecErrors as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except ConvscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `convscope schema | head`
        return 0
    except OSError as exc:
        if not cannot_write(exc):
            raise
        where = exc.filename or "the output"
        print(f"error: {where}: cannot write ({exc.strerror}); the previous report and site were left as they were",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the previous report and site were left as they were", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, console: Console) -> int:
    if args.command == "schema":
        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.command == "validate":
        spec = ReportSpec.load(args.spec)
        prepared = prepare(spec, pretrained=False)
        n_images = sum(len(v) for v in prepared.images.values())
        n_data = sum(len(d) for d in prepared.datasets.values())
        print(f"{args.spec}: ok ({len(prepared.models)} model(s), {n_images} image(s)"
              + (f", {len(prepared.datasets)} data set(s) of {n_data} images" if prepared.datasets else "") + ")")
        return 0
    options = BuildOptions(only=args.only, models=args.models, skip=args.skip, device=args.device, executor=args.executor, force=args.force,
                           quick=args.quick, site=getattr(args, "site", None), mkdocs_config=args.mkdocs,
                           data=args.data, command=["convscope", *args.argv])
    code = build(args.spec, options, console)
    if args.command == "serve":
        config = args.mkdocs or args.spec.parent / "mkdocs.yml"
        return subprocess.call([sys.executable, "-m", "mkdocs", "serve", "-f", str(config), "-a", args.addr])
    return code


if __name__ == "__main__":
    raise SystemExit(main())
