"""Patient tokens: one per study, hash-only storage, expiry from the study date, revoke/extend/regenerate."""

from __future__ import annotations

import datetime as dt
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import ConfigError, parse_config, parse_validity
from appliance.db import Database
from appliance.errors import InvalidValue, NotFound
from appliance.site.tokens import TOKEN_LENGTH, Tokens, add_validity, hash_token, load_or_create_key

import dicomdata


class Clock:
    """A settable 'today'."""

    def __init__(self, day: dt.date) -> None:
        self.day = day

    def __call__(self) -> dt.date:
        return self.day


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "a.db")
    yield database
    database.close()


def test_token_is_64_urlsafe_chars_and_only_its_hash_is_stored(db: Database, tmp_path: Path) -> None:
    tokens = Tokens(db, tmp_path / "secrets" / "token.key", 30)
    info = tokens.ensure("1.2.3", "20240105")
    token = tokens.token("1.2.3")
    assert len(token) == TOKEN_LENGTH == 64
    assert re.fullmatch(r"[A-Za-z0-9_-]{64}", token)
    row = dict(db.conn.execute("SELECT * FROM tokens").fetchone())
    assert row["token_hash"] == hash_token(token)
    # The token appears nowhere in the database file.
    dump = "\n".join(db.conn.iterdump())
    assert token not in dump
    assert info.valid_until == dt.date(2024, 2, 4)
    # The same token comes back later (slips and labels print it again), from the key file and the seed.
    assert Tokens(db, tmp_path / "secrets" / "token.key", 30).token("1.2.3") == token
    assert Tokens(db, tmp_path / "other.key", 30).token("1.2.3") != token


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "s" / "k.key")
    assert len(key) == 32
    assert stat.S_IMODE((tmp_path / "s" / "k.key").stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path / "s" / "k.key") == key


def test_one_token_per_study_created_once(db: Database, tmp_path: Path) -> None:
    tokens = Tokens(db, tmp_path / "k", 60)
    first = tokens.ensure("1.2.3", "20240105")
    again = tokens.ensure("1.2.3", "20990101")
    assert first == again
    assert db.conn.execute("SELECT COUNT(*) FROM tokens").fetchone()[0] == 1


def test_tokens_are_random(db: Database, tmp_path: Path) -> None:
    tokens = Tokens(db, tmp_path / "k", 60)
    values = set()
    for n in range(50):
        tokens.ensure(f"1.2.{n}", "20240105")
        values.add(tokens.token(f"1.2.{n}"))
    assert len(values) == 50


@pytest.mark.parametrize(
    ("validity", "study_date", "until"),
    [
        (7, "20240105", dt.date(2024, 1, 12)),
        ("14 days", "20240105", dt.date(2024, 1, 19)),
        ("2 weeks", "20240105", dt.date(2024, 1, 19)),
        ("6 months", "20240831", dt.date(2025, 2, 28)),
        ("1 year", "20240229", dt.date(2025, 2, 28)),
        ("1 month", "20240131", dt.date(2024, 2, 29)),
    ],
)
def test_expiry_from_study_date(
    db: Database, tmp_path: Path, validity: int | str, study_date: str, until: dt.date
) -> None:
    assert Tokens(db, tmp_path / "k", validity).valid_until(study_date) == until


def test_study_without_date_counts_from_today(db: Database, tmp_path: Path) -> None:
    tokens = Tokens(db, tmp_path / "k", 10, today=Clock(dt.date(2030, 5, 1)))
    assert tokens.valid_until("") == dt.date(2030, 5, 11)
    assert tokens.valid_until("garbage") == dt.date(2030, 5, 11)


def test_resolve_valid_until_end_of_last_day_then_none(db: Database, tmp_path: Path) -> None:
    clock = Clock(dt.date(2024, 1, 5))
    tokens = Tokens(db, tmp_path / "k", 7, today=clock)
    tokens.ensure("1.2.3", "20240105")
    token = tokens.token("1.2.3")
    assert tokens.resolve(token) is not None
    clock.day = dt.date(2024, 1, 12)  # last day: still works
    assert tokens.resolve(token) is not None
    clock.day = dt.date(2024, 1, 13)
    assert tokens.resolve(token) is None


