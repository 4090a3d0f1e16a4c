"""Golden job files: the exact bytes each driver writes for typical requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from robots.base import BurnRequest, LabelFiles, RequestError
from robots.registry import create_robot

ROOT = Path("/var/app/discs")


def test_epson_data_job_with_template_and_merge_fields() -> None:
    """GIVEN a site .tdd and a D:\\ mapping WHEN a data CD is rendered THEN JDF and merge file match."""
    robot = create_robot(
        "epson",
        {
            "hotfolder": "/var/app/discs/epson",
            "local_root": "/var/app/discs",
            "bridge_root": "D:\\discs",
            "label_template": "/var/app/discs/templates/p.tdd",
        },
    )
    req = BurnRequest(
        "J20260101-1",
        2,
        "CD",
        "Doe Jane CT",
        data_paths=(ROOT / "J1/viewer", ROOT / "J1/fileset"),
        label=LabelFiles(fields={"patientName": "DOE^JANE", "patientId": "P123"}),
    )
    files = robot.render(req)
    assert files == {
        "J20260101-1.DAT": b"patientName=DOE^JANE\r\npatientId=P123\r\n",
        "J20260101-1.JDF": (
            b"JOB_ID=J20260101-1\r\n"
            b"COPIES=2\r\n"
            b"DISC_TYPE=CD\r\n"
            b"COMPARE=YES\r\n"
            b"FORMAT=JOLIET\r\n"
            b"DATA=D:\\discs\\J1\\viewer\r\n"
            b"DATA=D:\\discs\\J1\\fileset\r\n"
            b"VOLUME_LABEL=Doe_Jane_CT\r\n"
            b"LABEL=D:\\discs\\templates\\p.tdd\r\n"
            b"REPLACE_FIELD=D:\\discs\\epson\\J20260101-1.DAT\r\n"
        ),
    }


def test_epson_image_job_on_unc_share_with_priority() -> None:
    robot = create_robot(
        "epson",
        {
            "hotfolder": "/var/app/discs/epson",
            "local_root": "/var/app/discs",
            "bridge_root": "\\\\PC\\share\\discs",
            "publisher": "PP-100II 1",
            "out_stacker": 2,
        },
    )
    req = BurnRequest("J2", 1, "DVD", "X", image_path=ROOT / "J2/disc.iso", priority=True, verify=False)
    assert robot.render(req) == {
        "J2.JDF": (
            b"JOB_ID=J2\r\n"
            b"PUBLISHER=PP-100II 1\r\n"
            b"COPIES=1\r\n"
            b"OUT_STACKER=2\r\n"
            b"DISC_TYPE=DVD\r\n"
            b"COMPARE=NO\r\n"
            b"IMAGE=\\\\PC\\share\\discs\\J2\\disc.iso\r\n"
            b"PRIORITY=HIGH\r\n"
        )
    }


def test_epson_merge_values_are_transliterated_to_the_ansi_code_page() -> None:
    robot = create_robot("epson", {"hotfolder": "/hot", "label_template": "/t/p.tdd"})
    req = BurnRequest(
        "J3",
        1,
        "CD",
        "x",
        image_path=Path("/d.iso"),
        label=LabelFiles(fields={"patientName": "Müller^Łukasz", "note": "two\r\nlines"}),
    )
    assert robot.render(req)["J3.DAT"] == "patientName=Müller^Lukasz\r\nnote=two lines\r\n".encode("cp1252")


def test_epson_without_template_prints_nothing_unless_image_labels_is_on() -> None:
    req = BurnRequest("J4", 1, "CD", "x", image_path=Path("/d.iso"), label=LabelFiles(jpg=Path("/l/label.jpg")))
    plain = create_robot("epson", {"hotfolder": "/hot"}).render(req)["J4.JDF"]
    assert b"LABEL=" not in plain
    images = create_robot("epson", {"hotfolder": "/hot", "image_labels": True}).render(req)["J4.JDF"]
    assert images.endswith(b"IMAGE=/d.iso\r\nLABEL=/l/label.jpg\r\n")


def test_primera_image_job_with_our_rendered_label() -> None:
    robot = create_robot(
        "primera",
        {
            "hotfolder": "/var/app/discs/primera",
            "local_root": "/var/app/discs",
            "bridge_root": "\\\\PC\\PTBurnJobs\\discs",
        },
    )
    req = BurnRequest("J3", 3, "CD", "x", image_path=ROOT / "J3/disc.iso", label=LabelFiles(jpg=ROOT / "J3/l.jpg"))
    assert robot.render(req) == {
        "J3.JRQ": (
            b"JobID = J3\r\n"
            b"ClientID = appliance\r\n"
            b"Importance = 4\r\n"
            b"ImageFile = \\\\PC\\PTBurnJobs\\discs\\J3\\disc.iso\r\n"
            b"ImageType = MODE_1_2048\r\n"
            b"CloseDisc = YES\r\n"
            b"Copies = 3\r\n"
            b"PrintLabel = \\\\PC\\PTBurnJobs\\discs\\J3\\l.jpg\r\n"
            b"VerifyDisc = YES\r\n"
            b"RejectIfNotBlank = YES\r\n"
        )
    }


def test_primera_data_job_with_surething_template_and_merge_fields() -> None:
    robot = create_robot(
        "primera",
        {
            "hotfolder": "/var/app/discs/primera",
            "local_root": "/var/app/discs",
            "bridge_root": "C:\\PTBurnJobs\\discs",
            "label_template": "/var/app/discs/templates/patient.std",
            "robot_name": "Bravo 4202",
            "print_quality": 3,
        },
    )
    req = BurnRequest(
        "J4",
        1,
        "DVD",
        "Doe Jane",
        data_paths=(ROOT / "J4/viewer", ROOT / "J4/fileset"),
        label=LabelFiles(fields={"a": "DOE^JANE", "b": "Zoë Łoś", "c": "x\r\ny"}),
        priority=True,
    )
    assert robot.render(req) == {
        "J4.JRQ": (
            b"JobID = J4\r\n"
            b"ClientID = appliance\r\n"
            b"Importance = 0\r\n"
            b"Data = C:\\PTBurnJobs\\discs\\J4\\viewer\r\n"
            b"Data = C:\\PTBurnJobs\\discs\\J4\\fileset\r\n"
            b"DataImageType = ISOLEVEL2+JOLIET\r\n"
            b"CloseDisc = YES\r\n"
            b"Copies = 1\r\n"
            b"PrintLabel = C:\\PTBurnJobs\\discs\\templates\\patient.std\r\n"
            b"MergeField = DOE^JANE\r\n"
            b"MergeField = Zo\xeb Los\r\n"
            b"MergeField = x y\r\n"
            b"VolumeName = Doe_Jane\r\n"
            b"VerifyDisc = YES\r\n"
            b"RejectIfNotBlank = YES\r\n"
            b"PrintQuality = 3\r\n"
            b"RobotName = Bravo 4202\r\n"
        )
    }


@pytest.mark.parametrize("kind", ["epson", "primera"])
def test_a_path_outside_local_root_is_refused_before_anything_is_written(kind: str) -> None:
    robot = create_robot(
        kind, {"hotfolder": "/var/app/discs/hot", "local_root": "/var/app/discs", "bridge_root": "D:\\discs"}
    )
    req = BurnRequest("J5", 1, "CD", "x", image_path=Path("/home/someone/disc.iso"))
    with pytest.raises(RequestError, match="outside local_root"):
        robot.render(req)


def test_a_path_the_code_page_cannot_hold_is_refused() -> None:
    robot = create_robot("epson", {"hotfolder": "/hot"})
    with pytest.raises(RequestError, match="code page"):
        robot.render(BurnRequest("J6", 1, "CD", "x", image_path=Path("/discs/患者.iso")))


@pytest.mark.parametrize("kind", ["epson", "primera"])
def test_submit_writes_exactly_the_rendered_files_and_a_retry_gets_a_new_ticket(
    kind: str, disc: dict[str, Path], make_request
) -> None:
    robot = create_robot(kind, {"hotfolder": str(disc["hot"]), "label_template": str(disc["tdd"])})
    req = make_request("J7")
    first = robot.submit(req)
    second = robot.submit(req)
    assert (first, second) == ("J7", "J7_2")
    for ticket in (first, second):
        for name, data in robot.render(req, ticket).items():
            assert (disc["hot"] / name).read_bytes() == data
    assert not [p for p in disc["hot"].iterdir() if p.name.endswith(".tmp")]


def test_submit_refuses_missing_source_files(disc: dict[str, Path]) -> None:
    robot = create_robot("epson", {"hotfolder": str(disc["hot"])})
    with pytest.raises(RequestError, match="does not exist"):
        robot.submit(BurnRequest("J8", 1, "CD", "x", image_path=disc["root"] / "missing.iso"))
    assert list(disc["hot"].iterdir()) == []


def test_a_template_given_as_a_windows_path_is_taken_as_the_bridge_pcs_own() -> None:
    robot = create_robot(
        "epson",
        {
            "hotfolder": "/var/app/discs/epson",
            "local_root": "/var/app/discs",
            "bridge_root": "D:\\discs",
            "label_template": "C:\\Labels\\patient.tdd",
        },
    )
    req = BurnRequest("J9", 1, "CD", "x", image_path=ROOT / "J9/disc.iso", label=LabelFiles(fields={"n": "v"}))
    assert robot.render(req)["J9.JDF"].endswith(
        b"LABEL=C:\\Labels\\patient.tdd\r\nREPLACE_FIELD=D:\\discs\\epson\\J9.DAT\r\n"
    )
