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
    "JDF0004",
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
    *[f"JDF09{n:02d}" for n in range(15) if n != 6],  # PP100API.h has no JDF0906
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
    *[f"CAN{n:03d}" for n in range(22)],
    *[f"CAN{n}" for n in range(100, 104)],
    "STP000",
    "STP001",
    "STP002",
    *[f"RTN{n:03d}" for n in range(18)],
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
    assert describe_epson("CAN008").retry_possible and describe_epson("CAN008").needs_staff  # power-cycle
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


@pytest.mark.parametrize(
    ("code", "words", "retry", "staff"),
    [
        # PP100API.h: the DATA codes after JDF0905 start at 0907; 0906 does not exist.
        ("JDF0907", "does not exist", True, True),
        ("JDF0908", "no permission", True, True),
        ("JDF0909", "in use", True, False),
        ("JDF0910", "DATA_LIST file does not exist", True, True),
        ("JDF0913", "DATA_LIST", True, True),
        ("JDF0002", "no print data", False, False),
        ("JDF0003", "BD job", False, False),
        ("JDF0004", "read mode", False, False),
        ("JDF1402", "UDF102 or UDF260", False, False),
        ("JDF2602", "LABEL_TYPE 3", False, False),
        ("JDF2603", "PP-100AP", False, False),
        ("JDF2800", "0 or 1", False, False),
        ("CAN008", "turn the publisher off and on", True, True),
        ("CAN010", "printer", True, True),
        ("CAN016", "(SYSTEM) read access to the shared folder", True, True),
        ("CAN015", "status error", True, True),
        ("CAN100", "plug-in", True, True),
        ("RTN007", "stacker 3", True, True),
        ("RTN008", "stacker 4 is open", True, True),
    ],
)
def test_epson_codes_mean_what_the_api_header_says(code: str, words: str, retry: bool, staff: bool) -> None:
    info = describe_epson(code)
    assert words in info.reason, info.reason
    assert (info.retry_possible, info.needs_staff) == (retry, staff)


def test_epson_codes_that_changed_meaning() -> None:
    assert "drive" not in describe_epson("CAN010").reason  # a printer fatal error, not a drive error
    assert "CD" not in describe_epson("JDF0002").reason and "BD" in describe_epson("JDF0003").reason
    assert "1 or 2" not in describe_epson("JDF2800").reason
    # JDF0906 is not a code: it gets the family's generic text, not a borrowed meaning.
    assert describe_epson("JDF0906").reason == "TD Bridge rejected the job file (JDF0906)"


def test_oth000_is_passing_not_an_error_for_staff() -> None:
    info = describe_epson("OTH000")
    assert not info.needs_staff and info.retry_possible
    assert "goes on" in info.reason


def test_primera_error_39_is_about_merge_fields() -> None:
    assert "MergeField" in describe_primera(39, system=False).reason