@pytest.mark.parametrize("bad", ["", "short", "x" * 64, "x" * 65, "é" * 64, "../" * 22, "A" * 63 + "="])
def test_resolve_unknown_or_malformed_is_none(db: Database, tmp_path: Path, bad: str) -> None:
    tokens = Tokens(db, tmp_path / "k", 7)
    tokens.ensure("1.2.3", dt.date.today().strftime("%Y%m%d"))
    assert tokens.resolve(bad) is None


def test_revoke_extend_regenerate(db: Database, tmp_path: Path) -> None:
    clock = Clock(dt.date(2024, 1, 5))
    tokens = Tokens(db, tmp_path / "k", 7, today=clock)
    tokens.ensure("1.2.3", "20240105")
    token = tokens.token("1.2.3")
    assert tokens.revoke("1.2.3").state(clock()) == "revoked"
    assert tokens.resolve(token) is None
    info = tokens.extend("1.2.3", dt.date(2024, 3, 1))
    assert info.valid_until == dt.date(2024, 3, 1) and info.state(clock()) == "revoked"
    new = tokens.regenerate("1.2.3")
    assert new.state(clock()) == "valid" and new.valid_until == dt.date(2024, 1, 12)
    assert tokens.resolve(token) is None
    assert tokens.resolve(tokens.token("1.2.3")) is not None
    assert tokens.is_usable(new.id, info.hash_prefix) is None  # sessions of the old link end
    assert tokens.is_usable(new.id, new.hash_prefix) is not None
    clock.day = dt.date(2024, 2, 1)
    assert tokens.resolve(tokens.token("1.2.3")) is None
    tokens.extend("1.2.3", dt.date(2024, 2, 1))
    assert tokens.resolve(tokens.token("1.2.3")) is not None


def test_extend_refuses_past_and_far_future(db: Database, tmp_path: Path) -> None:
    tokens = Tokens(db, tmp_path / "k", 7, today=Clock(dt.date(2024, 1, 5)))
    tokens.ensure("1.2.3", "20240105")
    with pytest.raises(InvalidValue, match="past"):
        tokens.extend("1.2.3", dt.date(2024, 1, 4))
    with pytest.raises(InvalidValue, match="ten years"):
        tokens.extend("1.2.3", dt.date(2040, 1, 1))
    with pytest.raises(NotFound):
        tokens.extend("9.9", dt.date(2024, 2, 1))
    with pytest.raises(NotFound):
        tokens.revoke("9.9")
    with pytest.raises(NotFound):
        tokens.token("9.9")


def test_delete_and_purge(db: Database, tmp_path: Path) -> None:
    tokens = Tokens(db, tmp_path / "k", 7, today=Clock(dt.date(2024, 1, 5)))
    tokens.ensure("1.2.3", "20240105")
    tokens.ensure("1.2.4", "20200105")
    assert tokens.purge_expired(older_than_days=365) == 1
    assert tokens.delete("1.2.3") and not tokens.delete("1.2.3")
    assert tokens.get("1.2.3") is None


def test_store_listener_creates_one_token_per_study(env, store) -> None:
    """Every stored study got exactly one token when its instances arrived (see conftest: 3 studies)."""
    rows = env.app.db.conn.execute("SELECT study_uid FROM tokens").fetchall()
    assert sorted(r[0] for r in rows) == sorted(env.studies.values())
    info = env.site.tokens.get(env.studies["ct"])
    extra = dicomdata.study("PID100", "SMITH^ANNA", ("CT",), 1)
    extra[0].study_uid = env.studies["ct"]
    store(env.app, extra)
    assert env.site.tokens.get(env.studies["ct"]) == info
    new = dicomdata.study("PID900", "NEW^NELL", ("MR",), 2, study_date="20240105")
    store(env.app, new)
    assert env.site.tokens.get(new[0].study_uid).valid_until == dt.date(2024, 3, 5)


def test_validity_config() -> None:
    assert parse_validity(60) == (60, "days")
    assert parse_validity("6 Months") == (6, "months")
    assert parse_config({"web": {"token_days": "1 year"}}).web.token_days == "1 year"
    for bad in ("forever", 0, "0 days", True, 1.5):
        with pytest.raises(ConfigError):
            parse_config({"web": {"token_days": bad}})


def test_add_validity_months() -> None:
    assert add_validity(dt.date(2024, 12, 31), 2, "months") == dt.date(2025, 2, 28)
    assert add_validity(dt.date(2024, 1, 1), 3, "years") == dt.date(2027, 1, 1)
