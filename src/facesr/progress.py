"""Progress of a long loop: a tqdm bar on a terminal, plain lines in a log (DVC, KFP, CI).

A tqdm bar writes a carriage-return update many times a second; in a file that becomes hundreds of KB of one line.
``progress(total, ...)`` gives the bar only when stderr is a terminal; otherwise it writes one plain line every
``every`` items (default: about 20 lines per loop) and a last one when the loop ends.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

LINES_PER_LOOP = 20


class PlainProgress:
    """The tqdm calls facesr uses (``update``, ``set_postfix``, ``close``), as a plain line every ``every`` items."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it", every: int | None = None,
                 stream: TextIO | None = None) -> None:
        self.total, self.n, self.initial, self.desc, self.unit = int(total), int(initial), int(initial), desc, unit
        self.every = max(1, every if every is not None else -(-max(self.total, 1) // LINES_PER_LOOP))
        self.stream = stream
        self.postfix: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        self._last = self.n

    def set_postfix(self, postfix: dict[str, Any] | None = None, refresh: bool = False, **kw: Any) -> None:
        self.postfix = {**(postfix or {}), **kw}

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n - self._last >= self.every or self.n >= self.total:
            self._write()

    def _write(self) -> None:
        self._last = self.n
        rate = (self.n - self.initial) / max(time.perf_counter() - self.t0, 1e-9)
        post = " ".join(f"{k}={v}" for k, v in self.postfix.items())
        stream = self.stream or sys.stderr
        print(f"{self.desc}: {self.n}/{self.total} {self.unit} ({rate:.2f} {self.unit}/s){' ' + post if post else ''}",
              file=stream, flush=True)

    def close(self) -> None:
        if self.n != self._last:
            self._write()


def progress(total: int, initial: int = 0, desc: str = "", unit: str = "it", disable: bool = False,
             every: int | None = None) -> Any:
    """A tqdm bar when stderr is a terminal, else ``PlainProgress``; ``disable`` gives a silent one."""
    if disable:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, disable=True)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
    return PlainProgress(total, initial, desc, unit, every)
