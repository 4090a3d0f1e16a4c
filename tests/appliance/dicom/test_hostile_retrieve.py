"""Hostile pixel data met on the retrieve side (issue 15): conversions run in budgeted worker processes.

An instance passes the structure check at C-STORE but its compressed frame declares an image far
beyond the conversion budget (a "pixel-data bomb"), or its JPEG 2000 codestream is corrupt. Retrieved
by receivers that accept uncompressed data only (a pynetdicom C-GET SCU, DCMTK ``storescp`` with its
defaults as C-MOVE destination), that instance is one failed sub-operation (0xB000, its UID in the
Failed SOP Instance UID List, one log line); the others arrive with their UIDs and identical pixels;
the server stays up and serves the next retrieve.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from appliance.config import LimitsConfig
from appliance.conversion import ConversionService
from appliance.errors import CodecError

import dicomdata
from conftest import HOST, Node, free_port, make_config, wait_until

pytestmark = pytest.mark.dcmtk

#: The workers' budget in these tests: a bomb declares ~1.5 GB of pixels.
MEMORY_MB = 1024
BOMB_FRAMES = 750


class Study:
    """Three JPEG 2000 lossless instances, a bomb and a corrupt codestream, stored in one node."""

    def __init__(self, folder: Path) -> None:
        made = dicomdata.study("HOSTILE", "PIXEL^BOMB", ("CT",), 5, rows=64, columns=64, accession="BOMB1")
        self.study_uid = made[0].study_uid
        self.pixels: dict[str, np.ndarray] = {}
        self.files: list[Path] = []
        for n, inst in enumerate(made):
            ds = inst.dataset()
            if n < 3:
                self.pixels[inst.sop_uid] = ds.pixel_array.copy()
            if n == 3:
                self.bomb = inst.sop_uid
                _declare_huge(ds)
            else:
                ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
            if n == 4:
                self.corrupt = inst.sop_uid
                frame = next(generate_frames(ds.PixelData, number_of_frames=1))
                ds.PixelData = encapsulate([frame[:120] + bytes(range(256)) * 8])  # header kept, tiles garbage
            path = folder / f"{n}.dcm"
            ds.save_as(path, enforce_file_format=True)
            self.files.append(path)
        self.good = set(self.pixels)

    def store(self, node: Node) -> None:
        """As a C-STORE stores them (the structure check included)."""
        for path in self.files:
            data = path.read_bytes()
            ds = dcmread(path, stop_before_pixels=True)
            start = len(data) - len(_dataset_bytes(path))
            node.app.store(data[start:], JPEG2000Lossless, str(ds.SOPClassUID), str(ds.SOPInstanceUID), "MODALITY")


def _dataset_bytes(path: Path) -> bytes:
    from appliance.codecs import dataset_offset

    data = path.read_bytes()
    return data[dataset_offset(data) :]


def _declare_huge(ds: Dataset) -> None:
    """Frames of 1024 x 1024 that compress to a few hundred bytes each, BOMB_FRAMES of them: ~1.5 GB decoded."""
    ds.Rows = ds.Columns = 1024
    ds.PixelData = np.zeros((1024, 1024), dtype=np.uint16).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.NumberOfFrames = BOMB_FRAMES
    ds.PixelData = encapsulate([frame] * BOMB_FRAMES)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Study:
    return Study(tmp_path_factory.mktemp("hostile"))


def _study(uid: str) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = uid
    return q


def _failed_uids(identifier: Dataset | None) -> set[str]:
    if identifier is None or "FailedSOPInstanceUIDList" not in identifier:
        return set()
    value = identifier.FailedSOPInstanceUIDList
    return {str(value)} if isinstance(value, str) else {str(v) for v in value}


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp with its defaults (uncompressed only), AE DEST, writing into a fresh folder."""
    port = free_port()
    out = tmp_path / "storescp"
    out.mkdir()
    proc = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "DEST", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex((HOST, port)) == 0

    wait_until(listening)
    yield port, out
    proc.terminate()
    proc.wait(timeout=10)


