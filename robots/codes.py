"""Every error code the vendor documents, as readable English plus what staff and the core can do about it.

Sources: Epson's PP-100 API header ``PP100API.h`` (its JDFxxxx/CANxxx/STPxxx/RTNxxx/OTH000 list, which the TD
Bridge reference guides Rev. C and Rev. L agree with) and specs/robots.md §2.4 (PTBurn App. C).  Codes known
only as a family get one honest description for the range (``JDF15xx``: "the label template ... is invalid or
missing").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorInfo:
    """What one vendor code means.

    Attributes
    ----------
    reason : str
        Readable sentence for staff.
    retry_possible : bool
        The same request can succeed when submitted again (after the cause is removed).
    needs_staff : bool
        A person must act at the robot or the bridge PC.
    """

    reason: str
    retry_possible: bool
    needs_staff: bool


def _bad_job(text: str) -> ErrorInfo:
    # The job file itself is wrong: resubmitting the same request fails the same way; fix config or software.
    return ErrorInfo(text, False, False)


def _setup(text: str) -> ErrorInfo:
    # Bridge or robot setup problem: works again once someone fixes it.
    return ErrorInfo(text, True, True)


def _staff(text: str) -> ErrorInfo:
    return ErrorInfo(text, True, True)


def _transient(text: str) -> ErrorInfo:
    return ErrorInfo(text, True, False)


# ------------------------------------------------------------------------------------------- Epson TD Bridge

EPSON_CODES: dict[str, ErrorInfo] = {
    "SYS001": _setup("TD Bridge could not accept the job; check TD Bridge on the publishing PC"),
    "SYS002": _staff("communication error with the publisher; check its power and USB/network cable"),
    "SYS003": _staff("the publisher's hard disk is full; delete old jobs on the publisher"),
    "JDF0000": _bad_job("the CD job has no data, image or label to write"),
    "JDF0001": _bad_job("the DVD job has no data, image or label to write"),
    "JDF0002": _bad_job("the job has no print data (PP-100AP prints only)"),
    "JDF0003": _bad_job("the BD job has no data, image or label to write"),
    "JDF0004": _bad_job("the job was submitted while the publisher is in read mode"),
    "JDF0100": _transient("JOB_ID is already in use; submit again to get a new id"),
    "JDF0101": _bad_job("JOB_ID is longer than 40 characters"),
    "JDF0102": _bad_job("JOB_ID contains characters other than A-Z a-z 0-9 _ -"),
    "JDF0200": _setup("PUBLISHER is not a publisher registered in EPSON Total Disc Setup"),
    "JDF0201": _setup("several publishers are registered and the job names none; set 'publisher'"),
    "JDF0202": _setup("the publisher's current mode does not support this job"),
    "JDF0203": _setup("no publisher is registered in EPSON Total Disc Setup"),
    "JDF0300": _bad_job("COPIES is missing a valid number or is over the limit for the publisher's mode"),
    "JDF0400": _bad_job(
        "OUT_STACKER has a value this publisher does not accept (PP-100 models 2, 3 or 4; PP-50/PP-7050 2 or 3)"
    ),
    "JDF0500": _staff("DISC_TYPE does not match the discs set for the input stacker; load the right media"),
    "JDF0501": _bad_job("DISC_TYPE is missing"),
    "JDF0502": _bad_job("DISC_TYPE has a value this publisher does not support"),
    "JDF0600": _bad_job("WRITING_SPEED is not a number"),
    "JDF0700": _bad_job("COMPARE must be YES or NO"),
    "JDF0800": _bad_job("CLOSE_DISC must be YES or NO"),
    "JDF0900": _bad_job("a DATA line has no source or destination"),
    "JDF0901": _bad_job("two DATA items have the same name in one folder"),
    "JDF0902": _bad_job("a file or folder name is not allowed by the disc FORMAT"),
    "JDF0903": _bad_job("the data is larger than the disc; use a bigger medium or split the job"),
    "JDF0904": _bad_job("the folders are nested deeper than 128 levels"),
    "JDF0905": _setup("the drive holding the DATA source is not ready on the publishing PC"),
    "JDF0907": _setup("a DATA source does not exist on the publishing PC; check the path mapping"),
    "JDF0908": _setup("TD Bridge has no permission to read a DATA source; check the share permissions"),
    "JDF0909": _transient("a DATA source is in use by another program"),
    "JDF0910": _setup("the DATA_LIST file does not exist on the publishing PC"),
    "JDF0911": _setup("TD Bridge has no permission to read the DATA_LIST file"),
    "JDF0912": _transient("the DATA_LIST file is in use by another program"),
    "JDF0913": _setup("the drive holding the DATA_LIST file is not ready on the publishing PC"),
    "JDF0914": _bad_job("a single file is larger than 4095 MB"),
    "JDF1000": _bad_job("VOLUME_LABEL does not fit the disc FORMAT"),
    "JDF1300": _bad_job("IMAGE is not a supported disc image format"),
    "JDF1301": _bad_job("IMAGE is too large for the disc"),
    "JDF1302": _setup("the IMAGE file does not exist on the publishing PC; check the path mapping"),
    "JDF1303": _setup("TD Bridge has no permission to read the IMAGE file"),
    "JDF1304": _transient("the IMAGE file is in use by another program"),
    "JDF1305": _setup("the drive holding the IMAGE file is not ready"),
    "JDF1306": _staff("the IMAGE does not match the disc type loaded in the stacker"),
    "JDF1400": _bad_job("FORMAT for a CD must be ISO9660L2, JOLIET or UDF102"),
    "JDF1401": _bad_job("FORMAT for a DVD must be UDF102, UDF102_BRIDGE or UDF150"),
    "JDF1402": _bad_job("FORMAT for a BD must be UDF102 or UDF260"),
    "JDF1500": _setup("the label file (LABEL) is not a format the publisher supports; use a .tdd template"),
    "JDF1501": _setup("the label template (LABEL) does not exist on the publishing PC"),
    "JDF1502": _setup("TD Bridge has no permission to read the label template (LABEL)"),
    "JDF1600": _setup("the merge file (REPLACE_FIELD) does not exist on the publishing PC"),
    "JDF1601": _setup("TD Bridge has no permission to read the merge file (REPLACE_FIELD)"),
    "JDF1602": _transient("the merge file (REPLACE_FIELD) is in use by another program"),
    "JDF1603": _setup("the drive holding the merge file (REPLACE_FIELD) is not ready"),
    "JDF1604": _bad_job(
        "the merge file (REPLACE_FIELD) has invalid characters, a value over 1024 characters or more than 255 fields"
    ),
    "JDF2000": _bad_job("LABEL_AREA outer diameter must be 700-1194 (70-119.4 mm)"),
    "JDF2001": _bad_job("LABEL_AREA inner diameter must be 180-500 (18-50 mm)"),
    "JDF2300": _bad_job("PRIORITY must be HIGH"),
    "JDF2500": _bad_job("LABEL_TYPE must be 1, 2 or 3"),
    "JDF2501": _bad_job("LABEL_TYPE 3 needs PRINT_MODE 1 (the bridge's default print mode is another)"),
    "JDF2600": _bad_job("PRINT_MODE must be 1, 2 or 3"),
    "JDF2601": _bad_job("PRINT_MODE 2 or 3 is not allowed: the bridge's default label type is Epson media (3)"),
    "JDF2602": _bad_job("PRINT_MODE 2 or 3 is not allowed with LABEL_TYPE 3"),
    "JDF2603": _bad_job("PRINT_MODE 3 (fastest) is only for the PP-100AP"),
    "JDF2700": _bad_job("IN_STACKER must be 1, 2 or AUTO"),
    "JDF2800": _bad_job("MEASURE must be 0 or 1"),
    "JDF2801": _bad_job("the publisher is in error-rate measurement mode: MEASURE must be 1"),
    "JDF2900": _bad_job("ARCHIVE_DISC_ONLY must be YES or NO"),
    "CAN000": _staff("a disc could not be picked from the drive or printer tray; turn the publisher off and on"),
    "CAN001": _staff("a disc was dropped; turn the publisher off, remove the disc, turn it on"),
    "CAN002": _staff("a disc could not be released; turn the publisher off and on"),
    "CAN003": _staff(
        "no disc was found in the drive or printer tray; turn the publisher off, remove any foreign object, turn it on"
    ),
    "CAN004": _staff("output stacker 3 is full (batch mode); empty it"),
    "CAN005": _staff("robot arm error; turn the publisher off, remove any foreign object, turn it on"),
    "CAN006": _staff("arm motor overheated; turn the publisher off, remove any foreign object, turn it on"),
    "CAN007": _staff("the drive tray failed; turn the publisher off, clear the drive tray, turn it on"),
    "CAN008": _staff("fatal drive error; turn the publisher off and on, then submit the job again"),
    "CAN009": _staff("the printer tray failed; turn the publisher off, clear the printer tray, turn it on"),
    "CAN010": _staff("fatal printer error; turn the publisher off and on, then submit the job again"),
    "CAN011": _staff("communication error with the printer; check the printer driver's port setting"),
    "CAN012": _setup("the printer (EPJ) named in the job was not found; check the printer name"),
    "CAN013": _staff("the printer needs maintenance; call Epson service"),
    "CAN014": _staff("the waste-ink pads need replacing; call Epson service"),
    "CAN015": _staff(
        "status error (a disc appeared or disappeared in the drive, printer or arm); check inside the "
        "publisher, then turn it off and on"
    ),
    "CAN016": _setup(
        "TD Bridge could not read the disc image or the label file: give the account TD Bridge runs as "
        "(SYSTEM) read access to the shared folder that holds them"
    ),
    "CAN017": ErrorInfo("the publisher's firmware is not supported by this TD Bridge; upgrade it", False, True),
    "CAN018": _setup("the publisher's mode differs from the mode set in EPSON Total Disc Setup; reset it there"),
    "CAN019": _setup("the job's source folder is invalid on the publishing PC; check the files and folders"),
    "CAN020": _staff("communication error with the publisher; check its power and USB cable"),
    "CAN021": _setup("the error-rate log could not be saved; check its folder and permissions"),
    "CAN100": _setup("the TD Bridge plug-in could not start; register it correctly"),
    "CAN101": _setup("the TD Bridge plug-in ended with a missing or invalid status code"),
    "CAN102": _setup("the TD Bridge plug-in cancelled the job"),
    "CAN103": _setup("the TD Bridge plug-in could not start: no user is logged in on the publishing PC"),
    "STP000": _staff("paused: wrong disc type or retry limit reached; check the blank discs, then resume"),
    "STP001": _staff("paused: write retry limit reached; check the blank discs, then resume"),
    "STP002": _staff("paused: too many consecutive discs over the error-rate threshold; load other media, then resume"),
    "RTN000": _staff("input stacker empty: load blank discs"),
    "RTN001": _staff("output stacker full: remove the finished discs"),
    "RTN002": _staff("disc cover open: close it"),
    "RTN003": _staff("ink cover open: close it"),
    "RTN004": _staff("ink low or out: replace the ink cartridge"),
    "RTN005": _staff("ink cartridge missing: install it"),
    "RTN006": _staff("a stacker is not installed: install it"),
    "RTN007": _staff(
        "stacker 3 does not match the publishing mode: remove it in standard or external output mode, "
        "install it in batch mode"
    ),
    "RTN008": _staff("stacker 4 is open: close it"),
    "RTN009": _staff("several discs were fed to the drive: open the disc cover and remove the extra disc"),
    "RTN010": _staff("several discs were fed to the printer: open the disc cover and remove the extra disc"),
    "RTN011": _staff("ink cartridge not recognised: reinstall or replace it"),
    "RTN012": _staff("could not pick a disc (discs stuck together): fan the discs and reload"),
    "RTN013": _staff("too many discs in the input stacker: remove some"),
    "RTN014": _staff("maintenance box cover not closed correctly: check it"),
    "RTN015": _staff("the maintenance box is full: replace it"),
    "RTN016": _staff("the maintenance box is missing: install it"),
    "RTN017": _staff("the maintenance box is not recognised: reinstall it"),
    # PP100API.h: "Disc publishing operation can be continued. This code may be temporarily output immediately
    # after a job is issued." Not an error state and nothing for staff to do.
    "OTH000": ErrorInfo("TD Bridge cannot obtain the job status yet; publishing goes on", True, False),
}

#: Codes that describe a passing condition, not an error: the job and the robot carry on.
EPSON_INFORMATIONAL = frozenset({"OTH000"})

# (prefix, first, last, info): codes the spec documents only as a family.
EPSON_RANGES: tuple[tuple[str, int, int, ErrorInfo], ...] = (
    ("JDF", 1100, 1299, _bad_job("the VIDEO settings are invalid")),
    (
        "JDF",
        1500,
        1599,
        _setup("the label template (LABEL) is invalid or missing, or a file or drive it refers to is not available"),
    ),
    ("JDF", 1610, 1619, _bad_job("a barcode merge field (REPLACE_FIELD) is invalid")),
    ("JDF", 1620, 1629, _setup("an image merge field (REPLACE_FIELD) refers to a missing or invalid image")),
    ("JDF", 1600, 1699, _setup("the merge file (REPLACE_FIELD) is missing or invalid")),
    ("JDF", 1700, 1999, _bad_job("the audio settings are invalid")),
    ("JDF", 0, 9999, _bad_job("TD Bridge rejected the job file")),
    ("CAN", 0, 999, _staff("the publisher cancelled the job")),
    ("STP", 0, 999, _staff("the publisher paused the job; check it, then resume")),
    ("RTN", 0, 999, _staff("the publisher waits for an operator")),
    ("SYS", 0, 999, _setup("TD Bridge system error")),
)


def describe_epson(code: str) -> ErrorInfo:
    """Explain a TD Bridge error code (``"RTN000"``, ``"JDF0300"``).

    Parameters
    ----------
    code : str

    Returns
    -------
    ErrorInfo
        Unknown codes get a generic description that still says whether staff must act.
    """
    code = code.strip().upper()
    info = EPSON_CODES.get(code)
    if info is None:
        info = _lookup_range(code, EPSON_RANGES)
    if info is None:
        return ErrorInfo(f"TD Bridge error {code}", True, True)
    return ErrorInfo(f"{info.reason} ({code})", info.retry_possible, info.needs_staff)


def _lookup_range(code: str, ranges: tuple[tuple[str, int, int, ErrorInfo], ...]) -> ErrorInfo | None:
    for prefix, first, last, info in ranges:
        digits = code[len(prefix) :]
        if code.startswith(prefix) and digits.isdigit() and first <= int(digits) <= last:
            return info
    return None


# ------------------------------------------------------------------------------------------- Primera PTBurn

PRIMERA_SYSTEM: dict[int, ErrorInfo] = {
    1: _staff("printer tray movement error: check the printer tray"),
    2: _staff("invalid ink cartridge: install a supported cartridge"),
    3: _staff("input bin empty: load blank discs"),
    4: _staff("internal printer communication error: turn the robot off and on"),
    5: _staff("colour ink low: replace the colour cartridge (or ignore the warning)"),
    6: _staff("black ink low: replace the black cartridge (or ignore the warning)"),
    7: _staff("colour and black ink low: replace the cartridges (or ignore the warning)"),
    8: _staff("failed to pick a disc: check the input bin"),
    9: _staff("robot arm mechanical error: check the arm"),
    10: _staff("cartridge carrier mechanical error: check the printer"),
    11: _setup("PTBurn has no local administrator rights on the publishing PC"),
    12: _setup("internal PTBurn software error: restart the PTBurn service"),
    13: _setup("no robotic drives found: check the robot's connection"),
    14: _staff("robot offline: turn it on and check the cable"),
    15: _staff("cover open too long: close the cover"),
    16: _staff("picking a disc from the printer failed"),
    17: _staff("several discs were picked at once: separate the discs"),
    18: _staff("a disc was dropped in the recorder: remove it"),
    19: _staff("a disc was dropped in the printer: remove it"),
    20: _staff("a disc was dropped in the left bin: remove it"),
    21: _staff("a disc was dropped in the reject area: remove it"),
    22: _staff("printer needs alignment: run printer alignment"),
    31: _staff("the alignment print failed: run it again"),
    35: _staff("colour cartridge empty: replace it"),
    36: _staff("black cartridge empty: replace it"),
    37: _staff("colour and black cartridges empty: replace them"),
    38: _staff("timed out waiting for the printer: check the printer"),
    39: _staff("a disc was dropped: remove it"),
    40: _staff("disc missing from the printer tray"),
    42: _staff("the robot does not respond: turn it off and on"),
}
PRIMERA_SYSTEM_RANGES: tuple[tuple[int, int, ErrorInfo], ...] = (
    (23, 30, _staff("ink cartridge invalid, missing, swapped or pigment-incompatible: check the cartridges")),
)

PRIMERA_JOB: dict[int, ErrorInfo] = {
    2: _transient("PTBurn job processor error"),
    3: _staff("robotics error during the job: check the robot"),
    4: _setup("invalid files to burn (missing or unreadable on the publishing PC; check the path mapping)"),
    5: _bad_job("more than 99 Data items in one job"),
    6: _bad_job("nothing to burn or print"),
    7: _setup("invalid print file (not .std/.bmp/.jpg/.prn, or a .prn made for another printer)"),
    8: _bad_job("invalid job request file"),
    10: _staff("invalid media in the drive: load the right discs"),
    11: _bad_job("not enough space on the disc; use a bigger medium or split the job"),
    12: _staff("the disc is not blank: load blank discs"),
    13: _staff("drive open/close error"),
    14: _transient("drive not ready"),
    15: _setup("the drive is not a robotic drive"),
    16: ErrorInfo("aborted", True, False),
    17: _transient("DVD structure error"),
    18: _transient("record error while writing the disc"),
    19: _transient("verify error: the disc does not match the source"),
    20: _staff("reject limit exceeded: too many bad discs in a row; check the media"),
    21: _bad_job("multisession error"),
    23: _transient("client message error"),
    24: _bad_job("unknown job type"),
    25: _bad_job("a critical key in the job request is invalid"),
    26: _setup("not enough temporary space on the publishing PC"),
    27: _bad_job("CD-Text error"),
    28: _setup("the print application is missing on the publishing PC"),
    29: _setup("the print file is missing on the publishing PC; check the path mapping"),
    30: _staff("the installed cartridge does not fit the print file"),
    31: _bad_job("read job error"),
    32: _bad_job("read job error"),
    33: _bad_job("PVD field error"),
    34: _bad_job("PVD field error"),
    35: _transient("image creation error"),
    36: _transient("unable to get status"),
    37: _bad_job("feature not supported"),
    38: _bad_job("invalid job id"),
    39: _bad_job("a MergeField value is longer than 260 characters"),
    40: _transient("printing exception"),
}


def describe_primera(number: int, system: bool) -> ErrorInfo:
    """Explain a PTBurn ``SysErrorNumber`` (``system=True``) or ``JobErrorNumber``/``DiscErrorNumberX``.

    Parameters
    ----------
    number : int
    system : bool

    Returns
    -------
    ErrorInfo
    """
    if system:
        info = PRIMERA_SYSTEM.get(number)
        if info is None:
            info = next((i for lo, hi, i in PRIMERA_SYSTEM_RANGES if lo <= number <= hi), None)
        code = f"system-{number}"
        fallback = ErrorInfo(f"PTBurn system error {number}", True, True)
    else:
        info = PRIMERA_JOB.get(number)
        code = f"job-{number}"
        fallback = ErrorInfo(f"PTBurn job error {number}", True, True)
    if info is None:
        return fallback
    return ErrorInfo(f"{info.reason} ({code})", info.retry_possible, info.needs_staff)
