"""Every error code the vendors document has a readable reason and a retry/staff verdict."""

from __future__ import annotations

import pytest

from robots.codes import describe_epson, describe_primera

# Every code named in specs/robots.md §1.6 (ranges expanded where the spec gives one meaning per range).
EPSON_DOCUMENTED = [
    "SYS001",
    "SYS002",
    "SYS003",
    "JDF0000",
    "JDF0001",
    "JDF0002",
    "JDF0003",
    "JDF0100",
    "JDF0101",
    "JDF0102",
    "JDF0200",
    "JDF0201",
    "JDF0202",
    "JDF0203",
    "JDF0300",
    "JDF0400",
    "JDF0500",
    "JDF0501",
    "JDF0502",
    "JDF0600",
    "JDF0700",
    "JDF0800",
    *[f"JDF09{n:02d}" for n in range(15)],
    "JDF1000",
    "JDF1100",
    "JDF1250",
    *[f"JDF130{n}" for n in range(7)],
    "JDF1400",
    "JDF1401",
    "JDF1402",
    *[f"JDF150{n}" for n in range(8)],
    "JDF1604",
    *[f"JDF161{n}" for n in range(7)],
    *[f"JDF162{n}" for n in range(6)],
    "JDF1700",
    "JDF1900",
    "JDF2000",
    "JDF2001",
    "JDF2300",
    "JDF2500",
    "JDF2501",
    "JDF2600",
    "JDF2601",
    "JDF2602",
    "JDF2603",
    "JDF2700",
    "JDF2800",
    "JDF2801",
    "JDF2900",
    "CAN000",
    "CAN001",
    "CAN004",
    "CAN005",
    "CAN006",
    "CAN008",
    "CAN010",
    "CAN011",
    "CAN012",
    "CAN013",
    "CAN014",
    "CAN016",
    "CAN017",
    "CAN018",
    "CAN019",
    "CAN020",
    "CAN021",
    "STP000",
    "STP001",
    "STP002",
    *[f"RTN{n:03d}" for n in (0, 1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16, 17)],
    "OTH000",
]
PRIMERA_SYSTEM = [*range(1, 32), 35, 36, 37, 38, 39, 40, 42]
PRIMERA_JOB = [2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, *range(23, 41)]


@pytest.mark.parametrize("code", EPSON_DOCUMENTED)
def test_every_documented_epson_code_has_a_specific_reason(code: str) -> None:
    info = describe_epson(code)
    generic = (
        "TD Bridge error",
        "TD Bridge rejected the job file",
        "the publisher cancelled the job",
        "the publisher waits",
        "TD Bridge system error",
    )
    assert info.reason.endswith(f"({code})") and not info.reason.startswith(generic)


def test_epson_families_decide_what_staff_must_do() -> None:
    assert describe_epson("RTN000").needs_staff and describe_epson("RTN000").retry_possible
    assert describe_epson("RTN000").reason == "input stacker empty: load blank discs (RTN000)"
    assert not describe_epson("JDF0300").retry_possible
    assert describe_epson("CAN008").retry_possible and not describe_epson("CAN008").needs_staff
    assert describe_epson("CAN999").reason == "the publisher cancelled the job (CAN999)"
    assert describe_epson("XYZ123").reason == "TD Bridge error XYZ123"


@pytest.mark.parametrize("number", PRIMERA_SYSTEM)
def test_every_documented_primera_system_error_needs_staff(number: int) -> None:
    info = describe_primera(number, system=True)
    assert info.needs_staff and info.reason.endswith(f"(system-{number})")


@pytest.mark.parametrize("number", PRIMERA_JOB)
def test_every_documented_primera_job_error_has_a_reason(number: int) -> None:
    assert describe_primera(number, system=False).reason.endswith(f"(job-{number})")


def test_primera_examples() -> None:
    assert describe_primera(3, system=True).reason == "input bin empty: load blank discs (system-3)"
    assert describe_primera(11, system=False).retry_possible is False
    assert describe_primera(99, system=False).reason == "PTBurn job error 99"
