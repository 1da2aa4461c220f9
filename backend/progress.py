"""Progress and messages, as a terminal bar or as JSON lines for the plugin.

The JSON-lines protocol (``--progress json``), one object per line on stdout::

    {"event": "start", "protocol": 1, "pid": 4242}   (always the first line)
    {"event": "progress", "fraction": 0.42, "stage": "predict"}
    {"event": "info", "message": "..."}
    {"event": "warning", "message": "..."}
    {"event": "result", ...any JSON fields...}
    {"event": "error", "message": "...", "kind": "InputError"}

``result`` is sent once, on success, as the last line; ``error`` is sent once,
on failure, as the last line. Nothing else is written to stdout in this mode. ``pid`` is
the backend's own process id, which names its hidden partial files: behind a launcher (a
Windows venv's python.exe) it is not the process its parent started.
"""
from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

PROTOCOL_VERSION = 1


class Reporter:
    """Base reporter: silent. Subclasses choose how to show things."""

    _writing = False   # inside a write of the stream (see _output)

    def __init__(self) -> None:
        self._held: list[str] = []

    def info_from_signal(self, message: str) -> None:
        """An info line from a signal handler. Python runs the handler in the main thread,
        possibly inside this reporter's own write (one blocked on a full pipe runs it when
        the signal interrupts it), where writing again is a reentrant write Python
        refuses: the line then waits until that write is done."""
        if self._writing:
            self._held.append(message)
        else:
            self.info(message)

    @contextmanager
    def _output(self) -> Iterator[None]:
        """Around every write to the stream: lines held by info_from_signal follow it.
        A reader that has gone (``... | head``) does not stop the run, which goes on to
        complete its outputs, reporting to nowhere. Windows may say so with EINVAL instead
        of a broken pipe (python/cpython#79935)."""
        self._writing = True
        try:
            yield
        except OSError as exc:
            if not isinstance(exc, BrokenPipeError) and exc.errno != errno.EINVAL:
                raise
            to_devnull(self.stream)
        finally:
            self._writing = False
        while self._held:
            self.info(self._held.pop(0))

    def progress(self, fraction: float, stage: str = "") -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    def result(self, **fields: Any) -> None:
        pass

    def error(self, message: str, kind: str = "Error") -> None:
        pass

    def close(self) -> None:
        pass


class JsonReporter(Reporter):
    """One JSON object per line, flushed at once so a parent process sees it live."""

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 0.1):
        super().__init__()
        self.stream = stream or sys.stdout
        self.min_interval_s = min_interval_s
        self._last = -1.0
        self._emit({"event": "start", "protocol": PROTOCOL_VERSION, "pid": os.getpid()})

    def _emit(self, doc: dict[str, Any]) -> None:
        with self._output():
            self.stream.write(json.dumps(doc, default=str) + "\n")
            self.stream.flush()

    def progress(self, fraction: float, stage: str = "") -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last < self.min_interval_s:
            return
        self._last = now
        self._emit({"event": "progress", "fraction": round(float(fraction), 4), "stage": stage})

    def info(self, message: str) -> None:
        self._emit({"event": "info", "message": message})

    def warning(self, message: str) -> None:
        self._emit({"event": "warning", "message": message})

    def result(self, **fields: Any) -> None:
        self._emit({"event": "result", **fields})

    def error(self, message: str, kind: str = "Error") -> None:
        self._emit({"event": "error", "message": message, "kind": kind})


class BarReporter(Reporter):
    """A one-line progress bar on stderr, and messages on stderr. The result's fields are
    not printed: the commands sum them up in an info line (``--progress json`` has them all)."""

    def __init__(self, stream: TextIO | None = None, width: int = 30):
        super().__init__()
        self.stream = stream or sys.stderr
        self.width = width
        self._start = time.monotonic()
        self._last = -1.0
        self._open = False
        self._tty = getattr(self.stream, "isatty", lambda: False)()

    def progress(self, fraction: float, stage: str = "") -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last < (0.2 if self._tty else 5.0):
            return
        self._last = now
        filled = int(self.width * min(max(fraction, 0.0), 1.0))
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"{stage:>8} [{bar}] {100 * fraction:5.1f}% {now - self._start:6.1f}s"
        with self._output():
            if self._tty:
                self.stream.write("\r" + line)
                self._open = True
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def _line(self, text: str) -> None:
        with self._output():
            if self._open:
                self.stream.write("\n")
                self._open = False
            self.stream.write(text + "\n")
            self.stream.flush()

    def info(self, message: str) -> None:
        self._line(message)

    def warning(self, message: str) -> None:
        self._line(f"warning: {message}")

    def result(self, **fields: Any) -> None:
        self.close()

    def error(self, message: str, kind: str = "Error") -> None:
        self._line(f"error: {message}")

    def close(self) -> None:
        if self._open:
            with self._output():
                self.stream.write("\n")
                self.stream.flush()
                self._open = False


class QuietReporter(BarReporter):
    """Nothing but warnings and errors, on stderr."""

    def progress(self, fraction: float, stage: str = "") -> None:
        pass

    def info(self, message: str) -> None:
        pass


class ResultReporter(QuietReporter):
    """Warnings and errors on stderr, and the result as one JSON document on stdout."""

    def result(self, **fields: Any) -> None:
        sys.stdout.write(readable_json(fields) + "\n")
        sys.stdout.flush()


def to_devnull(stream: TextIO) -> None:
    """Send what is written to ``stream`` from now on to the null device: its reader has
    gone (a closed pipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


def readable_json(fields: dict[str, Any]) -> str:
    """Indented JSON with each list of numbers or strings on one line."""
    text = json.dumps(fields, indent=1, default=str)
    return re.sub(r"\[\n\s*([^\[\]{}]*?)\n\s*\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def make_reporter(mode: str) -> Reporter:
    if mode == "json":
        return JsonReporter()
    if mode == "none":
        return QuietReporter()
    if mode == "result":
        return ResultReporter()
    return BarReporter()
