"""DICOMweb's work on the core (PS3.18), free of HTTP: QIDO-RS search, WADO-RS instances, metadata, frames and
bulk data, STOW-RS storage. ``webui.dicomweb`` maps requests to these calls and their results to responses.

* QIDO-RS builds a C-FIND identifier from the query and answers with :func:`appliance.query.find_rows`, the
  matching of C-FIND itself; answers become DICOM JSON (PS3.18 F.2) without a pydicom data set per match.
* WADO-RS reads stored files and converts them with :mod:`appliance.codecs` (every UID kept), as DIMSE
  retrieve does.
* STOW-RS stores each Part 10 file through :meth:`Appliance.store`, the durable path of C-STORE with its
  duplicate policy; one request is one "association" for the listeners (tokens, thumbnails).
"""

from __future__ import annotations

import io
import itertools
import logging
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID

from appliance import codecs, conversion
from appliance.core import Appliance, Incoming, StoreOutcome, StoreResult
from appliance.errors import CodecError, InvalidDataset, InvalidValue, NotFound, OutOfResources
from appliance.index import StoredInstance
from appliance.part10 import file_meta
from appliance.query import KEYS, LEVELS, UNIQUE, QueryError, find_rows, match_instances
from appliance.site.imaging import Window, render

LOGGER = logging.getLogger(__name__)

