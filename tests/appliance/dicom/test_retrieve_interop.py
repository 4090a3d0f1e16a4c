"""C-MOVE and C-GET of compressed studies with receivers nobody here wrote (issue 13).

Receivers on loopback: DCMTK ``storescp`` with its defaults (uncompressed only) and with ``+xa`` (accepts every
syntax), DCMTK ``getscu`` with its defaults, Orthanc as move destination and as C-MOVE SCU (REST
``/modalities/.../move``, ``/queries/.../retrieve``), pynetdicom SCUs that accept one syntax only, and small fake
receivers for faults (refuse, accept nothing, abort mid-transfer, stop answering).

The study (``mixed``) holds every kind of encoding the appliance may have stored: JPEG 2000 lossless, JPEG-LS
lossless and RLE made here with pydicom's encoders, real-world JPEG 2000 lossless (CT 512x512), JPEG lossless
process 14, multi-frame JPEG-LS (Enhanced MR) and lossy JPEG 2000 from ``pydicom-data`` / pydicom's test files,
RGB RLE, and one uncompressed instance. What a user checks: every instance arrives, with the SOP Instance UID it
has in C-FIND, pixels that decode to the stored ones, the right final status and counts.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

import dicomdata
from conftest import HOST, Node, dcmtk, free_port, make_config
from orthanc_support import Orthanc, OrthancError

pytestmark = pytest.mark.dcmtk

PATIENT_ID = "RTVMIX"
#: Real-world encodings: pydicom-data (data_store) and pydicom's own test files.
REAL_WORLD = (
    "693_J2KR.dcm",  # CT 512x512, JPEG 2000 lossless
    "JPEG-LL.dcm",  # secondary capture, JPEG lossless process 14 SV1
    "emri_small_jpeg_ls_lossless.dcm",  # Enhanced MR, 10 frames, JPEG-LS lossless
    "SC_rgb_rle.dcm",  # RGB, RLE lossless
    "JPEG2000.dcm",  # JPEG 2000 lossy, Lossy Image Compression 01
)
#: The configuration keys' names of preferred_ts (issue 13) and the syntax each must deliver.
PREFERRED = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
    "as-is": None,
    "jpeg2000-lossless": JPEG2000Lossless,
    "jpeg-ls-lossless": JPEGLSLossless,
    "rle": RLELossless,
    "jpeg-lossless": JPEGLosslessSV1,
}


@dataclass(frozen=True)
class Source:
    """One instance as it was sent to the appliance."""

    sop_uid: str
    sop_class: str
    transfer_syntax: str
    pixels: np.ndarray
    pixel_data: bytes  # PixelData as stored (encapsulated for compressed syntaxes)
    lossy: bool
    path: Path


@dataclass(frozen=True)
class Mixed:
    """The mixed-encoding study: its folder of Part 10 files and what each instance holds."""

    folder: Path
    study_uid: str
    sources: dict[str, Source]

    def syntaxes(self) -> set[str]:
        return {s.transfer_syntax for s in self.sources.values()}


def _source(path: Path) -> Source:
    ds = dcmread(path)
    return Source(
        str(ds.SOPInstanceUID),
        str(ds.SOPClassUID),
        str(ds.file_meta.TransferSyntaxUID),
        ds.pixel_array.copy(),
        bytes(ds.PixelData),
        str(ds.get("LossyImageCompression", "")) == "01",
        path,
    )


@pytest.fixture(scope="session")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Mixed:
    folder = tmp_path_factory.mktemp("mixed")
    made = dicomdata.study(PATIENT_ID, "RETRIEVE^MIXED", ("CT",), 4, rows=64, columns=64, accession="RTV1")
    study_uid = made[0].study_uid
    for inst, (syntax, plugin) in zip(
        made,
        [(JPEG2000Lossless, "pylibjpeg"), (JPEGLSLossless, "pyjpegls"), (RLELossless, "pydicom"), (None, "")],
        strict=True,
    ):
        ds = inst.dataset()
        if syntax is not None:
            ds.compress(syntax, encoding_plugin=plugin, generate_instance_uid=False)
        ds.save_as(folder / f"{inst.sop_uid}.dcm", enforce_file_format=True)
    for name in REAL_WORLD:
        found = get_testdata_file(name)
        assert found, f"{name} not found: pip install pydicom-data (in the test extras)"
        ds = dcmread(found)
        ds.PatientID, ds.PatientName, ds.AccessionNumber = PATIENT_ID, "RETRIEVE^MIXED", "RTV1"
        ds.StudyInstanceUID = study_uid
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    sources = {s.sop_uid: s for s in map(_source, sorted(folder.iterdir()))}
    assert len(sources) == len(made) + len(REAL_WORLD), "two test files share a SOP Instance UID"
    return Mixed(folder, study_uid, sources)


#: storescu's option proposing each stored syntax (-R: only the contexts the files need, plus uncompressed).
STORESCU_PROPOSE: dict[str, str] = {
    JPEG2000Lossless: "-xv",
    JPEG2000: "-xw",
    JPEGLSLossless: "-xt",
    RLELossless: "-xr",
    JPEGLosslessSV1: "-xs",
    ExplicitVRLittleEndian: "-xe",
}


def _store(node: Node, mixed: Mixed) -> None:
    """Send the study with DCMTK storescu, one run per stored syntax, so that nothing is transcoded on the way."""
    for syntax in sorted(mixed.syntaxes()):
        files = [str(s.path) for s in mixed.sources.values() if s.transfer_syntax == syntax]
        dcmtk("storescu", "-R", STORESCU_PROPOSE[syntax], "-aec", node.aet, HOST, str(node.port), *files, check=True)
    stored = {i.sop_uid: i.transfer_syntax for i in node.app.index.instances_of("STUDY", mixed.study_uid)}
    assert stored == {s.sop_uid: s.transfer_syntax for s in mixed.sources.values()}, "stored as sent"


def _nodes(**dest: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"ae_title": ae, "host": HOST, **opts} for ae, opts in dest.items()]


def _study(uid: str) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = uid
    return q


def c_move(node: Node, destination: str, query: Dataset) -> list[tuple[Dataset, Dataset | None]]:
    """C-MOVE with a pynetdicom SCU; every (status, identifier) answered, the final one last."""
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.dimse_timeout = ae.network_timeout = 120
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    try:
        answers = list(assoc.send_c_move(query, destination, StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    assert answers and answers[-1][0], "no final C-MOVE response"
    return answers


def _count(final: Dataset, keyword: str) -> int:
    return int(final.get(f"NumberOf{keyword}Suboperations", 0) or 0)


def _failed_uids(identifier: Dataset | None) -> set[str]:
    if identifier is None or "FailedSOPInstanceUIDList" not in identifier:
        return set()
    value = identifier.FailedSOPInstanceUIDList
    return {str(value)} if isinstance(value, str) else {str(v) for v in value}


def assert_success(final: Dataset, count: int) -> None:
    got = (hex(final.Status), _count(final, "Completed"), _count(final, "Failed"), _count(final, "Warning"))
    assert got == (hex(0), count, 0, 0), f"final status, completed, failed, warning: {got}; {final}"


def assert_arrived(
    datasets: dict[str, Dataset], mixed: Mixed, syntax: str | None = None, as_stored: bool = False
) -> None:
    """Every instance arrived with its UIDs, decoded pixels equal to the stored ones; ``syntax``: the
    transfer syntax every one must have; ``as_stored``: each in its stored syntax with identical pixel bytes."""
    assert set(datasets) == set(mixed.sources), "SOP Instance UIDs received differ from the stored ones"
    for sop, ds in datasets.items():
        src = mixed.sources[sop]
        ts = str(ds.file_meta.TransferSyntaxUID)
        assert (str(ds.SOPClassUID), str(ds.StudyInstanceUID)) == (src.sop_class, mixed.study_uid)
        if syntax is not None:
            assert ts == syntax, f"{sop} ({UID(src.transfer_syntax).name}) arrived as {UID(ts).name}"
        if as_stored:
            assert ts == src.transfer_syntax, f"{sop} stored {UID(src.transfer_syntax).name}, got {UID(ts).name}"
            assert bytes(ds.PixelData) == src.pixel_data, f"{sop}: pixel data bytes changed"
        assert np.array_equal(ds.pixel_array, src.pixels), f"{sop} ({UID(src.transfer_syntax).name}): pixels differ"
        if src.lossy:
            assert ds.get("LossyImageCompression") == "01", f"{sop}: lossy-stored instance lost its lossy flag"


def _read_folder(out: Path) -> dict[str, Dataset]:
    datasets = [dcmread(f) for f in sorted(out.iterdir())]
    by_uid: dict[str, Dataset] = {str(ds.SOPInstanceUID): ds for ds in datasets}
    assert len(by_uid) == len(datasets), "an instance arrived twice"
    return by_uid


def _store_snapshot(node: Node) -> tuple[dict[str, str], Any]:
    """Hash of every file in the node's store and the index counts."""
    area = node.app.store_area
    files = {rel: hashlib.sha256(area.path(rel).read_bytes()).hexdigest() for rel in sorted(area.iter_files())}
    return files, node.app.index.counts()


