"""Log lines that a remote party can trigger, at most one per cause per interval.

A peer (or a stranger) that sends junk as fast as it can must not be able to
fill the disk through our logs. Each cause logs its first occurrence at once;
later ones within ``interval`` seconds are only counted, and the next line
that gets through says how many were suppressed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["LogLimiter"]


class LogLimiter:
    """Per-cause rate limit for warnings (one line per cause per ``interval``)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_causes: int = 256,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._max_causes = max_causes
        # cause -> (time of the last line logged, lines suppressed since)
        self._state: dict[str, tuple[float, int]] = {}

    def warning(self, cause: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` for ``cause`` unless one was logged recently.

        Returns whether the line was written.
        """
        return self.log(logging.WARNING, cause, msg, *args)

    def log(self, level: int, cause: str, msg: str, *args: object) -> bool:
        now = self._clock()
        last, suppressed = self._state.get(cause, (None, 0))
        if last is not None and now - last < self._interval:
            self._state[cause] = (last, suppressed + 1)
            return False
        if cause not in self._state and len(self._state) >= self._max_causes:
            # Causes are chosen by our code, not by peers, but bound the
            # table anyway: forget the oldest line times.
            oldest = min(self._state, key=lambda c: self._state[c][0])
            del self._state[oldest]
        self._state[cause] = (now, 0)
        if suppressed:
            self._logger.log(level, msg + " (%d similar line(s) suppressed)", *args, suppressed)
        else:
            self._logger.log(level, msg, *args)
        return True

    def suppressed(self, cause: str) -> int:
        """Lines of ``cause`` suppressed since the last one written."""
        return self._state.get(cause, (0.0, 0))[1]
