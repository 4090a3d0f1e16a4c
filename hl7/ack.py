"""Original-mode acknowledgements (ACK with MSA, and ERR when something is wrong).

The ACK answers in the sender's version and character set: MSH-3/4 are ours
(``[hl7] sending_application`` / ``sending_facility``, else the incoming MSH-5/6),
MSH-5/6 the sender's MSH-3/4, MSH-9 ``ACK^<trigger>^ACK``, MSH-11, MSH-12 and
MSH-18 copied; MSA-2 is the incoming MSH-10 (dcm4che's ``makeACK``).

ERR names the field at fault. From v2.5 on it is ``ERR||<location>|<code>^<text>^HL70357|E||||<message>``;
before v2.5 ERR-1 carries ``SEG^seq^field^code&text&HL70357``.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from datetime import datetime

from appliance.log import clip
from hl7.er7 import Message

#: HL7 table 0357 message error condition codes.
ERROR_TEXT = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

_counter = itertools.count(1)
_counter_lock = threading.Lock()


#: Longest error text in an ACK (ERR-8 is TX of 250 characters); values quoted in it are cut before that.
MAX_ERROR_TEXT = 250
#: Longest MSH field copied from the message into the ACK (MSH-10 is ST of 199 characters).
MAX_COPIED_FIELD = 199


@dataclass(frozen=True)
class AckError:
    """The error an ACK reports; its text is cut to :data:`MAX_ERROR_TEXT` characters, control characters
    escaped (it quotes values of the message, which may be huge)."""

    code: int
    location: str
    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", clip(self.text, MAX_ERROR_TEXT))
        object.__setattr__(self, "location", clip(self.location, 40))


def _control_id() -> str:
    with _counter_lock:
        n = next(_counter)
    return f"{datetime.now():%Y%m%d%H%M%S}{n % 100000:05d}"


def _escape(text: str, fs: str = "|", cs: str = "^", rs: str = "~", esc: str = "\\", ss: str = "&") -> str:
    out = text.replace(esc, f"{esc}E{esc}") if esc else text
    for char, code in ((fs, "F"), (cs, "S"), (rs, "R"), (ss, "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")


def _version_at_least_25(version: str) -> bool:
    try:
        parts = [int(p) for p in version.split(".")[:2]]
    except ValueError:
        return True
    return parts >= [2, 5]


def build_ack(
    code: str,
    msg: Message | None,
    sending_application: str = "",
    sending_facility: str = "",
    error: AckError | None = None,
) -> str:
    """Build an ACK message (segments separated by CR, no MLLP framing).

    Parameters
    ----------
    code : str
        ``AA``, ``AE`` or ``AR``.
    msg : Message, optional
        The message acknowledged; None when the frame was not HL7 at all.
    sending_application, sending_facility : str
        Our MSH-3 / MSH-4; empty: the incoming MSH-5 / MSH-6.
    error : AckError, optional
        What went wrong (AE, AR): text in MSA-3, ERR segment naming the field.

    Returns
    -------
    str
        The ACK in ER7.
    """
    now = f"{datetime.now():%Y%m%d%H%M%S}"
    if msg is None:
        header = [
            "MSH",
            "^~\\&",
            sending_application,
            sending_facility,
            "",
            "",
            now,
            "",
            "ACK",
            _control_id(),
            "P",
            "2.5",
        ]
        version, control = "2.5", ""
        seps = ("|", "^", "~", "\\", "&")
    else:
        msh = msg.msh

        def copied(number: int) -> str:
            return msh.raw(number)[:MAX_COPIED_FIELD]

        s = msg.seps
        seps = (s.field, s.component, s.repetition, s.escape, s.subcomponent)
        trigger = msg.message_type[1]
        version = msg.version or "2.5"
        control = copied(10)
        trigger = trigger[:MAX_COPIED_FIELD]
        header = [
            "MSH",
            copied(2),
            sending_application or copied(5),
            sending_facility or copied(6),
            copied(3),
            copied(4),
            now,
            "",
            f"ACK{s.component}{trigger}{s.component}ACK" if trigger else "ACK",
            _control_id(),
            copied(11) or "P",
            copied(12) or "2.5",
        ]
        if msh.raw(18):
            header += [""] * 5 + [copied(18)]
    fs, cs = seps[0], seps[1]
    segments = [fs.join(header)]
    msa = ["MSA", code, control]
    if error is not None:
        msa.append(_escape(error.text[:80], *seps))
    segments.append(fs.join(msa))
    if error is not None and error.code:
        condition = ERROR_TEXT.get(error.code, "")
        location = error.location.replace("^", cs)
        if _version_at_least_25(version):
            severity = "E"
            segments.append(
                fs.join(
                    [
                        "ERR",
                        "",
                        location,
                        f"{error.code}{cs}{condition}{cs}HL70357",
                        severity,
                        "",
                        "",
                        "",
                        _escape(error.text, *seps),
                    ]
                )
            )
        else:
            # v2.3.1 ERR-1 (CM): segment^sequence^field^code&text&table.
            ss = seps[4]
            where = [*error.location.split("^"), "", "", ""][:3]
            segments.append(fs.join(["ERR", cs.join([*where, f"{error.code}{ss}{condition}{ss}HL70357"])]))
    return "\r".join(segments) + "\r"