# -- C-MOVE to DCMTK storescp ----------------------------------------------------------------------------------


def test_move_compressed_study_to_default_storescp(node_factory, mixed: Mixed, storescp) -> None:
    """storescp's defaults accept only uncompressed syntaxes: every instance arrives decompressed, same UIDs."""
    port, out = storescp("DEST")
    node = node_factory(nodes=_nodes(DEST={"port": port}))
    _store(node, mixed)
    answers = c_move(node, "DEST", _study(mixed.study_uid))
    final, identifier = answers[-1]
    assert_success(final, len(mixed.sources))
    assert _failed_uids(identifier) == set()
    assert_arrived(_read_folder(out), mixed)
    for ds in _read_folder(out).values():
        assert not ds.file_meta.TransferSyntaxUID.is_compressed


def test_movescu_compressed_study_to_default_storescp(node_factory, mixed: Mixed, storescp) -> None:
    """The same with DCMTK movescu as the C-MOVE SCU: DCMTK's reading of the final response is Success."""
    port, out = storescp("DEST")
    node = node_factory(nodes=_nodes(DEST={"port": port}))
    _store(node, mixed)
    proc = dcmtk(
        "movescu",
        "-S",
        "-aec",
        node.aet,
        "-aem",
        "DEST",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={mixed.study_uid}",
        "-v",
        HOST,
        str(node.port),
    )
    assert "Received Final Move Response (Success)" in proc.stderr, proc.stderr[-3000:]
    assert_arrived(_read_folder(out), mixed)


