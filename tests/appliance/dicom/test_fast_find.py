"""C-FIND on the fast path (appliance.dicom.fast.find): the same answers as pynetdicom, cancel, aborts, rights.

"The same" is checked byte for byte: one raw peer sends the same requests to a node with the fast path on and
off (pynetdicom serving everything) and every PDU that comes back must be equal: the A-ASSOCIATE-AC, each
C-FIND-RSP command set and each answer data set, in the same order.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastpath_support import ABORT_RQ, RELEASE_RQ, associate_rq, message_pdus, read_pdu, record_fast_runs, requesting_ae
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

import tls
from appliance.dicom import fast as fastpath
from appliance.dicom import handlers
from appliance.dicom.fast.codec import AnswerEncoder
from appliance.dicom.fast.dimse import decode_command
from appliance.query import Answer, Matches
from appliance.worklist.files import import_files

import dicomdata
from conftest import HOST, Node, dcmtk, free_port, wait_until

PATIENT_ROOT = PatientRootQueryRetrieveInformationModelFind
STUDY_ROOT = StudyRootQueryRetrieveInformationModelFind
MWL = ModalityWorklistInformationFind


@pytest.fixture
def fast_runs(monkeypatch: pytest.MonkeyPatch) -> list[fastpath.FastAssociation]:
    """Every association served by the fast path during the test."""
    return record_fast_runs(monkeypatch)


def set_fast_path(node: Node, on: bool) -> None:
    for server in node.dicom.servers:
        server.fast_path = on


# -- a raw peer that reads whole responses ---------------------------------------------------------------


def find_pdus(
    query: Dataset | bytes,
    sop_class: str,
    context_id: int,
    message_id: int = 1,
    implicit: bool = True,
    little: bool = True,
    max_pdu: int = 16384,
) -> bytes:
    req = C_FIND()
    req.MessageID = message_id
    req.AffectedSOPClassUID = sop_class
    req.Priority = 2
    identifier = query if isinstance(query, bytes) else encode(query, implicit, little)
    assert identifier is not None
    req.Identifier = BytesIO(identifier)
    return b"".join(message_pdus(C_FIND_RQ(), req, context_id, max_pdu))


def cancel_pdu(message_id: int, context_id: int) -> bytes:
    from pynetdicom.dimse_messages import C_CANCEL_RQ
    from pynetdicom.dimse_primitives import C_CANCEL

    req = C_CANCEL()
    req.MessageIDBeingRespondedTo = message_id
    return b"".join(message_pdus(C_CANCEL_RQ(), req, context_id))


def echo_pdus(context_id: int) -> bytes:
    req = C_ECHO()
    req.MessageID = 99
    req.AffectedSOPClassUID = Verification
    return b"".join(message_pdus(C_ECHO_RQ(), req, context_id))


def pdvs(pdu: bytes) -> Iterator[tuple[int, bytes]]:
    """(control header, fragment) of each PDV of a P-DATA-TF PDU."""
    pos = 6
    while pos < len(pdu):
        length = int.from_bytes(pdu[pos : pos + 4], "big")
        yield pdu[pos + 5], pdu[pos + 6 : pos + 4 + length]
        pos += 4 + length


def responses(sock: socket.socket, pending: int | None = None) -> list[bytes]:
    """Every PDU answering one request: through the command set of a final status, an A-ABORT or the close.

    With ``pending``, stop after that many pending responses and their data sets instead.
    """
    out: list[bytes] = []
    command, seen = b"", 0
    while True:
        pdu = read_pdu(sock)
        out.append(pdu)
        if not pdu or pdu[0] != 0x04:
            return out
        for control, fragment in pdvs(pdu):
            if control & 0x01:
                command += fragment
                if control & 0x02:
                    code = decode_command(command).get(0x0900)
                    command = b""
                    if code not in (0xFF00, 0xFF01):
                        return out
            elif control & 0x02:
                seen += 1
                if seen == pending:
                    return out


def statuses(pdus: list[bytes]) -> list[int]:
    """The Status of every response in ``pdus`` (command sets reassembled)."""
    found, command = [], b""
    for pdu in pdus:
        if pdu[:1] != b"\x04":
            continue
        for control, fragment in pdvs(pdu):
            if control & 0x01:
                command += fragment
                if control & 0x02:
                    found.append(decode_command(command)[0x0900])
                    command = b""
    return found


def exchange(port: int, rq: bytes, requests: list[bytes]) -> list[list[bytes]]:
    """Associate, send each request and read its whole answer, then release (unless the node aborted)."""
    answers = []
    with socket.create_connection((HOST, port), timeout=20) as sock:
        sock.sendall(rq)
        answers.append([read_pdu(sock)])
        for request in requests:
            try:
                sock.sendall(request)
            except OSError:
                answers.append([b"closed"])
                break
            answers.append(responses(sock))
            if answers[-1][-1][:1] in (b"", b"\x07"):
                break
        else:
            sock.sendall(RELEASE_RQ)
            answers.append([read_pdu(sock)])
    return answers


def both_ways(node: Node, rq: bytes, requests: list[bytes]) -> list[list[bytes]]:
    """The answers of the fast path, checked equal to pynetdicom's."""
    got = {}
    for fast in (False, True):
        set_fast_path(node, fast)
        got[fast] = exchange(node.port, rq, requests)
    set_fast_path(node, True)
    assert got[True][0][0][:1] == b"\x02"  # A-ASSOCIATE-AC
    assert got[True] == got[False]
    return got[True]


