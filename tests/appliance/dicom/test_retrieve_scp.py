"""C-MOVE and C-GET SCP with DCMTK movescu/getscu/storescp and pynetdicom."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

import dicomdata
from conftest import HOST, Node, dcmtk, free_port, wait_until


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp as a C-MOVE destination (AE DEST), writing into a folder."""
    port = free_port()
    out = tmp_path / "dest"
    out.mkdir()
    proc = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "DEST", "-od", str(out), "-v", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: _listening(port))
    yield port, out
    proc.terminate()
    proc.wait(timeout=10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def _nodes(**dest: dict) -> list[dict]:
    return [{"ae_title": ae, "host": HOST, **opts} for ae, opts in dest.items()]


@pytest.fixture
def mover(node_factory, archive_dir: Path, storescp: tuple[int, Path]) -> Node:
    port, _ = storescp
    node = node_factory(nodes=_nodes(DEST={"port": port}, NOMOVE={"port": port, "move": False}))
    dcmtk("storescu", "-aec", node.aet, "+sd", HOST, str(node.port), str(archive_dir), check=True)
    return node


def _study_uid(node: Node, accession: str) -> str:
    row = node.app.db.conn.execute("SELECT study_uid FROM studies WHERE accession = ?", (accession,)).fetchone()
    return str(row[0])


def test_movescu_study_to_storescp(mover: Node, storescp: tuple[int, Path]) -> None:
    _, out = storescp
    uid = _study_uid(mover, "A100")
    proc = dcmtk(
        "movescu",
        "-S",
        "-aec",
        mover.aet,
        "-aem",
        "DEST",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={uid}",
        "-v",
        HOST,
        str(mover.port),
    )
    assert proc.returncode == 0, proc.stderr
    files = wait_until(lambda: list(out.iterdir()) if len(list(out.iterdir())) == 4 else None)
    assert {dcmread(f).StudyInstanceUID for f in files} == {uid}
    assert "Received Move Response 4 (Pending)" in proc.stderr
    assert "Received Final Move Response (Success)" in proc.stderr


def test_movescu_series_and_instance_levels(mover: Node, storescp: tuple[int, Path]) -> None:
    _, out = storescp
    study = _study_uid(mover, "A100")
    series = [
        r[0]
        for r in mover.app.db.conn.execute(
            "SELECT series_uid FROM series s JOIN studies st ON st.id = s.study_fk WHERE st.study_uid = ?", (study,)
        )
    ]
    dcmtk(
        "movescu",
        "-S",
        "-aec",
        mover.aet,
        "-aem",
        "DEST",
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        f"SeriesInstanceUID={series[0]}",
        HOST,
        str(mover.port),
        check=True,
    )
    wait_until(lambda: len(list(out.iterdir())) == 2)
    sop = mover.app.index.instances_of("SERIES", series[1])[0].sop_uid
    dcmtk(
        "movescu",
        "-S",
        "-aec",
        mover.aet,
        "-aem",
        "DEST",
        "-k",
        "QueryRetrieveLevel=IMAGE",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        f"SeriesInstanceUID={series[1]}",
        "-k",
        f"SOPInstanceUID={sop}",
        HOST,
        str(mover.port),
        check=True,
    )
    wait_until(lambda: len(list(out.iterdir())) == 3)


def _pymove(node: Node, destination: str, query: Dataset) -> list[Dataset]:
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    responses = [
        status for status, _ in assoc.send_c_move(query, destination, StudyRootQueryRetrieveInformationModelMove)
    ]
    assoc.release()
    return responses


def _study_query(uid: str) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = uid
    return q


def test_move_statuses(mover: Node) -> None:
    uid = _study_uid(mover, "A101")
    statuses = _pymove(mover, "DEST", _study_query(uid))
    pending = [s for s in statuses if s.Status == 0xFF00]
    assert [s.NumberOfRemainingSuboperations for s in pending] == [2, 1, 0]
    final = statuses[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 3, 0)
    # Unknown destination, and a known node without the move right: 0xA801.
    assert [s.Status for s in _pymove(mover, "NOBODY", _study_query(uid))] == [0xA801]
    assert [s.Status for s in _pymove(mover, "NOMOVE", _study_query(uid))] == [0xA801]
    # Nothing matches: success with zero sub-operations.
    [empty] = _pymove(mover, "DEST", _study_query("1.2.3.4.5.6.7"))
    assert (empty.Status, empty.NumberOfCompletedSuboperations) == (0, 0)


def test_movescu_unknown_destination_is_reported(mover: Node) -> None:
    proc = dcmtk(
        "movescu",
        "-S",
        "-aec",
        mover.aet,
        "-aem",
        "NOBODY",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={_study_uid(mover, 'A100')}",
        "-v",
        HOST,
        str(mover.port),
    )
    assert "Final Move Response (Refused: MoveDestinationUnknown)" in proc.stderr


def test_move_back_to_callers_own_scp(node_factory, archive_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    node = node_factory(nodes=_nodes(MOVER={"port": port}))
    dcmtk("storescu", "-aec", node.aet, "+sd", HOST, str(node.port), str(archive_dir), check=True)
    out = tmp_path / "back"
    out.mkdir()
    dcmtk(
        "movescu",
        "-S",
        "-aet",
        "MOVER",
        "-aec",
        node.aet,
        "-aem",
        "MOVER",
        "--port",
        str(port),
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={_study_uid(node, 'A200')}",
        HOST,
        str(node.port),
        check=True,
    )
    assert len(list(out.iterdir())) == 2


def test_sub_operation_failure_gives_b000(node_factory, archive_dir: Path) -> None:
    """A destination that refuses one instance: final 0xB000 with Failed=1."""
    refused: list[str] = []

    def refuse_first(event: evt.Event) -> int:
        if not refused:
            refused.append(str(cast(C_STORE, event.request).AffectedSOPInstanceUID))
            return 0xA700
        return 0x0000

    port = free_port()
    dest = AE(ae_title="PICKY")
    dest.supported_contexts = StoragePresentationContexts
    server = dest.start_server((HOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, refuse_first)])
    assert server is not None
    try:
        node = node_factory(nodes=_nodes(PICKY={"port": port}))
        dcmtk("storescu", "-aec", node.aet, "+sd", HOST, str(node.port), str(archive_dir), check=True)
        final = _pymove(node, "PICKY", _study_query(_study_uid(node, "A101")))[-1]
    finally:
        server.shutdown()
    assert final.Status == 0xB000
    assert (final.NumberOfFailedSuboperations, final.NumberOfCompletedSuboperations) == (1, 2)
    assert refused[0] in list(final.get("FailedSOPInstanceUIDList", refused))


def test_getscu_study_series_instance(mover: Node, tmp_path: Path) -> None:
    study = _study_uid(mover, "A100")
    out = tmp_path / "get"
    out.mkdir()
    dcmtk(
        "getscu",
        "-S",
        "-aec",
        mover.aet,
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
        HOST,
        str(mover.port),
        check=True,
    )
    assert len(list(out.iterdir())) == 4
    series = mover.app.index.instances_of("STUDY", study)[0].series_uid
    out2 = tmp_path / "get2"
    out2.mkdir()
    dcmtk(
        "getscu",
        "-S",
        "-aec",
        mover.aet,
        "-od",
        str(out2),
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        f"SeriesInstanceUID={series}",
        HOST,
        str(mover.port),
        check=True,
    )
    assert len(list(out2.iterdir())) == 2
    sop = mover.app.index.instances_of("SERIES", series)[1].sop_uid
    out3 = tmp_path / "get3"
    out3.mkdir()
    dcmtk(
        "getscu",
        "-S",
        "-aec",
        mover.aet,
        "-od",
        str(out3),
        "-k",
        "QueryRetrieveLevel=IMAGE",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        f"SeriesInstanceUID={series}",
        "-k",
        f"SOPInstanceUID={sop}",
        HOST,
        str(mover.port),
        check=True,
    )
    [only] = list(out3.iterdir())
    assert dcmread(only).SOPInstanceUID == sop


def test_getscu_gets_compressed_instance_decompressed(node: Node, tmp_path: Path) -> None:
    inst = dicomdata.study("PGETC", "GET^COMPRESSED", ("CT",), 1, rows=32, columns=32)[0]
    raw = inst.write(tmp_path)
    jls = tmp_path / "jls.dcm"
    dcmtk("dcmcjpls", "+el", str(raw), str(jls), check=True)
    dcmtk("storescu", "-xt", "-R", "-aec", node.aet, HOST, str(node.port), str(jls), check=True)
    out = tmp_path / "out"
    out.mkdir()
    # getscu proposes only uncompressed transfer syntaxes by default.
    dcmtk(
        "getscu",
        "-S",
        "-aec",
        node.aet,
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={inst.study_uid}",
        HOST,
        str(node.port),
        check=True,
    )
    [got] = list(out.iterdir())
    ds = dcmread(got)
    assert not ds.file_meta.TransferSyntaxUID.is_compressed
    assert (ds.pixel_array == dcmread(raw).pixel_array).all()


def test_concurrent_finds_and_stores(node: Node, tmp_path: Path) -> None:
    """Several associations at once: every instance stored, every query answered."""
    folders = []
    for i in range(4):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        for inst in dicomdata.study(f"CONC{i}", f"CONC^{i}", ("CT",), 5):
            inst.write(folder)
        folders.append(folder)
    errors: list[str] = []

    def send(folder: Path) -> None:
        proc = dcmtk("storescu", "-aec", node.aet, "+sd", HOST, str(node.port), str(folder))
        if proc.returncode:
            errors.append(proc.stderr)

    threads = [threading.Thread(target=send, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert node.app.index.counts() == {"patients": 4, "studies": 4, "series": 4, "instances": 20}