def test_move_to_storescp_accepting_all_keeps_stored_syntax(node_factory, mixed: Mixed, storescp) -> None:
    """A receiver that accepts every syntax gets each instance as stored: same syntax, identical pixel bytes."""
    port, out = storescp("DEST", "+xa")
    node = node_factory(nodes=_nodes(DEST={"port": port}))
    _store(node, mixed)
    final, _ = c_move(node, "DEST", _study(mixed.study_uid))[-1]
    assert_success(final, len(mixed.sources))
    assert_arrived(_read_folder(out), mixed, as_stored=True)


@pytest.mark.parametrize("name", list(PREFERRED))
def test_move_to_node_with_preferred_ts(node_factory, mixed: Mixed, storescp, name: str) -> None:
    """``preferred_ts`` of a known node: a receiver accepting every syntax gets that one."""
    port, out = storescp("PREF", "+xa")
    node = node_factory(nodes=_nodes(PREF={"port": port, "preferred_ts": name}))
    _store(node, mixed)
    final, _ = c_move(node, "PREF", _study(mixed.study_uid))[-1]
    assert_success(final, len(mixed.sources))
    wanted = PREFERRED[name]
    assert_arrived(_read_folder(out), mixed, syntax=wanted, as_stored=wanted is None)


def test_preferred_jpeg_baseline_sends_what_it_can_hold_and_the_rest_as_usual(
    node_factory, mixed: Mixed, storescp
) -> None:
    """``preferred_ts = "jpeg-baseline"`` (8-bit only): the 8-bit images arrive in JPEG Baseline, marked lossy,
    same UIDs; the deeper ones arrive as they would without a preference, pixels unchanged."""
    port, out = storescp("PREF", "+xa")
    node = node_factory(nodes=_nodes(PREF={"port": port, "preferred_ts": "jpeg-baseline"}))
    _store(node, mixed)
    final, _ = c_move(node, "PREF", _study(mixed.study_uid))[-1]
    assert_success(final, len(mixed.sources))
    datasets = _read_folder(out)
    assert set(datasets) == set(mixed.sources)
    baseline = {sop for sop, ds in datasets.items() if ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit}
    assert baseline, "no instance arrived in the preferred JPEG Baseline"
    for sop, ds in datasets.items():
        src = mixed.sources[sop]
        if sop in baseline:
            assert int(ds.BitsAllocated) == 8 and ds.LossyImageCompression == "01"
            assert "ISO_10918_1" in ds.LossyImageCompressionMethod
        else:
            assert int(ds.BitsAllocated) > 8 or src.lossy
            assert np.array_equal(ds.pixel_array, src.pixels), f"{sop}: pixels differ"


def test_preferred_ts_the_receiver_refuses_falls_back(node_factory, mixed: Mixed, storescp) -> None:
    """``preferred_ts = "jpeg2000-lossless"`` to storescp's defaults (uncompressed only): every instance still
    arrives, uncompressed, same UIDs and pixels."""
    port, out = storescp("PREF")
    node = node_factory(nodes=_nodes(PREF={"port": port, "preferred_ts": "jpeg2000-lossless"}))
    _store(node, mixed)
    final, _ = c_move(node, "PREF", _study(mixed.study_uid))[-1]
    assert_success(final, len(mixed.sources))
    datasets = _read_folder(out)
    assert_arrived(datasets, mixed)
    assert not any(ds.file_meta.TransferSyntaxUID.is_compressed for ds in datasets.values())