# -- the same answers as pynetdicom ----------------------------------------------------------------------


def q(level: str | None, charset: str | None = None, **keys: Any) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    if level is not None:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _with_private_and_sequence(ds: Dataset) -> Dataset:
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.add_new(0x00091001, "LO", "")
    ds.ReferencedStudySequence = []
    ds.ProcedureCodeSequence = [Dataset()]
    return ds


def qr_queries(study_uids: list[str]) -> list[tuple[str, Dataset]]:
    """(SOP class, identifier): every level, both roots, the matching rules and the character-set choices."""
    study = (
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyDescription",
        "StudyID",
        "ReferringPhysicianName",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "SOPClassesInStudy",
        "RetrieveAETitle",
        "InstanceAvailability",
    )
    every = {k: "" for k in study}
    return [
        (
            PATIENT_ROOT,
            q(
                "PATIENT",
                PatientID="",
                PatientName="",
                PatientSex="",
                PatientBirthDate="",
                IssuerOfPatientID="",
                NumberOfPatientRelatedStudies="",
                NumberOfPatientRelatedSeries="",
                NumberOfPatientRelatedInstances="",
                PatientComments="",
            ),
        ),
        (STUDY_ROOT, _with_private_and_sequence(q("STUDY", PatientName="DOE*", PatientID="", **every))),
        (STUDY_ROOT, q("STUDY", PatientName="", **{**every, "StudyDate": "20070101-20071231"})),
        (STUDY_ROOT, q("STUDY", PatientName="", **{**every, "StudyDate": "20070101-"})),
        (STUDY_ROOT, q("STUDY", StudyTime="-0830", StudyDescription="")),
        (STUDY_ROOT, q("STUDY", StudyInstanceUID="\\".join([*study_uids, "1.2.3.4.5.6.7"]), AccessionNumber="A1*")),
        (STUDY_ROOT, q("STUDY", ModalitiesInStudy="PT", PatientName="d?e^j*")),
        (
            STUDY_ROOT,
            q(
                "SERIES",
                Modality="MR\\PT",
                SeriesInstanceUID="",
                SeriesNumber="",
                SeriesDescription="",
                BodyPartExamined="",
                SeriesDate="",
                SeriesTime="",
                NumberOfSeriesRelatedInstances="",
                StudyInstanceUID="",
            ),
        ),
        (
            STUDY_ROOT,
            q(
                "IMAGE",
                SOPInstanceUID="",
                SOPClassUID="",
                InstanceNumber="",
                NumberOfFrames="",
                RetrieveAETitle="",
                InstanceAvailability="",
                SeriesInstanceUID="",
            ),
        ),
        (PATIENT_ROOT, q("STUDY", PatientID="PID00?", StudyInstanceUID="", StudyDate="")),
        (
            PATIENT_ROOT,
            q("SERIES", PatientID="PID002", StudyInstanceUID=study_uids[-1], SeriesInstanceUID="", Modality=""),
        ),
        (
            PATIENT_ROOT,
            q(
                "IMAGE",
                PatientID="PID001",
                StudyInstanceUID=study_uids[0],
                SeriesInstanceUID="",
                SOPInstanceUID="",
                InstanceNumber="",
            ),
        ),
        # Character sets: the caller's when the answer fits, else ISO_IR 192; non-ASCII through pydicom's codecs.
        (STUDY_ROOT, q("STUDY", "ISO_IR 100", PatientName="Müller*", StudyDescription="", PatientID="")),
        (STUDY_ROOT, q("STUDY", "ISO_IR 192", PatientName="Test-éü*", StudyDescription="", PatientID="")),
        (PATIENT_ROOT, q("PATIENT", "ISO_IR 100", PatientID="PID00*", PatientName="")),  # Δ: ISO_IR 192
        (PATIENT_ROOT, q("PATIENT", "ISO 2022 IR 6\\ISO 2022 IR 100", PatientID="PID003", PatientName="")),
        (PATIENT_ROOT, q("PATIENT", "ISO_IR 144", PatientID="", PatientName="")),
        (STUDY_ROOT, q("STUDY", PatientName="", StudyDescription="")),  # no charset asked, non-ASCII found
        # Refusals.
        (STUDY_ROOT, q("FOO", PatientID="")),
        (STUDY_ROOT, q(None, PatientID="")),
    ]


