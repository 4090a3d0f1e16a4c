"""Fuzzing the live MLLP listener and the HL7 mapping (issue 9): random frames and random ER7-like messages.

Each example goes over its own TCP connection to one running listener. Every complete frame must be answered with
an ACK (AA, AE or AR) or the connection closed; a socket timeout (a hang) fails the test. After each one the listener
still accepts a valid ORM, and the worklist holds only whole orders from messages that were acknowledged AA.
"""

from __future__ import annotations

import itertools
import re

from hl7support import HL7Node, MLLPClient, er7, orm, segments
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hl7.mllp import frame

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TIMEOUT = 15.0  # seconds a single answer may take before the listener counts as hung

_counter = itertools.count()


def answer(payload: bytes, port: int) -> str | None:
    """Send ``payload`` as one MLLP frame on a new connection; the MSA code of the first answer, None if closed."""
    client = MLLPClient(port, timeout=TIMEOUT)
    try:
        client.send_raw(frame(payload))
        try:
            ack = client.ack()
        except ConnectionError:  # closed by the listener (FIN or reset): allowed, a socket timeout is not
            return None
    finally:
        client.close()
    msa = segments(ack).get("MSA", "")
    match = re.match(r"MSA\|(AA|AE|AR)(\||$)", msa)
    assert match, f"not an ACK: {ack!r}"
    return match.group(1)


def check_still_serving(node: HL7Node) -> None:
    n = next(_counter)
    client = MLLPClient(node.hl7_port, timeout=TIMEOUT)
    ack = client.request(
        orm(
            msg_id=f"OK{n}",
            pid=f"VALID{n}",
            zds=f"1.2.826.0.1.3680043.10.9.{n}",
            accession=f"ACCOK{n}",
            sps_id=f"SPSOK{n}",
        )
    )
    client.close()
    assert segments(ack)["MSA"] == f"MSA|AA|OK{n}"
    item = next(r for r in node.app.worklist.items() if r.sps_id == f"SPSOK{n}")
    assert (item.patient_id, item.accession, item.station_aet) == (f"VALID{n}", f"ACCOK{n}", "MR1")


# -- random bytes ------------------------------------------------------------------------------------------------


@FUZZ
@given(
    payload=st.one_of(
        st.binary(max_size=3000),
        st.binary(max_size=500).map(lambda b: b"MSH|^~\\&|" + b),
        st.lists(st.binary(max_size=80), max_size=20).map(lambda parts: b"\r".join(parts)),
    )
)
def test_random_byte_frames_get_an_ack_or_a_close(hl7_node: HL7Node, payload: bytes) -> None:
    answer(payload, hl7_node.hl7_port)
    check_still_serving(hl7_node)
    assert all(r.patient_id.startswith("VALID") for r in hl7_node.app.worklist.items())


# -- random ER7-like messages ----------------------------------------------------------------------------------

ESCAPES = [
    "\\F\\",
    "\\S\\",
    "\\T\\",
    "\\R\\",
    "\\E\\",
    "\\H\\",
    "\\N\\",
    "\\X41\\",
    "\\Xzz\\",
    "\\",
    "\\C2842\\",
    "\\M2442\\",
    "\\.br\\",
    "\\Z99\\",
]
TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x0b\x1c"), max_size=12)
COMPONENT = st.one_of(
    TEXT,
    st.sampled_from(ESCAPES),
    st.sampled_from(["", "^", "&", "~", "|", '""', "20260905", "2026090511", "CT", "MR", "NW", "CA", "XO"]),
)
FIELD = st.lists(COMPONENT, max_size=5).map("".join)
SEGMENT_NAMES = ["PID", "PV1", "ORC", "OBR", "ZDS", "NTE", "IPC", "TQ1", "MRG", "EVN", "MSA", "ZXX", "pid", "P1"]
CHARSETS = [
    "",
    "8859/1",
    "8859/5",
    "8859/7",
    "UNICODE UTF-8",
    "UNICODE",
    "ISO IR87",
    "GB 18030",
    "KS X 1001",
    "ASCII",
    "NONSENSE",
    "8859/1~UNICODE UTF-8",
]
TYPES = ["ORM^O01", "OMI^O23", "OMG^O19", "ADT^A08", "ADT^A40", "ADT^A31", "ORU^R01", "ORM", "^O01", "", "ZZZ^Z99"]


@st.composite
def er7_message(draw: st.DrawFn) -> tuple[str, bytes]:
    """A message with a well-formed MSH and random segments; PID-3 is unique so its worklist item can be traced."""
    n = next(_counter)
    pid = f"FZ{n}"
    msh = (
        f"MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260905120000||{draw(st.sampled_from(TYPES))}|FZMSG{n}|P|"
        f"{draw(st.sampled_from(['2.3.1', '2.5', '2.5.1', '2.9', '', 'x']))}|||||"
        f"{draw(st.sampled_from(CHARSETS))}"
    )
    lines = [msh, f"PID|||{pid}^^^HOSP^MR||{draw(FIELD)}||{draw(FIELD)}|{draw(FIELD)}"]
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(SEGMENT_NAMES))
        fields = draw(st.lists(FIELD, max_size=25))
        lines.append("|".join([name, *fields]))
    if draw(st.booleans()):  # often enough a plausible order to exercise the mapping deeply
        lines += [
            f"ORC|{draw(st.sampled_from(['NW', 'XO', 'CA', 'SC', 'DC', draw(FIELD)]))}|O{n}|F{n}||"
            f"{draw(st.sampled_from(['SC', 'IP', 'CM', 'CA', draw(FIELD)]))}||^^^{draw(FIELD)}",
            f"OBR||O{n}|F{n}|{draw(FIELD)}||||||||||{draw(FIELD)}||||||A{n}|RP{n}|"
            f"{draw(st.sampled_from([f'S{n}', '', draw(FIELD)]))}||||{draw(st.sampled_from(['CT', 'MR', '']))}",
            f"ZDS|{draw(st.sampled_from([f'1.2.826.0.1.3680043.10.8.{n}', '', draw(FIELD)]))}",
        ]
    text = er7(*lines)
    if draw(st.booleans()):
        text = text.replace("\r", draw(st.sampled_from(["\n", "\r\n"])))
    encoding = draw(st.sampled_from(["latin-1", "utf-8", "utf-16-le", "cp1252", "iso-8859-5"]))
    return pid, text.encode(encoding, errors="replace")


@FUZZ
@given(message=er7_message())
def test_random_er7_messages_get_an_ack_and_apply_whole(hl7_node: HL7Node, message: tuple[str, bytes]) -> None:
    pid, payload = message
    code = answer(payload, hl7_node.hl7_port)
    items = [r for r in hl7_node.app.worklist.items() if r.patient_id == pid]
    if code != "AA":  # refused or failed: the worklist took nothing of it
        assert items == [], (code, payload, items)
    for item in items:  # accepted: each item is a whole order with its keys
        assert item.study_uid and item.sps_id, item
    check_still_serving(hl7_node)
