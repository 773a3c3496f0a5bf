"""A dependency-free progress bar for long loops, quiet when not attached to a terminal."""

from __future__ import annotations

import sys
import time
from typing import Dict, Optional


class ProgressBar:
  """`update(n, **live_values)` redraws one line: count, rate, ETA and the live values.

  On a terminal it redraws in place; elsewhere (CI, log files) it prints a line
  every `log_every` seconds so logs stay short.
  """

  def __init__(self, total: int, description: str = "", stream=None, log_every: float = 30.0,
               unit: str = "it"):
    self.total = total
    self.description = description
    self.stream = stream or sys.stderr
    self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.log_every = log_every
    self.unit = unit
    self.count = 0
    self.start = time.perf_counter()
    self._last_print = self.start

  def update(self, count: int = 1, **values: float) -> None:
    self.count += count
    now = time.perf_counter()
    if self.interactive or now - self._last_print >= self.log_every or self.count == self.total:
      self._last_print = now
      self._draw(now, values)

  def _draw(self, now: float, values: Dict[str, float]) -> None:
    elapsed = max(now - self.start, 1e-9)
    rate = self.count / elapsed
    eta = (self.total - self.count) / rate if rate > 0 and self.total else 0.0
    width = 24
    filled = int(width * self.count / self.total) if self.total else width
    live = " ".join(f"{k}={v:.4g}" for k, v in values.items())
    line = (f"{self.description} [{'#' * filled}{'.' * (width - filled)}] {self.count}/{self.total} "
            f"{rate:.1f} {self.unit}/s eta {eta:.0f}s {live}")
    end = "\r" if self.interactive and self.count < self.total else "\n"
    self.stream.write(line + end)
    self.stream.flush()

  def close(self, summary: Optional[str] = None) -> None:
    if self.interactive and self.count < self.total:
      self.stream.write("\n")
    if summary:
      self.stream.write(summary + "\n")
    self.stream.flush()