def test_qr_answers_are_pynetdicoms(loaded_node: Node, fast_runs: list, monkeypatch: pytest.MonkeyPatch) -> None:
    node = loaded_node
    by_hand: list[bool] = []  # every Q/R answer is written by appliance.dicom.fast.codec, none by pydicom
    real = AnswerEncoder.encode

    def counted(self: AnswerEncoder, answer: Answer) -> bytes | None:
        raw = real(self, answer)
        by_hand.append(raw is not None)
        return raw

    monkeypatch.setattr(AnswerEncoder, "encode", counted)
    study_uids = sorted({i.study_uid for i in dicomdata.sample_archive() if i.patient_id in ("PID001", "PID002")})
    contexts = [
        build_context(STUDY_ROOT, [ImplicitVRLittleEndian]),  # 1
        build_context(STUDY_ROOT, [ExplicitVRLittleEndian]),  # 3
        build_context(PATIENT_ROOT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),  # 5
        build_context(PATIENT_ROOT, [ImplicitVRLittleEndian]),  # 7
        build_context(STUDY_ROOT, [ExplicitVRBigEndian]),  # 9: no big endian for Q/R: rejected
        build_context(Verification),
    ]  # 11
    requests = []
    for n, (sop_class, query) in enumerate(qr_queries(study_uids)):
        for cx_id, implicit in ((1, True), (3, False)) if sop_class == STUDY_ROOT else ((5, False), (7, True)):
            requests.append(find_pdus(query, sop_class, cx_id, message_id=n + 1, implicit=implicit))
    for raw in (b"\x08\x00\x52\x00ZZ\x06\x00STUDY ", b"\x08\x00\x52\x00US\x05\x00STUDY"):  # cannot be decoded
        requests.append(find_pdus(raw, STUDY_ROOT, 3))
    requests.append(echo_pdus(11))
    requests.append(find_pdus(q("STUDY", PatientID=""), MWL, 1))  # a worklist query on a Q/R context: A-ABORT
    answers = both_ways(node, associate_rq(node.aet, "EQUAL", contexts), requests)
    assert len(fast_runs) == 1
    assert len(by_hand) > 100 and all(by_hand)
    found = [statuses(a) for a in answers[1:]]
    assert found[0][-1] == 0x0000 and len(found[0]) == 6  # five patients
    assert found[-8:] == [[0xA900]] * 4 + [[0xC001]] * 2 + [[0x0000], []]
    assert answers[-1][-1][:1] in (b"", b"\x07")
    every = b"".join(b"".join(a) for a in answers)
    assert b"ISO_IR 100" in every and b"ISO_IR 192" in every and b"ISO 2022 IR 6\\ISO 2022 IR 100" in every
    assert "MÜLLER^HANS".encode("latin-1") in every and "Test-éüäöò^ΔЖ".encode() in every


