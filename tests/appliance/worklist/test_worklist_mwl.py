"""Worklist files (.wl, made by DCMTK dump2dcm as wlmscpfs keeps them), MWL C-FIND matching and rights, CLI."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from hl7support import findscu_mwl, sps
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification  # type: ignore[attr-defined]

from appliance.cli import main
from appliance.errors import IncompleteItem
from appliance.worklist.files import export_file, import_files
from appliance.worklist.store import ItemKey, check_complete

from conftest import HOST, Node, dcmtk

STEP = """(0040,0100) SQ (Sequence with undefined length #=1)
  (fffe,e000) na (Item with undefined length #=1)
    (0008,0060) CS [{modality}]
    (0040,0001) AE [{aet}]
    (0040,0002) DA [{date}]
    (0040,0003) TM [{time}]
    (0040,0006) PN [Tech^Tom]
    (0040,0007) LO [{desc}]
    (0040,0009) SH [{sps}]
  (fffe,e00d) na (ItemDelimitationItem)
"""


def wl_dump(
    pid: str, name: str, study: str, steps: list[dict[str, str]], accession: str = "", rp: str = "RP1", extra: str = ""
) -> str:
    items = "".join(
        STEP.format(**s).split("\n", 1)[1].rsplit("  (fffe,e00d)", 1)[0] + "  (fffe,e00d) na\n" for s in steps
    )
    return f"""(0008,0005) CS [ISO_IR 100]
(0008,0050) SH [{accession}]
(0008,1110) SQ (Sequence with undefined length #=0)
(fffe,e0dd) na (SequenceDelimitationItem)
(0008,1120) SQ (Sequence with undefined length #=0)
(fffe,e0dd) na (SequenceDelimitationItem)
(0010,0010) PN [{name}]
(0010,0020) LO [{pid}]
(0010,0030) DA [19700101]
(0010,0040) CS [F]
(0020,000d) UI [{study}]
(0032,1060) LO [Requested {pid}]
(0040,0100) SQ (Sequence with undefined length #=1)
{items}(fffe,e0dd) na (SequenceDelimitationItem)
(0040,1001) SH [{rp}]
{extra}"""


def make_wl(folder: Path, name: str, dump: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / f"{name}.dump"
    src.write_text(dump, encoding="latin-1")
    out = folder / f"{name}.wl"
    dcmtk("dump2dcm", str(src), str(out), check=True)
    src.unlink()
    return out


def step(
    sps_id: str,
    aet: str = "CT1",
    date: str = "20260905",
    time: str = "1100",
    modality: str = "CT",
    desc: str = "CT Abdomen",
) -> dict[str, str]:
    return {"sps": sps_id, "aet": aet, "date": date, "time": time, "modality": modality, "desc": desc}


@pytest.fixture
def wl_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "worklists"
    make_wl(
        folder,
        "one",
        wl_dump("WL001", "DOE^JANE", "1.2.826.0.1.1", [step("S1", aet="AA32\\AA33")], accession="ACC-WL-1"),
    )
    make_wl(
        folder,
        "two",
        wl_dump(
            "WL002",
            "M\xfcller^Hans",
            "1.2.826.0.1.2",
            [
                step("S2", date="20260906", time="0830", modality="MR", aet="MR1"),
                step("S3", date="20260906", time="1400", modality="MR", aet="MR1"),
            ],
        ),
    )
    make_wl(
        folder / "sub",
        "three",
        wl_dump("XY003", "ROE^RICHARD", "1.2.826.0.1.3", [step("S4", date="20260907", time="235959")]),
    )
    return folder


def config_file(node: Node, tmp_path: Path) -> str:
    path = tmp_path / "appliance.toml"
    path.write_text(f'[appliance]\ndata_dir = "{node.cfg.data_dir}"\n')
    return str(path)


@pytest.fixture
def wl_node(node: Node, wl_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Node:
    assert main(["worklist", "import", str(wl_dir), "--config", config_file(node, tmp_path)]) == 0
    assert "4 worklist item(s) imported, 0 file(s) refused" in capsys.readouterr().out
    return node


SAET = "ScheduledProcedureStepSequence[0].ScheduledStationAETitle"
DATE = "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate"
TIME = "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime"
MODALITY = "ScheduledProcedureStepSequence[0].Modality"


def ids(answers: list[Dataset]) -> list[str]:
    return sorted(sps(a).ScheduledProcedureStepID for a in answers)


def test_imported_files_are_answered(wl_node: Node, tmp_path: Path) -> None:
    answers = findscu_mwl(wl_node, tmp_path)
    assert ids(answers) == ["S1", "S2", "S3", "S4"]  # one answer per step, each with exactly one SPS item
    two = [a for a in answers if a.PatientID == "WL002"]
    assert {str(a.PatientName) for a in two} == {"Müller^Hans"}
    assert {a.SpecificCharacterSet for a in two} == {"ISO_IR 100"}
    for a in answers:
        for key in ("PatientName", "PatientID", "StudyInstanceUID", "RequestedProcedureID", "AccessionNumber"):
            assert key in a
        # The files name no step status: answered zero length, as wlmscpfs answers them.
        assert sps(a).ScheduledProcedureStepStatus == ""


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (("PatientName=doe*",), []),  # PN: case-sensitive, as wlmscpfs ([worklist] pn_ignore_case)
        (("PatientName=DOE*",), ["S1"]),
        (("PatientName=*^Hans",), ["S2", "S3"]),
        (("PatientID=wl001",), []),  # LO: case-sensitive
        (("PatientID=WL00?",), []),  # no wildcards on Patient ID, station and modality (wlmscpfs)
        (("PatientID=WL001",), ["S1"]),
        ((f"{SAET}=AA33",), ["S1"]),  # one value of a multi-valued station AE title
        ((f"{SAET}=MR1",), ["S2", "S3"]),
        ((f"{MODALITY}=CT",), ["S1", "S4"]),
        ((f"{MODALITY}=MR\\CT",), ["S1", "S2", "S3", "S4"]),
        ((f"{DATE}=20260905-20260906",), ["S1", "S2", "S3"]),
        ((f"{DATE}=20260906-",), ["S2", "S3", "S4"]),
        ((f"{DATE}=-20260905",), ["S1"]),
        ((f"{DATE}=20260906", f"{TIME}=1000-"), ["S3"]),
        ((f"{TIME}=-0830",), ["S2"]),
        ((f"{TIME}=235959",), ["S4"]),
        (("AccessionNumber=ACC-WL-*",), ["S1"]),
        (("StudyInstanceUID=1.2.826.0.1.2\\1.2.826.0.1.3",), ["S2", "S3", "S4"]),
        (("ScheduledProcedureStepSequence[0].ScheduledProcedureStepID=S?",), ["S1", "S2", "S3", "S4"]),
        (("ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName=Tech*",), ["S1", "S2", "S3", "S4"]),
        (("ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription=CT*",), ["S1", "S2", "S3", "S4"]),
        (("PatientBirthDate=19700101",), ["S1", "S2", "S3", "S4"]),
        (("PatientSex=M",), []),  # matched on the stored data set (no column)
        (("ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus=CANCELED",), []),
    ],
)
def test_matching(wl_node: Node, tmp_path: Path, keys: tuple[str, ...], expected: list[str]) -> None:
    assert ids(findscu_mwl(wl_node, tmp_path, *keys)) == expected


def test_answer_holds_exactly_the_requested_keys(wl_node: Node) -> None:
    ae = AE(ae_title="MOD1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate(HOST, wl_node.port, ae_title=wl_node.aet)
    query = Dataset()
    query.PatientName = "ROE*"
    query.PatientComments = ""
    item = Dataset()
    item.ScheduledStationAETitle = ""
    query.ScheduledProcedureStepSequence = [item]
    query.RequestedProcedureCodeSequence = []
    responses = assoc.send_c_find(query, ModalityWorklistInformationFind)
    answers = [ds for status, ds in responses if status.Status == 0xFF00]
    assoc.release()
    [answer] = answers
    assert answer is not None
    # The empty code sequence goes, as wlmscpfs drops it when the item has none (it has a description).
    assert sorted(e.keyword for e in answer) == [
        "PatientComments",
        "PatientName",
        "ScheduledProcedureStepSequence",
        "SpecificCharacterSet",
    ]
    assert [e.keyword for e in answer.ScheduledProcedureStepSequence[0]] == ["ScheduledStationAETitle"]
    assert answer.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT1"
    assert answer.PatientComments in ("", None)


def test_files_are_taken_as_wlmscpfs_serves_them(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mixed"
    # No station, no Referenced Study Sequence (Type 2), no Patient's Name: wlmscpfs serves such files
    # (-dfr; it adds the missing Type 2 sequence itself), so they are taken, with a warning each.
    make_wl(folder, "nosaet", wl_dump("BAD1", "BAD^ONE", "1.2.826.0.9.1", [step("B1", aet="")]))
    make_wl(
        folder,
        "noref",
        wl_dump("NR1", "NO^REF", "1.2.826.0.9.3", [step("N1")]).replace(
            "(0008,1110) SQ (Sequence with undefined length #=0)\n(fffe,e0dd) na (SequenceDelimitationItem)\n", ""
        ),
    )
    make_wl(folder, "noname", wl_dump("NN1", "", "1.2.826.0.9.4", [step("M1")]).replace("(0010,0010) PN []\n", ""))
    make_wl(folder, "good", wl_dump("OK1", "GOOD^ONE", "1.2.826.0.9.2", [step("G1")]))
    # Refused: not DICOM; no Scheduled Procedure Step Sequence; bytes foreign to the character set.
    (folder / "junk.wl").write_bytes(b"not dicom at all")
    make_wl(
        folder,
        "nosps",
        wl_dump("NS1", "NO^SPS", "1.2.826.0.9.5", []).replace(
            "(0040,0100) SQ (Sequence with undefined length #=1)\n(fffe,e0dd) na (SequenceDelimitationItem)\n", ""
        ),
    )
    make_wl(
        folder,
        "badtext",
        wl_dump("BT1", "Bad\xe9^Text", "1.2.826.0.9.6", [step("T1")]).replace("ISO_IR 100", "ISO_IR 192"),
    )
    assert main(["worklist", "import", str(folder), "--config", config_file(node, tmp_path)]) == 1
    out = capsys.readouterr()
    assert "4 worklist item(s) imported, 3 file(s) refused" in out.out
    warnings = [line for line in out.err.splitlines() if line.startswith("warning: ")]
    assert any("nosaet.wl: " in w and "ScheduledStationAETitle" in w for w in warnings)
    assert any("noref.wl: ReferencedStudySequence absent (answered empty)" in w for w in warnings)
    assert any("noname.wl: " in w and "PatientName" in w for w in warnings)
    assert not any("good.wl" in w for w in warnings)
    refused = {
        line.split(": ", 2)[1].rsplit("/", 1)[-1]: line for line in out.err.splitlines() if line.startswith("refused: ")
    }
    assert set(refused) == {"junk.wl", "nosps.wl", "badtext.wl"}
    assert "not a DICOM worklist file" in refused["junk.wl"]
    assert "no Scheduled Procedure Step Sequence" in refused["nosps.wl"]
    assert "broken encoding" in refused["badtext.wl"]
    answers = findscu_mwl(node, tmp_path)
    assert ids(answers) == ["B1", "G1", "M1", "N1"]
    by_id = {sps(a).ScheduledProcedureStepID: a for a in answers}
    assert sps(by_id["B1"]).ScheduledStationAETitle in ("", None)
    assert by_id["M1"].PatientName in ("", None)
    # The station key of a modality does not find the station-less item (empty never matches a value).
    assert ids(findscu_mwl(node, tmp_path, f"{SAET}=CT1")) == ["G1", "M1", "N1"]


def test_completeness_rules() -> None:
    complete: dict[str, Any] = {
        "PatientName": "A^B",
        "PatientID": "1",
        "StudyInstanceUID": "1.2",
        "RequestedProcedureID": "R",
        "RequestedProcedureDescription": "desc",
        "ReferencedStudySequence": [],
        "ReferencedPatientSequence": [],
        "ScheduledProcedureStepSequence": [
            {
                "ScheduledStationAETitle": "CT1",
                "ScheduledProcedureStepStartDate": "20260905",
                "ScheduledProcedureStepStartTime": "1100",
                "Modality": "CT",
                "ScheduledProcedureStepID": "S",
                "ScheduledProcedureStepDescription": "x",
            }
        ],
    }
    check_complete(complete)
    broken = [
        ("PatientID", "", "PatientID"),
        ("RequestedProcedureDescription", "", "RequestedProcedureDescription"),
        ("ReferencedStudySequence", None, "ReferencedStudySequence"),
        ("ReferencedPatientSequence", [{"ReferencedSOPClassUID": "1.2"}], "ReferencedPatientSequence"),
        # DCMTK refuses an empty code sequence even when the description is there.
        ("RequestedProcedureCodeSequence", [], "RequestedProcedureDescription"),
    ]
    for key, value, attribute in broken:
        item = dict(complete)
        if value is None:
            del item[key]
        else:
            item[key] = value
        with pytest.raises(IncompleteItem) as info:
            check_complete(item)
        assert info.value.attribute == attribute
    two_steps = dict(complete, ScheduledProcedureStepSequence=complete["ScheduledProcedureStepSequence"] * 2)
    with pytest.raises(IncompleteItem):
        check_complete(two_steps)
    coded = dict(complete)
    coded["ScheduledProcedureStepSequence"] = [dict(complete["ScheduledProcedureStepSequence"][0])]
    del coded["ScheduledProcedureStepSequence"][0]["ScheduledProcedureStepDescription"]
    coded["ScheduledProcedureStepSequence"][0]["ScheduledProtocolCodeSequence"] = [{"CodeValue": "X"}]
    with pytest.raises(IncompleteItem):
        check_complete(coded)


def test_mwl_right(node_factory, wl_dir: Path, tmp_path: Path) -> None:
    nodes = [{"ae_title": "MODALITY", "host": HOST}, {"ae_title": "VIEWER", "host": HOST, "mwl": False}]
    strict = node_factory(accept_any_ae=False, nodes=nodes)
    assert main(["worklist", "import", str(wl_dir), "--config", config_file(strict, tmp_path)]) == 0
    assert len(findscu_mwl(strict, tmp_path, calling="MODALITY")) == 4
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(Verification)
    assoc = ae.associate(HOST, strict.port, ae_title=strict.aet)
    assert assoc.is_established
    assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [Verification]
    assoc.release()
    proc = dcmtk("findscu", "-W", "-aet", "VIEWER", "-aec", strict.aet, "-k", "PatientName", HOST, str(strict.port))
    assert proc.returncode != 0


def test_worklist_queries_are_not_logged_by_default(
    node_factory, wl_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = node_factory()
    loud = node_factory(log_worklist_queries=True)
    for n in (quiet, loud):
        assert main(["worklist", "import", str(wl_dir), "--config", config_file(n, tmp_path)]) == 0
    with caplog.at_level(logging.INFO, logger="appliance.dicom"):
        findscu_mwl(quiet, tmp_path)
        assert "worklist C-FIND" not in caplog.text
        findscu_mwl(loud, tmp_path)
        assert "worklist C-FIND from FINDSCU: 4 answer(s)" in caplog.text


def test_cli_management(wl_node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ["--config", config_file(wl_node, tmp_path)]
    wl = wl_node.app.worklist
    rows = {r.sps_id: r.id for r in wl.items()}
    assert main(["worklist", "list", "--patient", "doe", *cfg]) == 0
    out = capsys.readouterr().out
    assert "DOE, JANE" in out and "ROE" not in out  # names as appliance.names shows them
    # Finished steps: purge removes them, and only them.
    with wl.db.transaction() as conn:
        wl.set_step_status(conn, ItemKey("1.2.826.0.1.2", "S2"), wl_status("COMPLETED"))
        wl.set_step_status(conn, ItemKey("1.2.826.0.1.2", "S3"), wl_status("CANCELED"))
        wl.set_step_status(conn, ItemKey("1.2.826.0.1.1", "S1"), wl_status("DISCONTINUED"))
    assert main(["worklist", "list", "--status", "completed", *cfg]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == [str(rows["S2"])]
    assert main(["worklist", "reset", str(rows["S1"]), *cfg]) == 0
    assert main(["worklist", "purge", *cfg]) == 0
    assert "2 worklist step(s) deleted" in capsys.readouterr().out
    assert sorted(r.sps_id for r in wl.items()) == ["S1", "S4"]
    assert ids(findscu_mwl(wl_node, tmp_path)) == ["S1", "S4"]  # S1 is SCHEDULED again
    # An unknown ID deletes nothing.
    assert main(["worklist", "delete", str(rows["S4"]), "999999", *cfg]) == 4
    assert "worklist step 999999 does not exist" in capsys.readouterr().err
    assert main(["worklist", "delete", str(rows["S4"]), *cfg]) == 0
    assert main(["worklist", "delete", "--study", "1.2.826.0.1.1", *cfg]) == 0
    assert wl.count() == 0
    assert main(["worklist", "delete", "--study", "1.2.826.0.1.1", *cfg]) == 4


def wl_status(name: str):
    from appliance.worklist.store import SpsStatus

    return SpsStatus(name)


def test_export_is_read_by_dcmtk_wlmscpfs(wl_node: Node, tmp_path: Path) -> None:
    out = tmp_path / "export" / "WL"
    out.mkdir(parents=True)
    for row in wl_node.app.worklist.items():
        export_file(wl_node.app.worklist, ItemKey(row.study_uid, row.sps_id), out / f"{row.id}.wl")
    dump = dcmtk("dcmdump", str(out / f"{wl_node.app.worklist.items()[0].id}.wl"), check=True).stdout
    assert "ScheduledProcedureStepStatus" in dump and "SCHEDULED" in dump
    # Re-importing the exported files gives the same items.
    before = [(r.study_uid, r.sps_id, r.patient_name, r.start_time) for r in wl_node.app.worklist.items()]
    wl_node.app.worklist.purge([wl_status("SCHEDULED")])

    stored, failed = import_files(wl_node.app.worklist, [out])
    assert failed == [] and len(stored) == 4
    assert [(r.study_uid, r.sps_id, r.patient_name, r.start_time) for r in wl_node.app.worklist.items()] == before


def _node_with(tmp_path: Path, worklist: dict[str, Any]) -> Node:
    from appliance.config import parse_config

    from conftest import free_port

    return Node(
        parse_config(
            {
                "appliance": {"data_dir": str(tmp_path / "wlcfg")},
                "dicom": {"bind": HOST, "port": free_port(), "tls_port": 0, "free_space_limit_mb": 1},
                "worklist": worklist,
            }
        )
    )


def test_hidden_statuses_default_and_off(node: Node, wl_dir: Path, tmp_path: Path) -> None:
    # Default: CANCELED, DISCONTINUED and COMPLETED steps are answered only to a query for that status.
    stored, failed = import_files(node.app.worklist, [wl_dir])
    assert not failed
    with node.app.db.transaction() as conn:
        for sps_id, status in (("S1", "CANCELED"), ("S2", "DISCONTINUED"), ("S3", "COMPLETED")):
            key = next(k for k in stored if k.sps_id == sps_id)
            node.app.worklist.set_step_status(conn, key, wl_status(status))
    assert ids(findscu_mwl(node, tmp_path)) == ["S4"]
    assert ids(
        findscu_mwl(node, tmp_path, "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus=COMPLETED")
    ) == ["S3"]
    # hidden_statuses = []: every step, as wlmscpfs answers every file.
    other = _node_with(tmp_path, {"hidden_statuses": []})
    try:
        import_files(other.app.worklist, [wl_dir])
        with other.app.db.transaction() as conn:
            other.app.worklist.set_step_status(conn, next(k for k in stored if k.sps_id == "S1"), wl_status("CANCELED"))
        assert ids(findscu_mwl(other, tmp_path)) == ["S1", "S2", "S3", "S4"]
    finally:
        other.stop()


def test_pn_ignore_case(wl_dir: Path, tmp_path: Path) -> None:
    node = _node_with(tmp_path, {"pn_ignore_case": True})
    try:
        import_files(node.app.worklist, [wl_dir])
        assert ids(findscu_mwl(node, tmp_path, "PatientName=doe*")) == ["S1"]
        assert ids(findscu_mwl(node, tmp_path, "PatientName=*^HANS")) == ["S2", "S3"]
        assert ids(findscu_mwl(node, tmp_path, "PatientID=wl001")) == []  # other VRs stay case-sensitive
    finally:
        node.stop()
