"""Logging set-up: levels TRACE..FATAL, a console handler and a rotating file."""

from __future__ import annotations

import logging
import logging.handlers
import traceback
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


#: Control characters (C0 but tab, DEL, C1, Unicode line and paragraph separators) and their printable escapes.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)]}
_CONTROL.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


class EscapeControls(logging.Filter):
    """Escape control characters in a record's message, so that one record is one line of plain text.

    Values from the network (AE titles, UIDs, HL7 fields) reach the log through our messages and
    pynetdicom's; a CR/LF in them would forge log lines, and ESC sequences would drive the terminal
    of whoever reads the log. Installed on the handlers, so it sees the records of every logger.
    A traceback (``exc_info``) is added by :class:`EscapingFormatter`, which escapes the exception
    messages in it (a traceback keeps its own lines).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = message.translate(_CONTROL)
        if escaped != message:
            record.msg = escaped
            record.args = None
        return True


def _escaped_line(text: str) -> str:
    """``text`` with its control characters escaped, but for one final newline."""
    body = text[:-1] if text.endswith("\n") else text
    return body.translate(_CONTROL) + ("\n" if body is not text else "")


class EscapingFormatter(logging.Formatter):
    """A formatter whose tracebacks carry escaped exception messages (they may quote network input)."""

    def formatException(self, ei: Any) -> str:
        parts: list[str] = []
        seen: set[int] = set()

        def emit(te: traceback.TracebackException) -> None:
            # The order of traceback.TracebackException.format: causes and contexts first.
            seen.add(id(te))
            if te.__cause__ is not None and id(te.__cause__) not in seen:
                emit(te.__cause__)
                parts.append("\nThe above exception was the direct cause of the following exception:\n\n")
            elif (te.__context__ is not None and not te.__suppress_context__
                  and id(te.__context__) not in seen):
                emit(te.__context__)
                parts.append("\nDuring handling of the above exception, another exception occurred:\n\n")
            if te.stack:
                parts.append("Traceback (most recent call last):\n")
                parts.extend(te.stack.format())
            parts.extend(_escaped_line(line) for line in te.format_exception_only())

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
    formatter = EscapingFormatter(FORMAT)
    escape = EscapeControls()
    console = logging.StreamHandler()
    console.setFormatter(formatter)
    console.addFilter(escape)
    root.addHandler(console)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(
            log_dir / LOG_FILE, maxBytes=int(max_mb * 1024 * 1024), backupCount=backups, encoding="utf-8"
        )
        rotating.setFormatter(formatter)
        rotating.addFilter(escape)
        root.addHandler(rotating)
    # pynetdicom logs every PDU at DEBUG; keep its chatter one level below ours.
    logging.getLogger("pynetdicom").setLevel(max(level_number(level), logging.WARNING))
