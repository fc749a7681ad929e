"""What a build prints while it runs. On a terminal: a bar for all jobs and one for the technique running, with its
time left. Elsewhere (a CI log, a file): a line when each technique finishes, and while a long one runs a line at
most every `interval` seconds, e.g. `[12/25] efficientnet-lite0 style_transfer 0/1, 62 s`, so a log shows where a
build is without a terminal's redrawn bar."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

INTERVAL = 30.0  # seconds between two lines of a long step in a log


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class StageProgress:
    """Progress of one stage (jobs, figures) made of steps (a model's technique), each a number of items.
    `begin(label, total)` starts a step, `advance(n)` counts its items, `note(text)` says what a step is doing
    inside one item (a data-set pass); `close()` ends the stage."""

    def __init__(self, console: Console, name: str, steps: int, items: int, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic, terminal: bool | None = None):
        self.console, self.name, self.steps, self.interval, self.clock = console, name, steps, interval, clock
        self.terminal = console.is_terminal if terminal is None else terminal
        self.step = 0
        self.label: str | None = None
        self.total = self.done = self.ran = self.left_out = 0
        self.detail = ""
        self.started = self.last_line = clock()
        self.stage_started = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar: Progress | None = None
        if self.terminal:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
            self._all = self._bar.add_task(name, total=items)
            self._current: TaskID | None = None
            self._bar.start()
        else:
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()

    def begin(self, label: str, total: int) -> None:
        with self._lock:
            self._end_step()
            self.step += 1
            self.label, self.total, self.done, self.ran, self.left_out, self.detail = label, total, 0, 0, 0, ""
            self.started = self.last_line = self.clock()
            if self._bar is not None:
                if self._current is not None:
                    self._bar.remove_task(self._current)
                self._current = self._bar.add_task(self._prefix(), total=total)

    def advance(self, n: int, how: str = "ran") -> None:
        """Count n items of the step as done: `ran`, `cached`, or `left out` (outside --only/--models, not cached)."""
        with self._lock:
            self.done += n
            self.ran += n if how == "ran" else 0
            self.left_out += n if how == "left out" else 0
            if self._bar is not None:
                self._bar.advance(self._all, n)
                if self._current is not None:
                    self._bar.advance(self._current, n)

    def note(self, text: str) -> None:
        with self._lock:
            self.detail = text
            if self._bar is not None and self._current is not None:
                self._bar.update(self._current, description=f"{self._prefix()} {text}")

    def close(self) -> None:
        with self._lock:
            self._end_step()
            self.label = None
        self._stop.set()
        if self._bar is not None:
            self._bar.stop()
        self.console.print(f"{self.name}: done in {duration(self.clock() - self.stage_started)}", highlight=False)

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _prefix(self) -> str:
        return f"[{self.step}/{self.steps}] {self.label}"

    def _status(self, now: float) -> str:
        """`[3/25] model technique 4/12, 62 s, ETA ~2 min`: the ETA from this step's own pace, once it has one."""
        elapsed = now - self.started
        text = f"{self._prefix()} {self.done}/{self.total}, {duration(elapsed)}"
        if self.detail:
            text += f" ({self.detail})"
        if 0 < self.ran and self.done < self.total:
            text += f", ETA ~{duration(elapsed / self.ran * (self.total - self.done))}"
        return text

    def _end_step(self) -> None:
        if self.label is None or self.terminal:
            return
        took = self.clock() - self.started
        how = duration(took) if self.ran else "cached" if not self.left_out else (
            f"{self.done - self.left_out} cached, {self.left_out} left out (--only/--models)")
        self.console.print(f"{self._prefix()} {self.done}/{self.total}, {how}", highlight=False, markup=False)

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(self.interval, 1.0)):
            self.tick()

    def tick(self) -> None:
        """Print the running step's status if it has been quiet for `interval` seconds (logs only)."""
        with self._lock:
            now = self.clock()
            if self.label is not None and now - self.last_line >= self.interval:
                self.last_line = now
                self.console.print(self._status(now), highlight=False, markup=False)


class NoProgress:
    """For callers that show no progress (tests, benchmarks)."""

    def begin(self, label: str, total: int) -> None:
        pass

    def advance(self, n: int, how: str = "ran") -> None:
        pass

    def note(self, text: str) -> None:
        pass