def test_small_pdus_fragment_the_same_way(loaded_node: Node, fast_runs: list) -> None:
    node = loaded_node
    contexts = [build_context(STUDY_ROOT, [ExplicitVRLittleEndian])]
    query = q("IMAGE", SOPInstanceUID="", SOPClassUID="", RetrieveAETitle="", StudyInstanceUID="")
    answers = both_ways(
        node,
        associate_rq(node.aet, "TINYPDU", contexts, max_length=64),
        [find_pdus(query, STUDY_ROOT, 1, implicit=False)],
    )
    assert statuses(answers[1]) == [0xFF00] * 12 + [0x0000]
    assert max(len(pdu) for pdu in answers[1]) == 64 + 6  # every answer cut into 58-byte fragments
    assert len(fast_runs) == 1


def _worklist_file(
    folder: Path, name: str, pid: str, patient: str, charset: str, sps_id: str, modality: str, date: str
) -> Path:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.AccessionNumber = f"ACC{sps_id}"
    ds.ReferencedStudySequence = []
    ds.ReferencedPatientSequence = []
    ds.PatientName = patient
    ds.PatientID = pid
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1234.77.{sps_id[1:]}"
    ds.RequestedProcedureDescription = f"Requested {pid}"
    ds.RequestedProcedureID = f"RP{sps_id}"
    step = Dataset()
    step.Modality = modality
    step.ScheduledStationAETitle = "MOD1"
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = "1000"
    step.ScheduledPerformingPhysicianName = "Tech^Tom"
    step.ScheduledProcedureStepDescription = "Übersicht" if charset else "Overview"
    step.ScheduledProcedureStepID = sps_id
    ds.ScheduledProcedureStepSequence = [step]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"{name}.wl"
    ds.save_as(path, enforce_file_format=False)
    return path


@pytest.fixture
def mwl_node(node: Node, tmp_path: Path) -> Node:
    folder = tmp_path / "wl"
    folder.mkdir()
    _worklist_file(folder, "a", "WL1", "DOE^JANE", "", "S1", "CT", "20260905")
    _worklist_file(folder, "b", "WL2", "Müller^Hans", "ISO_IR 100", "S2", "MR", "20260906")
    _worklist_file(folder, "c", "WL3", "Ωmega^Δelta", "ISO_IR 192", "S3", "MR", "20260907")
    stored, failed = import_files(node.app.worklist, [folder])
    assert len(stored) == 3, failed
    return node


