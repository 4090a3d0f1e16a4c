"""Staff accounts of the web UI: names, hashed passwords and roles.

Passwords are hashed with salted scrypt (:mod:`appliance.site.passwords`); the plain password is never
stored or logged. Two roles: ``admin`` (everything, including users, nodes, settings, logs and deleting
studies) and ``frontdesk`` (find studies, download, patient links and slips, echo nodes).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import sqlite3
from dataclasses import dataclass

from appliance.db import Database
from appliance.errors import InvalidValue, NotFound
from appliance.site.passwords import hash_password, verify_password

ROLES = ("admin", "frontdesk")
#: Shortest password accepted.
MIN_PASSWORD = 8
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@functools.cache
def _dummy_hash() -> str:
    # Checked against when the user name is unknown, so that a wrong name costs as long as a wrong password.
    return hash_password("not a password of anyone")


@dataclass(frozen=True)
class User:
    """A staff account (without its password hash)."""

    id: int
    name: str
    role: str
    created: str
    last_login: str
    #: Bumped by sign-out, a password or role change, disabling: signed cookies made before no longer open a
    #: session.
    session_gen: int = 0
    #: A disabled account cannot sign in; its sessions ended when it was disabled.
    disabled: bool = False

    @property
    def is_admin(self) -> bool:
        """Whether the user holds the admin role."""
        return self.role == "admin"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_password(password: str) -> str:
    """Return ``password`` if it is acceptable.

    Raises
    ------
    InvalidValue
        If it is shorter than :data:`MIN_PASSWORD` characters.
    """
    if len(password) < MIN_PASSWORD:
        raise InvalidValue(f"the password must have at least {MIN_PASSWORD} characters")
    return password


class Users:
    """The ``users`` table.

    Parameters
    ----------
    db : Database
        The appliance database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _user(row: sqlite3.Row) -> User:
        return User(
            row["id"],
            row["name"],
            row["role"],
            row["created"],
            row["last_login"],
            row["session_gen"],
            bool(row["disabled"]),
        )

    def add(self, name: str, password: str, role: str) -> User:
        """Create an account.

        Raises
        ------
        InvalidValue
            For a bad name, a short password, an unknown role, or a name already taken.
        """
        name = name.strip()
        if not _NAME_RE.match(name):
            raise InvalidValue("a user name has 1-64 characters: letters, digits, '.', '_', '@' or '-'")
        if role not in ROLES:
            raise InvalidValue(f"the role must be one of {', '.join(ROLES)}, not {role!r}")
        check_password(password)
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO users (name, password_hash, role, created) VALUES (?, ?, ?, ?)",
                    (name, hash_password(password), role, _now()),
                )
        except sqlite3.IntegrityError:
            raise InvalidValue(f"a user named {name!r} already exists") from None
        user = self.by_name(name)
        assert user is not None
        return user

    def by_name(self, name: str) -> User | None:
        """The account with this name (case-insensitive), if any."""
        row = self.db.conn.execute("SELECT * FROM users WHERE name = ?", (name.strip(),)).fetchone()
        return self._user(row) if row else None

    def get(self, user_id: int) -> User | None:
        """The account with this id, if any."""
        row = self.db.conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return self._user(row) if row else None

    def all(self) -> list[User]:
        """Every account, by name."""
        return [self._user(r) for r in self.db.conn.execute("SELECT * FROM users ORDER BY name")]

    def authenticate(self, name: str, password: str) -> User | None:
        """The account if ``password`` is its password, else None; records the login time."""
        row = self.db.conn.execute("SELECT * FROM users WHERE name = ?", (name.strip(),)).fetchone()
        if row is None:
            verify_password(_dummy_hash(), password)
            return None
        if not verify_password(row["password_hash"], password) or row["disabled"]:
            return None
        with self.db.transaction() as conn:
            conn.execute("UPDATE users SET last_login = ? WHERE id = ?", (_now(), row["id"]))
        return self.get(row["id"])

    def set_password(self, user_id: int, password: str) -> None:
        """Replace an account's password; its sessions end (those of a stolen cookie too).

        Raises
        ------
        NotFound
            If there is no such account.
        InvalidValue
            If the password is too short.
        """
        check_password(password)
        with self.db.transaction() as conn:
            if not conn.execute(
                "UPDATE users SET password_hash = ?, session_gen = session_gen + 1 WHERE id = ?",
                (hash_password(password), user_id),
            ).rowcount:
                raise NotFound(f"no user with id {user_id}")

    def end_sessions(self, user_id: int) -> None:
        """Make every session cookie of an account stop working (sign-out ends the session everywhere)."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE users SET session_gen = session_gen + 1 WHERE id = ?", (user_id,))

    def _admins_besides(self, conn: sqlite3.Connection, user_id: int) -> int:
        return int(
            conn.execute(
                "SELECT COUNT(*) FROM users WHERE role = 'admin' AND NOT disabled AND id != ?", (user_id,)
            ).fetchone()[0]
        )

    def set_disabled(self, user_id: int, disabled: bool) -> None:
        """Disable an account (it cannot sign in, its sessions end at once) or enable it again.

        Raises
        ------
        InvalidValue
            When it would leave no enabled admin.
        NotFound
            If there is no such account.
        """
        with self.db.transaction() as conn:
            row = conn.execute("SELECT role FROM users WHERE id = ?", (user_id,)).fetchone()
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            if disabled and row["role"] == "admin" and not self._admins_besides(conn, user_id):
                raise InvalidValue("the last admin cannot be disabled")
            conn.execute(
                "UPDATE users SET disabled = ?, session_gen = session_gen + 1 WHERE id = ?", (int(disabled), user_id)
            )

    def set_role(self, user_id: int, role: str) -> None:
        """Change an account's role (its sessions end); the last admin keeps the admin role.

        Raises
        ------
        InvalidValue
            For an unknown role, or when it would leave no admin.
        NotFound
            If there is no such account.
        """
        if role not in ROLES:
            raise InvalidValue(f"the role must be one of {', '.join(ROLES)}, not {role!r}")
        with self.db.transaction() as conn:
            if role != "admin" and not self._admins_besides(conn, user_id):
                raise InvalidValue("the last admin cannot lose the admin role")
            if not conn.execute(
                "UPDATE users SET role = ?, session_gen = session_gen + 1 WHERE id = ?", (role, user_id)
            ).rowcount:
                raise NotFound(f"no user with id {user_id}")

    def delete(self, user_id: int) -> None:
        """Delete an account; the last admin cannot be deleted.

        Raises
        ------
        InvalidValue
            When it is the last admin.
        NotFound
            If there is no such account.
        """
        with self.db.transaction() as conn:
            row = conn.execute("SELECT role FROM users WHERE id = ?", (user_id,)).fetchone()
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            if row["role"] == "admin" and not self._admins_besides(conn, user_id):
                raise InvalidValue("the last admin cannot be deleted")
            conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
