"""A one-line progress bar on stderr: percent done, current tensor, throughput."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total_bytes: int, n_tensors: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = max(total_bytes, 1)
        self.n_tensors = n_tensors
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.count = 0
        self.start = time.monotonic()

    def advance(self, name: str, nbytes: int) -> None:
        """`nbytes` more of tensor `name` written (called per block, so big tensors show progress)."""
        self.done += nbytes
        self._draw(name)

    def tensor_done(self, name: str) -> None:
        self.count += 1
        self._draw(name)

    def _draw(self, name: str) -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.start, 1e-9)
        width = 24
        filled = int(width * self.done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        line = (f"\r[{bar}] {100 * self.done / self.total:5.1f}% "
                f"{self.count}/{self.n_tensors} {name[:40]:<40} {self.done / elapsed / 1e6:8.1f} MB/s")
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.count:
            self.stream.write("\n")
            self.stream.flush()
