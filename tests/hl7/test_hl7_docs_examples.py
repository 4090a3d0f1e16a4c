"""The ready-to-paste examples of docs/hl7-worklist.md work as written, on the default settings.

The ORM^O01 goes out with the ``mllp_send`` tool of the PyPI package ``hl7`` (python-hl7), installed in a
virtual environment of its own (its top-level package ``hl7`` would shadow ours); the OMI^O23 from a raw MLLP
client. The documented ``findscu -W`` commands then run as written (host, port and AE title swapped for the
test node's) with DCMTK's findscu.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hl7support import HL7Node, MLLPClient, segments, sps
from pydicom import dcmread
from pydicom.dataset import Dataset

from hl7.mapping import order_uid

from conftest import HOST

DOC = Path(__file__).resolve().parents[2] / "docs" / "hl7-worklist.md"
PYTHON_HL7 = "hl7==0.4.5"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)


def _unreachable(output: str) -> bool:
    markers = (
        "Could not find a version",
        "No matching distribution",
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Network is unreachable",
        "ConnectionError",
    )
    return any(m in output for m in markers)


@pytest.fixture(scope="session")
def mllp_send() -> Path:
    """python-hl7's ``mllp_send`` in a virtual environment under the user's cache folder (made once)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "appliance-tests"
    venv = cache / f"python-hl7-{PYTHON_HL7.split('==')[1]}"
    tool = venv / "bin" / "mllp_send"
    if not tool.exists():
        shutil.rmtree(venv, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, env=env)
        proc = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", PYTHON_HL7],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=cache,
        )
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            if _unreachable(proc.stdout + proc.stderr):
                pytest.skip(f"PyPI is unreachable, python-hl7 cannot be installed: {proc.stderr.strip()[-300:]}")
            raise AssertionError(f"pip install {PYTHON_HL7} failed:\n{proc.stdout}\n{proc.stderr}")
    return tool


def findscu_as_documented(command: str, node: HL7Node, out: Path) -> list[Dataset]:
    """Run a documented ``findscu -W`` command against the node, answers written to ``out``."""
    args = shlex.split(command.replace("\\\n", " "))
    assert args[:2] == ["findscu", "-W"] and args[-2:] == ["localhost", "11112"], args
    assert args[args.index("-aec") + 1] == "DISCPACS"  # the default [dicom] ae_title
    args[args.index("-aec") + 1] = node.aet
    exe = shutil.which("findscu", path="/usr/bin:/bin")
    assert exe, "DCMTK findscu is not installed"
    out.mkdir()
    proc = subprocess.run(
        [exe, *args[1:-2], "-X", "-od", str(out), HOST, str(node.port)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [dcmread(p) for p in sorted(out.iterdir())]


@pytest.fixture
def default_node(hl7_factory: Any) -> HL7Node:
    # The built-in defaults: no station rules, MSH-4 of the ACK from the sender's MSH-6.
    return hl7_factory(hl7={"station_aets": {}, "sending_facility": ""})


def test_documented_orm_and_omi_are_found_by_the_documented_findscu(
    default_node: HL7Node, mllp_send: Path, tmp_path: Path
) -> None:
    orm, omi = blocks("hl7")
    find_ct, find_mr = [b for b in blocks("sh") if b.startswith("findscu -W")]
    assert orm.startswith("MSH|") and "ORM^O01" in orm and "ZDS" not in orm
    assert omi.startswith("MSH|") and "OMI^O23" in omi
    # The ORM^O01 with python-hl7's mllp_send, as the doc says (line-separated segments, --loose).
    (tmp_path / "order.hl7").write_text(orm)
    # Without our PYTHONPATH: our package ``hl7`` would shadow python-hl7's in the tool's interpreter.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(mllp_send), "--loose", "--file", str(tmp_path / "order.hl7"), "--port", str(default_node.hl7_port), HOST],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    # mllp_send prints the ACK frame as received (MLLP start and end bytes included), segments on lines.
    ack = segments(proc.stdout.strip("\x0b\x1c\r\n").replace("\n", "\r"))
    assert ack["MSH"].startswith("MSH|^~\\&|APPLIANCE|HOSPITAL|RIS|HOSPITAL|") and "|ACK^O01^ACK|" in ack["MSH"]
    assert ack["MSA"] == "MSA|AA|MSG00001"
    # The OMI^O23 from a raw MLLP client (segments separated by CR).
    client = MLLPClient(default_node.hl7_port)
    assert segments(client.request("\r".join(omi.strip().splitlines()) + "\r"))["MSA"] == "MSA|AA|MSG00002"

    [ct] = findscu_as_documented(find_ct, default_node, tmp_path / "ct")
    assert (ct.PatientID, ct.AccessionNumber, ct.RequestedProcedureID) == ("PAT001", "ACC001", "ACC001")
    assert str(ct.PatientName) == "Doe^Jane^^Mrs"
    step = sps(ct)
    assert (
        step.ScheduledProcedureStepID,
        step.ScheduledProcedureStepStartDate,
        step.ScheduledProcedureStepStartTime,
    ) == ("ACC001-1", "20261201", "093000")
    assert step.ScheduledStationAETitle in ("", None)
    assert ct.StudyInstanceUID == order_uid("ORD001", "", "ACC001")
    [mr] = findscu_as_documented(find_mr, default_node, tmp_path / "mr")
    assert (mr.PatientID, mr.AccessionNumber, sps(mr).ScheduledStationAETitle) == ("PAT002", "ACC002", "MR1")
    assert (sps(mr).ScheduledProcedureStepID, sps(mr).Modality) == ("SPS002", "MR")
    assert mr.StudyInstanceUID.startswith("2.25.")

    # "every later message of the same order finds it again": an XO with a new time, then a CA.
    xo = orm.replace("ORC|NW|", "ORC|XO|").replace("MSG00001", "MSG00003").replace("20261201093000", "20261201110000")
    assert segments(client.request("\r".join(xo.strip().splitlines()) + "\r"))["MSA"] == "MSA|AA|MSG00003"
    [row] = [r for r in default_node.app.worklist.items() if r.patient_id == "PAT001"]
    assert (row.study_uid, row.start_time) == (ct.StudyInstanceUID, "110000")
    client.close()
