"""What a build prints where no terminal redraws a bar (a CI log): a line per finished technique, and a status
line at most every `interval` seconds while a long one runs."""
from __future__ import annotations

import io

from rich.console import Console

from generator.progress import StageProgress, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def log_progress(steps: int, items: int) -> tuple[StageProgress, Clock, io.StringIO]:
    out = io.StringIO()
    clock = Clock()
    console = Console(file=out, width=200, force_terminal=False)
    # A long interval keeps the heartbeat thread quiet: the test ticks by hand on its own clock.
    return StageProgress(console, "jobs", steps, items, interval=30, clock=clock), clock, out


def test_a_log_gets_a_line_per_finished_technique_and_a_status_every_30_s():
    progress, clock, out = log_progress(steps=2, items=5)
    progress.begin("tiny filters", 2)
    progress.advance(2, "cached")
    progress.begin("tiny style_transfer", 3)
    clock.now = 20
    progress.advance(1)
    progress.tick()  # 20 s into the step: too soon for a line
    assert "style_transfer" not in out.getvalue()
    clock.now = 31
    progress.tick()
    clock.now = 40
    progress.tick()  # 9 s after the last line: nothing
    clock.now = 61
    progress.note("features fashion: 300/1000")
    progress.tick()
    clock.now = 90
    progress.advance(2)
    progress.close()
    lines = out.getvalue().strip().splitlines()
    assert lines == [
        "[1/2] tiny filters 2/2, cached",
        "[2/2] tiny style_transfer 1/3, 31 s, ETA ~62 s",
        "[2/2] tiny style_transfer 1/3, 61 s (features fashion: 300/1000), ETA ~2 min",
        "[2/2] tiny style_transfer 3/3, 2 min",
        "jobs: done in 2 min",
    ]


def test_durations_read_as_a_person_would_say_them():
    assert [duration(s) for s in (4.2, 89, 131, 3 * 3600)] == ["4 s", "89 s", "2 min", "3.0 h"]
