"""Differential test: the appliance's MWL C-FIND answers against DCMTK ``wlmscpfs`` on the same items.

The same generated ``.wl`` files are served by ``wlmscpfs`` (Debian dcmtk, started here) and imported into
the appliance (``hidden_statuses = []``, since ``wlmscpfs`` answers every file whatever its status); the same
queries go to both from pynetdicom (and a few from DCMTK ``findscu -W``), and the answers are compared
attribute by attribute, ignoring only their order. The queries use the keys ``wlmscpfs`` supports; for keys
it does not match (Study Instance UID lists, step ID, status) Orthanc's worklist plugin (Debian orthanc) is the
second reference: the same files in its ``Worklists.Database`` folder, compared on which items match.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from wlmscpfs_support import Wlmscpfs, write_wl

from appliance.config import parse_config
from appliance.worklist.files import import_files

from conftest import HOST, Node, dcmtk, free_port
from orthanc_support import WORKLIST_PLUGIN, Orthanc

UID_ROOT = "1.2.826.0.1.3680043.10.14."


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    ds = Dataset()
    ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = value, scheme, meaning
    return ds


def _item(
    n: int,
    name: str,
    pid: str,
    aet: str | list[str],
    modality: str,
    date: str,
    time: str,
    charset: str | None = "ISO_IR 100",
    status: str | None = "SCHEDULED",
    **extra: Any,
) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = pid
    ds.StudyInstanceUID = f"{UID_ROOT}{n}"
    ds.RequestedProcedureID = f"RP{n}"
    ds.AccessionNumber = f"ACC00{n}"
    ds.ReferencedStudySequence = []
    ds.ReferencedPatientSequence = []
    step = Dataset()
    step.ScheduledStationAETitle = aet
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = time
    step.Modality = modality
    step.ScheduledProcedureStepID = f"S{n}"
    step.ScheduledPerformingPhysicianName = "Tech^Tom"
    if status:
        step.ScheduledProcedureStepStatus = status
    for key, value in extra.items():
        if key.startswith("sps_"):
            setattr(step, key[4:], value)
        elif value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    if "ScheduledProcedureStepDescription" not in step and "ScheduledProtocolCodeSequence" not in step:
        step.ScheduledProcedureStepDescription = f"Step {n}"
    if "RequestedProcedureDescription" not in ds and "RequestedProcedureCodeSequence" not in ds:
        ds.RequestedProcedureDescription = f"Procedure {n}"
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def items() -> list[Dataset]:
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = f"{UID_ROOT}99"
    return [
        _item(
            1,
            "Doe^Jane",
            "P001",
            ["AA32", "AA33"],
            "CT",
            "20260905",
            "080000",
            PatientSex="F",
            PatientBirthDate="19700101",
            ReferringPhysicianName="Ref^Rita",
            RequestedProcedurePriority="ROUTINE",
            sps_ScheduledProcedureStepDescription="CT Head",
            sps_ScheduledProtocolCodeSequence=[_code("CT01", "99LOCAL", "Head")],
        ),
        # No step description (protocol code only), no RP description (code only), no status, no referring
        # physician, no Referenced Patient Sequence (Type 2, absent).
        _item(
            2,
            "DOE^JOHN",
            "P002",
            "CT1",
            "CT",
            "20260905",
            "235900",
            status=None,
            PatientSex="M",
            PatientBirthDate="19811224",
            ReferencedPatientSequence=None,
            sps_ScheduledProtocolCodeSequence=[_code("CT02", "99LOCAL", "Chest")],
            RequestedProcedureCodeSequence=[_code("RPC2", "99LOCAL", "CT chest")],
        ),
        _item(
            3,
            "M\u00fcller^Hans",
            "P003",
            "MR1",
            "MR",
            "20260906",
            "001500",
            PatientSex="M",
            RequestedProcedurePriority="STAT",
            PatientBirthDate="19650310",
        ),
        _item(
            4,
            "roe^richard",
            "P004",
            "MR1",
            "MR",
            "20260906",
            "120000",
            status="STARTED",
            ReferencedStudySequence=[ref],
            PatientBirthDate="19991231",
            AdmissionID="ADM4",
        ),
        _item(
            5,
            "Smith^Anna^^Dr",
            "P005",
            "US1",
            "US",
            "20260907",
            "093000",
            AccessionNumber="",
            AdmissionID="ADM5",
            ReferringPhysicianName="ref^rita",
        ),
        _item(6, "Xu^Li", "X006", "CT1", "CT", "20260904", "1400", charset=None, status="COMPLETED", PatientSex="O"),
    ]


@pytest.fixture(scope="module")
def wl_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("mwl_files")
    return [write_wl(root / f"item{n}.wl", ds) for n, ds in enumerate(items(), start=1)]


@pytest.fixture(scope="module")
def orthanc(wl_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    root = tmp_path_factory.mktemp("orthanc")
    folder = root / "worklists"
    folder.mkdir()
    for file in wl_files:
        (folder / file.name).write_bytes(file.read_bytes())
    server = Orthanc(
        root / "server",
        plugins=[WORKLIST_PLUGIN],
        settings={
            "Worklists": {"Enable": True, "Database": str(folder)},
            "DicomAlwaysAllowFindWorklist": True,
            "DicomAlwaysAllowFind": True,
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def peers(wl_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Wlmscpfs]]:
    root = tmp_path_factory.mktemp("mwl_diff")
    files = wl_files
    reference = Wlmscpfs(root, files)
    cfg = parse_config(
        {
            "appliance": {"data_dir": str(root / "appliance")},
            "dicom": {"bind": HOST, "port": free_port(), "tls_port": 0, "free_space_limit_mb": 1},
            "worklist": {"hidden_statuses": []},
        }
    )
    node = Node(cfg)
    notes: list[str] = []
    stored, failed = import_files(node.app.worklist, files, notes)
    assert failed == [] and len(stored) == len(files)
    # item2.wl lacks the Referenced Patient Sequence: taken, with a warning, as wlmscpfs takes it.
    assert [n for n in notes if "ReferencedPatientSequence absent" in n] and all(
        "item2.wl" in n for n in notes if "absent" in n
    )
    yield node, reference
    node.stop()
    reference.stop()


def _return_keys(ds: Dataset, step: Dataset | None = None) -> Dataset:
    """The keys a modality asks for (all supported by wlmscpfs), around the matching keys given."""
    for key in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
        "RequestedProcedurePriority",
        "ReferringPhysicianName",
        "AdmissionID",
    ):
        if key not in ds:
            setattr(ds, key, "")
    for key in ("ReferencedStudySequence", "ReferencedPatientSequence", "RequestedProcedureCodeSequence"):
        if key not in ds:
            setattr(ds, key, [])
    if "ScheduledProcedureStepSequence" not in ds:
        step = step if step is not None else Dataset()
        for key in (
            "ScheduledStationAETitle",
            "ScheduledProcedureStepStartDate",
            "ScheduledProcedureStepStartTime",
            "Modality",
            "ScheduledPerformingPhysicianName",
            "ScheduledProcedureStepDescription",
            "ScheduledProcedureStepID",
            "ScheduledProcedureStepStatus",
        ):
            if key not in step:
                setattr(step, key, "")
        if "ScheduledProtocolCodeSequence" not in step:
            step.ScheduledProtocolCodeSequence = []
        ds.ScheduledProcedureStepSequence = [step]
    return ds


def query(step: dict[str, Any] | None = None, charset: str | None = None, **top: Any) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    for key, value in top.items():
        setattr(ds, key, value)
    sps = None
    if step is not None:
        sps = Dataset()
        for key, value in step.items():
            setattr(sps, key, value)
    return _return_keys(ds, sps)


def canon(ds: Dataset) -> Any:
    """An answer as comparable plain data: keyword -> value, sequences as lists of items."""
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.VR == "SQ":
            out[elem.keyword] = [canon(i) for i in elem.value]
        elif elem.value is None or elem.value == "":
            out[elem.keyword] = ""
        elif elem.VM > 1:
            out[elem.keyword] = [str(v) for v in elem.value]
        else:
            out[elem.keyword] = str(elem.value)
    return out


def c_find(port: int, aet: str, ds: Dataset) -> tuple[list[int], list[Any]]:
    ae = AE(ae_title="MOD1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate(HOST, port, ae_title=aet)
    assert assoc.is_established
    statuses, answers = [], []
    for status, identifier in assoc.send_c_find(ds, ModalityWorklistInformationFind):
        statuses.append(int(status.Status))
        if identifier is not None and status.Status in (0xFF00, 0xFF01):
            answers.append(canon(identifier))
    assoc.release()
    return statuses, sorted(answers, key=repr)


SAET = "ScheduledStationAETitle"
DATE = "ScheduledProcedureStepStartDate"
TIME = "ScheduledProcedureStepStartTime"

#: (name, query): every matching rule the issue lists, on wlmscpfs' matching keys.
QUERIES: list[tuple[str, Dataset]] = [
    ("universal", query()),
    ("pn single value", query(PatientName="Doe^Jane")),
    ("pn wildcard, other case", query(PatientName="doe*")),
    ("pn wildcard", query(PatientName="DOE*")),
    ("pn wildcard inside", query(PatientName="*^J?HN")),
    ("pn non-ascii", query(charset="ISO_IR 100", PatientName="M\u00fcller*")),
    ("pn lower-case item", query(PatientName="roe^richard")),
    ("patient id single", query(PatientID="P001")),
    ("patient id other case", query(PatientID="p001")),
    ("patient id wildcard (none in wlmscpfs)", query(PatientID="P00?")),
    ("patient id list", query(PatientID=["P001", "P003"])),
    ("accession wildcard", query(AccessionNumber="ACC*")),
    ("accession other case", query(AccessionNumber="acc*")),
    ("station single", query({SAET: "CT1"})),
    ("station one of a multi-valued item", query({SAET: "AA33"})),
    ("station wildcard (none in wlmscpfs)", query({SAET: "AA3?"})),
    ("station star", query({SAET: "*"})),
    ("modality wildcard (none in wlmscpfs)", query({"Modality": "C?"})),
    ("date single", query({DATE: "20260905"})),
    ("date range", query({DATE: "20260905-20260906"})),
    ("date open start", query({DATE: "-20260905"})),
    ("date open end", query({DATE: "20260906-"})),
    ("time single", query({TIME: "120000"})),
    ("time short form", query({TIME: "1200"})),
    ("time range", query({TIME: "080000-120000"})),
    ("time open end", query({TIME: "2300-"})),
    ("date-time combined range", query({DATE: "20260905-20260906", TIME: "2300-0100"})),
    ("date-time combined open end", query({DATE: "20260906-", TIME: "1000-"})),
    ("date-time combined single", query({DATE: "20260905", TIME: "0800"})),
    ("date single, time range (separately)", query({DATE: "20260906", TIME: "1000-"})),
    ("performing physician wildcard", query({"ScheduledPerformingPhysicianName": "Tech*"})),
    ("performing physician other case", query({"ScheduledPerformingPhysicianName": "tech*"})),
    ("referring physician", query(ReferringPhysicianName="Ref^Rita")),
    ("sex", query(PatientSex="F")),
    ("priority", query(RequestedProcedurePriority="STAT")),
    ("birth date range", query(PatientBirthDate="19700101-19891231")),
    ("admission id (item without one never matches)", query(AdmissionID="ADM*")),
    ("empty accession in the item never matches", query(AccessionNumber="*5")),
    ("station and date", query({SAET: "MR1", DATE: "20260906"})),
]


@pytest.mark.parametrize(("name", "ds"), QUERIES, ids=[q[0] for q in QUERIES])
def test_same_answers_as_wlmscpfs(peers: tuple[Node, Wlmscpfs], name: str, ds: Dataset) -> None:
    node, reference = peers
    ours = c_find(node.port, node.aet, ds)
    theirs = c_find(reference.port, reference.aet, ds)
    assert ours[1] == theirs[1], name
    assert ours[0][-1] == theirs[0][-1] == 0x0000
    assert len(ours[1]) == len(theirs[1])


def test_where_wlmscpfs_is_silent(peers: tuple[Node, Wlmscpfs]) -> None:
    """Keys wlmscpfs refuses or does not match: the appliance follows PS3.4 C.2.2.2 there."""
    node, reference = peers
    # A list of modalities: wlmscpfs refuses a backslash in a CS key (0xA900); PS3.4 lets it match either.
    ds = query({"Modality": ["MR", "US"]})
    statuses, answers = c_find(reference.port, reference.aet, ds)
    assert statuses == [0xA900] and answers == []
    statuses, answers = c_find(node.port, node.aet, ds)
    assert statuses[-1] == 0 and sorted(a["PatientID"] for a in answers) == ["P003", "P004", "P005"]
    # Study Instance UID (a list of UIDs), step ID and status are return keys only for wlmscpfs (it answers
    # every item); the appliance matches them (compared with Orthanc in test_where_wlmscpfs_is_silent_orthanc).
    for name, ds in SILENT_QUERIES.items():
        if name != "modality list":
            assert len(c_find(reference.port, reference.aet, ds)[1]) == 6, name


#: Keys wlmscpfs refuses or ignores: Orthanc's worklist plugin decides which items match.
SILENT_QUERIES: dict[str, Dataset] = {
    "study uid list": query(StudyInstanceUID=[f"{UID_ROOT}2", f"{UID_ROOT}4"]),
    "study uid single": query(StudyInstanceUID=f"{UID_ROOT}3"),
    "step id wildcard": query({"ScheduledProcedureStepID": "?4"}),
    "step id single": query({"ScheduledProcedureStepID": "S5"}),
    "step status": query({"ScheduledProcedureStepStatus": "STARTED"}),
    "step description wildcard": query({"ScheduledProcedureStepDescription": "Step*"}),
    "requested procedure description": query(RequestedProcedureDescription="Procedure 3"),
    "modality list": query({"Modality": ["MR", "US"]}),
}


@pytest.mark.parametrize("name", list(SILENT_QUERIES))
def test_where_wlmscpfs_is_silent_orthanc(peers: tuple[Node, Wlmscpfs], orthanc: Orthanc, name: str) -> None:
    node, _ = peers
    ds = SILENT_QUERIES[name]
    ours = sorted(a["PatientID"] for a in c_find(node.port, node.aet, ds)[1])
    statuses, answers = c_find(orthanc.dicom_port, orthanc.aet, ds)
    assert statuses[-1] == 0
    assert ours == sorted(a["PatientID"] for a in answers), name
    assert 0 < len(ours) < 6


def _raw_query(**top: Any) -> Dataset:
    ds = Dataset()
    for key, value in top.items():
        setattr(ds, key, value)
    return ds


def test_empty_sequence_keys_are_expanded_as_wlmscpfs(peers: tuple[Node, Wlmscpfs]) -> None:
    node, reference = peers
    for ds in (
        _raw_query(PatientID="P001", ScheduledProcedureStepSequence=[]),
        _raw_query(
            PatientID="P002",
            ScheduledProcedureStepSequence=[Dataset()],
            ReferencedStudySequence=[],
            RequestedProcedureCodeSequence=[Dataset()],
        ),
        _raw_query(PatientID="P004", ReferencedStudySequence=[], ReferencedPatientSequence=[]),
    ):
        ours, theirs = c_find(node.port, node.aet, ds)[1], c_find(reference.port, reference.aet, ds)[1]
        assert ours == theirs and len(ours) == 1


def test_sequence_item_keys_and_absent_return_keys(peers: tuple[Node, Wlmscpfs]) -> None:
    node, reference = peers
    code = Dataset()
    code.CodeValue = ""
    code.CodeMeaning = ""
    step = Dataset()
    step.Modality = "CT"
    step.ScheduledProtocolCodeSequence = [code]
    step.ScheduledStationName = ""  # in no item: answered zero length
    ds = _raw_query(PatientName="", AdmissionID="", ScheduledProcedureStepSequence=[step])
    ours, theirs = c_find(node.port, node.aet, ds)[1], c_find(reference.port, reference.aet, ds)[1]
    assert ours == theirs and len(ours) == 3
    assert all(
        a["AdmissionID"] == "" and a["ScheduledProcedureStepSequence"][0]["ScheduledStationName"] == "" for a in ours
    )


def test_findscu_w_gets_the_same_files(peers: tuple[Node, Wlmscpfs], tmp_path: Path) -> None:
    node, reference = peers
    keys = [
        "-k",
        "PatientName=*",
        "-k",
        "PatientID",
        "-k",
        "ScheduledProcedureStepSequence[0].Modality=MR",
        "-k",
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
        "-k",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20260906",
        "-k",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
        "-k",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription",
    ]
    results = []
    for port, aet, out in (
        (node.port, node.aet, tmp_path / "ours"),
        (reference.port, reference.aet, tmp_path / "theirs"),
    ):
        out.mkdir()
        dcmtk("findscu", "-W", "-aec", aet, "-X", "-od", str(out), *keys, HOST, str(port), check=True)
        results.append(sorted((canon(dcmread(p)) for p in out.iterdir()), key=repr))
    assert results[0] == results[1] and len(results[0]) == 2
