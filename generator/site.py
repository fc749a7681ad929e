"""Publishing folders: the output and the site are built in a staging folder beside them and swapped in only when
complete, so a crash never leaves them half-written; `build_site` runs `mkdocs build --strict` that way. Builds that
share a cache, an output or a site folder take turns (`folder_locks`)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from rich.console import Console

from generator.errors import ConvscopeError
from generator.progress import duration


def _die_with_the_build() -> None:
    """In the MkDocs child, before it runs (Linux): be killed when the build that started it dies, so that a killed
    build leaves no MkDocs writing on into a staging folder that the next build has already cleared."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1


def staging_folder(prefix: str, parent: Path | None) -> Path:
    """A staging folder that becomes the output: mkdtemp makes it private (0700), but the pages and the site must
    be readable like any folder the user makes (a web server reads them as another user)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    return path


def remove_leftovers(target: Path) -> None:
    """The staging and old copies (`.NAME.*` folders) that a killed build left beside `target`: removed by the next
    build once it holds the folder's lock, so no other build can be using them. A build killed between moving the
    old folder aside and moving the new one in (`replace_folder`) left only the old one: it is put back."""
    old = target.with_name(f".{target.name}.old")
    if old.is_dir() and not target.exists():
        old.rename(target)
    for path in target.parent.glob(f".{target.name}.*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def replace_folder(new: Path, target: Path) -> None:
    """Swap a finished folder into place; the old one is removed only once the new one is there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    shutil.move(str(new), str(target))
    shutil.rmtree(old, ignore_errors=True)


def build_site(config: Path, site: Path, console: Console) -> bool:
    """`mkdocs build --strict` into a temporary folder, swapped into `site` only when it succeeds."""
    if not config.is_file():
        raise ConvscopeError("--site", f"no MkDocs config at {config}")
    site = site.resolve()
    site.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(site)
    tmp = staging_folder(f".{site.name}.", site.parent)
    try:
        if not console.is_terminal:
            console.print("site: mkdocs build --strict …", highlight=False)
        started = time.monotonic()
        with console.status("mkdocs build --strict"):
            proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(config), "-d", str(tmp)],
                                  capture_output=True, text=True,
                                  preexec_fn=_die_with_the_build if sys.platform == "linux" else None)
        if proc.returncode != 0:
            console.print(f"[red]mkdocs build --strict failed; {site} left as it was[/]")
            console.print(proc.stderr.strip() or proc.stdout.strip(), highlight=False, markup=False)
            return False
        replace_folder(tmp, site)
        console.print(f"site → {site} ({duration(time.monotonic() - started)})")
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def folder_locks(folders: list[Path], console: Console) -> Iterator[None]:
    """Hold a lock for each folder a build writes (its cache, output and site) for the whole build: a second build
    on any of them waits, saying which folder and which build's lock file it waits for, and goes on when the first
    is done; neither sees the other's half-written files. Locks are taken in one order, so two builds never wait on
    each other. A lock is a file beside its folder (`.convscope-NAME.lock`), released by the OS if a build is
    killed."""
    with ExitStack() as stack:
        for folder in sorted({f.resolve() for f in folders}):
            folder.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(folder.parent / f".convscope-{folder.name}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                console.print(f"waiting: another build is writing {folder} (lock {lock.lock_file})", highlight=False)
                lock.acquire()
            stack.callback(lock.release)
        yield
