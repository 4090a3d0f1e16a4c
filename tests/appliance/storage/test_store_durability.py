"""What a crash or a power cut can leave behind in the file store, and how the next start repairs it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

import dicomdata
from conftest import HOST, free_port, indexed, wait_until


def _dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's data set: what follows the preamble and the file meta group."""
    raw = path.read_bytes()
    return raw[144 + int.from_bytes(raw[140:144], "little") :]


def _images(port: int, study_uid: str) -> set[str]:
    """SOP Instance UIDs of a study, as a C-FIND at IMAGE level answers them."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    ae = AE(ae_title="FINDER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(HOST, port, ae_title="DISCPACS")
    assert assoc.is_established
    found = {
        str(ident.SOPInstanceUID)
        for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        if status is not None and status.Status in (0xFF00, 0xFF01) and ident is not None
    }
    assoc.release()
    return found


def test_sigkill_right_after_the_last_success_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(
        f'[appliance]\ndata_dir = "{tmp_path / "var"}"\n'
        f'[dicom]\nbind = "{HOST}"\nport = {port}\ntls_port = 0\nfree_space_limit_mb = 1\n'
        "[hl7]\nport = 0\n[web]\nport = 0\n[burn]\ndelay = 3600\n"
    )
    plain = dicomdata.study("PKILL", "KILL^STORE", ("CT",), 20)
    burned = dicomdata.study("PKILLTE", "KILL^BURN", ("CT",), 10)

    def serve() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ae = AE(ae_title="PROBE")
        ae.add_requested_context(CTImageStorage)

        def up() -> bool:
            assoc = ae.associate(HOST, port, ae_title="DISCPACS")
            established = bool(assoc.is_established)
            if established:
                assoc.release()
            return established

        wait_until(up, timeout=60, interval=0.2)
        return proc

    server = serve()
    try:
        ae = AE(ae_title="KILLER")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        to_store = ae.associate(HOST, port, ae_title="DISCPACS")
        for inst in plain:
            assert to_store.send_c_store(inst.dataset()).Status == 0
        to_store.release()
        # The delayed burn route (_TE, a group published after [burn] delay): its group must survive too.
        to_burn = ae.associate(HOST, port, ae_title="DISCPACS_TE")
        for inst in burned:
            assert to_burn.send_c_store(inst.dataset()).Status == 0
        server.send_signal(signal.SIGKILL)  # as soon as the last Success has arrived, mid-association
        assert server.wait(timeout=30) == -signal.SIGKILL
        to_burn.abort()
        server = serve()
        assert _images(port, plain[0].study_uid) == {i.sop_uid for i in plain}
        assert _images(port, burned[0].study_uid) == {i.sop_uid for i in burned}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    db = sqlite3.connect(tmp_path / "var" / "appliance.db")
    try:
        paths = dict(db.execute("SELECT sop_uid, path FROM instances").fetchall())
        grouped = {
            row[0]
            for row in db.execute(
                "SELECT i.sop_uid FROM burn_group_instances i JOIN burn_groups g ON g.id = i.group_id"
                " WHERE g.called_ae = 'DISCPACS_TE'"
            )
        }
    finally:
        db.close()
    assert grouped == {i.sop_uid for i in burned}
    for inst in plain + burned:  # the bytes the SCU sent, as stored
        rel = paths[inst.sop_uid]
        stored = tmp_path / "var" / "store" / rel.split(":", 1)[-1]
        assert _dataset_bytes(stored) == encode(inst.dataset(), False, True)


def test_stored_files_without_index_rows_are_indexed_with_their_sender(node_factory, tmp_path: Path) -> None:
    # A crash between a file's rename into the store and its index commit (the instance was not acknowledged)
    # leaves a whole file without a row: the next start indexes it, with the sender kept in the file's meta.
    data = tmp_path / "cut"
    node = node_factory(data_dir=data)
    items = dicomdata.study("PROWS", "LOST^ROWS", ("CT",), 3)
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    for inst in items:
        assert assoc.send_c_store(inst.dataset()).Status == 0
    assoc.release()
    lost = items[1:]
    paths = {i.sop_uid: indexed(node.app, i.sop_uid).path for i in items}
    node.dicom.stop()
    node.app.index.remove_paths(paths[i.sop_uid] for i in lost)
    assert node.app.index.lookup(lost[0].sop_uid) is None
    node.app.db.close()  # no clean stop: the "running" marker stays
    restarted = node_factory(data_dir=data)
    for inst in items:
        found = restarted.app.index.lookup(inst.sop_uid)
        assert found is not None and found.path == paths[inst.sop_uid]
    calling = {row[0] for row in restarted.app.db.conn.execute("SELECT calling_ae FROM instances")}
    assert calling == {"MODALITY1"}
    studies = restarted.app.db.conn.execute("SELECT num_instances FROM studies").fetchall()
    assert [row[0] for row in studies] == [3]


def test_indexed_file_whose_rename_was_lost_is_moved_into_place(node_factory, tmp_path: Path) -> None:
    data = tmp_path / "cut"
    node = node_factory(data_dir=data)
    kept, moved = dicomdata.study("PCUT", "POWER^CUT", ("CT",), 2)
    ae = AE(ae_title="CUT")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    for inst in (kept, moved):
        assert assoc.send_c_store(inst.dataset()).Status == 0
    assoc.release()
    found = node.app.index.lookup(moved.sop_uid)
    assert found is not None
    node.dicom.stop()
    node.app.db.close()  # no clean stop: the "running" marker stays
    # Versions before the rename was flushed: after a power cut an indexed file may still be under tmp/,
    # whole (it was flushed before the rename), with the same name as its place in the store.
    final = data / "store" / found.path
    os.replace(final, data / "store" / "tmp" / f"{final.stem}.part")
    (data / "store" / "tmp" / "0123.part").write_bytes(b"half")  # an unfinished write, never acknowledged
    restarted = node_factory(data_dir=data)
    assert final.exists()
    assert restarted.app.index.lookup(moved.sop_uid) is not None
    assert restarted.app.index.lookup(kept.sop_uid) is not None
    assert list((data / "store" / "tmp").iterdir()) == []
    assert set(restarted.app.store_area.iter_files()) == restarted.app.index.all_paths()


def test_temporary_and_final_names_share_the_uuid(tmp_path: Path) -> None:
    from appliance.store import FileStore

    store = FileStore(tmp_path / "store")
    rel = store.write([b"abc", b"def"])
    assert (tmp_path / "store" / rel).read_bytes() == b"abcdef"
    assert not store.finish_interrupted(rel)  # already in place
    os.replace(tmp_path / "store" / rel, store.tmp / f"{Path(rel).stem}.part")
    assert store.finish_interrupted(rel)
    assert (tmp_path / "store" / rel).read_bytes() == b"abcdef"