#: A UID in a path: digits and dots, at most 64 characters (anything else, ``..`` included, is refused).
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
LEVEL_OF = {"studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}
#: Attributes returned by default per level (PS3.18 Table 6.7.1-2, those the index holds).
DEFAULT_FIELDS = {
    "STUDY": (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "SERIES": (
        "Modality",
        "SeriesDescription",
        "SeriesNumber",
        "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
    ),
    "IMAGE": ("SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "InstanceNumber", "NumberOfFrames"),
}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBER_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"})
#: Bulk data above this size is sent as a BulkDataURI in metadata.
BULK_THRESHOLD = 1024
#: Instances of one STOW-RS request stored at the same time.
STOW_THREADS = 4
#: PS3.18 STOW-RS failure reasons (FailureReason, 0008,1197) that we use.
FAIL_PROCESSING = 0x0110
FAIL_OUT_OF_RESOURCES = 0xA700
FAIL_NOT_DICOM = 0xC000
FAIL_STUDY_MISMATCH = 0xC409


def check_uid(uid: str, what: str = "UID") -> str:
    """``uid`` when it is a well-formed UID.

    Raises
    ------
    InvalidValue
        For anything else (path traversal, wildcards, over 64 characters).
    """
    if len(uid) > 64 or not UID_RE.match(uid):
        raise InvalidValue(f"{what} {uid[:80]!r} is not a DICOM UID (digits and dots, at most 64 characters)")
    return uid


def _tag_of(name: str) -> int:
    """A QIDO attribute (keyword or 8 hex digits) as a tag.

    Raises
    ------
    InvalidValue
        For an unknown keyword, a sequence path or anything else.
    """
    if "." in name:
        raise InvalidValue(f"attribute {name!r}: sequence paths are not supported in searches")
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return int(name, 16)
    tag = tag_for_keyword(name)
    if tag is None:
        raise InvalidValue(f"{name!r} is not a DICOM attribute keyword or tag")
    return int(tag)


@dataclass(frozen=True)
class Search:
    """A QIDO-RS request, parsed: the identifier's keys and values, what to include, the page."""

    level: str
    match: dict[int, str]
    include: tuple[int, ...]
    include_all: bool
    limit: int
    offset: int
    fuzzy: bool
    #: Query parameters the service ignores (named in a Warning header).
    ignored: tuple[str, ...] = ()


def parse_search(
    resource: str,
    params: Iterable[tuple[str, str]],
    max_results: int,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Search:
    """Parse QIDO-RS query parameters (PS3.18 8.3.4).

    Parameters
    ----------
    resource : {"studies", "series", "instances"}
        What is searched.
    params : iterable of (str, str)
        The query parameters, in order (repeated keys allowed).
    max_results : int
        The most answers one request may return.
    study_uid, series_uid : str, optional
        From the path (``/studies/{study}/series...``).

    Raises
    ------
    InvalidValue
        For an unknown attribute, a bad limit or offset, a malformed UID.
    """
    level = LEVEL_OF[resource]
    match: dict[int, str] = {}
    include: list[int] = []
    include_all = False
    limit, offset, fuzzy = max_results, 0, False
    ignored: list[str] = []
    for key, value in params:
        if key == "includefield":
            for part in value.split(","):
                part = part.strip()
                if part == "all":
                    include_all = True
                elif part:
                    include.append(_tag_of(part))
        elif key in ("limit", "offset"):
            if not value.isdigit():
                raise InvalidValue(f"{key} must be a whole number, not {value!r}")
            if key == "limit":
                limit = min(int(value), max_results) if int(value) else max_results
            else:
                offset = int(value)
        elif key == "fuzzymatching":
            if value not in ("true", "false"):
                raise InvalidValue(f"fuzzymatching must be true or false, not {value!r}")
            fuzzy = value == "true"
            if fuzzy:
                ignored.append("fuzzymatching")
        elif key in ("charset", "accept"):
            ignored.append(key)  # the answer is UTF-8 JSON or XML, chosen by the Accept header
        else:
            tag = _tag_of(key)
            if tag in match:
                match[tag] += "\\" + value
            else:
                match[tag] = value
    if study_uid:
        match[0x0020000D] = check_uid(study_uid, "Study Instance UID")
    if series_uid:
        match[0x0020000E] = check_uid(series_uid, "Series Instance UID")
    return Search(level, match, tuple(include), include_all, limit, offset, fuzzy, tuple(ignored))


def _json_value(vr: str, value: Any) -> dict[str, Any]:
    """One attribute in DICOM JSON (PS3.18 F.2.2)."""
    item: dict[str, Any] = {"vr": vr}
    if value is None or value == "" or value == []:
        return item
    values = list(value) if isinstance(value, list | tuple) else [value]
    if vr == "PN":
        item["Value"] = [{"Alphabetic": str(v)} for v in values]
    elif vr in _NUMBER_VRS:
        out: list[Any] = []
        for v in values:
            try:
                number = float(v)
                out.append(int(number) if vr not in ("DS", "FL", "FD") and number.is_integer() else number)
            except (TypeError, ValueError):
                out.append(str(v))
        item["Value"] = out
    elif vr == "SQ":
        item["Value"] = []
    else:
        item["Value"] = [str(v) for v in values]
    return item


class DicomWeb:
    """The DICOMweb services on one core.

    Parameters
    ----------
    app : Appliance
        The core.
    """

    def __init__(self, app: Appliance) -> None:
        self.app = app

    # -- QIDO-RS ----------------------------------------------------------------------------------

    def identifier(self, search: Search) -> Dataset:
        """The C-FIND identifier of a search: its matching keys and the attributes to return."""
        wanted: dict[int, str] = {}
        # A search for series or instances returns the attributes of the levels above as well.
        levels = {"STUDY": ("STUDY",), "SERIES": ("STUDY", "SERIES"), "IMAGE": ("STUDY", "SERIES", "IMAGE")}
        for level in levels[search.level]:
            for keyword in (*DEFAULT_FIELDS[level], UNIQUE[level]):
                wanted[int(tag_for_keyword(keyword) or 0)] = ""
        if search.include_all:
            depth = LEVELS.index(search.level)
            for keyword, key in KEYS.items():
                if LEVELS.index(key.level) <= depth:
                    wanted[int(tag_for_keyword(keyword) or 0)] = ""
        for tag in search.include:
            wanted.setdefault(tag, "")
        wanted.update(search.match)
        ds = Dataset()
        for tag, value in sorted(wanted.items()):
            vr = dictionary_VR(tag) if keyword_for_tag(tag) else "UN"
            if vr == "SQ":
                ds.add_new(tag, vr, [])
                continue
            try:
                ds.add_new(tag, vr, value if value != "" else None)
            except Exception as exc:
                raise InvalidValue(
                    f"{keyword_for_tag(tag) or f'{tag:08X}'}: value {value!r} is not valid for its VR {vr}: {exc}"
                ) from None
        return ds

    def search(self, search: Search, base_url: str) -> Iterator[dict[str, Any]]:
        """The answers of a QIDO-RS search as DICOM JSON objects, each with its RetrieveURL.

        Raises
        ------
        InvalidValue
            When the identifier cannot be answered.
        """
        ident = self.identifier(search)
        try:
            matches = find_rows(
                self.app.db.conn, ident, search.level, self.app.config.dicom.ae_title, search.offset + search.limit
            )
        except QueryError as exc:
            raise InvalidValue(str(exc)) from None
        keys = [(f"{f.tag:08X}", f.vr) for f in matches.fields]
        position = {f.tag: i for i, f in enumerate(matches.fields)}
        study_i = position.get(0x0020000D)
        series_i = position.get(0x0020000E)
        sop_i = position.get(0x00080018)
        for values in itertools.islice(matches, search.offset, None):
            answer = {key: _json_value(vr, value) for (key, vr), value in zip(keys, values, strict=True)}
            answer.pop("00080052", None)  # QueryRetrieveLevel is DIMSE's
            url = f"{base_url}/studies/{values[study_i]}" if study_i is not None else ""
            if url and search.level in ("SERIES", "IMAGE") and series_i is not None:
                url += f"/series/{values[series_i]}"
            if url and search.level == "IMAGE" and sop_i is not None:
                url += f"/instances/{values[sop_i]}"
            if url:
                answer["00081190"] = {"vr": "UR", "Value": [url]}
            yield answer

    # -- WADO-RS ----------------------------------------------------------------------------------

    def instances(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[StoredInstance]:
        """The stored instances of a study, series or instance (the C-MOVE/C-GET look-up).

        Raises
        ------
        InvalidValue
            For a malformed UID.
        NotFound
            When nothing is stored under these UIDs.
        """
        ident = Dataset()
        ident.StudyInstanceUID = check_uid(study_uid, "Study Instance UID")
        level = "STUDY"
        if series_uid is not None:
            ident.SeriesInstanceUID = check_uid(series_uid, "Series Instance UID")
            level = "SERIES"
        if sop_uid is not None:
            ident.SOPInstanceUID = check_uid(sop_uid, "SOP Instance UID")
            level = "IMAGE"
        found = [StoredInstance(*row) for row in match_instances(self.app.db.conn, ident, level)]
        if not found:
            what = {"STUDY": "study", "SERIES": "series", "IMAGE": "instance"}[level]
            raise NotFound(f"no {what} {sop_uid or series_uid or study_uid} is stored here")
        return found

    def read(self, instance: StoredInstance) -> bytes:
        """The stored file of an instance (CodecError when it cannot be read)."""
        return codecs.read_stored(self.app.file_path(instance))

    def path(self, instance: StoredInstance) -> Path:
        """Where the stored file of an instance is (for sending it as it is)."""
        return self.app.file_path(instance)

    def part10(self, instance: StoredInstance, target: str | None) -> tuple[str, bytes]:
        """An instance as a Part 10 file, as stored (``target`` None) or converted to ``target``.

        Raises
        ------
        CodecError
            When the file cannot be read or converted.
        """
        if not target or target == instance.transfer_syntax:
            return instance.transfer_syntax, self.read(instance)
        # Decoding an untrusted instance: in the conversion service's budgeted worker, as for DIMSE retrieve.
        body = conversion.convert(
            self.app.conversions, self.app.file_path(instance), target, f"converting instance {instance.sop_uid}"
        )
        from appliance.core import IMPLEMENTATION_VERSION

        return target, file_meta(instance.sop_class_uid, instance.sop_uid, target, IMPLEMENTATION_VERSION) + body

    def frames(self, instance: StoredInstance, numbers: list[int], target: str | None) -> tuple[str, list[bytes]]:
        """Frames of an instance as stored (``target`` None or the stored syntax) or converted to ``target``.

        Raises
        ------
        CodecError
            When the file cannot be read or converted, or a frame number is out of range.
        """
        if not target or target == instance.transfer_syntax:
            return codecs.frames(self.read(instance), numbers)
        # Decoding an untrusted instance: in the conversion service's budgeted worker, as for DIMSE retrieve.
        return conversion.frames(
            self.app.conversions,
            self.app.file_path(instance),
            numbers,
            target,
            f"converting frames of instance {instance.sop_uid}",
        )

    def metadata(self, instance: StoredInstance, base_url: str) -> dict[str, Any]:
        """An instance's attributes in DICOM JSON, bulk data (pixel data included) as BulkDataURI.

        Raises
        ------
        CodecError
            When the stored file cannot be read.
        """
        path = self.app.file_path(instance)
        try:
            ds = dcmread(path, stop_before_pixels=True, defer_size=BULK_THRESHOLD)
        except Exception as exc:
            raise CodecError(f"stored file cannot be parsed: {exc}") from exc
        uri = (
            f"{base_url}/studies/{instance.study_uid}/series/{instance.series_uid}/instances/"
            f"{instance.sop_uid}/bulkdata/"
        )
        out: dict[str, Any] = {}
        for tag in list(ds.keys()):
            raw = ds.get_item(tag)  # not converted: a deferred value stays on disk
            key = f"{int(tag):08X}"
            if raw is not None and raw.VR in _BINARY_VRS and _length(raw) > BULK_THRESHOLD:
                out[key] = {"vr": raw.VR, "BulkDataURI": uri + key}
                continue
            try:
                elem = ds[tag]  # implicit VR files learn the VR here
                if elem.VR in _BINARY_VRS and _length(elem) > BULK_THRESHOLD:
                    out[key] = {"vr": elem.VR, "BulkDataURI": uri + key}
                    continue
                out[key] = elem.to_json_dict(None, 2**62)
            except Exception as exc:  # a value pydicom cannot encode: leave it out, say so
                LOGGER.info("metadata of %s: %s left out: %s", instance.sop_uid, key, exc)
        if "Rows" in ds:
            vr = "OB" if UID(instance.transfer_syntax).is_compressed or int(ds.get("BitsAllocated", 8)) <= 8 else "OW"
            out["7FE00010"] = {"vr": vr, "BulkDataURI": uri + "7FE00010"}
        return dict(sorted(out.items()))

    def bulkdata(self, instance: StoredInstance, tag: str) -> bytes:
        """The value of a top-level attribute of an instance (pixel data: the native or encapsulated bytes).

        Raises
        ------
        InvalidValue
            For a tag that is not 8 hex digits.
        NotFound
            When the instance has no such attribute.
        """
        if not re.fullmatch(r"[0-9A-Fa-f]{8}", tag):
            raise InvalidValue(f"bulk data {tag[:40]!r} is not a tag of 8 hex digits")
        data = self.read(instance)
        try:
            ds = codecs.as_dataset(memoryview(data)[codecs.dataset_offset(data) :], instance.transfer_syntax)
            elem = ds.get(Tag(int(tag, 16)))
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError(f"stored file cannot be parsed: {exc}") from exc
        if elem is None or elem.VR == "SQ":
            raise NotFound(f"instance {instance.sop_uid} has no bulk data {tag.upper()}")
        value = elem.value
        if isinstance(value, bytes):
            return value
        return str(value).encode("utf-8")

    def rendered(self, instance: StoredInstance, frame: int, window: Window | None, size: int, fmt: str) -> bytes:
        """A frame as a consumer image (JPEG or PNG), in the window asked for or the data set's.

        Raises
        ------
        InvalidValue
            For a frame other than the first (only the first frame is rendered).
        NotFound
            When the instance has no picture (no pixel data, pixels that cannot be decoded).
        """
        if frame != 1:
            raise InvalidValue("only the first frame is rendered; retrieve other frames with /frames/{n}")
        try:
            picture = render(self.app.file_path(instance), window)
        except ValueError as exc:
            raise NotFound(f"instance {instance.sop_uid} has no picture: {exc}") from None
        image = picture.image
        if max(image.size) > size:
            image = image.copy()
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if fmt == "png":
            image.save(out, "PNG")
        else:
            image.save(out, "JPEG", quality=90)
        return out.getvalue()

    # -- STOW-RS ----------------------------------------------------------------------------------

    def store(
        self, parts: Iterable[bytes | memoryview], study_uid: str | None, base_url: str, who: str = "DICOMWEB"
    ) -> StowResult:
        """Store the Part 10 files of a STOW-RS request, each through the C-STORE path.

        Parameters
        ----------
        parts : iterable of bytes
            The bodies of the request's parts.
        study_uid : str, optional
            The study of ``POST /studies/{study}``: instances of other studies are refused.
        base_url : str
            Base of the RetrieveURLs in the answer.
        who : str
            Written as the source of the instances (log, index).

        Returns
        -------
        StowResult
            What was stored and what failed, with reasons.
        """
        result = StowResult()
        ae = self.app.config.dicom.ae_title
        association = f"stow-{uuid.uuid4().hex}"
        checked = [_incoming(part, number, study_uid) for number, part in enumerate(parts, start=1)]
        incoming = [(number, c) for number, c in enumerate(checked, start=1) if isinstance(c, Incoming)]
        try:
            # Every file is written and flushed (several at a time: their flushes overlap), then all are indexed
            # in one transaction: durable before the answer, with one flush of the index for the request.
            outcomes = self.app.store_batch([c for _, c in incoming], who, ae, association, threads=STOW_THREADS)
        finally:
            self.app.association_ended(ae, association, released=True)
        done: dict[int, Stored | Failure] = {}
        for (number, item), outcome in zip(incoming, outcomes, strict=True):
            done[number] = _outcome(outcome, item, number, base_url, who)
        for number, c in enumerate(checked, start=1):
            answer = c if isinstance(c, Failure) else done[number]
            if isinstance(answer, Stored):
                result.stored.append(answer)
            else:
                result.failed.append(answer)
        return result


def _incoming(part: bytes | memoryview, number: int, study_uid: str | None) -> Incoming | Failure:
    """A STOW-RS part as a data set to store, or why it is refused (its file meta read once, no copy of it)."""
    if part[128:132] != b"DICM" and part[:2] == b"\x02\x00":
        # A file meta group without preamble and prefix (pydicom's dcmwrite of a data set that has no
        # preamble writes that, and dicomweb-client sends it so): accepted as the file it stands for.
        part = b"\x00" * 128 + b"DICM" + part
    try:
        start = codecs.dataset_offset(part)
        uids = codecs.file_meta_uids(part[:start])
        if uids is None:  # an unusual meta group: pydicom reads it, or says what is wrong with it
            meta = dcmread(io.BytesIO(part[:start]), stop_before_pixels=True).file_meta
            uids = (
                str(meta.TransferSyntaxUID),
                str(meta.MediaStorageSOPClassUID),
                str(meta.MediaStorageSOPInstanceUID),
            )
        ts, sop_class, sop_uid = uids
    except Exception as exc:
        LOGGER.warning("STOW-RS part %d is not a DICOM Part 10 file: %s", number, exc)
        return Failure("", "", FAIL_NOT_DICOM, f"part {number} is not a DICOM Part 10 file")
    if not UID(ts).is_transfer_syntax:
        return Failure(sop_class, sop_uid, FAIL_NOT_DICOM, f"part {number}: unknown transfer syntax {ts}")
    if study_uid is not None:
        try:
            header = dcmread(io.BytesIO(part), stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            found = str(header.get("StudyInstanceUID", ""))
        except Exception as exc:
            return Failure(sop_class, sop_uid, FAIL_NOT_DICOM, f"part {number} cannot be parsed: {exc}")
        if found != study_uid:
            return Failure(
                sop_class,
                sop_uid,
                FAIL_STUDY_MISMATCH,
                f"part {number} belongs to study {found or '(none)'}, not {study_uid}",
            )
    return Incoming(memoryview(part)[start:], ts, sop_class, sop_uid)


def _outcome(
    outcome: StoreResult | Exception, item: Incoming, number: int, base_url: str, who: str
) -> Stored | Failure:
    """What the answer says of a stored part."""
    if isinstance(outcome, InvalidDataset):
        return Failure(item.sop_class_uid, item.sop_instance_uid, FAIL_NOT_DICOM, f"part {number}: {outcome}")
    if isinstance(outcome, OutOfResources):
        return Failure(item.sop_class_uid, item.sop_instance_uid, FAIL_OUT_OF_RESOURCES, str(outcome))
    if isinstance(outcome, Exception):
        LOGGER.error(
            "STOW-RS part %d (%s) from %s could not be stored: %s", number, item.sop_instance_uid, who, outcome
        )
        return Failure(
            item.sop_class_uid, item.sop_instance_uid, FAIL_PROCESSING, str(outcome) or type(outcome).__name__
        )
    rec = outcome.record
    url = f"{base_url}/studies/{rec.study_uid}/series/{rec.series_uid}/instances/{rec.sop_uid}"
    return Stored(
        rec.sop_class_uid or item.sop_class_uid,
        rec.sop_uid,
        url,
        rec.study_uid,
        outcome.outcome is StoreOutcome.DUPLICATE,
    )


@dataclass(frozen=True)
class Stored:
    """An instance a STOW-RS request stored (or already had: ``duplicate``)."""

    sop_class_uid: str
    sop_uid: str
    url: str
    study_uid: str
    duplicate: bool


@dataclass(frozen=True)
class Failure:
    """A part a STOW-RS request could not store, with the PS3.18 failure reason and a readable one."""

    sop_class_uid: str
    sop_uid: str
    reason: int
    text: str


@dataclass
class StowResult:
    """What one STOW-RS request did."""

    stored: list[Stored] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    def response(self, base_url: str, study_uid: str | None = None) -> dict[str, Any]:
        """The Store Instances Response Module (PS3.18 10.5.3) in DICOM JSON."""
        out: dict[str, Any] = {}
        studies = {s.study_uid for s in self.stored}
        study = study_uid or (next(iter(studies)) if len(studies) == 1 else "")
        if study:
            out["00081190"] = {"vr": "UR", "Value": [f"{base_url}/studies/{study}"]}
        if self.failed:
            out["00081198"] = {
                "vr": "SQ",
                "Value": [_item(f.sop_class_uid, f.sop_uid, reason=f.reason) for f in self.failed],
            }
        if self.stored:
            out["00081199"] = {"vr": "SQ", "Value": [_item(s.sop_class_uid, s.sop_uid, url=s.url) for s in self.stored]}
        return out

    @property
    def status(self) -> int:
        """200 when every part was stored, 202 when some were, 409 when none was."""
        if not self.failed:
            return 200
        return 202 if self.stored else 409


def _item(sop_class: str, sop_uid: str, reason: int | None = None, url: str = "") -> dict[str, Any]:
    item: dict[str, Any] = {}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_uid:
        item["00081155"] = {"vr": "UI", "Value": [sop_uid]}
    if url:
        item["00081190"] = {"vr": "UR", "Value": [url]}
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    return item


def _length(elem: Any) -> int:
    """The length of a binary value without reading a deferred one."""
    if isinstance(elem, DataElement):
        return len(elem.value) if isinstance(elem.value, bytes) else 0
    return int(getattr(elem, "length", 0) or 0)
