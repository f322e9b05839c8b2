"""The time left on the file stages' progress bar: start-up left out, tasks counted when their outputs are written.

Measured before (docs/results.md): a 10-frame time-lapse at 16.4 s a frame showed 4:34 left after its first frame
for an actual 2:13. These tests use a fake clock (no timings).
"""

from __future__ import annotations

import io
import threading
import time

import pytest

from stainseg.stages import parallel
from stainseg.stages.progress import Eta, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_item_start_up_is_left_out_once_a_second_is_done() -> None:
    clock = FakeClock()
    eta = Eta(total=10, clock=clock)
    assert eta.rate() is None and eta.remaining() is None
    clock.now = 30.0  # the first frame: 14 s of start-up (session, warm-up, first read) + 16 s
    eta.update()
    assert eta.remaining() == pytest.approx(9 * 30.0)  # nothing else known yet: errs long
    for k in range(2, 11):
        clock.now = 30.0 + 16.0 * (k - 1)
        eta.update()
        assert eta.rate() == pytest.approx(1 / 16.0)
        assert eta.remaining() == pytest.approx((10 - k) * 16.0)  # the truth at every later frame
    assert eta.remaining() == 0.0


def test_the_rate_follows_a_change_of_pace_after_the_start() -> None:
    clock = FakeClock()
    eta = Eta(total=5, clock=clock)
    for t in (20.0, 24.0, 32.0):  # 4 s, then 8 s a frame
        clock.now = t
        eta.update()
    assert eta.rate() == pytest.approx(2 / 12.0) and eta.remaining() == pytest.approx(2 * 6.0)


def test_parallel_workers_each_pay_their_start_up() -> None:
    """Two workers finish their first tasks together (each after its own start-up); the rate starts from the second."""
    clock = FakeClock()
    eta = Eta(total=8, clock=clock, parallel=2)
    clock.now = 10.0
    eta.update()
    clock.now = 10.5
    eta.update()
    assert eta.remaining() == pytest.approx(6 * 10.5 / 2)  # start-up included until a third is done
    for t in (14.0, 14.5):  # 4 s a task per worker: 0.5 task/s together
        clock.now = t
        eta.update()
    assert eta.rate() == pytest.approx(2 / 4.0) and eta.remaining() == pytest.approx(4 / 0.5)


def test_the_bar_shows_the_eta_time_left() -> None:
    clock = FakeClock()
    out = io.StringIO()
    bar = progress_bar(10, "segment", clock=clock, file=out)
    clock.now = 30.0
    bar.update(1)
    clock.now = 46.0
    bar.update(1)
    assert bar.format_dict["rate"] == pytest.approx(1 / 16.0)
    assert "2/10" in str(bar) and "<02:08" in str(bar)  # 8 frames x 16 s, not tqdm's own average
    bar.close()


def test_overlapped_run_counts_a_task_when_its_outputs_are_written(monkeypatch) -> None:
    """The serial pipeline computes task i+1 while task i finishes: task i must count as soon as its finish stage ends,
    not when task i+1's computation does (the bar then lagged a task and its first time-left covered two)."""
    bars = []

    def recording_bar(*args, **kwargs):
        bars.append(progress_bar(*args, **{**kwargs, "file": io.StringIO()}))
        return bars[-1]

    monkeypatch.setattr(parallel, "progress_bar", recording_bar)
    seen: dict[int, int] = {}

    def load(task):
        return dict(task)

    def compute(state):
        if state["i"] == 1:  # wait (at most 10 s, a guard only) for task 0 to show as done while task 1 computes
            deadline = time.monotonic() + 10.0
            while bars[0].n < 1 and time.monotonic() < deadline:
                time.sleep(0.005)
        seen[state["i"]] = bars[0].n
        return state

    def finish(state):
        return {"i": state["i"], "thread": threading.current_thread().name}

    tasks = [{"i": i} for i in range(4)]
    result = parallel.map_tasks(lambda t: finish(compute(load(t))), tasks, [f"t{i}" for i in range(4)],
                                stages=(load, compute, finish))
    assert [r["i"] for r in result.results] == [0, 1, 2, 3] and not result.failed
    assert seen[0] == 0 and seen[1] == 1  # task 0 counted while task 1 was still computing
    assert bars[0].n == 4 and bars[0].eta.done == 4
