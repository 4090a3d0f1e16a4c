"""Logging set-up: levels TRACE..FATAL, a console handler and a rotating file.

Log messages carry values that arrived from the network (HL7 fields, AE titles, user names). The formatter
makes each record one line of bounded length whatever they hold: control characters (CR, LF, NUL, escape
sequences) are written as ``\\xNN`` escapes, so a value cannot forge a record or a terminal command, and a
message longer than :data:`MAX_MESSAGE` characters is cut, so that one 10 MB field cannot rotate the log
history away. Tracebacks keep their lines.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import logging.handlers
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACE = 5
logging.addLevelName(TRACE, "TRACE")
logging.addLevelName(logging.CRITICAL, "FATAL")

_LEVELS = {
    "TRACE": TRACE,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
}

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_FILE = "appliance.log"
#: Longest message written, in characters (the traceback of a record comes on top).
MAX_MESSAGE = 4000

#: One record's first line as :data:`FORMAT` writes it (levels as named above; CRITICAL from older files).
_RECORD_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (TRACE|DEBUG|INFO|WARNING|ERROR|FATAL|CRITICAL)\s+"
    r"(\S+): (.*)$"
)

_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}" if ord(match.group()) < 0x100 else f"\\u{ord(match.group()):04x}"


def clip(text: str, limit: int = 200) -> str:
    """A value made safe to show in a log line or an error text: control characters escaped, cut to ``limit``.

    Parameters
    ----------
    text : str
        What arrived (e.g. an HL7 field, an AE title).
    limit : int
        Most characters kept of it.

    Returns
    -------
    str
        The text itself when it is short and printable; else its escaped first ``limit`` characters and how
        long it was, e.g. ``AAAA... (10485760 characters)``.
    """
    cut = text if len(text) <= limit else text[:limit]
    safe = _CONTROL.sub(_escape, cut)
    return safe if cut is text else f"{safe}... ({len(text)} characters)"


class SafeFormatter(logging.Formatter):
    """A formatter that writes every message on one line of at most :data:`MAX_MESSAGE` characters.

    It is the handlers' formatter, so it sees the records of every logger, pynetdicom's included
    (AE titles with CR/LF or ESC sequences arrive there). A traceback keeps its own lines, but the
    exception messages in it are escaped too: they may quote network input.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """Format with the record's message escaped and cut (the record's traceback is added by ``format``)."""
        record.message = clip(record.message, MAX_MESSAGE)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        """The traceback, with the text of each exception escaped and cut like a message."""
        parts: list[str] = []
        seen: set[int] = set()

        def emit(te: traceback.TracebackException) -> None:
            # The order of traceback.TracebackException.format: causes and contexts first.
            seen.add(id(te))
            if te.__cause__ is not None and id(te.__cause__) not in seen:
                emit(te.__cause__)
                parts.append("\nThe above exception was the direct cause of the following exception:\n\n")
            elif te.__context__ is not None and not te.__suppress_context__ and id(te.__context__) not in seen:
                emit(te.__context__)
                parts.append("\nDuring handling of the above exception, another exception occurred:\n\n")
            if te.stack:
                parts.append("Traceback (most recent call last):\n")
                parts.extend(te.stack.format())
            parts.append(clip("".join(te.format_exception_only()).rstrip("\n"), MAX_MESSAGE) + "\n")

        emit(traceback.TracebackException(*ei))
        return "".join(parts).rstrip("\n")


def level_number(name: str) -> int:
    """Return the numeric level of a level name (TRACE, DEBUG, INFO, WARNING, ERROR, FATAL)."""
    return _LEVELS[name.upper()]


def setup_logging(level: str, log_dir: Path | None, max_mb: float = 10.0, backups: int = 10) -> None:
    """Send log records to stderr and, when ``log_dir`` is given, to a rotating file.

    Parameters
    ----------
    level : str
        Lowest level written.
    log_dir : Path, optional
        Folder of ``appliance.log`` and its rotated copies.
    max_mb, backups : float, int
        Size at which the file rotates, and how many old files are kept.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level_number(level))
    formatter = SafeFormatter(FORMAT)
    console = logging.StreamHandler()
    console.setFormatter(formatter)
    root.addHandler(console)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(
            log_dir / LOG_FILE, maxBytes=int(max_mb * 1024 * 1024), backupCount=backups, encoding="utf-8"
        )
        rotating.setFormatter(formatter)
        root.addHandler(rotating)
    # pynetdicom logs every PDU at DEBUG; keep its chatter one level below ours.
    logging.getLogger("pynetdicom").setLevel(max(level_number(level), logging.WARNING))


@dataclass(frozen=True)
class LogRecord:
    """One record of the appliance log (continuation lines, such as tracebacks, in ``text``)."""

    time: str
    level: str
    logger: str
    text: str


def read_records(path: Path, tail: int = 4 * 1024 * 1024) -> Iterator[LogRecord]:
    """The records of a log file written with :data:`FORMAT` (its last ``tail`` bytes), oldest first."""
    with open(path, "rb") as fh:
        fh.seek(0, io.SEEK_END)
        fh.seek(max(0, fh.tell() - tail))
        text = fh.read().decode("utf-8", "replace")
    current: LogRecord | None = None
    for line in text.splitlines():
        m = _RECORD_RE.match(line)
        if m:
            if current:
                yield current
            level = "FATAL" if m.group(2) == "CRITICAL" else m.group(2)
            current = LogRecord(m.group(1), level, m.group(3), m.group(4))
        elif current:
            current = dataclasses.replace(current, text=current.text + "\n" + line)
    if current:
        yield current
