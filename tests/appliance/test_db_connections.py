"""The database's connections: one per thread, and none left open by threads that have ended."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dicomdata
from conftest import HOST, Node, dcmtk


def connections_to(database: Path) -> int:
    """Open file descriptors of this process on the database file (one per SQLite connection)."""
    target = str(database.resolve())
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:  # closed while we looked
            continue
    return count


@pytest.mark.dcmtk
def test_associations_do_not_leave_connections_open(node: Node, tmp_path: Path) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd")
    path = dicomdata.study("PCONN", "CONN^LEAK", ("CT",), 1)[0].write(tmp_path)
    for _ in range(20):  # each association is served in a thread of its own, with its own connection
        dcmtk("storescu", "-aec", node.aet, HOST, str(node.port), str(path), check=True)
    # The node's own connection, and those of the last associations whose threads may not have ended yet.
    assert connections_to(node.cfg.database) <= 3
