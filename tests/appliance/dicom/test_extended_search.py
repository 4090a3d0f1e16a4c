"""Extended search with Orthanc as the regional server: C-FIND (pynetdicom path and fast path) merges the regional
answers with the local ones, C-MOVE and C-GET of a study held only regionally fetch it first, and a regional server
that stays silent leaves the local answers, with a warning, within dicom_timeout_ms.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

import dicomdata
from conftest import HOST, free_port
from forwarding_support import Appliance_, study


@pytest.fixture(scope="module")
def regional(orthanc_factory: Any) -> Any:
    return orthanc_factory(aet="REGIONAL")


def _upload(orthanc: Any, instances: list[dicomdata.Instance], folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for inst in instances:
        orthanc.post("/instances", inst.write(folder).read_bytes())


def _node(
    appliance: Callable[..., Appliance_],
    regional: Any,
    fast_path: bool = True,
    nodes: list[dict[str, Any]] | None = None,
    forwarding: bool = False,
) -> Appliance_:
    # With forwarding on, its worker is not started: the test looks at what is queued.
    node = appliance(
        {
            "enabled": forwarding,
            "extended_search": True,
            "ae_title": "REGIONAL",
            "host": HOST,
            "port": regional.dicom_port,
        },
        nodes=nodes,
        dicom={"fast_path": fast_path},
        hold=True,
    )
    # The regional server moves to us by our AE title.
    regional.put_modality("appliance", node.cfg.dicom.ae_title, node.port)
    return node


def _find(node: Appliance_, query: Dataset) -> tuple[list[Dataset], int]:
    ae = AE(ae_title="WORKSTATION")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assoc = ae.associate(HOST, node.port, ae_title=node.cfg.dicom.ae_title)
    assert assoc.is_established
    answers, final = [], -1
    for rsp, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if rsp.Status in (0xFF00, 0xFF01):
            assert ds is not None, "a pending answer without an identifier"
            answers.append(ds)
        else:
            final = int(rsp.Status)
    assoc.release()
    return answers, final


def _study_query(patient_id: str) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = patient_id
    q.StudyInstanceUID = ""
    q.NumberOfStudyRelatedInstances = ""
    q.RetrieveAETitle = ""
    q.InstanceAvailability = ""
    return q


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "pynetdicom"])
def test_find_merges_regional_answers_one_per_uid_local_counts_win(
    appliance: Callable[..., Appliance_], regional: Any, tmp_path: Path, fast_path: bool
) -> None:
    pid = f"PEXT{int(fast_path)}"
    local = study(pid, 3)  # held here (3 instances); the regional server has only one of them
    remote = study(pid, 2)  # held only regionally
    node = _node(appliance, regional, fast_path)
    node.store(local)
    _upload(regional, local[:1] + remote, tmp_path / "up")
    answers, final = _find(node, _study_query(pid))
    assert final == 0x0000
    by_uid = {str(a.StudyInstanceUID): a for a in answers}
    assert len(answers) == len(by_uid) == 2
    held, only_regional = by_uid[local[0].study_uid], by_uid[remote[0].study_uid]
    assert int(held.NumberOfStudyRelatedInstances) == 3
    assert held.RetrieveAETitle == node.cfg.dicom.ae_title
    assert held.InstanceAvailability == "ONLINE"
    assert int(only_regional.NumberOfStudyRelatedInstances) == 2
    # Retrieved through us (we fetch it), and said to be nearline.
    assert only_regional.RetrieveAETitle == node.cfg.dicom.ae_title
    assert only_regional.InstanceAvailability == "NEARLINE"
    assert set(only_regional.keys()) <= set(_study_query(pid).keys()) | {0x00080005}
    # Without the Study Instance UID among the keys, what is held here is still answered once, from here.
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = pid
    q.NumberOfStudyRelatedInstances = ""
    answers, final = _find(node, q)
    assert final == 0x0000
    assert sorted(int(a.NumberOfStudyRelatedInstances) for a in answers) == [2, 3]
    # Series level within the regional-only study: answered by the regional server.
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = remote[0].study_uid
    q.SeriesInstanceUID = ""
    q.NumberOfSeriesRelatedInstances = ""
    series, final = _find(node, q)
    assert final == 0x0000
    assert [(s.SeriesInstanceUID, int(s.NumberOfSeriesRelatedInstances)) for s in series] == [(remote[0].series_uid, 2)]


class Workstation:
    """A workstation's storage SCP (pynetdicom) that records what it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        ae = AE(ae_title="WORKSTATION")
        ae.add_supported_context(CTImageStorage)
        self.server = ae.start_server((HOST, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: Any) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()


@pytest.fixture
def workstation() -> Iterator[Workstation]:
    ws = Workstation()
    yield ws
    ws.stop()


def test_move_and_get_of_a_regional_only_study_fetch_it_then_pass_it_on(
    appliance: Callable[..., Appliance_], regional: Any, workstation: Workstation, tmp_path: Path
) -> None:
    node = _node(
        appliance,
        regional,
        nodes=[{"ae_title": "WORKSTATION", "host": HOST, "port": workstation.port}],
        forwarding=True,
    )
    moved, got = study("PEXTMOVE", 3), study("PEXTGET", 2)
    _upload(regional, moved + got, tmp_path / "up")
    ae = AE(ae_title="WORKSTATION")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    assoc = ae.associate(
        HOST,
        node.port,
        ae_title=node.cfg.dicom.ae_title,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = moved[0].study_uid
    finals = [rsp for rsp, _ in assoc.send_c_move(q, "WORKSTATION", StudyRootQueryRetrieveInformationModelMove)]
    assert finals[-1].Status == 0x0000 and finals[-1].NumberOfCompletedSuboperations == 3
    q.StudyInstanceUID = got[0].study_uid
    finals = [rsp for rsp, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet)]
    assert finals[-1].Status == 0x0000 and finals[-1].NumberOfCompletedSuboperations == 2
    assoc.release()
    assert sorted(workstation.received) == sorted(i.sop_uid for i in moved)
    assert sorted(received) == sorted(i.sop_uid for i in got)
    # Now held here too (fetched once, then passed on), and not to be forwarded back to where it came from.
    assert node.app.index.lookup(moved[0].sop_uid) is not None
    assert node.queue.status().counts == {"queued": 0, "sent": 0, "committed": 5, "failed": 0}


def test_a_silent_regional_server_leaves_local_answers_within_the_timeout(
    appliance: Callable[..., Appliance_], caplog: pytest.LogCaptureFixture
) -> None:
    # A port that takes the TCP connection (the kernel's backlog) and never says a word.
    silent = socket.socket()
    silent.bind((HOST, 0))
    silent.listen(8)
    try:
        node = appliance(
            {
                "enabled": False,
                "extended_search": True,
                "ae_title": "REGIONAL",
                "host": HOST,
                "port": silent.getsockname()[1],
                "dicom_timeout_ms": 1000,
            },
            nodes=[{"ae_title": "WORKSTATION", "host": HOST, "port": free_port()}],
        )
        local = study("PEXTDOWN", 2)
        node.store(local)
        caplog.set_level(logging.WARNING, "appliance.forwarding")
        started = time.monotonic()
        answers, final = _find(node, _study_query("PEXTDOWN"))
        elapsed = time.monotonic() - started
        # A C-MOVE of a study held nowhere here: the fetch fails in time, the move ends with nothing to send.
        ae = AE(ae_title="WORKSTATION")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        assoc = ae.associate(HOST, node.port, ae_title=node.cfg.dicom.ae_title)
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = dicomdata.uid()
        started = time.monotonic()
        finals = [rsp for rsp, _ in assoc.send_c_move(q, "WORKSTATION", StudyRootQueryRetrieveInformationModelMove)]
        move_elapsed = time.monotonic() - started
        assoc.release()
    finally:
        silent.close()
    assert final == 0x0000
    assert [str(a.StudyInstanceUID) for a in answers] == [local[0].study_uid]
    assert any("REGIONAL did not answer" in r.getMessage() for r in caplog.records)
    assert elapsed < 10, elapsed  # bounded by dicom_timeout_ms (1 s), not by any default of 30 s or more
    assert finals[-1].Status == 0x0000 and finals[-1].get("NumberOfCompletedSuboperations", 0) == 0
    assert any("fetching study from the regional server REGIONAL failed" in r.getMessage() for r in caplog.records)
    assert move_elapsed < 10, move_elapsed
