"""The audit log of the web site: who saw or downloaded which study, when, from where.

Rows are append-only (database triggers refuse UPDATE and DELETE). Each row has the time, the actor (a staff
user name, ``patient`` for a token holder, ``cli`` for a command), the client address and user agent, the action,
the study, the token row id (never the token), a detail and the outcome (``success`` or ``failure``). The
actions follow IHE BALP's split: issue, validation success/failure, view, download (an "Export" to the patient),
revoke.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from appliance.db import Database

LOGGER = logging.getLogger(__name__)

#: Actions recorded, for filters in the staff UI.
ACTIONS = (
    "token.open",
    "token.failed",
    "token.rate_limited",
    "token.revoke",
    "token.extend",
    "token.regenerate",
    "token.slip",
    "token.link",
    "study.view",
    "study.download",
    "series.download",
    "study.delete",
    "series.delete",
    "staff.login",
    "staff.login_failed",
    "staff.logout",
    "user.add",
    "user.delete",
    "user.password",
    "user.role",
    "node.add",
    "node.edit",
    "node.delete",
    "node.echo",
    "logs.download",
    "dicomweb.search",
    "dicomweb.retrieve",
    "dicomweb.metadata",
    "dicomweb.frames",
    "dicomweb.bulkdata",
    "dicomweb.rendered",
    "dicomweb.store",
    "dicomweb.wado",
    "access.refused",
    "api.read",
    "api.change",
    "apikey.add",
    "apikey.revoke",
    "apikey.master",
    "storage.add",
    "storage.enable",
    "storage.disable",
    "email.test",
)


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    id: int
    time: str
    actor: str
    address: str
    user_agent: str
    action: str
    study_uid: str
    token_id: int | None
    detail: str
    outcome: str


class BatchWriter:
    """Runs small writes (audit rows, access counters) in a background thread, many per transaction.

    Every commit of the database waits for the disk (``synchronous=FULL``, which the store needs). A page view
    that committed its own audit row would wait for one such flush, behind every other writer; batched, fifty
    concurrent views share one. A row can be lost only if the machine stops within the ~millisecond between a
    request and the batch's commit; :meth:`flush` waits for everything submitted so far.

    Parameters
    ----------
    db : Database
        The appliance database.
    max_batch : int
        Most statements in one transaction.
    """

    def __init__(self, db: Database, max_batch: int = 500) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[str, Sequence[Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, sql: str, params: Sequence[Any]) -> None:
        """Queue one statement (started on first use)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()
        self._queue.put((sql, params))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    self._queue.task_done()
                    break
                batch.append(more)
            try:
                with self.db.transaction() as conn:
                    for sql, params in batch:
                        conn.execute(sql, params)
            except Exception:
                LOGGER.exception("could not write %d audit/access row(s)", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    def flush(self) -> None:
        """Wait until every statement submitted so far is committed."""
        self._queue.join()

    def close(self) -> None:
        """Commit what is queued and stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(30)


class Audit:
    """The ``audit_log`` table.

    Parameters
    ----------
    db : Database
        The appliance database.
    writer : BatchWriter, optional
        Rows go through it (in the background); without one each row is committed at once.
    """

    def __init__(self, db: Database, writer: BatchWriter | None = None) -> None:
        self.db = db
        self.writer = writer

    def record(
        self,
        action: str,
        *,
        actor: str = "",
        address: str = "",
        user_agent: str = "",
        study_uid: str = "",
        token_id: int | None = None,
        detail: str = "",
        outcome: str = "success",
    ) -> None:
        """Append one row.

        Parameters
        ----------
        action : str
            One of :data:`ACTIONS`.
        actor, address, user_agent : str
            Who, from which client address, with which browser (cut to 200 characters).
        study_uid : str
            The study concerned, if any.
        token_id : int, optional
            The token row used, if any (never the token itself).
        detail : str
            What was downloaded, what changed.
        outcome : {"success", "failure"}
            Whether it worked.
        """
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        sql = (
            "INSERT INTO audit_log (time, actor, address, user_agent, action, study_uid, token_id, detail, outcome)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        params = (now, actor[:100], address[:100], user_agent[:200], action, study_uid, token_id, detail[:500], outcome)
        if self.writer is not None:
            self.writer.submit(sql, params)
            return
        with self.db.transaction() as conn:
            conn.execute(sql, params)

    def entries(
        self, study_uid: str | None = None, action: str | None = None, limit: int = 200, offset: int = 0
    ) -> list[AuditEntry]:
        """The newest rows first, for one study and/or one action."""
        if self.writer is not None:
            self.writer.flush()
        where, args = [], []
        if study_uid:
            where.append("study_uid = ?")
            args.append(study_uid)
        if action:
            where.append("action = ?")
            args.append(action)
        sql = "SELECT * FROM audit_log" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.db.conn.execute(sql + " ORDER BY id DESC LIMIT ? OFFSET ?", (*args, limit, offset))
        return [AuditEntry(**dict(r)) for r in rows]