def test_preferred_ts_unknown_name_is_a_config_error(tmp_path: Path) -> None:
    from appliance.config import ConfigError

    with pytest.raises(ConfigError, match="preferred_ts"):
        make_config(tmp_path, nodes=_nodes(PREF={"port": 104, "preferred_ts": "jpeg-2000"}))


# -- import: the same sender as C-MOVE -----------------------------------------------------------------------


@pytest.mark.parametrize("options", [(), ("+xa",)], ids=["storescp-defaults", "storescp-accept-all"])
def test_import_sends_every_encoding(mixed: Mixed, storescp, options: tuple[str, ...]) -> None:
    """``appliance import`` to storescp: every file arrives with its UIDs and pixels; in its stored syntax when
    the receiver accepts it, uncompressed otherwise."""
    port, out = storescp("DEST", *options)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "import",
            str(mixed.folder),
            "--host",
            HOST,
            "--port",
            str(port),
            "--aet",
            "DEST",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(mixed.sources)} instance(s) sent" in proc.stdout, proc.stdout
    datasets = _read_folder(out)
    assert_arrived(datasets, mixed, as_stored=bool(options))
    if not options:
        assert not any(ds.file_meta.TransferSyntaxUID.is_compressed for ds in datasets.values())


# -- C-GET ------------------------------------------------------------------------------------------------------


