"""Patient tokens: one secret link per stored study, valid until a number of days after the study date.

A token is 64 URL-safe characters (384 bits). The database keeps only its SHA-256 hash, which is what a
request is looked up by, so a copy of ``appliance.db`` (a backup, a support bundle) opens no study.

The front desk must still be able to print the same link again (token slip, disc label, ``appliance token``)
long after the study arrived, and a hash cannot give the token back. So the token is not stored but
*derived*: ``token = base64url(HMAC-SHA384(site key, seed))``, with a fresh random 32-byte ``seed`` per token
kept in the row and a random 32-byte site key in ``<data_dir>/secrets/token.key`` (mode 0600, outside the
database). The result is as unpredictable as a direct ``secrets.token_urlsafe(48)`` (HMAC is a PRF keyed
with CSPRNG output), it is not derived from anything about the patient, and only a holder of both the
database and the key file can reproduce it. Regenerating a token draws a new seed, which kills the old link.

Expiry is enforced on every request: a token works until the end of the local day ``study date +
token_days`` (or the day staff extended it to), and never after it is revoked. An unknown, malformed, expired
or revoked token all look the same to the caller of :meth:`Tokens.resolve`: ``None``.
"""

from __future__ import annotations

import base64
import calendar
import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.config import parse_validity
from appliance.db import Database
from appliance.errors import InvalidValue, NotFound

if TYPE_CHECKING:  # pragma: no cover
    from appliance.core import StoreResult
    from appliance.site.audit import BatchWriter

LOGGER = logging.getLogger(__name__)