def _mwl_query(
    charset: str | None = None, top: dict[str, str] | None = None, step: dict[str, str] | None = None
) -> Dataset:
    keys = {
        k: ""
        for k in (
            "PatientName",
            "PatientID",
            "AccessionNumber",
            "StudyInstanceUID",
            "RequestedProcedureID",
            "PatientBirthDate",
        )
    }
    ds = q(None, charset, **{**keys, **(top or {})})
    item = Dataset()
    step_keys = {
        k: ""
        for k in (
            "ScheduledStationAETitle",
            "Modality",
            "ScheduledProcedureStepID",
            "ScheduledProcedureStepStartDate",
            "ScheduledProcedureStepDescription",
        )
    }
    for key, value in {**step_keys, **(step or {})}.items():
        setattr(item, key, value)
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def test_worklist_answers_are_pynetdicoms(mwl_node: Node, fast_runs: list) -> None:
    node = mwl_node
    contexts = [
        build_context(MWL, [ImplicitVRLittleEndian]),  # 1
        build_context(MWL, [ExplicitVRBigEndian]),
    ]  # 3: pynetdicom accepts MWL as storage-like, any syntax
    requests = [
        find_pdus(_mwl_query(), MWL, 1),
        find_pdus(_mwl_query("ISO_IR 100", step={"Modality": "MR"}), MWL, 1, message_id=2),
        find_pdus(_mwl_query("ISO_IR 100"), MWL, 3, message_id=3, implicit=False, little=False),
        find_pdus(_mwl_query(top={"PatientName": "M*"}), STUDY_ROOT, 1, message_id=4),
    ]  # Q/R on MWL: A-ABORT
    answers = both_ways(node, associate_rq(node.aet, "MODALITY", contexts), requests)
    assert statuses(answers[1]) == [0xFF00] * 3 + [0x0000]
    assert statuses(answers[3]) == [0xFF00] * 3 + [0x0000]
    assert answers[-1][-1][:1] in (b"", b"\x07")
    assert len(fast_runs) == 1


# -- real clients through the fast path ------------------------------------------------------------------


def findscu(
    node: Node, out: Path, *keys: str, model: str = "-S", port: int | None = None, extra: tuple[str, ...] = ()
) -> list[Dataset]:
    out.mkdir()
    args = [*extra, model, "-aec", node.aet, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    dcmtk("findscu", *args, HOST, str(port or node.port), check=True)
    return [dcmread(p) for p in sorted(out.iterdir())]


def test_findscu_patient_and_study_root(loaded_node: Node, tmp_path: Path, fast_runs: list) -> None:
    patients = findscu(
        loaded_node,
        tmp_path / "p",
        "QueryRetrieveLevel=PATIENT",
        "PatientID",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        model="-P",
    )
    assert {a.PatientID: a.NumberOfPatientRelatedStudies for a in patients} == {
        "PID001": 2,
        "PID002": 1,
        "PID003": 1,
        "PID004": 1,
        "PID_5%": 1,
    }
    studies = findscu(
        loaded_node,
        tmp_path / "s",
        "QueryRetrieveLevel=STUDY",
        "PatientName=DOE^J*",
        "StudyDate=20070101-20071231",
        "StudyDescription",
        "ModalitiesInStudy",
        "StudyInstanceUID",
    )
    assert sorted((a.StudyDescription, a["ModalitiesInStudy"].VM) for a in studies) == [("MR HEAD", 1), ("PET CT", 2)]
    [utf8] = findscu(
        loaded_node,
        tmp_path / "u",
        "QueryRetrieveLevel=STUDY",
        "SpecificCharacterSet=ISO_IR 100",
        "PatientID=PID004",
        "PatientName",
        "StudyDescription",
    )
    assert utf8.SpecificCharacterSet == "ISO_IR 192" and str(utf8.PatientName) == "Test-éüäöò^ΔЖ"
    assert len(fast_runs) == 3


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tls.Paths]:
    yield tls.init_pki(tmp_path_factory.mktemp("pki"), ["localhost"], ["127.0.0.1"])


