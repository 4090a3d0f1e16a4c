"""Credentials of DICOMweb and the JSON API: per-client API keys and the master cookie.

An API key is made by an admin (``appliance apikey add NAME --role ROLE``), printed once and stored only as a
SHA-256 hash: a key is 32 random bytes, so a fast hash is enough (nothing to guess from a dictionary). A key
carries a role of the staff UI (``admin`` or ``frontdesk``), may expire, and can be revoked; a revoked or
expired key is refused with the reason. The master cookie (``appliance apikey master``) is one more secret of
the same kind with the admin role, sent by integrated hospital services as the cookie ``master_cookie``; making
a new one revokes the old. Which hosts may send it is the web layer's check (``[api] master_cookie_hosts``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass

from appliance.db import Database
from appliance.errors import InvalidValue, NotFound
from appliance.site.users import ROLES

#: Prefix of every API key, so that a key is told from a patient token at a glance (and by the code).
KEY_PREFIX = "apk_"
MASTER_NAME = "master-cookie"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class ApiKey:
    """One API key (or the master cookie), without its hash."""

    id: int
    name: str
    kind: str
    role: str
    created: str
    expires: str
    revoked: str
    last_used: str

    def state(self, now: dt.datetime | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked:
            return "revoked"
        when = now or dt.datetime.now(dt.UTC)
        if self.expires and self.expires <= when.strftime("%Y-%m-%dT%H:%M:%SZ"):
            return "expired"
        return "active"


@dataclass(frozen=True)
class Check:
    """The result of checking a secret: the key when it matched one, and why it is refused (empty if not)."""

    key: ApiKey | None
    refusal: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hash_secret(secret: str) -> str:
    """SHA-256 of a key, as stored."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


class ApiKeys:
    """The ``api_keys`` table.

    Parameters
    ----------
    db : Database
        The appliance database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _key(row: sqlite3.Row) -> ApiKey:
        return ApiKey(
            row["id"],
            row["name"],
            row["kind"],
            row["role"],
            row["created"],
            row["expires"],
            row["revoked"],
            row["last_used"],
        )

    def add(self, name: str, role: str, days: int = 0) -> tuple[ApiKey, str]:
        """Make a key for a client.

        Parameters
        ----------
        name : str
            The client's name (unique among keys not revoked).
        role : str
            ``admin`` or ``frontdesk``.
        days : int
            The key expires after this many days (0: never).

        Returns
        -------
        (ApiKey, str)
            The key's row and the key itself (shown once, never stored).

        Raises
        ------
        InvalidValue
            For a bad name or role, a negative ``days``, or a name that has an active key.
        """
        name = name.strip()
        if not _NAME_RE.match(name) or name.lower() == MASTER_NAME:
            raise InvalidValue(
                f"a key name has 1-64 characters: letters, digits, '.', '_', '@' or '-' (and is not {MASTER_NAME!r})"
            )
        if role not in ROLES:
            raise InvalidValue(f"the role must be one of {', '.join(ROLES)}, not {role!r}")
        if days < 0:
            raise InvalidValue("--days must be 0 (never expires) or more")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ") if days else ""
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO api_keys (name, kind, role, key_hash, created, expires) VALUES (?, 'key', ?, ?, ?, ?)",
                    (name, role, hash_secret(secret), _now(), expires),
                )
        except sqlite3.IntegrityError:
            raise InvalidValue(f"a key named {name!r} exists: revoke it first") from None
        key = self.by_name(name)
        assert key is not None
        return key, secret

    def new_master(self) -> str:
        """Make the master cookie value (the previous one stops working); returned once, never stored."""
        secret = secrets.token_urlsafe(32)
        with self.db.transaction() as conn:
            conn.execute("UPDATE api_keys SET revoked = ? WHERE kind = 'master' AND revoked = ''", (_now(),))
            conn.execute(
                "INSERT INTO api_keys (name, kind, role, key_hash, created) VALUES (?, 'master', 'admin', ?, ?)",
                (MASTER_NAME, hash_secret(secret), _now()),
            )
        return secret

    def by_name(self, name: str) -> ApiKey | None:
        """The active (not revoked) key with this name, if any."""
        row = self.db.conn.execute(
            "SELECT * FROM api_keys WHERE name = ? AND revoked = '' AND kind = 'key'", (name.strip(),)
        ).fetchone()
        return self._key(row) if row else None

    def all(self, include_revoked: bool = False) -> list[ApiKey]:
        """Every key (and master cookie), by name."""
        sql = "SELECT * FROM api_keys" + ("" if include_revoked else " WHERE revoked = ''") + " ORDER BY name, id"
        return [self._key(r) for r in self.db.conn.execute(sql)]

    def revoke(self, name: str) -> ApiKey:
        """Revoke the active key with this name (``master-cookie`` revokes the master cookie).

        Raises
        ------
        NotFound
            No active key has this name.
        """
        kind = "master" if name.strip().lower() == MASTER_NAME else "key"
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT * FROM api_keys WHERE name = ? AND kind = ? AND revoked = ''", (name.strip(), kind)
            ).fetchone()
            if row is None:
                raise NotFound(f"no active API key named {name!r}")
            conn.execute("UPDATE api_keys SET revoked = ? WHERE id = ?", (_now(), row["id"]))
        return self._key(row)

    def check(self, secret: str, kind: str = "key") -> Check:
        """Whether ``secret`` is an active key (or master cookie, ``kind="master"``).

        Returns
        -------
        Check
            The key and an empty refusal when it may be used; else the refusal ("unknown", "revoked",
            "expired"), with the key when it matched a revoked or expired one.
        """
        if not secret or len(secret) > 200:
            return Check(None, "unknown")
        digest = hash_secret(secret)
        row = self.db.conn.execute("SELECT * FROM api_keys WHERE key_hash = ? AND kind = ?", (digest, kind)).fetchone()
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            return Check(None, "unknown")
        key = self._key(row)
        state = key.state()
        return Check(key, "" if state == "active" else state)

    def get(self, key_id: int) -> ApiKey:
        """The key with this id.

        Raises
        ------
        NotFound
            No such key.
        """
        row = self.db.conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFound(f"no API key {key_id}")
        return self._key(row)
