"""A dependency-free progress bar for the command-line programs."""

import sys
import time


class ProgressLine:
    """A one-line progress bar on a terminal stream (plain lines elsewhere).

    On a terminal the bar is redrawn in place; on a file or pipe (a CI log) one
    line is written every ``every`` steps and at the end.

    Args:
      total: the number of steps.
      stream: where to write (default: stderr).
      every: on a non-terminal stream, print one line every ``every`` steps.
    """

    def __init__(self, total: int, stream=None, every: int = 10):
        self.total, self.every = total, max(every, 1)
        self.stream = sys.stderr if stream is None else stream
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.first = None

    def update(self, step: int, detail: str = "", *, rate_unit: str = "") -> None:
        """Shows step ``step`` of ``total`` followed by ``detail``.

        Args:
          step: the steps done so far (1-based).
          detail: text shown after the counter.
          rate_unit: when given, the rate since the first update is shown as
            ``"<rate> <rate_unit>/s"``; otherwise the elapsed time.
        """
        if self.first is None:
            self.first = step - 1
            self.start = time.perf_counter()
        elapsed = time.perf_counter() - self.start
        width = 24
        filled = int(width * min(step, self.total) / max(self.total, 1))
        if rate_unit:
            tail = f"{(step - self.first) / max(elapsed, 1e-9):.2f} {rate_unit}/s"
        else:
            tail = f"{elapsed:.0f}s"
        text = f"[{'#' * filled}{'.' * (width - filled)}] {step}/{self.total}"
        text = " ".join(t for t in (text, detail, tail) if t)
        if self.tty:
            end = "\n" if step >= self.total else ""
            self.stream.write("\r\x1b[2K" + text + end)
            self.stream.flush()
        elif step % self.every == 0 or step >= self.total:
            self.stream.write(text + "\n")
            self.stream.flush()