def test_findscu_over_tls(node_factory, pki: tls.Paths, archive_dir: Path, tmp_path: Path, fast_runs: list) -> None:
    ctx = tls.server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=True)
    node = node_factory(server_tls=ctx, tls_port=free_port())
    dcmtk("storescu", "-aec", node.aet, "+sd", HOST, str(node.port), str(archive_dir), check=True)
    args = ("+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca_cert))
    images = findscu(
        node,
        tmp_path / "i",
        "QueryRetrieveLevel=IMAGE",
        "PatientID=PID001",
        "SOPInstanceUID",
        "InstanceNumber",
        model="-P",
        port=node.tls_port,
        extra=args,
    )
    assert len(images) == 7
    assert len(fast_runs) == 2


def test_pynetdicom_scu_with_small_pdus(loaded_node: Node, fast_runs: list) -> None:
    ae = requesting_ae("PYFIND", STUDY_ROOT)
    ae.maximum_pdu_size = 64
    assoc = ae.associate(HOST, loaded_node.port, ae_title=loaded_node.aet)
    query = q("SERIES", SeriesInstanceUID="", Modality="", SeriesDescription="", StudyInstanceUID="")
    found = list(assoc.send_c_find(query, STUDY_ROOT))
    assoc.release()
    archive = dicomdata.sample_archive()
    assert [s.Status for s, _ in found] == [0xFF00] * len({i.series_uid for i in archive}) + [0x0000]
    assert sorted(str(ds.Modality) for _, ds in found[:-1] if ds is not None) == sorted(
        {i.series_uid: i.modality for i in archive}.values()
    )
    assert len(fast_runs) == 1


# -- cancel, abort, close, release in the middle of the answers -------------------------------------------


@pytest.fixture
def paused(monkeypatch: pytest.MonkeyPatch, fast_runs: list) -> Callable[[int], None]:
    """``paused(n)``: the next Q/R query holds its (n+1)th match until the peer has sent something.

    So the peer can act after it has read ``n`` answers, and the node sees that before its next answer,
    whatever the speed of either side.
    """
    real = handlers.find_rows
    after: list[int] = []

    def find_rows(*args: Any, **kwargs: Any) -> Matches:
        matches = real(*args, **kwargs)
        if not after:
            return matches
        hold = after.pop()

        def rows() -> Iterator[list[Any]]:
            for n, values in enumerate(matches):
                if n == hold:
                    wait_until(lambda: select.select([fast_runs[-1].sock], [], [], 0)[0])
                yield values

        return Matches(matches.fields, rows())

    monkeypatch.setattr(handlers, "find_rows", find_rows)
    return after.append


ALL_IMAGES = q("IMAGE", SOPInstanceUID="", InstanceNumber="")


def test_cancel_midstream_then_the_association_goes_on(loaded_node: Node, paused, fast_runs: list) -> None:
    paused(3)
    assoc = requesting_ae("CANCELLER", STUDY_ROOT, Verification).associate(
        HOST, loaded_node.port, ae_title=loaded_node.aet
    )
    context_id = next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == STUDY_ROOT)
    codes = []
    for status, _ in assoc.send_c_find(ALL_IMAGES, STUDY_ROOT, msg_id=7):
        codes.append(status.Status)
        if len(codes) == 3:
            assoc.send_c_cancel(7, context_id)
    assert codes == [0xFF00] * 3 + [0xFE00]
    again = [status.Status for status, _ in assoc.send_c_find(ALL_IMAGES, STUDY_ROOT, msg_id=8)]
    assert again == [0xFF00] * 12 + [0x0000]
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert len(fast_runs) == 1


def test_cancel_for_another_message_is_ignored(loaded_node: Node, paused, fast_runs: list) -> None:
    paused(2)
    with socket.create_connection((HOST, loaded_node.port), timeout=20) as sock:
        sock.sendall(associate_rq(loaded_node.aet, "RAW", [build_context(STUDY_ROOT, [ImplicitVRLittleEndian])]))
        assert read_pdu(sock)[:1] == b"\x02"
        sock.sendall(find_pdus(ALL_IMAGES, STUDY_ROOT, 1, message_id=5))
        first = responses(sock, pending=2)
        sock.sendall(cancel_pdu(4, 1))  # not this request's Message ID
        rest = responses(sock)
        assert statuses(first + rest) == [0xFF00] * 12 + [0x0000]
        sock.sendall(RELEASE_RQ)
        assert read_pdu(sock)[:1] == b"\x06"


