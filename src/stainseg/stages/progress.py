"""The progress bar of the file stages, with a time-left estimate that leaves the start-up out.

A 10-frame time-lapse (16.4 s a frame) showed 4:34 left after its first frame for an actual 2:13.
Two things made it read long. The overlapped serial pipeline counted a frame only when the next
frame's computation had ended, so the first count held two frames' computation (fixed in
:func:`stainseg.stages.parallel.map_tasks`: a frame counts when its outputs are written). And the
first item carries the start-up (first reads and imports, the engine's first run), which a rate of
``done / elapsed``, or tqdm's moving average that starts from that first interval, spreads over
every item left. :class:`Eta` measures the rate from the first completion on, once a later one is
there; with ``parallel`` workers, from the ``parallel``-th completion (each worker pays its own
start-up). After the first item alone the estimate still includes the start-up and errs long
(measured on 6 frames of 1024² with a random-weight model: 13.3 s shown for 5.2 s left; from the
second frame on 4.6 / 3.1 / 2.1 / 1.1 s shown for 4.0 / 3.1 / 2.0 / 0.9 s left).

Examples
--------
>>> ticks = iter([0.0, 10.0, 14.0])          # start, then two items done
>>> eta = Eta(total=10, clock=lambda: next(ticks))
>>> eta.update(); eta.remaining()           # 10 s for the first item, start-up included
90.0
>>> eta.update(); eta.remaining()           # 4 s per item since: 8 left
32.0
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Optional

from tqdm import tqdm

__all__ = ["Eta", "ProgressBar", "progress_bar"]


class Eta:
    """Items per second and seconds left of a batch, from the times its items complete.

    Parameters
    ----------
    total : int
        Items in the batch.
    clock : callable
        Seconds, monotonic (``time.monotonic``; a fake one in tests). Read at construction (the start)
        and at every :meth:`update`.
    parallel : int
        Items in flight at once (workers). The first ``parallel`` completions carry the start-up;
        the rate is measured from the ``parallel``-th completion once a later one is done.

    Notes
    -----
    Until more than ``parallel`` items are done the rate is ``done / (last completion - start)``:
    start-up included, so the first estimate errs long. After that it is
    ``(done - parallel) / (last completion - parallel-th completion)``.
    """

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic, parallel: int = 1) -> None:
        self.total = int(total)
        self.clock = clock
        self.parallel = max(1, int(parallel))
        self.start = clock()
        self.done = 0
        self.last: Optional[float] = None
        self.warm: Optional[float] = None
        """When the ``parallel``-th item completed (the end of the start-up), or None."""
        self.warm_count = 0

    def update(self, n: int = 1) -> None:
        """Count ``n`` items completed now."""
        now = self.clock()
        self.done += int(n)
        if self.warm is None and self.done >= self.parallel:
            self.warm, self.warm_count = now, self.done
        self.last = now

    def rate(self) -> Optional[float]:
        """Items per second (None before the first completion or when no time has passed)."""
        if not self.done or self.last is None:
            return None
        if self.warm is not None and self.done > self.warm_count and self.last > self.warm:
            return (self.done - self.warm_count) / (self.last - self.warm)
        span = self.last - self.start
        return self.done / span if span > 0 else None

    def remaining(self) -> Optional[float]:
        """Seconds left at :meth:`rate` (None while it is unknown)."""
        rate = self.rate()
        return None if rate is None else max(self.total - self.done, 0) / rate


class ProgressBar(tqdm):
    """tqdm whose rate (and so its time left) is :class:`Eta`'s; :meth:`update` is safe from several threads."""

    def __init__(self, *args: Any, eta: Eta, **kwargs: Any) -> None:
        self.eta = eta
        self._count_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def update(self, n: float = 1) -> Optional[bool]:
        with self._count_lock:
            self.eta.update(int(n))
            return super().update(n)

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        rate = self.eta.rate()
        if rate is not None:
            d["rate"] = rate
        return d


def progress_bar(total: int, desc: str = "", disable: bool = False, parallel: int = 1, unit: str = "set",
                 clock: Callable[[], float] = time.monotonic, file: Any = None) -> ProgressBar:
    """The bar of a batch of ``total`` items on stderr (:class:`ProgressBar`; created when the work starts).

    Examples
    --------
    >>> import io
    >>> ticks = iter([0.0, 10.0, 14.0])
    >>> bar = progress_bar(10, "segment", clock=lambda: next(ticks), file=io.StringIO())
    >>> _ = bar.update(), bar.update()
    >>> "<00:32" in str(bar)
    True
    >>> bar.close()
    """
    return ProgressBar(total=total, desc=desc, disable=disable, unit=unit, file=file if file is not None else sys.stderr,
                       eta=Eta(total, clock, parallel))
