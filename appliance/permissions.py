"""Private files: the appliance's data is readable by its service user (and its group), never by others.

The data folder holds patients' images, HL7 bodies, password hashes, the audit log, thumbnails and disc
staging. Every command runs with a umask of at least :data:`PRIVATE_UMASK` (files 0640, folders 0750), and
``appliance serve`` takes away, at start, what group-write and "other" permissions earlier runs (or a copy
made with another umask) left in the data folder. The store's own files are not walked (there may be
millions): its folder and the data folder are closed to others, which is what keeps them out.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

LOGGER = logging.getLogger(__name__)

#: Bits every file and folder we create goes without: group write, and everything for others.
PRIVATE_UMASK = 0o027
#: Most entries :func:`make_private` looks at in one start (a bound on the time it takes).
MAX_ENTRIES = 200_000


def apply_umask() -> int:
    """Add :data:`PRIVATE_UMASK` to the process umask (a stricter one is kept); return the previous umask."""
    previous = os.umask(PRIVATE_UMASK)
    os.umask(previous | PRIVATE_UMASK)
    return previous


def _restrict(path: Path, mode: int) -> bool:
    loose = stat.S_IMODE(mode) & PRIVATE_UMASK
    if not loose:
        return False
    try:
        os.chmod(path, stat.S_IMODE(mode) & ~PRIVATE_UMASK, follow_symlinks=False)
    except (NotImplementedError, OSError):
        return False
    return True


def make_private(data_dir: Path, skip: tuple[Path, ...] = ()) -> int:
    """Remove group-write and other permissions from ``data_dir`` and what it holds.

    Parameters
    ----------
    data_dir : Path
        The data folder (nothing is done when it does not exist).
    skip : tuple of Path
        Folders whose content is left alone: the store (only the folder itself is restricted), robot hot
        folders that a vendor bridge shares.

    Returns
    -------
    int
        How many files and folders were changed.
    """
    try:
        changed = int(_restrict(data_dir, data_dir.stat().st_mode))
    except OSError:
        return 0
    skipped = {os.path.realpath(p) for p in skip}
    seen = 0
    pending = [data_dir]
    while pending and seen < MAX_ENTRIES:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            changed += _restrict(Path(entry.path), st.st_mode)
            if stat.S_ISDIR(st.st_mode) and os.path.realpath(entry.path) not in skipped:
                pending.append(Path(entry.path))
    if seen >= MAX_ENTRIES:
        LOGGER.warning(
            "data folder %s: only the first %d entries were checked for private permissions", data_dir, MAX_ENTRIES
        )
    return changed