@pytest.mark.parametrize("how", ["a-abort", "close"])
def test_peer_gone_midstream_frees_the_worker(
    loaded_node: Node, paused, fast_runs: list, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    paused(2)
    with socket.create_connection((HOST, loaded_node.port), timeout=20) as sock:
        sock.sendall(associate_rq(loaded_node.aet, "GONE", [build_context(STUDY_ROOT, [ImplicitVRLittleEndian])]))
        assert read_pdu(sock)[:1] == b"\x02"
        sock.sendall(find_pdus(ALL_IMAGES, STUDY_ROOT, 1))
        assert statuses(responses(sock, pending=2)) == [0xFF00, 0xFF00]
        if how == "a-abort":
            sock.sendall(ABORT_RQ)
    wait_until(lambda: not loaded_node.dicom.active())
    assert len(fast_runs) == 1 and fast_runs[0].is_aborted
    assert "answer(s)" not in caplog.text  # stopped where it was, not finished
    assoc = requesting_ae("AFTER", Verification).associate(HOST, loaded_node.port, ae_title=loaded_node.aet)
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_release_midstream_ends_the_answers_with_success(loaded_node: Node, paused, fast_runs: list) -> None:
    paused(2)
    with socket.create_connection((HOST, loaded_node.port), timeout=20) as sock:
        sock.sendall(associate_rq(loaded_node.aet, "RELEASER", [build_context(STUDY_ROOT, [ImplicitVRLittleEndian])]))
        assert read_pdu(sock)[:1] == b"\x02"
        sock.sendall(find_pdus(ALL_IMAGES, STUDY_ROOT, 1))
        first = responses(sock, pending=2)
        sock.sendall(RELEASE_RQ)
        rest = responses(sock)
        assert statuses(first + rest) == [0xFF00, 0xFF00, 0x0000]  # as pynetdicom: stop, then Success
        assert read_pdu(sock)[:1] == b"\x06"
    wait_until(lambda: not loaded_node.dicom.active())
    assert fast_runs[0].is_released


# -- rights and handlers ---------------------------------------------------------------------------------

NODES = [
    {"ae_title": "NOFIND", "host": HOST, "port": 104, "find": False},
    {"ae_title": "NOMWL", "host": HOST, "port": 104, "mwl": False},
    {"ae_title": "ALL", "host": HOST, "port": 104},
]


@pytest.mark.parametrize("calling", ["NOFIND", "NOMWL", "ALL"])
def test_rights_refuse_the_same_contexts(node_factory, fast_runs: list, calling: str) -> None:
    node = node_factory(accept_any_ae=False, nodes=NODES)
    contexts: list[PresentationContext] = [
        build_context(cx, [ImplicitVRLittleEndian])  # 1, 3, 5, 7
        for cx in (STUDY_ROOT, PATIENT_ROOT, MWL, Verification)
    ]
    requests = [
        echo_pdus(7),
        find_pdus(_mwl_query(), MWL, 5),
        find_pdus(q("PATIENT", PatientID=""), PATIENT_ROOT, 3),
        find_pdus(q("STUDY", PatientID=""), STUDY_ROOT, 1),
    ]
    answers = both_ways(node, associate_rq(node.aet, calling, contexts), requests)
    assert len(fast_runs) == 1
    refused = answers[-1][-1][:1] in (b"", b"\x07")  # a request on a refused context: A-ABORT
    assert refused == (calling != "ALL")


def test_another_c_find_handler_keeps_pynetdicom(loaded_node: Node, fast_runs: list) -> None:
    calls = []

    def handler(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        calls.append(event.identifier.QueryRetrieveLevel)
        yield 0xFF00, q("STUDY", PatientID="X")

    for server in loaded_node.dicom.servers:
        server.bind(evt.EVT_C_FIND, handler)
    assoc = requesting_ae("OTHER", STUDY_ROOT).associate(HOST, loaded_node.port, ae_title=loaded_node.aet)
    found = [(s.Status, ds) for s, ds in assoc.send_c_find(q("STUDY", PatientID=""), STUDY_ROOT)]
    assoc.release()
    assert [code for code, _ in found] == [0xFF00, 0x0000] and found[0][1] is not None and found[0][1].PatientID == "X"
    assert calls == ["STUDY"] and fast_runs == []
