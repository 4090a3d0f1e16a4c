"""Large DICOMweb transfers on the real server: a whole study sent as stored (the files go to the socket with
``os.sendfile``), and STOW-RS bodies large enough to be spooled to a file, stored in one batch.

Checked as a client sees it, with ``curl`` and ``requests``: the bytes of every part, the announced length, an
answer cut short (not wrong) when a stored file changed, and a batch in which some parts fail while the others
are stored, nothing of the failed ones left behind.
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from webui.dicomweb import create_dicomweb_app
from webui.server import WebServer

import dicomdata
from conftest import HOST

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=b0undary'


@pytest.fixture
def served(env: Any) -> Iterator[tuple[Any, str, dict[str, str]]]:
    server = WebServer(create_dicomweb_app(env.site), HOST, 0, threads=2)
    server.start()
    _, key = env.site.apikeys.add("bulk", "admin")
    yield env, server.url + "/dicom-web", {"Authorization": f"Bearer {key}"}
    server.stop()


def _part10(instance: dicomdata.Instance) -> bytes:
    out = io.BytesIO()
    instance.dataset().save_as(out, enforce_file_format=True)
    return out.getvalue()


def _multipart(parts: list[bytes], boundary: str = "b0undary") -> bytes:
    out = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    return out + f"--{boundary}--\r\n".encode()


def _parts(body: bytes, content_type: str) -> list[bytes]:
    """The contents of a multipart/related answer, split at its boundary (RFC 2046)."""
    boundary = re.search(r"boundary=\"?([^\";]+)", content_type)
    assert boundary is not None, content_type
    marker = b"--" + boundary.group(1).encode()
    assert body.endswith(marker + b"--\r\n")
    out = []
    for chunk in body.split(b"\r\n" + marker)[:-1]:
        head, _, content = chunk.partition(b"\r\n\r\n")
        assert b"Content-Type: application/dicom" in head
        out.append(content)
    return out


def _big_study(env: Any, count: int, tag: str) -> list[dicomdata.Instance]:
    """Store ``count`` CT instances of 512 x 512 (half a megabyte each) through the core, as C-STORE does."""
    instances = dicomdata.study(f"PID{tag}", f"BULK^{tag}", ("CT",), count, rows=512, columns=512)
    for inst in instances:
        data = _part10(inst)
        start = dicomdata_offset(data)
        env.app.store(data[start:], "1.2.840.10008.1.2.1", inst.dataset().SOPClassUID, inst.sop_uid, "MOD", "DISCPACS")
    return instances


def dicomdata_offset(data: bytes) -> int:
    from appliance import codecs

    return codecs.dataset_offset(data)


def test_whole_study_as_stored_is_the_stored_files(served: tuple[Any, str, dict[str, str]], tmp_path: Path) -> None:
    env, root, auth = served
    instances = _big_study(env, 5, "900")
    study = instances[0].study_uid
    stored = {i.sop_uid: env.app.file_path(i).read_bytes() for i in env.site.dicomweb.instances(study)}
    out = tmp_path / "study.bin"
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "-D",
            "-",
            "-o",
            str(out),
            "-H",
            f"Authorization: {auth['Authorization']}",
            "-H",
            f"Accept: {AS_STORED}",
            f"{root}/studies/{study}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    headers = dict(line.split(": ", 1) for line in proc.stdout.splitlines()[1:] if ": " in line)
    body = out.read_bytes()
    assert proc.stdout.startswith("HTTP/1.1 200")
    assert int(headers["Content-Length"]) == len(body)
    parts = _parts(body, headers["Content-Type"])
    assert sorted(parts) == sorted(stored.values())  # each file byte for byte, preamble to pixels
    # The connection serves the next request after a file answer (keep-alive), twice over.
    with requests.Session() as session:
        for _ in range(2):
            reply = session.get(f"{root}/studies/{study}", headers={**auth, "Accept": AS_STORED}, timeout=60)
            assert reply.status_code == 200
            assert sorted(_parts(reply.content, reply.headers["Content-Type"])) == sorted(stored.values())
        reply = session.get(f"{root}/studies/{study}/series", headers=auth, timeout=60)
        assert reply.status_code == 200 and len(reply.json()) == 1
    # Audited as before; a patient token of another study gets nothing of it.
    rows = env.site.audit.entries(study_uid=study, action="dicomweb.retrieve")
    assert len(rows) == 3 and rows[0].actor == "apikey:bulk"
    reply = requests.get(
        f"{root}/studies/{study}",
        headers={"Authorization": f"Bearer {env.token('mr')}", "Accept": AS_STORED},
        timeout=60,
    )
    assert reply.status_code == 404 and reply.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("change", ["grown", "shrunk", "removed"])
def test_a_file_changed_since_indexing_cuts_the_answer_short(
    served: tuple[Any, str, dict[str, str]], caplog: pytest.LogCaptureFixture, change: str
) -> None:
    env, root, auth = served
    instances = _big_study(env, 3, "910")
    study = instances[0].study_uid
    path = env.app.file_path(env.site.dicomweb.instances(study)[1])
    if change == "grown":
        with open(path, "ab") as fh:
            fh.write(b"\x00" * 1000)
    elif change == "shrunk":
        os.truncate(path, 1000)
    else:
        path.unlink()
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "-H",
            f"Authorization: {auth['Authorization']}",
            "-H",
            f"Accept: {AS_STORED}",
            f"{root}/studies/{study}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 18, proc.stderr  # "partial file": fewer bytes than announced, never wrong ones
    assert int(proc.stdout) < sum(i.size for i in env.site.dicomweb.instances(study))
    assert any("ended early" in r.getMessage() for r in caplog.records)
    # The server goes on serving.
    reply = requests.get(f"{root}/studies/{study}/series", headers=auth, timeout=60)
    assert reply.status_code == 200


def _files_with(env: Any, sop_uid: str) -> list[Path]:
    return [p for p in env.cfg.store_dir.rglob("*") if p.is_file() and sop_uid.encode() in p.read_bytes()]


def test_stow_of_a_spooled_body_stores_the_good_parts_and_reports_the_bad(
    served: tuple[Any, str, dict[str, str]],
) -> None:
    env, root, auth = served
    instances = dicomdata.study("PID920", "SPOOL^SAM", ("CT",), 4, rows=512, columns=512)
    files = [_part10(i) for i in instances]
    broken = files[2][: len(files[2]) - 5000]  # its pixel data element runs past the end of the part
    body = _multipart([files[0], files[1], broken, files[3]])
    assert len(body) > 1024 * 1024  # the server spools it to a file (past 512 KB)
    reply = requests.post(
        f"{root}/studies",
        data=body,
        headers={**auth, "Content-Type": STOW_TYPE, "Accept": "application/dicom+json"},
        timeout=60,
    )
    assert reply.status_code == 202, reply.text
    answer = reply.json()
    assert [f["00081155"]["Value"][0] for f in answer["00081198"]["Value"]] == [instances[2].sop_uid]
    assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert [r["00081155"]["Value"][0] for r in answer["00081199"]["Value"]] == [instances[n].sop_uid for n in (0, 1, 3)]
    for n in (0, 1, 3):
        (path,) = _files_with(env, instances[n].sop_uid)
        stored = path.read_bytes()
        assert stored[dicomdata_offset(stored) :] == files[n][dicomdata_offset(files[n]) :]  # the data set as sent
    assert _files_with(env, instances[2].sop_uid) == []
    assert env.app.index.lookup(instances[2].sop_uid) is None
    assert not any((env.cfg.store_dir / "tmp").iterdir())  # nothing half-written


def test_stow_batch_whose_index_transaction_fails_stores_each_on_its_own(
    served: tuple[Any, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, root, auth = served
    instances = dicomdata.study("PID930", "INDEX^IDA", ("CT",), 3)
    bad = instances[1].sop_uid
    index = env.app.index
    record = index.record

    def batch_fails(entries: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    def one_fails(rec: Any, *args: Any) -> Any:
        if rec.sop_uid == bad:
            raise sqlite3.OperationalError("disk I/O error")
        return record(rec, *args)

    monkeypatch.setattr(index, "record_many", batch_fails)
    monkeypatch.setattr(index, "record", one_fails)
    reply = requests.post(
        f"{root}/studies",
        data=_multipart([_part10(i) for i in instances]),
        headers={**auth, "Content-Type": STOW_TYPE, "Accept": "application/dicom+json"},
        timeout=60,
    )
    assert reply.status_code == 202, reply.text
    answer = reply.json()
    assert [f["00081155"]["Value"][0] for f in answer["00081198"]["Value"]] == [bad]
    assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0x0110]
    assert {r["00081155"]["Value"][0] for r in answer["00081199"]["Value"]} == {
        instances[0].sop_uid,
        instances[2].sop_uid,
    }
    for inst in (instances[0], instances[2]):
        assert env.app.index.lookup(inst.sop_uid) is not None
        assert len(_files_with(env, inst.sop_uid)) == 1
    assert env.app.index.lookup(bad) is None and _files_with(env, bad) == []
