"""C-FIND SCP, Patient Root and Study Root, with DCMTK findscu and pynetdicom (PS3.4 C.2.2.2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from conftest import HOST, Node, dcmtk


def findscu(node: Node, tmp_path: Path, *keys: str, model: str = "-S", extra: tuple[str, ...] = ()) -> list[Dataset]:
    """Run DCMTK findscu and return the answers it extracted to files."""
    out = tmp_path / f"rsp{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    args = [model, "-aec", node.aet, "-X", "-od", str(out), *extra]
    for key in keys:
        args += ["-k", key]
    proc = dcmtk("findscu", *args, HOST, str(node.port))
    assert proc.returncode == 0, proc.stderr
    return [dcmread(p) for p in sorted(out.iterdir())]


def test_study_level_wildcard_answers_each_study_once(loaded_node: Node, tmp_path: Path) -> None:
    answers = findscu(
        loaded_node,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "PatientName=DOE*",
        "StudyInstanceUID",
        "StudyDescription",
        "PatientBirthDate",
        "PatientComments",
    )
    assert sorted(a.StudyDescription for a in answers) == ["CT CHEST", "MR HEAD", "PET CT"]
    assert len({a.StudyInstanceUID for a in answers}) == 3
    for a in answers:
        assert a.QueryRetrieveLevel == "STUDY"
        assert a.PatientBirthDate == "19700101"
        # A key the index does not hold comes back, empty.
        assert "PatientComments" in a and a.PatientComments in ("", None)


def test_pn_is_case_insensitive_but_lo_is_case_sensitive(loaded_node: Node, tmp_path: Path) -> None:
    assert len(findscu(loaded_node, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=doe^j*")) == 3
    assert findscu(loaded_node, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID=pid001") == []
    assert len(findscu(loaded_node, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID=PID001")) == 2
    ids = findscu(loaded_node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=P?D00*", model="-P")
    assert sorted(a.PatientID for a in ids) == ["PID001", "PID002", "PID003", "PID004"]


def test_sql_metacharacters_match_literally(loaded_node: Node, tmp_path: Path) -> None:
    answers = findscu(
        loaded_node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientName=MyName[*]", "PatientID", model="-P"
    )
    assert [a.PatientID for a in answers] == ["PID_5%"]
    # "?" matches any one character, "*" included; "[" and "]" only match themselves.
    assert len(findscu(loaded_node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientName=MyName[?]", model="-P")) == 1
    assert findscu(loaded_node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientName=MyName[x]", model="-P") == []
    assert len(findscu(loaded_node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=PID_5%", model="-P")) == 1
    assert findscu(loaded_node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=PID_05", model="-P") == []


def test_universal_and_empty_values(loaded_node: Node, tmp_path: Path) -> None:
    everyone = findscu(loaded_node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID", "PatientSex", model="-P")
    sexes = {a.PatientID: a.PatientSex for a in everyone}
    assert sexes["PID004"] in ("", None)
    assert sexes["PID002"] == "F"
    female = findscu(loaded_node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientSex=F", "PatientID", model="-P")
    assert [a.PatientID for a in female] == ["PID002"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("19980312-", 3),
        ("-19980312", 1),
        ("19980312-19980312", 1),
        ("20070209-20070209", 0),
        ("20070208", 2),
        ("20070101-20071231", 2),
    ],
)
def test_date_ranges(loaded_node: Node, tmp_path: Path, value: str, expected: int) -> None:
    # Studies of PID001/PID002: 1998-03-12, 2007-02-08, 2007-02-08.
    answers = findscu(
        loaded_node, tmp_path, "QueryRetrieveLevel=STUDY", f"StudyDate={value}", "PatientID=PID00?", "PatientName=DOE*"
    )
    assert len(answers) == expected


def test_date_and_time_together(loaded_node: Node, tmp_path: Path) -> None:
    answers = findscu(
        loaded_node,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "StudyDate=20070208",
        "StudyTime=0800-1200",
        "StudyDescription",
    )
    assert [a.StudyDescription for a in answers] == ["MR HEAD"]
    answers = findscu(loaded_node, tmp_path, "QueryRetrieveLevel=STUDY", "StudyTime=-0830", "StudyDescription")
    assert [a.StudyDescription for a in answers] == ["CT CHEST"]


def test_uid_lists_and_multi_values(loaded_node: Node, tmp_path: Path) -> None:
    studies = findscu(loaded_node, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID=PID001")
    uids = [a.StudyInstanceUID for a in studies]
    fake = [f"1.2.3.4.5.{i}.{'9' * 40}" for i in range(4)]
    answers = findscu(loaded_node, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + "\\".join(uids + fake))
    assert sorted(a.StudyInstanceUID for a in answers) == sorted(uids)
    pet = findscu(loaded_node, tmp_path, "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=PT")
    assert len(pet) == 1
    [both] = findscu(loaded_node, tmp_path, "QueryRetrieveLevel=STUDY", "AccessionNumber=A200", "ModalitiesInStudy")
    assert list(both.ModalitiesInStudy) == ["CT", "PT"]
    either = findscu(loaded_node, tmp_path, "QueryRetrieveLevel=SERIES", "Modality=MR\\PT", "StudyInstanceUID=")
    assert sorted(a.Modality for a in either) == ["MR", "PT"]


def test_computed_counts(loaded_node: Node, tmp_path: Path) -> None:
    [patient] = findscu(
        loaded_node,
        tmp_path,
        "QueryRetrieveLevel=PATIENT",
        "PatientID=PID001",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
        model="-P",
    )
    assert (
        patient.NumberOfPatientRelatedStudies,
        patient.NumberOfPatientRelatedSeries,
        patient.NumberOfPatientRelatedInstances,
    ) == (2, 3, 7)
    [study] = findscu(
        loaded_node,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "AccessionNumber=A100",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "SOPClassesInStudy",
        "StudyInstanceUID",
    )
    assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (2, 4)
    assert study.SOPClassesInStudy == "1.2.840.10008.5.1.4.1.1.2"
    series = findscu(
        loaded_node,
        tmp_path,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={study.StudyInstanceUID}",
        "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances",
    )
    assert [s.NumberOfSeriesRelatedInstances for s in series] == [2, 2]
    images = findscu(
        loaded_node,
        tmp_path,
        "QueryRetrieveLevel=IMAGE",
        f"SeriesInstanceUID={series[0].SeriesInstanceUID}",
        "SOPInstanceUID",
        "InstanceNumber",
        "RetrieveAETitle",
    )
    assert [i.InstanceNumber for i in images] == [1, 2]
    assert {i.RetrieveAETitle for i in images} == {loaded_node.aet}


def test_patient_root_levels(loaded_node: Node, tmp_path: Path) -> None:
    studies = findscu(
        loaded_node, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID=PID002", "StudyInstanceUID", model="-P"
    )
    assert len(studies) == 1
    series = findscu(
        loaded_node,
        tmp_path,
        "QueryRetrieveLevel=SERIES",
        "PatientID=PID002",
        f"StudyInstanceUID={studies[0].StudyInstanceUID}",
        "SeriesInstanceUID",
        "Modality",
        model="-P",
    )
    assert sorted(s.Modality for s in series) == ["CT", "PT"]


def test_group_length_and_meta_never_come_back(loaded_node: Node, tmp_path: Path) -> None:
    answers = findscu(
        loaded_node, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID=PID002", "(0008,0000)=", "StudyInstanceUID"
    )
    assert len(answers) == 1
    assert all(e.tag.element != 0 for e in answers[0])


def _pyfind(node: Node, query: Dataset, model: str = StudyRootQueryRetrieveInformationModelFind) -> list[Dataset]:
    ae = AE(ae_title="PYFIND")
    ae.add_requested_context(model)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    answers = [ds for status, ds in assoc.send_c_find(query, model) if status and status.Status == 0xFF00]
    assoc.release()
    assert all(ds is not None for ds in answers), "a pending answer without an identifier"
    return [ds for ds in answers if ds is not None]


def test_character_sets_utf8_and_latin1(loaded_node: Node) -> None:
    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"
    q.PatientID = "PID004"
    q.PatientName = ""
    [utf8] = _pyfind(loaded_node, q, PatientRootQueryRetrieveInformationModelFind)
    assert utf8.SpecificCharacterSet == "ISO_IR 192"
    assert str(utf8.PatientName) == "Test-éüäöò^ΔЖ"
    # A Latin-1 query for a Latin-1 name is answered in Latin-1.
    q = Dataset()
    q.SpecificCharacterSet = "ISO_IR 100"
    q.QueryRetrieveLevel = "STUDY"
    q.PatientName = "Müller*"
    q.StudyDescription = ""
    [latin1] = _pyfind(loaded_node, q)
    assert latin1.SpecificCharacterSet == "ISO_IR 100"
    assert str(latin1.PatientName) == "MÜLLER^HANS"


def test_findscu_non_ascii_query(loaded_node: Node, tmp_path: Path) -> None:
    # findscu sends the key in the character set named by the query (here UTF-8).
    answers = findscu(
        loaded_node,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "SpecificCharacterSet=ISO_IR 192",
        "PatientName=Test-éü*",
        "PatientID",
    )
    assert [a.PatientID for a in answers] == ["PID004"]


def test_invalid_level_is_refused(loaded_node: Node) -> None:
    q = Dataset()
    q.QueryRetrieveLevel = "FOO"
    q.PatientID = ""
    ae = AE(ae_title="PYFIND")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(HOST, loaded_node.port, ae_title=loaded_node.aet)
    statuses = [status.Status for status, _ in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind)]
    assoc.release()
    assert statuses == [0xA900]


def test_cancel_stops_answers(loaded_node: Node) -> None:
    """The handler stops and answers 0xFE00 once the peer has sent C-CANCEL."""
    from types import SimpleNamespace

    from appliance.dicom.handlers import handle_find

    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.SOPInstanceUID = ""
    polls = iter([False, False, True])

    class FakeEvent:
        identifier = q
        assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title="X"))

        @property
        def is_cancelled(self) -> bool:
            return next(polls)

    results = list(handle_find(FakeEvent(), loaded_node.app))  # type: ignore[arg-type]
    assert [status for status, _ in results] == [0xFF00, 0xFF00, 0xFE00]
