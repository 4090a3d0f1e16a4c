"""Moving a storage to another folder without downtime: disable, copy, verify, switch, keep the old folder.

The steps are the manual's (disable the storage, copy its files, change its path, enable it), done by
``appliance storage move OLD NEW`` while ``appliance serve`` keeps running: the running server sees the
``storages`` table change within :data:`REFRESH_SECONDS` (:meth:`Storages.refresh`). Index paths name the
storage by number, so the switch changes one row and no index path.

The old folder is kept until ``appliance storage remove-old OLD`` (:func:`remove_old`) has checked that every
indexed file of that storage is in the new folder, and identical where the old folder has it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.db import Database
from appliance.errors import ApplianceError
from appliance.storage.storages import MARKER, split
from appliance.store import TMP

LOGGER = logging.getLogger(__name__)

#: How often the serve process re-reads the storages table.
REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class MoveReport:
    """What a move did."""

    number: int
    old: Path
    new: Path
    files: int
    size: int


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and TMP in dirnames:
            dirnames.remove(TMP)
        for name in filenames:
            if Path(dirpath) == root and name == MARKER:
                continue
            found.append(Path(dirpath, name).relative_to(root))
    return found


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".copying")
    with open(src, "rb") as fin, open(part, "wb") as fout:
        while chunk := fin.read(1024 * 1024):
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(part, dst)


def _copy_missing(old: Path, new: Path) -> int:
    copied = 0
    for rel in _files(old):
        target = new / rel
        if target.exists() and target.stat().st_size == (old / rel).stat().st_size:
            continue
        _copy(old / rel, target)
        copied += 1
    return copied


def move_storage(
    db: Database, old: Path, new: Path, settle: float = 2 * REFRESH_SECONDS + 1, say: Callable[[str], None] = print
) -> MoveReport:
    """Move the storage at ``old`` to ``new``.

    Parameters
    ----------
    db : Database
        The appliance database (``storages`` and ``instances``).
    old, new : Path
        The storage's folder now, and the empty (or missing) folder it moves to.
    settle : float
        Seconds to wait after disabling the storage, so a running server stops writing to it.
    say : callable
        Progress lines.

    Raises
    ------
    ApplianceError
        When ``old`` is no storage, ``new`` is not empty, or a copied file differs; the storage is then
        enabled again at ``old`` and nothing else changed.
    """
    old, new = Path(old).absolute(), Path(new).absolute()
    row = db.conn.execute("SELECT * FROM storages WHERE path = ?", (str(old),)).fetchone()
    if row is None:
        known = ", ".join(r[0] for r in db.conn.execute("SELECT path FROM storages ORDER BY id"))
        raise ApplianceError(f"{old} is not a storage (storages: {known or 'none yet'})")
    if row["moving"]:
        raise ApplianceError(f"storage {row['id']} is being moved to {row['moving']} already")
    if new.exists() and any(new.iterdir()):
        raise ApplianceError(f"{new} is not empty: a storage moves into an empty or new folder")
    if not (old / MARKER).is_file():
        raise ApplianceError(f"{old} has no {MARKER}: is its disk mounted?")
    number = int(row["id"])
    new.mkdir(parents=True, exist_ok=True)

    def _stamp() -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    with db.transaction() as tx:
        tx.execute("UPDATE storages SET moving = ?, updated = ? WHERE id = ?", (str(new), _stamp(), number))
    say(f"storage {number}: disabled for new files while it moves from {old} to {new}")
    try:
        time.sleep(settle)
        copied = _copy_missing(old, new)
        copied += _copy_missing(old, new)  # what arrived before the server saw the switch
        say(f"storage {number}: {copied} file(s) copied; verifying")
        size = 0
        files = _files(old)
        for rel in files:
            if _digest(old / rel) != _digest(new / rel):
                raise ApplianceError(f"copy of {rel} differs from the original")
            size += (new / rel).stat().st_size
        missing = [rel for rel in _indexed(db, number) if not (new / rel).is_file()]
        if missing:
            raise ApplianceError(f"{len(missing)} indexed file(s) are not in the copy, e.g. {missing[0]}")
        (new / MARKER).write_bytes((old / MARKER).read_bytes())
    except BaseException:
        with db.transaction() as tx:
            tx.execute("UPDATE storages SET moving = '', updated = ? WHERE id = ?", (_stamp(), number))
        say(f"storage {number}: move failed; it stays at {old} and takes new files again")
        raise
    with db.transaction() as tx:
        tx.execute(
            "UPDATE storages SET path = ?, moved_from = CASE WHEN moved_from = '' THEN ? ELSE moved_from END,"
            " moving = '', updated = ? WHERE id = ?",
            (str(new), str(old), _stamp(), number),
        )
    LOGGER.info("storage %d moved from %s to %s (%d files)", number, old, new, len(files))
    say(
        f"storage {number}: now at {new} ({len(files)} file(s), {size // (1024 * 1024)} MB verified);"
        f" the old folder {old} is kept: 'appliance storage remove-old {old}' removes it after checking the"
        " copy again"
    )
    return MoveReport(number, old, new, len(files), size)


def _indexed(db: Database, number: int) -> list[str]:
    """Paths inside storage ``number`` of every instance the index holds in it."""
    if number == 0:
        rows = db.conn.execute("SELECT path FROM instances WHERE path NOT LIKE '@%'")
    else:
        rows = db.conn.execute("SELECT path FROM instances WHERE path LIKE ?", (f"@{number}/%",))
    return [split(r[0])[1] for r in rows]


@dataclass(frozen=True)
class RemoveReport:
    """What :func:`remove_old` removed."""

    number: int
    old: Path
    new: Path
    files: int
    size: int


def remove_old(db: Database, old: Path, say: Callable[[str], None] = print) -> RemoveReport:
    """Remove the folder a storage was moved away from, once its new folder holds every indexed file.

    ``old`` must be a storage folder (its marker names the storage) that is no storage's folder any more.
    Every instance the index holds in that storage must be a file in the storage's current folder, and a
    file the old folder has too must be identical (same size and SHA-256); only then is the old folder's
    content removed. Files only the old folder has (deleted or recompressed since the move) go with it.

    Parameters
    ----------
    db : Database
        The appliance database (``storages`` and ``instances``).
    old : Path
        The folder ``appliance storage move`` kept.
    say : callable
        Progress lines.

    Raises
    ------
    ApplianceError
        When ``old`` is not a kept storage folder, the storage is moving or its new folder is not there, or a
        file is missing or differs; nothing is removed then.
    """
    old = Path(old).absolute()
    if not old.is_dir():
        raise ApplianceError(f"{old} is not a folder")
    try:
        number = int((old / MARKER).read_text().split()[0])
    except (OSError, IndexError, ValueError):
        raise ApplianceError(
            f"{old} has no readable {MARKER}: it is not a storage folder the appliance kept, so it is not removed"
        ) from None
    row = db.conn.execute("SELECT * FROM storages WHERE id = ?", (number,)).fetchone()
    if row is None:
        raise ApplianceError(f"{old} names storage {number}, which the appliance does not know; not removed")
    current = Path(row["path"]).absolute()
    if current == old:
        raise ApplianceError(
            f"{old} is storage {number}'s folder now, not an old copy; use 'appliance storage move' first"
        )
    if row["moving"]:
        raise ApplianceError(f"storage {number} is being moved to {row['moving']}; wait until the move is done")
    in_use = [Path(r[0]).absolute() for r in db.conn.execute("SELECT path FROM storages")]
    nested = [p for p in in_use if p.is_relative_to(old) or old.is_relative_to(p)]
    if nested:
        raise ApplianceError(f"{old} contains or is inside the storage folder {nested[0]}; not removed")
    try:
        marker = (current / MARKER).read_text().split()[0]
    except (OSError, IndexError):
        marker = ""
    if marker != str(number):
        raise ApplianceError(
            f"storage {number}'s folder {current} is not there (no {MARKER}): the old copy is kept "
            "while the new one cannot be checked"
        )
    indexed = _indexed(db, number)
    say(f"storage {number}: checking {len(indexed)} indexed file(s) in {current} against {old}")
    missing: list[str] = []
    different: list[str] = []
    for rel in indexed:
        new_file, old_file = current / rel, old / rel
        if not new_file.is_file():
            missing.append(rel)
        elif old_file.is_file() and (
            old_file.stat().st_size != new_file.stat().st_size or _digest(old_file) != _digest(new_file)
        ):
            different.append(rel)
    if missing or different:
        problems = []
        if missing:
            problems.append(f"{len(missing)} indexed file(s) are not in {current} (e.g. {missing[0]})")
        if different:
            problems.append(f"{len(different)} file(s) differ between the two folders (e.g. {different[0]})")
        raise ApplianceError(f"{old} is kept: " + "; ".join(problems))
    files = _files(old)
    size = 0
    for name in files:
        victim = old / name
        size += victim.stat().st_size
        victim.unlink()
    shutil.rmtree(old / TMP, ignore_errors=True)  # unfinished writes from before the move
    (old / MARKER).unlink(missing_ok=True)
    for dirpath, _dirnames, _filenames in os.walk(old, topdown=False):  # deepest first
        with contextlib.suppress(OSError):  # a mount point (or something put there since) stays
            Path(dirpath).rmdir()
    LOGGER.info("storage %d: old folder %s removed (%d files) after checking %s", number, old, len(files), current)
    left = " (the empty folder itself stays: it is a mount point or holds other things)" if old.exists() else ""
    say(f"storage {number}: old folder {old} removed, {len(files)} file(s), {size // (1024 * 1024)} MB{left}")
    return RemoveReport(number, old, current, len(files), size)


def update_config_path(config_file: Path, old: Path, new: Path) -> bool:
    """Change ``path = "OLD"`` to ``path = "NEW"`` in a config file when it appears exactly once."""
    text = config_file.read_text(encoding="utf-8")
    needle = f'path = "{old}"'
    if text.count(needle) != 1:
        return False
    tmp = config_file.with_name(config_file.name + ".new")
    tmp.write_text(text.replace(needle, f'path = "{new}"'), encoding="utf-8")
    os.replace(tmp, config_file)
    return True


__all__ = ["REFRESH_SECONDS", "MoveReport", "RemoveReport", "move_storage", "remove_old", "update_config_path"]