#: Length of a token in characters (48 random bytes, base64url without padding).
TOKEN_LENGTH = 64
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{64}$")
_KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """Read a secret key file, creating it (32 random bytes, mode 0600) when it does not exist.

    Parameters
    ----------
    path : Path
        The key file.

    Returns
    -------
    bytes
        The key.
    """
    try:
        data = path.read_bytes()
        if len(data) >= _KEY_BYTES:
            return data
        LOGGER.error("secret key %s is too short; a new one is made", path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(_KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # Two processes may start at once: the first link wins and both use its key.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as kept in the database."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def add_validity(start: dt.date, count: int, unit: str) -> dt.date:
    """``start`` plus ``count`` days, months or years (a month end is kept within the shorter month).

    Parameters
    ----------
    start : datetime.date
        The first day.
    count : int
        How many units.
    unit : {"days", "months", "years"}
        As returned by :func:`appliance.config.parse_validity`.
    """
    if unit == "days":
        return start + dt.timedelta(days=count)
    months = start.month - 1 + count * (12 if unit == "years" else 1)
    year, month = start.year + months // 12, months % 12 + 1
    return dt.date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def parse_da(value: str) -> dt.date | None:
    """A DICOM DA (``YYYYMMDD``) as a date, or None when it is empty or not a date."""
    try:
        return dt.datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None


@dataclass(frozen=True)
class TokenInfo:
    """What is known of a study's token (never the token itself)."""

    id: int
    study_uid: str
    created: str
    valid_until: dt.date
    revoked: str
    last_access: str
    accesses: int
    hash_prefix: str

    def state(self, today: dt.date) -> str:
        """``"valid"``, ``"expired"`` or ``"revoked"`` on ``today``."""
        if self.revoked:
            return "revoked"
        return "valid" if today <= self.valid_until else "expired"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _today() -> dt.date:
    return dt.date.today()


class Tokens:
    """The patient tokens of the stored studies.

    Parameters
    ----------
    db : Database
        The appliance database.
    key_file : Path
        The site key that tokens are derived with (created when missing).
    validity : int or str
        ``[web] token_days``: a number of days, or a text such as ``"6 months"``.
    today : callable, optional
        Today's local date (tests pass a fixed clock).
    writer : BatchWriter, optional
        Access counts go through it (in the background); without one they are committed at once.
    """

    def __init__(
        self,
        db: Database,
        key_file: Path,
        validity: int | str = 60,
        today: Callable[[], dt.date] | None = None,
        writer: BatchWriter | None = None,
    ) -> None:
        self.db = db
        self.writer = writer
        self.key_file = key_file
        self._key: bytes | None = None
        self.count, self.unit = parse_validity(validity)
        self._today = today or _today
        # Study UIDs known to have a token: the store listener runs for every instance, and most instances
        # belong to a study that already has one, so this spares a query per instance.
        self._known: set[str] = set()
        self._lock = threading.Lock()

    @property
    def key(self) -> bytes:
        """The site key (read or created on first use)."""
        if self._key is None:
            self._key = load_or_create_key(self.key_file)
        return self._key

    def today(self) -> dt.date:
        """Today's local date, by the clock this object was given."""
        return self._today()

    def _derive(self, seed: str) -> str:
        digest = hmac.new(self.key, bytes.fromhex(seed), hashlib.sha384).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii")

    def valid_until(self, study_date: str) -> dt.date:
        """The last day a new token of a study with this Study Date works (from today if it has no date)."""
        return add_validity(parse_da(study_date) or self.today(), self.count, self.unit)

    # -- issue ------------------------------------------------------------------------------------

    def ensure(self, study_uid: str, study_date: str) -> TokenInfo:
        """Return the study's token, creating it when it has none yet (a study gets one token, once).

        Parameters
        ----------
        study_uid : str
            Study Instance UID.
        study_date : str
            Its Study Date (DA); the token works until this date plus ``token_days``.
        """
        info = self.get(study_uid)
        if info is not None:
            return info
        seed = secrets.token_bytes(32).hex()
        token_hash = hash_token(self._derive(seed))
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO tokens (study_uid, token_hash, seed, created, valid_until) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (study_uid) DO NOTHING",
                (study_uid, token_hash, seed, _now(), self.valid_until(study_date).isoformat()),
            )
        info = self.get(study_uid)
        assert info is not None
        return info

    def on_stored(self, result: StoreResult, calling_ae: str, called_ae: str, association_id: str) -> None:
        """Store listener (``Appliance.stored_listeners``): give a newly seen study its token."""
        uid = result.record.study_uid
        with self._lock:
            if uid in self._known:
                return
        self.ensure(uid, result.record.study_date)
        with self._lock:
            if len(self._known) > 100_000:
                self._known.clear()
            self._known.add(uid)

    def token(self, study_uid: str) -> str:
        """The study's token (the secret part of its link).

        Raises
        ------
        NotFound
            If the study has no token.
        """
        row = self.db.conn.execute("SELECT seed FROM tokens WHERE study_uid = ?", (study_uid,)).fetchone()
        if row is None:
            raise NotFound(f"study {study_uid} has no patient token")
        return self._derive(row["seed"])

    # -- look up ----------------------------------------------------------------------------------

    @staticmethod
    def _info(row: object) -> TokenInfo:
        r = dict(row)  # type: ignore[call-overload]
        return TokenInfo(
            r["id"],
            r["study_uid"],
            r["created"],
            dt.date.fromisoformat(r["valid_until"]),
            r["revoked"],
            r["last_access"],
            r["accesses"],
            r["token_hash"][:8],
        )

    def get(self, study_uid: str) -> TokenInfo | None:
        """The token record of a study, if it has one (access counts may lag by a batch of the writer)."""
        row = self.db.conn.execute("SELECT * FROM tokens WHERE study_uid = ?", (study_uid,)).fetchone()
        return self._info(row) if row else None

    def by_id(self, token_id: int) -> TokenInfo | None:
        """A token record by its row id."""
        row = self.db.conn.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return self._info(row) if row else None

    def resolve(self, token: str) -> TokenInfo | None:
        """The record of a token that opens its study right now, else None.

        Unknown, malformed, expired and revoked tokens all give None, so a caller cannot tell them apart.
        """
        if not _TOKEN_RE.match(token):
            return None
        wanted = hash_token(token)
        row = self.db.conn.execute("SELECT * FROM tokens WHERE token_hash = ?", (wanted,)).fetchone()
        if row is None or not hmac.compare_digest(row["token_hash"], wanted):
            return None
        info = self._info(row)
        return info if info.state(self.today()) == "valid" else None

    def is_usable(self, token_id: int, hash_prefix: str) -> TokenInfo | None:
        """The record of a token id that still opens its study (a patient session checks this per request).

        Parameters
        ----------
        token_id : int
            Row id kept in the patient's session cookie.
        hash_prefix : str
            Hash prefix kept with it; a regenerated token has another, so old sessions end with the old link.
        """
        info = self.by_id(token_id)
        if info is None or not hmac.compare_digest(info.hash_prefix, hash_prefix):
            return None
        return info if info.state(self.today()) == "valid" else None

    def touch(self, token_id: int) -> None:
        """Count an access to a token's study."""
        sql, params = "UPDATE tokens SET accesses = accesses + 1, last_access = ? WHERE id = ?", (_now(), token_id)
        if self.writer is not None:
            self.writer.submit(sql, params)
            return
        with self.db.transaction() as conn:
            conn.execute(sql, params)

    # -- staff actions ----------------------------------------------------------------------------

    def _existing(self, study_uid: str) -> TokenInfo:
        info = self.get(study_uid)
        if info is None:
            raise NotFound(f"study {study_uid} has no patient token")
        return info

    def revoke(self, study_uid: str) -> TokenInfo:
        """Stop the study's link from working (until it is regenerated)."""
        self._existing(study_uid)
        with self.db.transaction() as conn:
            conn.execute("UPDATE tokens SET revoked = ? WHERE study_uid = ? AND revoked = ''", (_now(), study_uid))
        return self._existing(study_uid)

    def extend(self, study_uid: str, until: dt.date) -> TokenInfo:
        """Set the last day the study's link works.

        Raises
        ------
        InvalidValue
            If ``until`` is in the past or more than ten years ahead.
        """
        self._existing(study_uid)
        today = self.today()
        if until < today:
            raise InvalidValue(f"the new end date {until.isoformat()} is in the past")
        if until > add_validity(today, 10, "years"):
            raise InvalidValue("the new end date is more than ten years ahead")
        with self.db.transaction() as conn:
            conn.execute("UPDATE tokens SET valid_until = ? WHERE study_uid = ?", (until.isoformat(), study_uid))
        return self._existing(study_uid)

    def regenerate(self, study_uid: str) -> TokenInfo:
        """Give the study a new link: the old one stops working, revocation is lifted, validity restarts today.

        A new validity period starts from today rather than the study date, because a link is regenerated
        to be handed out again now.
        """
        self._existing(study_uid)
        seed = secrets.token_bytes(32).hex()
        until = add_validity(self.today(), self.count, self.unit)
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE tokens SET token_hash = ?, seed = ?, revoked = '', valid_until = ?, created = ?"
                " WHERE study_uid = ?",
                (hash_token(self._derive(seed)), seed, until.isoformat(), _now(), study_uid),
            )
        return self._existing(study_uid)

    def delete(self, study_uid: str) -> bool:
        """Forget the study's token (the study was deleted); return whether it had one."""
        with self.db.transaction() as conn:
            deleted = conn.execute("DELETE FROM tokens WHERE study_uid = ?", (study_uid,)).rowcount
        with self._lock:
            self._known.discard(study_uid)
        return bool(deleted)

    def purge_expired(self, older_than_days: int = 365) -> int:
        """Delete tokens that expired more than ``older_than_days`` ago; return how many."""
        cutoff = (self.today() - dt.timedelta(days=older_than_days)).isoformat()
        with self.db.transaction() as conn:
            return int(conn.execute("DELETE FROM tokens WHERE valid_until < ?", (cutoff,)).rowcount)
