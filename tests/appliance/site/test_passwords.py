"""Staff password hashes without werkzeug in the core: hashes werkzeug made keep verifying, and the other way."""

from __future__ import annotations

from pathlib import Path

import pytest
from werkzeug.security import check_password_hash, generate_password_hash

from appliance.db import Database
from appliance.site.passwords import hash_password, verify_password
from appliance.site.users import Users


@pytest.mark.parametrize("method", ["scrypt", "scrypt:16384:8:1", "pbkdf2:sha256:1000", "pbkdf2:sha512:600"])
def test_a_hash_werkzeug_made_still_verifies(method: str) -> None:
    stored = generate_password_hash("correct horse ünicode", method=method)
    assert verify_password(stored, "correct horse ünicode")
    assert not verify_password(stored, "correct horse unicode")


def test_our_hash_is_werkzeugs_format_and_verifies_there_too() -> None:
    stored = hash_password("a-long-password-1")
    assert stored.startswith("scrypt:32768:8:1$") and "a-long-password-1" not in stored
    assert check_password_hash(stored, "a-long-password-1")
    assert not check_password_hash(stored, "a-long-password-2")
    assert verify_password(stored, "a-long-password-1")
    assert hash_password("a-long-password-1") != stored  # salted


@pytest.mark.parametrize(
    "stored",
    ["", "plain", "md5$salt$abc", "scrypt:1:2$salt$00", "pbkdf2:sha256:x$s$00", "pbkdf2:nohash:10$s$00", "scrypt$salt"],
)
def test_an_unreadable_hash_never_verifies(stored: str) -> None:
    assert not verify_password(stored, "anything")


def test_a_user_stored_by_an_earlier_version_signs_in(tmp_path: Path) -> None:
    """Accounts made while the hashes came from werkzeug sign in as before; a new password gets our hash."""
    db = Database(tmp_path / "index.sqlite")
    users = Users(db)
    user = users.add("desk", "placeholder-password", "frontdesk")
    with db.transaction() as conn:
        conn.execute(
            "UPDATE users SET password_hash = ? WHERE id = ?",
            (generate_password_hash("old-werkzeug-password"), user.id),
        )
    assert users.authenticate("desk", "old-werkzeug-password") is not None
    assert users.authenticate("desk", "placeholder-password") is None
    users.set_password(user.id, "new-password-1")
    assert users.authenticate("desk", "new-password-1") is not None
    db.close()
