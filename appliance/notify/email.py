"""E-mail alerts: a persisted queue in the database, a background sender, one mail per event and object per hour.

:meth:`MailQueue.alert` only writes a row (it never talks to the SMTP server, so it never slows a C-STORE);
the sender thread delivers queued rows and, when the server is down or refuses, tries again later with a
growing pause (:data:`RETRY_FIRST` doubling up to :data:`RETRY_MAX`). An alert for the same event kind and
object within :data:`RATE_WINDOW` of the last one is not mailed but counted, and the next mail says how many
were suppressed. The SMTP password is never logged or shown (``EmailConfig.password`` has no repr).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from appliance.config import EmailConfig
from appliance.db import Database
from appliance.names import display_name

LOGGER = logging.getLogger(__name__)

RATE_WINDOW = timedelta(hours=1)
RETRY_FIRST = 30.0
RETRY_MAX = 3600.0
#: Subject line of each event kind.
EVENT_TITLES = {
    "storage_unavailable": "storage unavailable",
    "free_space_limit": "free-space limit reached",
    "save_error": "an image could not be saved",
    "robot_needs_staff": "a disc robot needs staff",
    "disc_job_failed": "a disc job failed",
    "certificate_expiry": "a certificate is about to expire",
    "test": "test mail",
}


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _message(cfg: EmailConfig, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=cfg.sender.rpartition("@")[2] or None)
    msg.set_content(body)
    return msg


def send_now(cfg: EmailConfig, subject: str, body: str, timeout: float = 15.0) -> str:
    """Send one mail at once; '' when the server took it, else why not (never the password).

    Parameters
    ----------
    cfg : EmailConfig
        Server, security, login, from and to.
    subject, body : str
        The mail.
    timeout : float
        Seconds for the connection and each reply.
    """
    msg = _message(cfg, subject, body)
    context = ssl.create_default_context()
    try:
        smtp: smtplib.SMTP
        if cfg.security == "tls":
            smtp = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=timeout)
        with smtp:
            if cfg.security == "starttls":
                smtp.starttls(context=context)
            if cfg.user:
                smtp.login(cfg.user, cfg.password)
            refused = smtp.send_message(msg)
        if refused:
            return "refused for " + ", ".join(
                f"{addr} ({code} {text.decode(errors='replace')})" for addr, (code, text) in refused.items()
            )
        return ""
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"the server answered {exc.smtp_code} {text}"
    except smtplib.SMTPRecipientsRefused as exc:
        return "every recipient was refused: " + ", ".join(exc.recipients)
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
        return f"cannot reach {cfg.smtp_host}:{cfg.smtp_port}: {exc}"
    except smtplib.SMTPException as exc:
        return f"{cfg.smtp_host}:{cfg.smtp_port}: {exc}"


class MailQueue:
    """The ``email_queue`` table and its sender thread.

    Parameters
    ----------
    db : Database
        The appliance database.
    cfg : EmailConfig
        ``[email]``; without ``smtp_host`` alerts are only logged.
    send : callable, optional
        Delivers one mail (default :func:`send_now`).
    tick : float
        Seconds between two delivery rounds.
    retry_first : float
        Pause after the first failed attempt; it doubles with each further one, up to :data:`RETRY_MAX`.
    """

    def __init__(
        self,
        db: Database,
        cfg: EmailConfig,
        send: Callable[[EmailConfig, str, str], str] | None = None,
        tick: float = 1.0,
        retry_first: float = RETRY_FIRST,
    ) -> None:
        self.db = db
        self.cfg = cfg
        self.send = send or send_now
        self.tick = tick
        self.retry_first = retry_first
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Extra checks run by the sender thread each round (e.g. watching disc jobs).
        self.watchers: list[Callable[[], None]] = []

    @property
    def enabled(self) -> bool:
        """Whether mails are sent at all."""
        return bool(self.cfg.smtp_host)

    def alert(self, event: str, obj: str, text: str) -> bool:
        """Queue an alert; False when it was not queued (event not chosen, or suppressed by the hourly limit).

        Never raises: a database that cannot take the row is logged, nothing else.
        """
        if not self.enabled or event not in self.cfg.events:
            return False
        now = datetime.now(UTC)
        try:
            with self.db.transaction() as conn:
                last = conn.execute(
                    "SELECT id, created, suppressed FROM email_queue WHERE event = ? AND object = ?"
                    " ORDER BY id DESC LIMIT 1",
                    (event, obj),
                ).fetchone()
                if last is not None and last["created"] > _stamp(now - RATE_WINDOW):
                    conn.execute("UPDATE email_queue SET suppressed = suppressed + 1 WHERE id = ?", (last["id"],))
                    return False
                body = text.rstrip() + "\n"
                if last is not None and last["suppressed"]:
                    body += (
                        f"\n{last['suppressed']} more alert(s) of this kind for {obj or 'this appliance'} were"
                        f" not mailed since {last['created'][:16].replace('T', ' ')} UTC (one mail per hour).\n"
                    )
                title = EVENT_TITLES.get(event, event)
                subject = f"[appliance] {title}" + (f": {obj}" if obj else "")
                conn.execute(
                    "INSERT INTO email_queue (event, object, subject, body, created) VALUES (?, ?, ?, ?, ?)",
                    (event, obj, subject[:200], body, _stamp(now)),
                )
        except Exception as exc:
            LOGGER.error("e-mail alert %s for %s could not be queued: %s", event, obj, exc)
            return False
        self._wake.set()
        return True

    def start(self) -> None:
        """Start the sender thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="mail", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the sender (queued mails stay queued for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            for watcher in self.watchers:
                try:
                    watcher()
                except Exception:
                    LOGGER.exception("an e-mail watcher failed")
            try:
                self.deliver_due()
            except Exception:
                LOGGER.exception("e-mail delivery round failed")
            self._wake.wait(self.tick)
            self._wake.clear()

    def deliver_due(self) -> int:
        """Send every queued mail whose time has come; returns how many were sent."""
        if not self.enabled:
            return 0
        sent = 0
        rows = self.db.conn.execute(
            "SELECT id, subject, body, attempts FROM email_queue WHERE state = 'queued'"
            " AND next_try <= ? ORDER BY id LIMIT 20",
            (time.time(),),
        ).fetchall()
        for row in rows:
            if self._stop.is_set():
                break
            error = self.send(self.cfg, row["subject"], row["body"])
            with self.db.transaction() as conn:
                if not error:
                    conn.execute(
                        "UPDATE email_queue SET state = 'sent', sent = ?, error = '',"
                        " attempts = attempts + 1 WHERE id = ?",
                        (_stamp(datetime.now(UTC)), row["id"]),
                    )
                    sent += 1
                    continue
                pause = min(RETRY_MAX, self.retry_first * 2 ** row["attempts"])
                conn.execute(
                    "UPDATE email_queue SET attempts = attempts + 1, next_try = ?, error = ? WHERE id = ?",
                    (time.time() + pause, error[:500], row["id"]),
                )
            LOGGER.warning("e-mail %r not sent (%s); next try in %d s", row["subject"], error, pause)
        return sent

    def recent(self, limit: int = 20) -> list[dict[str, object]]:
        """The newest queued and sent mails, for the staff UI."""
        rows = self.db.conn.execute(
            "SELECT id, event, object, subject, state, attempts, error, suppressed, created,"
            " sent FROM email_queue ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [dict(r) for r in rows]


class DiscJobWatcher:
    """Turns disc jobs that failed or need staff into alerts (polls ``disc_jobs``; the job engine stays as is)."""

    def __init__(self, db: Database, queue: MailQueue) -> None:
        self.db = db
        self.queue = queue
        self.since = _stamp(datetime.now(UTC))

    def __call__(self) -> None:
        """Look at jobs changed since the last call."""
        rows = self.db.conn.execute(
            "SELECT id, state, error, message, needs_staff, patient_name, robot, updated"
            " FROM disc_jobs WHERE updated > ? ORDER BY updated",
            (self.since,),
        ).fetchall()
        for row in rows:
            self.since = max(self.since, row["updated"])
            who = f"job {row['id']} ({display_name(row['patient_name'], 'no name')}, robot {row['robot']})"
            if row["state"] == "failed":
                self.queue.alert("disc_job_failed", f"job {row['id']}", f"Disc {who} failed: {row['error']}")
            elif row["needs_staff"]:
                self.queue.alert(
                    "robot_needs_staff",
                    f"robot {row['robot']}",
                    f"Disc {who} waits for staff: {row['message'] or row['error']}",
                )
