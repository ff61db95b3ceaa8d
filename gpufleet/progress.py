"""Progress as plain lines: one per event, and a reminder while nothing happens, so that no command
is silent for long, in a terminal or in a log (a live spinner draws nothing in a log).

`say(key, what)` prints `key: what`; until the key's next line, `what` is ongoing: when these lines
have been quiet for `every_s`, each ongoing key prints again with how long it has been going.
"""

from __future__ import annotations

import threading
import time
import types
from dataclasses import dataclass

from rich.console import Console

HEARTBEAT_S = 8.0


@dataclass
class _Ongoing:
    what: str
    since: float


class Lines:
    def __init__(self, console: Console, every_s: float = HEARTBEAT_S) -> None:
        self.console = console
        self.every_s = every_s
        self._ongoing: dict[str, _Ongoing] = {}
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Lines:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | types.TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def say(self, key: str, what: str, ongoing: bool = True) -> None:
        """`key: what`; with `ongoing`, repeated while the lines are quiet, until the key's next line."""
        with self._lock:
            now = time.monotonic()
            if ongoing:
                self._ongoing[key] = _Ongoing(what, now)
            else:
                self._ongoing.pop(key, None)
            self._print(f"{key}: {what}", now)

    def done(self, key: str, what: str) -> None:
        self.say(key, what, ongoing=False)

    def _print(self, line: str, now: float) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self._last = now

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.every_s / 4)):
            with self._lock:
                now = time.monotonic()
                if now - self._last < self.every_s:
                    continue
                for key, o in self._ongoing.items():
                    self._print(f"{key}: {o.what} (still going, {now - o.since:.0f}s)", now)
