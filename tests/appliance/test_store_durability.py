"""What a power cut can leave behind in the file store, and how the next start repairs it."""

from __future__ import annotations

import os
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]  # generated at import time

import dicomdata
from conftest import HOST


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
    # The rename is not flushed before the answer: after a power cut the file may still be under tmp/,
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