def test_getscu_defaults_gets_compressed_study(node_factory, mixed: Mixed, tmp_path: Path) -> None:
    """getscu proposes uncompressed syntaxes only: every instance arrives decompressed with its UID."""
    node = node_factory()
    _store(node, mixed)
    out = tmp_path / "get"
    out.mkdir()
    proc = dcmtk(
        "getscu",
        "-v",
        "-S",
        "-aec",
        node.aet,
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={mixed.study_uid}",
        HOST,
        str(node.port),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = proc.stderr[proc.stderr.rfind("Received C-GET Response") :]
    assert report.startswith("Received C-GET Response (Success)"), proc.stderr[-3000:]
    assert f"Number of Completed Suboperations : {len(mixed.sources)}\n" in report, report
    assert "Number of Failed Suboperations    : 0\n" in report, report
    datasets = _read_folder(out)
    assert_arrived(datasets, mixed)
    assert not any(ds.file_meta.TransferSyntaxUID.is_compressed for ds in datasets.values())


def c_get_one_syntax(
    node: Node,
    mixed: Mixed,
    syntax: str = ExplicitVRLittleEndian,
    query: Dataset | None = None,
    also: Sequence[str] = (),
    ae_title: str = "ONESYNTAX",
) -> tuple[list[tuple[Dataset, Dataset | None]], dict[str, Dataset]]:
    """C-GET with a pynetdicom SCU that accepts, for each storage class, ``syntax`` only (and each of ``also``, on
    a context of its own)."""
    received: dict[str, Dataset] = {}
    syntaxes: list[str] = []

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        syntaxes.append(str(event.context.transfer_syntax))
        received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    ae = AE(ae_title=ae_title)
    ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles: list[Any] = []  # pynetdicom types ext_neg items with a private union
    for sop_class in sorted({s.sop_class for s in mixed.sources.values()}):
        for proposed in (syntax, *also):
            ae.add_requested_context(sop_class, [proposed])
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate(HOST, node.port, ae_title=node.aet, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        answers = list(assoc.send_c_get(query or _study(mixed.study_uid), StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    assert set(syntaxes) <= {syntax, *also}
    return answers, received


def test_get_by_node_with_preferred_ts_gets_that_syntax(node_factory, mixed: Mixed) -> None:
    """``preferred_ts`` of a known node applies to its C-GET too: offered Explicit VR LE and RLE on separate
    contexts, it gets every instance in RLE (its preference), UIDs and pixels kept."""
    node = node_factory(nodes=_nodes(GETPREF={"port": 104, "preferred_ts": "rle"}))
    _store(node, mixed)
    answers, received = c_get_one_syntax(node, mixed, ExplicitVRLittleEndian, also=[RLELossless], ae_title="GETPREF")
    assert_success(answers[-1][0], len(mixed.sources))
    assert_arrived(received, mixed, syntax=RLELossless)
    # Without a preference the same SCU gets each instance in the first syntax it accepts that can carry it.
    _, plain = c_get_one_syntax(node, mixed, ExplicitVRLittleEndian, also=[RLELossless])
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in plain.values()} != {RLELossless}


def test_get_with_scu_accepting_explicit_only(node_factory, mixed: Mixed) -> None:
    node = node_factory()
    _store(node, mixed)
    answers, received = c_get_one_syntax(node, mixed)
    assert_success(answers[-1][0], len(mixed.sources))
    assert_arrived(received, mixed, syntax=ExplicitVRLittleEndian)


def test_get_with_scu_accepting_jpeg2000_lossless_only(node_factory, mixed: Mixed) -> None:
    """An SCU that takes JPEG 2000 lossless only: instances stored so arrive as they are; any other instance is
    either converted losslessly (same UID, same pixels) or a failed sub-operation; never sent in a syntax the
    SCU did not accept, and the counts add up."""
    node = node_factory()
    _store(node, mixed)
    answers, received = c_get_one_syntax(node, mixed, JPEG2000Lossless)
    final, identifier = answers[-1]
    j2k = {s.sop_uid for s in mixed.sources.values() if s.transfer_syntax == JPEG2000Lossless}
    assert j2k <= set(received)
    failed = _failed_uids(identifier)
    assert failed | set(received) == set(mixed.sources) and not failed & set(received)
    assert (_count(final, "Completed"), _count(final, "Failed")) == (len(received), len(failed))
    assert hex(final.Status) == hex(0xB000 if failed else 0x0000)
    for sop, ds in received.items():
        assert np.array_equal(ds.pixel_array, mixed.sources[sop].pixels), sop


def test_get_twice_gives_the_same_uids(node_factory, mixed: Mixed) -> None:
    """Decompressing for the receiver keeps every UID: two retrieves, the same SOP Instance UIDs as stored."""
    node = node_factory()
    _store(node, mixed)
    _, first = c_get_one_syntax(node, mixed)
    _, second = c_get_one_syntax(node, mixed)
    assert set(first) == set(second) == set(mixed.sources)
    for sop in first:
        for ds in (first[sop], second[sop]):
            assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == (
                first[sop].StudyInstanceUID,
                first[sop].SeriesInstanceUID,
            )
            assert ds.file_meta.MediaStorageSOPInstanceUID == sop


# -- Orthanc ------------------------------------------------------------------------------------------------


def _orthanc_datasets(orthanc: Orthanc, study_uid: str) -> dict[str, Dataset]:
    out: dict[str, Dataset] = {}
    for found in orthanc.find("Instance", {"StudyInstanceUID": study_uid}):
        ds = dcmread(BytesIO(orthanc.instance_file(found)))
        out[str(ds.SOPInstanceUID)] = ds
    return out


def test_move_to_orthanc(node_factory, mixed: Mixed, orthanc: Orthanc) -> None:
    orthanc.clear()
    node = node_factory(nodes=_nodes(ORTHANC={"port": orthanc.dicom_port}))
    _store(node, mixed)
    final, _ = c_move(node, "ORTHANC", _study(mixed.study_uid))[-1]
    assert_success(final, len(mixed.sources))
    assert_arrived(_orthanc_datasets(orthanc, mixed.study_uid), mixed)


def test_move_to_orthanc_accepting_uncompressed_only(node_factory, mixed: Mixed, orthanc_factory) -> None:
    plain = orthanc_factory(
        aet="ORTHPLAIN", settings={"AcceptedTransferSyntaxes": [ImplicitVRLittleEndian, ExplicitVRLittleEndian]}
    )
    node = node_factory(nodes=_nodes(ORTHPLAIN={"port": plain.dicom_port}))
    _store(node, mixed)
    final, _ = c_move(node, "ORTHPLAIN", _study(mixed.study_uid))[-1]
    assert_success(final, len(mixed.sources))
    datasets = _orthanc_datasets(plain, mixed.study_uid)
    assert_arrived(datasets, mixed)
    assert not any(ds.file_meta.TransferSyntaxUID.is_compressed for ds in datasets.values())


def test_orthanc_query_and_retrieve_from_the_appliance(node_factory, mixed: Mixed, orthanc: Orthanc) -> None:
    """Orthanc as C-MOVE SCU: /modalities/appliance/query, then /queries/{id}/retrieve to itself (HTTP 200)."""
    orthanc.clear()
    node = node_factory(nodes=_nodes(ORTHANC={"port": orthanc.dicom_port}))
    _store(node, mixed)
    orthanc.put_modality("appliance", node.aet, node.port)
    qid = orthanc.query("appliance", "Study", {"StudyInstanceUID": mixed.study_uid, "PatientID": ""})
    assert [a["StudyInstanceUID"] for a in orthanc.query_answers(qid)] == [mixed.study_uid]
    try:
        orthanc.retrieve(qid, target_aet="ORTHANC")
    except OrthancError as exc:
        pytest.fail(f"Orthanc's retrieve from the appliance failed: {exc}\n{orthanc.log_tail(1500)}")
    assert_arrived(_orthanc_datasets(orthanc, mixed.study_uid), mixed)


def test_orthanc_modalities_move_from_the_appliance(node_factory, mixed: Mixed, orthanc: Orthanc) -> None:
    orthanc.clear()
    node = node_factory(nodes=_nodes(ORTHANC={"port": orthanc.dicom_port}))
    _store(node, mixed)
    orthanc.put_modality("appliance", node.aet, node.port)
    try:
        orthanc.move("appliance", "Study", [{"StudyInstanceUID": mixed.study_uid}], target_aet="ORTHANC")
    except OrthancError as exc:
        pytest.fail(f"Orthanc's C-MOVE from the appliance failed: {exc}\n{orthanc.log_tail(1500)}")
    assert orthanc.sop_uids(mixed.study_uid) == set(mixed.sources)


# -- faults ------------------------------------------------------------------------------------------------------


def test_move_unknown_destination_is_a801(node_factory, mixed: Mixed) -> None:
    node = node_factory()
    _store(node, mixed)
    answers = c_move(node, "NOBODY", _study(mixed.study_uid))
    assert [hex(s.Status) for s, _ in answers] == [hex(0xA801)]


def test_retrieve_matching_nothing_is_success_with_no_sub_operations(node_factory, mixed: Mixed, storescp) -> None:
    port, out = storescp("DEST")
    node = node_factory(nodes=_nodes(DEST={"port": port}))
    _store(node, mixed)
    nothing = _study("1.2.826.0.1.3680043.10.1234.999.1")
    answers = c_move(node, "DEST", nothing)
    assert len(answers) == 1, "no pending response for no match"
    assert_success(answers[0][0], 0)
    get_answers, received = c_get_one_syntax(node, mixed, query=nothing)
    assert len(get_answers) == 1 and received == {}
    assert_success(get_answers[0][0], 0)
    assert list(out.iterdir()) == []


@pytest.fixture
def fake_receiver() -> Iterator[Callable[..., tuple[int, list[str]]]]:
    """pynetdicom storage SCPs that fail mid-transfer: ``fake_receiver(kind)`` with kind ``abort`` (stores the
    first instance, then sends A-ABORT and drops the connection on the next) or ``stall`` (stores the first
    instance, then never answers the next C-STORE). Returns the port and the list of SOP Instance UIDs it
    stored; AE title FAKE."""
    servers: list[Any] = []
    release = threading.Event()

    def start(kind: str) -> tuple[int, list[str]]:
        port = free_port()
        stored: list[str] = []
        ae = AE(ae_title="FAKE")
        for cx in AllStoragePresentationContexts:
            assert cx.abstract_syntax is not None
            ae.add_supported_context(cx.abstract_syntax, ALL_SYNTAXES)

        def on_store(event: evt.Event) -> int:
            if stored:
                if kind == "abort":
                    # A-ABORT PDU (type 07, source 0 = service user), straight onto the socket, then drop it.
                    assoc_socket = event.assoc.dul.socket
                    assert assoc_socket is not None and assoc_socket.socket is not None
                    sock = assoc_socket.socket
                    sock.sendall(bytes([7, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
                    sock.shutdown(socket.SHUT_RDWR)
                    return 0xA700
                release.wait(60)  # stall: no answer until the test ends
                return 0xA700
            stored.append(str(cast(C_STORE, event.request).AffectedSOPInstanceUID))
            return 0x0000

        servers.append(ae.start_server((HOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]))
        return port, stored

    yield start
    release.set()
    for server in servers:
        server.shutdown()


def _pdu(kind: int, body: bytes) -> bytes:
    return bytes([kind, 0]) + len(body).to_bytes(4, "big") + body


def _item(kind: int, body: bytes) -> bytes:
    return bytes([kind, 0]) + len(body).to_bytes(2, "big") + body


def _read_pdu(conn: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    head = exactly(6)
    return head[0], exactly(int.from_bytes(head[2:], "big"))


def _reject_every_context(conn: socket.socket) -> None:
    """Answer an A-ASSOCIATE-RQ with an A-ASSOCIATE-AC that rejects every presentation context (result 3,
    abstract syntax not supported), then answer a release and close."""
    with conn:
        kind, body = _read_pdu(conn)
        assert kind == 1, f"expected A-ASSOCIATE-RQ, got PDU type {kind}"
        header, items, pos = body[:68], b"", 68
        while pos < len(body):
            item_type, length = body[pos], int.from_bytes(body[pos + 2 : pos + 4], "big")
            value = body[pos + 4 : pos + 4 + length]
            if item_type == 0x10:  # application context: echoed
                items += _item(0x10, value)
            elif item_type == 0x20:  # presentation context: rejected, with a transfer syntax sub-item
                items += _item(0x21, bytes([value[0], 0, 3, 0]) + _item(0x40, ImplicitVRLittleEndian.encode()))
            pos += 4 + length
        user = _item(0x51, (16384).to_bytes(4, "big")) + _item(0x52, b"1.2.826.0.1.3680043.10.1234.99")
        conn.sendall(_pdu(2, header + items + _item(0x50, user)))
        try:
            while True:
                kind, _ = _read_pdu(conn)
                if kind == 5:  # A-RELEASE-RQ
                    conn.sendall(_pdu(6, bytes(4)))
                    return
                if kind == 7:  # A-ABORT
                    return
        except (ConnectionError, OSError):
            return


@pytest.fixture
def raw_listener() -> Iterator[Callable[[str], int]]:
    """Raw-socket receivers: ``raw_listener("silent")`` accepts TCP connections and never says a word (a receiver
    that stops answering); ``raw_listener("no-context")`` accepts the association but rejects every presentation
    context. Returns the port."""
    socks: list[socket.socket] = []
    stop = threading.Event()

    def start(kind: str) -> int:
        lsock = socket.socket()
        lsock.bind((HOST, 0))
        lsock.listen(8)
        lsock.settimeout(0.2)
        socks.append(lsock)

        def loop() -> None:
            while not stop.is_set():
                try:
                    conn, _ = lsock.accept()
                except OSError:
                    continue
                conn.settimeout(None)
                if kind == "silent":
                    socks.append(conn)
                else:
                    threading.Thread(target=_reject_every_context, args=(conn,), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()
        return int(lsock.getsockname()[1])

    yield start
    stop.set()
    for s in socks:
        s.close()


ALL_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.50",
]


FAULT_TIMEOUTS = {"acse_timeout": 3, "dimse_timeout": 3, "network_timeout": 3}


def _all_failed(node: Node, mixed: Mixed, destination: str) -> None:
    before = _store_snapshot(node)
    final, identifier = c_move(node, destination, _study(mixed.study_uid))[-1]
    n = len(mixed.sources)
    got = (hex(final.Status), _count(final, "Completed"), _count(final, "Failed"))
    assert got == (hex(0xA702), 0, n), f"final status, completed, failed: {got}"
    assert _failed_uids(identifier) == set(mixed.sources)
    assert _store_snapshot(node) == before, "the store changed during a failed retrieve"
    # The worker is free again: the node answers the next request.
    assert c_move(node, "NOBODY", _study(mixed.study_uid))[-1][0].Status == 0xA801


def test_move_to_destination_refusing_association(node_factory, mixed: Mixed, storescp) -> None:
    port, out = storescp("DEST", "--refuse")
    node = node_factory(nodes=_nodes(DEST={"port": port}), **FAULT_TIMEOUTS)
    _store(node, mixed)
    _all_failed(node, mixed, "DEST")
    assert list(out.iterdir()) == []


def test_move_to_destination_accepting_no_context(node_factory, mixed: Mixed, raw_listener) -> None:
    node = node_factory(nodes=_nodes(FAKE={"port": raw_listener("no-context")}), **FAULT_TIMEOUTS)
    _store(node, mixed)
    _all_failed(node, mixed, "FAKE")


def test_move_to_destination_that_never_answers(node_factory, mixed: Mixed, raw_listener) -> None:
    node = node_factory(nodes=_nodes(FAKE={"port": raw_listener("silent")}), **FAULT_TIMEOUTS)
    _store(node, mixed)
    _all_failed(node, mixed, "FAKE")


@pytest.mark.parametrize("kind", ["abort", "stall"])
def test_move_to_destination_failing_mid_transfer(node_factory, mixed: Mixed, fake_receiver, kind: str) -> None:
    """The first instance is stored, then the receiver aborts (or stops answering): 0xB000, the rest listed."""
    port, stored = fake_receiver(kind)
    node = node_factory(nodes=_nodes(FAKE={"port": port}), **FAULT_TIMEOUTS)
    _store(node, mixed)
    before = _store_snapshot(node)
    answers = c_move(node, "FAKE", _study(mixed.study_uid))
    final, identifier = answers[-1]
    n = len(mixed.sources)
    got = (hex(final.Status), _count(final, "Completed"), _count(final, "Failed"))
    assert got == (hex(0xB000), 1, n - 1), f"final status, completed, failed: {got}"
    assert len(stored) == 1
    assert _failed_uids(identifier) == set(mixed.sources) - set(stored)
    assert _store_snapshot(node) == before
    assert c_move(node, "NOBODY", _study(mixed.study_uid))[-1][0].Status == 0xA801


def _stored_path(node: Node, sop_uid: str) -> Path:
    [inst] = node.app.index.instances_of("IMAGE", sop_uid)
    return node.app.file_path(inst)


def test_move_with_unreadable_stored_file(node_factory, mixed: Mixed, storescp) -> None:
    """A stored file emptied on disk: its sub-operation fails, every other instance arrives (0xB000)."""
    port, out = storescp("DEST", "+xa")
    node = node_factory(nodes=_nodes(DEST={"port": port}))
    _store(node, mixed)
    broken = next(s for s in mixed.sources.values() if s.transfer_syntax == ExplicitVRLittleEndian).sop_uid
    _stored_path(node, broken).write_bytes(b"")
    final, identifier = c_move(node, "DEST", _study(mixed.study_uid))[-1]
    n = len(mixed.sources)
    got = (hex(final.Status), _count(final, "Completed"), _count(final, "Failed"))
    assert got == (hex(0xB000), n - 1, 1), f"final status, completed, failed: {got}"
    assert _failed_uids(identifier) == {broken}
    assert set(_read_folder(out)) == set(mixed.sources) - {broken}


def test_move_with_undecodable_stored_file_to_uncompressed_receiver(node_factory, mixed: Mixed, storescp) -> None:
    """A JPEG 2000 file whose codestream is damaged cannot be decompressed for storescp's defaults: that
    sub-operation fails, the rest arrive (0xB000)."""
    port, out = storescp("DEST")
    node = node_factory(nodes=_nodes(DEST={"port": port}))
    _store(node, mixed)
    broken = next(
        s for s in mixed.sources.values() if s.transfer_syntax == JPEG2000Lossless and s.pixels.size < 100_000
    ).sop_uid
    path = _stored_path(node, broken)
    raw = bytearray(path.read_bytes())
    start = raw.find(b"\xff\x4f\xff\x51")  # J2K SOC + SIZ markers: without them no decoder reads the frame
    assert start > 0
    raw[start : start + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    final, identifier = c_move(node, "DEST", _study(mixed.study_uid))[-1]
    n = len(mixed.sources)
    got = (hex(final.Status), _count(final, "Completed"), _count(final, "Failed"))
    assert got == (hex(0xB000), n - 1, 1), f"final status, completed, failed: {got}"
    assert _failed_uids(identifier) == {broken}
    assert set(_read_folder(out)) == set(mixed.sources) - {broken}


def test_get_with_unreadable_stored_file(node_factory, mixed: Mixed) -> None:
    """C-GET: a stored file emptied on disk fails its sub-operation; the rest arrive (0xB000, UID listed)."""
    node = node_factory()
    _store(node, mixed)
    broken = next(s for s in mixed.sources.values() if s.transfer_syntax == RLELossless).sop_uid
    _stored_path(node, broken).write_bytes(b"")
    answers, received = c_get_one_syntax(node, mixed)
    final, identifier = answers[-1]
    n = len(mixed.sources)
    got = (hex(final.Status), _count(final, "Completed"), _count(final, "Failed"))
    assert got == (hex(0xB000), n - 1, 1), f"final status, completed, failed: {got}"
    assert _failed_uids(identifier) == {broken}
    assert set(received) == set(mixed.sources) - {broken}


def _bogus_level(uid: str) -> Dataset:
    q = _study(uid)
    q.QueryRetrieveLevel = "BOGUS"
    return q


def test_move_that_cannot_be_processed_is_not_success(node_factory, mixed: Mixed, storescp) -> None:
    """An identifier the node cannot process (unknown level) gets a failure status, never Success with zero
    sub-operations (PS3.4 C.4.2.1.5: 0xA900 identifier does not match, or a 0xCxxx unable to process)."""
    port, out = storescp("DEST")
    node = node_factory(nodes=_nodes(DEST={"port": port}))
    _store(node, mixed)
    [(final, _)] = c_move(node, "DEST", _bogus_level(mixed.study_uid))
    assert final.Status == 0xA900 or 0xC000 <= final.Status <= 0xCFFF, hex(final.Status)
    assert list(out.iterdir()) == []


def test_get_that_cannot_be_processed_is_not_success(node_factory, mixed: Mixed) -> None:
    node = node_factory()
    _store(node, mixed)
    answers, received = c_get_one_syntax(node, mixed, query=_bogus_level(mixed.study_uid))
    [(final, _)] = answers
    assert final.Status == 0xA900 or 0xC000 <= final.Status <= 0xCFFF, hex(final.Status)
    assert received == {}
