"""HL7 test helpers: an appliance with its MLLP listener, an MLLP client, DCMTK worklist queries."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from appliance.config import parse_config
from hl7.listener import HL7Listener

from conftest import HOST, Node, dcmtk, free_port

START, END = b"\x0b", b"\x1c\x0d"

#: The spec's default test configuration (shared/specs/hl7-mwl.md (b)).
HL7_TABLE: dict[str, Any] = {
    "bind": HOST,
    "sending_application": "APPLIANCE",
    "sending_facility": "CLINIC",
    "default_charset": "8859/1",
    "station_aets": {"CT": "CT1", "MR": "MR1"},
}


class HL7Node(Node):
    """A running appliance with the DICOM node and the HL7 listener."""

    def __init__(
        self,
        data_dir: Path,
        hl7: dict[str, Any] | None = None,
        worklist: dict[str, Any] | None = None,
        ssl_context: Any = None,
        **dicom: Any,
    ) -> None:
        table = {**HL7_TABLE, "port": free_port(), **(hl7 or {})}
        dicom_table: dict[str, Any] = {
            "bind": HOST,
            "port": free_port(),
            "tls_port": 0,
            "free_space_limit_mb": 1,
            **dicom,
        }
        cfg = parse_config(
            {"appliance": {"data_dir": str(data_dir)}, "dicom": dicom_table, "hl7": table, "worklist": worklist or {}}
        )
        super().__init__(cfg)
        self.hl7 = HL7Listener(self.app, ssl_context)
        self.hl7.start()
        self.hl7_port = self.hl7.port

    def stop(self) -> None:
        self.hl7.stop()
        super().stop()


class MLLPClient:
    """A raw MLLP sender: frames what it is told to, reads ACK frames whole."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: str | bytes, encoding: str = "latin-1") -> None:
        payload = message.encode(encoding) if isinstance(message, str) else message
        self.sock.sendall(START + payload + END)

    def ack(self, encoding: str = "latin-1") -> str:
        """The next ACK (segments joined by CR), read across as many recv() calls as it takes."""
        while END not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; received so far {self.buf!r}")
            self.buf += chunk
        frame, self.buf = self.buf.split(END, 1)
        assert frame.startswith(START), frame
        return frame[1:].decode(encoding)

    def request(self, message: str | bytes, encoding: str = "latin-1") -> str:
        self.send(message, encoding)
        return self.ack(encoding)

    def close(self) -> None:
        self.sock.close()


def segments(ack: str) -> dict[str, str]:
    """ACK segments by name (first of each)."""
    out: dict[str, str] = {}
    for seg in ack.split("\r"):
        if seg:
            out.setdefault(seg[:3], seg)
    return out


def er7(*lines: str) -> str:
    """A message from its segments (CR-terminated)."""
    return "\r".join(lines) + "\r"


#: Return keys asked by a worklist query, as a modality asks them.
RETURN_KEYS = (
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
    "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepSequence[0].Modality",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus",
    "ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName",
)


def _key_name(key: str) -> str:
    return key.split("=", 1)[0]


def findscu_mwl(node: Node, out_dir: Path, *keys: str, calling: str = "FINDSCU", check: bool = True) -> list[Dataset]:
    """DCMTK ``findscu -W``: ``keys`` filter (``Key=value``); the usual return keys are added."""
    n = 0
    while (out_dir / f"mwl{n}").exists():
        n += 1
    out = out_dir / f"mwl{n}"
    out.mkdir(parents=True)
    given = {_key_name(k) for k in keys}
    args = ["-W", "-aet", calling, "-aec", node.aet, "-X", "-od", str(out)]
    for key in [*keys, *(k for k in RETURN_KEYS if k not in given)]:
        args += ["-k", key]
    proc = dcmtk("findscu", *args, HOST, str(node.port))
    if check:
        assert proc.returncode == 0, proc.stderr
    return [dcmread(p) for p in sorted(out.iterdir())]


def sps(answer: Dataset) -> Dataset:
    """The single Scheduled Procedure Step item of an answer."""
    seq = answer.ScheduledProcedureStepSequence
    assert len(seq) == 1
    return seq[0]


def wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# -- the spec's test messages -------------------------------------------------------------------

MSH_ORM = "MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260905120000||ORM^O01|{id}|P|2.3.1{charset}"
MSH_OMI = "MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260905120000||OMI^O23^OMI_O23|{id}|P|2.5.1{charset}"


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its fields by number."""
    values = [""] * (max(fields) + 1)
    for number, value in fields.items():
        values[number] = value
    return "|".join([name, *values[1:]]).rstrip("|")


def orm(
    control: str = "NW",
    status: str = "SC",
    msg_id: str = "MSG0001",
    start: str = "20260905110000",
    name: str = "CompressedSamples^MR1",
    pid: str = "4MR1",
    zds: str | None = "1.2.3.4",
    obr4: str = "^^^MRHEAD^MRI head^L",
    accession: str = "ACC-1",
    rp_id: str = "RP-1",
    sps_id: str = "SPS-1",
    modality: str = "MR",
    pv1_8: str = "",
    version: str = "2.3.1",
    charset: str = "",
    pid_extra: str = "",
    orc7: str | None = None,
    extra: tuple[str, ...] = (),
    obr13: str = "",
    obr34: str = "",
    pv1_15: str = "",
) -> str:
    """The spec's test case 1 ORM, with the fields the cases change."""
    msh = MSH_ORM.format(id=msg_id, charset=f"||||||{charset}" if charset else "").replace("2.3.1", version)
    lines = [
        msh,
        f"PID|||{pid}^^^HOSP^MR||{name}||{pid_extra}",
        f"PV1||O||||||{pv1_8}|||||||{pv1_15}",
        f"ORC|{control}|ORD-1|FIL-1||{status}||{orc7 if orc7 is not None else f'^^^{start}^^R'}",
        segment(
            "OBR",
            {2: "ORD-1", 3: "FIL-1", 4: obr4, 13: obr13, 18: accession, 19: rp_id, 20: sps_id, 24: modality, 34: obr34},
        ),
    ]
    if zds is not None:
        lines.append(f"ZDS|{zds}^^Application^DICOM")
    return er7(*lines, *extra)


def omi(msg_id: str = "MSG0002", ipcs: tuple[int, ...] = (1, 2), control: str = "NW", tq1_9: str = "R") -> str:
    """OMI^O23 with two IPC segments (one requested procedure, two steps)."""
    ipc = {
        1: "IPC|ACC-2026-0004^HOSP|RP-2026-0004|1.2.3.5|SPS-2026-0004-1|MR|MR-HEAD-NC^MR head without contrast^L"
        "|MR Room|Floor 1|MR1AE",
        2: "IPC|ACC-2026-0004^HOSP|RP-2026-0004|1.2.3.5|SPS-2026-0004-2|MR|MR-HEAD-C^MR head with contrast^L"
        "|MR Room|Floor 1|MR1AE",
    }
    return er7(
        MSH_OMI.format(id=msg_id, charset=""),
        "PID|1||4MR2^^^HOSP^MR||Doe^John||19800202|M",
        "PV1|1|O",
        f"ORC|{control}|ORD-4|FIL-4||SC",
        f"TQ1|1||||||20260905113000||{tq1_9}",
        "OBR|1|ORD-4|FIL-4|MRHEAD^MR head^L",
        *(ipc[i] for i in ipcs),
    )
