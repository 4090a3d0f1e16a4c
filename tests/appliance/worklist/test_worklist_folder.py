"""The watched worklist folder (``[worklist] folder``): items follow the ``.wl`` files, as ``wlmscpfs -dfp``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hl7support import findscu_mwl, sps
from pydicom.dataset import Dataset
from wlmscpfs_support import write_wl

from appliance.worklist.files import FolderWatcher

from conftest import HOST, Node, free_port, wait_until


def wl(pid: str, name: str, sps_id: str, study: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = name, pid
    ds.StudyInstanceUID, ds.RequestedProcedureID = study, f"RP-{sps_id}"
    ds.RequestedProcedureDescription = "CT"
    step = Dataset()
    step.ScheduledStationAETitle, step.Modality = "CT1", "CT"
    step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime = "20260905", "1100"
    step.ScheduledProcedureStepID, step.ScheduledProcedureStepDescription = sps_id, "CT step"
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def _touch_later(path: Path) -> None:
    # A rewrite within the file system's time resolution must still be seen: move mtime on.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_folder_changes_are_followed(node: Node, tmp_path: Path) -> None:
    folder = tmp_path / "wl"
    write_wl(folder / "a.wl", wl("F1", "Doe^Jane", "A1", "1.2.826.0.1.3680043.10.77.1"))
    write_wl(folder / "sub" / "b.wl", wl("F2", "Roe^Rob", "B1", "1.2.826.0.1.3680043.10.77.2"))
    watcher = FolderWatcher(node.app.worklist, folder)
    assert watcher.scan() == 2
    assert sorted(r.sps_id for r in node.app.worklist.items()) == ["A1", "B1"]
    assert watcher.scan() == 0  # nothing changed, nothing read
    # A changed file replaces its items (here: another step ID), a new one adds, a removed one takes its items.
    write_wl(folder / "a.wl", wl("F1", "Doe^Janet", "A2", "1.2.826.0.1.3680043.10.77.1"))
    _touch_later(folder / "a.wl")
    (folder / "sub" / "b.wl").unlink()
    write_wl(folder / "c.wl", wl("F3", "Poe^Pia", "C1", "1.2.826.0.1.3680043.10.77.3"))
    assert watcher.scan() == 3
    rows = {r.sps_id: r for r in node.app.worklist.items()}
    assert sorted(rows) == ["A2", "C1"] and rows["A2"].patient_name == "Doe^Janet"
    # A file that becomes unreadable gives no items (wlmscpfs ignores it too).
    (folder / "c.wl").write_bytes(b"garbage")
    _touch_later(folder / "c.wl")
    watcher.scan()
    assert sorted(r.sps_id for r in node.app.worklist.items()) == ["A2"]
    # Items of other sources are never touched by the folder.
    assert all(r.source.startswith("folder:") for r in node.app.worklist.items())


def test_a_restart_drops_items_of_files_removed_meanwhile(node: Node, tmp_path: Path) -> None:
    folder = tmp_path / "wl"
    write_wl(folder / "a.wl", wl("F1", "Doe^Jane", "A1", "1.2.826.0.1.3680043.10.78.1"))
    write_wl(folder / "b.wl", wl("F2", "Roe^Rob", "B1", "1.2.826.0.1.3680043.10.78.2"))
    FolderWatcher(node.app.worklist, folder).scan()
    (folder / "b.wl").unlink()
    FolderWatcher(node.app.worklist, folder).scan()  # a new watcher, as after a restart
    assert [r.sps_id for r in node.app.worklist.items()] == ["A1"]


def test_serve_watches_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "worklists"
    folder.mkdir()
    port = free_port()
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f"""[appliance]
data_dir = "{tmp_path / "data"}"
[dicom]
bind = "{HOST}"
port = {port}
tls_port = 0
[hl7]
port = 0
[web]
port = 0
[worklist]
folder = "worklists"
folder_poll = 0.2
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    peer = Peer("DISCPACS", port)
    try:
        write_wl(folder / "one.wl", wl("S1", "Doe^Jane", "W1", "1.2.826.0.1.3680043.10.79.1"))
        answers = wait_until(lambda: _try_find(peer, tmp_path), timeout=60)
        assert [sps(a).ScheduledProcedureStepID for a in answers] == ["W1"]
        (folder / "one.wl").unlink()
        wait_until(lambda: _try_find(peer, tmp_path) == [], timeout=60)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "worklist folder: one.wl read, 1 item(s)" in output


@dataclass
class Peer:
    """What findscu_mwl needs of a node: its AE title and port."""

    aet: str
    port: int


def _try_find(peer: Peer, tmp_path: Path) -> list[Dataset] | None:
    try:
        return findscu_mwl(peer, tmp_path, check=True)  # type: ignore[arg-type]
    except AssertionError:
        return None  # not listening yet
