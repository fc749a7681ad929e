"""The weight of a built site as a reader's browser meets it: the whole folder by kind of file, and each page with
the figures it shows (its HTML plus every local <img>; the theme's shared CSS and JS are counted once, in the
total). Exits 1 when the site or a page is over its budget.

    .venv/bin/python scripts/site_weight.py site [--site-mb 40] [--page-mb 3]
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlparse

MB = 1e6
_IMG = re.compile(r'<img\b[^>]*\bsrc="([^"]+)"')


def page_weights(site: Path) -> list[tuple[int, str]]:
    """(bytes, page) for every HTML page: the page and the local images it shows, each image counted once."""
    weights = []
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8", errors="replace")
        images = {(page.parent / unquote(urlparse(src).path)).resolve() for src in _IMG.findall(html)
                  if not urlparse(src).scheme}
        weights.append((page.stat().st_size + sum(p.stat().st_size for p in images if p.is_file()),
                        page.relative_to(site).as_posix()))
    return sorted(weights, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, nargs="?", default=Path("site"))
    parser.add_argument("--site-mb", type=float, default=40.0, help="budget for the whole site (MB, 10^6 bytes)")
    parser.add_argument("--page-mb", type=float, default=3.0, help="budget for a page with its images (MB)")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"error: {args.site}: no built site (index.html missing)", file=sys.stderr)
        return 2
    files = [p for p in args.site.rglob("*") if p.is_file()]
    by_kind: Counter[str] = Counter()
    for p in files:
        by_kind[p.suffix.lower() or p.name] += p.stat().st_size
    total = sum(by_kind.values())
    pages = page_weights(args.site)
    print(f"site {args.site}: {total / MB:.1f} MB in {len(files)} files, {len(pages)} pages")
    print("  " + ", ".join(f"{kind} {size / MB:.1f} MB" for kind, size in by_kind.most_common(8)))
    print("heaviest pages with their images:")
    for size, page in pages[:5]:
        print(f"  {size / MB:5.2f} MB  {page}")
    over = [f"the site is {total / MB:.1f} MB (budget {args.site_mb:g} MB)"] if total > args.site_mb * MB else []
    over += [f"{page} is {size / MB:.2f} MB with its images (budget {args.page_mb:g} MB)"
             for size, page in pages if size > args.page_mb * MB]
    for line in over:
        print(f"over budget: {line}", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