def _c_move(node: Node, destination: str, study_uid: str) -> tuple[Dataset, Dataset | None]:
    """C-MOVE with a pynetdicom SCU; the final (status, identifier)."""
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.dimse_timeout = ae.network_timeout = 120
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    try:
        answers = list(assoc.send_c_move(_study(study_uid), destination, StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    return answers[-1]


def _node(folder: Path, fast: bool = True, **dicom: object) -> Node:
    cfg = make_config(folder, fast_path=fast, **dicom)
    return Node(replace(cfg, limits=LimitsConfig(conversion_workers=2, conversion_memory_mb=MEMORY_MB)))


def _get_explicit_only(node: Node, study_uid: str) -> tuple[Dataset, Dataset | None, dict[str, Dataset]]:
    """C-GET with a pynetdicom SCU that accepts CT Image Storage in Explicit VR Little Endian only."""
    received: dict[str, Dataset] = {}

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    ae = AE(ae_title="GETSCU")
    ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(
        HOST,
        node.port,
        ae_title=node.aet,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        answers = list(assoc.send_c_get(_study(study_uid), StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    final, identifier = answers[-1]
    return final, identifier, received


def _assert_only_hostile_failed(
    final: Dataset, identifier: Dataset | None, received: Mapping[str, Dataset], hostile: Study
) -> None:
    assert hex(final.Status) == hex(0xB000)
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (3, 2)
    assert _failed_uids(identifier) == {hostile.bomb, hostile.corrupt}
    assert set(received) == hostile.good
    for uid, ds in received.items():
        assert not ds.file_meta.TransferSyntaxUID.is_compressed
        assert np.array_equal(ds.pixel_array, hostile.pixels[uid]), uid


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "pynetdicom"])
def test_a_pixel_bomb_fails_only_its_c_get_sub_operation(tmp_path: Path, hostile: Study, caplog, fast: bool) -> None:
    node = _node(tmp_path / "node", fast)
    try:
        hostile.store(node)
        assert node.app.index.counts()["instances"] == 5  # the structure check let the bomb in
        with caplog.at_level(logging.INFO, logger="appliance"):
            final, identifier, received = _get_explicit_only(node, hostile.study_uid)
        _assert_only_hostile_failed(final, identifier, received, hostile)
        failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len([m for m in failures if hostile.bomb in m]) == 1, failures
        assert len([m for m in failures if hostile.corrupt in m]) == 1, failures
        # The pool has recovered: the next retrieve is served the same way.
        final, identifier, received = _get_explicit_only(node, hostile.study_uid)
        _assert_only_hostile_failed(final, identifier, received, hostile)
    finally:
        node.stop()


def test_a_pixel_bomb_fails_only_its_c_move_sub_operation_to_dcmtk(tmp_path: Path, hostile: Study, storescp) -> None:
    port, out = storescp
    node = _node(tmp_path / "node", nodes=[{"ae_title": "DEST", "host": HOST, "port": port, "move": True}])
    try:
        hostile.store(node)
        for _ in range(2):  # and again: the server and its workers are still there
            final, identifier = _c_move(node, "DEST", hostile.study_uid)
            arrived = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, sorted(out.iterdir()))}
            _assert_only_hostile_failed(final, identifier, arrived, hostile)
            for f in out.iterdir():
                f.unlink()
    finally:
        node.stop()


def test_the_conversion_service_recovers_from_crashes_memory_and_time() -> None:
    """A task that kills its worker, one past its memory, one past its time: each fails alone, with the reason."""
    service = ConversionService(workers=2, memory_mb=512, seconds=3)
    try:
        with pytest.raises(CodecError, match=r"crashing stopped its worker process \(exit code 3\)"):
            service.call(os._exit, 3, what="crashing").result()
        with pytest.raises(CodecError, match="needed more than 512 MB"):
            service.call(bytearray, 1024**3, what="allocating 1 GB").result()
        started = time.monotonic()
        with pytest.raises(CodecError, match="took longer than 3 s and was stopped"):
            service.call(time.sleep, 60, what="sleeping").result()
        assert time.monotonic() - started < 30
        assert service.call(len, b"still working", what="len").result() == 13
        assert len(service.pids()) <= 2
    finally:
        service.close()
    assert not service.pids()


def test_limits_are_checked_in_the_config(tmp_path: Path) -> None:
    from appliance.config import parse_config
    from appliance.errors import ConfigError

    cfg = parse_config({"limits": {"conversion_memory_mb": 1536, "conversion_seconds": 30}})
    assert (cfg.limits.conversion_memory_mb, cfg.limits.conversion_seconds) == (1536, 30.0)
    with pytest.raises(ConfigError, match="conversion_memory_mb"):
        parse_config({"limits": {"conversion_memory_mb": 10}})


def test_wado_rs_conversions_use_the_same_budgeted_workers(tmp_path: Path, hostile: Study) -> None:
    """WADO-RS instances and frames in another syntax: the bomb and the corrupt instance fail alone (406 in the
    web layer), the good ones convert, through the conversion service of C-MOVE/C-GET."""
    from appliance.site.dicomweb import DicomWeb

    node = _node(tmp_path / "node")
    try:
        hostile.store(node)
        web = DicomWeb(node.app)
        for uid in (hostile.bomb, hostile.corrupt):
            (instance,) = web.instances(hostile.study_uid, None, uid)
            with pytest.raises(CodecError):
                web.part10(instance, ExplicitVRLittleEndian)
            with pytest.raises(CodecError):
                web.frames(instance, [1], ExplicitVRLittleEndian)
        for uid in sorted(hostile.good):
            (instance,) = web.instances(hostile.study_uid, None, uid)
            syntax, data = web.part10(instance, ExplicitVRLittleEndian)
            assert syntax == ExplicitVRLittleEndian
            assert np.array_equal(dcmread(BytesIO(data)).pixel_array, hostile.pixels[uid])
            _, (frame,) = web.frames(instance, [1], ExplicitVRLittleEndian)
            assert frame == hostile.pixels[uid].tobytes()
        assert node.app.conversions is not None and node.app.conversions.pids()  # the workers did it
    finally:
        node.stop()
