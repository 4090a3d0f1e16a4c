"""Shared hot-folder helpers: atomic writes, status files read while being rewritten, path mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robots.base import BurnRequest, JobState, RequestError
from robots.hotfolder import Liveness, PathMap, atomic_write, job_files, read_ini

STF = b"[TDB_INFO]\r\nVERSION=10.0.1.0\r\n[ACTIVE_JOB]\r\nJOB1=J1\r\n[J1]\r\nSTATUS=2\r\n"


def test_atomic_write_leaves_only_the_final_file(tmp_path: Path) -> None:
    path = atomic_write(tmp_path, "J1.JDF", b"JOB_ID=J1\r\n")
    assert path.read_bytes() == b"JOB_ID=J1\r\n"
    assert [p.name for p in tmp_path.iterdir()] == ["J1.JDF"]


def test_job_files_match_the_base_exactly_and_the_extension_in_any_case(tmp_path: Path) -> None:
    for name in ("J1.inp", "J1.DAT", "J10.JDF", "XJ1.DON"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(job_files(tmp_path, "J1")) == ["DAT", "INP"]


@pytest.mark.parametrize("partial", [b"", b"[TDB_INFO]\r\nVER", b"\x00\x00\x00\x00", b"[ACTIVE_JOB]\r\nJOB1=J1\r\n"])
def test_a_partial_status_read_is_retried(partial: bytes) -> None:
    reads = [partial, partial, STF]
    ini = read_ini(Path("TDBStatus.txt"), required=("TDB_INFO", "ACTIVE_JOB"), delay=0, reader=lambda _: reads.pop(0))
    assert ini is not None and ini["J1"] == {"STATUS": "2"} and reads == []


def test_a_sharing_violation_is_retried_and_a_status_file_that_stays_broken_gives_none() -> None:
    calls = []

    def busy(_: Path) -> bytes:
        calls.append(1)
        raise PermissionError("in use")

    assert read_ini(Path("x"), attempts=3, delay=0, reader=busy) is None and len(calls) == 3
    assert read_ini(Path("/nonexistent/TDBStatus.txt")) is None


def test_a_utf16_status_file_is_read() -> None:
    data = "\ufeff[System]\r\nSysErrorString=Keine Fehler – ok\r\n".encode("utf-16-le")
    ini = read_ini(Path("x"), required=("System",), reader=lambda _: data)
    assert ini == {"System": {"SysErrorString": "Keine Fehler – ok"}}


@pytest.mark.parametrize(
    ("bridge_root", "expected"),
    [
        ("\\\\PC\\share\\discs", "\\\\PC\\share\\discs\\J1\\fileset\\DICOMDIR"),
        ("D:\\discs\\", "D:\\discs\\J1\\fileset\\DICOMDIR"),
        ("/mnt/discs", "/mnt/discs/J1/fileset/DICOMDIR"),
    ],
)
def test_path_mapping_to_the_bridge_pc_and_back(bridge_root: str, expected: str) -> None:
    paths = PathMap.from_roots([("/var/app/discs/", bridge_root)])
    assert paths.to_bridge("/var/app/discs/J1/fileset/DICOMDIR") == expected
    assert paths.to_local(expected) == Path("/var/app/discs/J1/fileset/DICOMDIR")


def test_path_mapping_refuses_paths_outside_and_prefers_the_longest_root() -> None:
    paths = PathMap.from_roots([("/var/app", "D:\\app"), ("/var/app/discs", "\\\\PC\\discs")])
    assert paths.to_bridge("/var/app/discs/a.iso") == "\\\\PC\\discs\\a.iso"
    assert paths.to_bridge("/var/app/other/a.iso") == "D:\\app\\other\\a.iso"
    with pytest.raises(RequestError, match="outside local_root"):
        paths.to_bridge("/var/application/a.iso")
    assert paths.to_local("E:\\other\\a.iso") is None


@given(
    st.lists(
        st.text(alphabet="abcXYZ019_-. ", min_size=1, max_size=12).filter(lambda s: s.strip(". ")),
        min_size=1,
        max_size=5,
    )
)
def test_any_local_path_under_the_root_round_trips(parts: list[str]) -> None:
    paths = PathMap.from_roots([("/var/app/discs", "\\\\PC\\share")])
    local = Path("/var/app/discs", *parts)
    bridge = paths.to_bridge(local)
    assert bridge.startswith("\\\\PC\\share\\") and "/" not in bridge
    assert paths.to_local(bridge) == local


def test_liveness_uses_the_mtime_first_then_its_own_clock() -> None:
    clock = Liveness()
    assert clock.observe(1, mtime=0.0) > 1_000_000  # a file untouched since 1970: long dead
    assert clock.observe(2, mtime=0.0) < 1.0  # it changed: alive now, whatever the file clock says


def test_burn_request_validation() -> None:
    iso = Path("/d.iso")
    assert BurnRequest("J-1_a", 1, "BD", "x", data_paths=[Path("/a")]).data_paths == (Path("/a"),)  # type: ignore[arg-type]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"job_id": "J 1"}, "job id"),
        ({"job_id": "J" * 33}, "job id"),
        ({"copies": 0}, "copies"),
        ({"media": "HD-DVD"}, "media"),
        ({"image_path": None}, "either"),
        ({"data_paths": (Path("/a"),)}, "either"),
    ]
    for kwargs, message in cases:
        args = {"job_id": "J1", "copies": 1, "media": "CD", "volume_label": "x", "image_path": iso, **kwargs}
        with pytest.raises(RequestError, match=message):
            BurnRequest(**args)
    assert JobState.CANCELLED.final and not JobState.BRIDGE_OFFLINE.final


def test_running_state_never_goes_back(tmp_path) -> None:
    """A status file lagging behind the job file's rename must not make a burning disc look queued again."""
    from robots import JobProgress, JobState
    from robots.registry import create_robot

    robot = create_robot("epson", {"hotfolder": str(tmp_path)})
    seen = [
        robot._forward_only("T1", JobProgress(state, "x")).state  # type: ignore[attr-defined]
        for state in (JobState.PENDING, JobState.BURNING, JobState.ACCEPTED, JobState.BURNING, JobState.DONE)
    ]
    assert seen == [JobState.PENDING, JobState.BURNING, JobState.BURNING, JobState.BURNING, JobState.DONE]
    # A new job with the same ticket after a final state starts afresh.
    assert robot._forward_only("T1", JobProgress(JobState.ACCEPTED, "x")).state == JobState.ACCEPTED  # type: ignore[attr-defined]
