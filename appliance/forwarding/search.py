"""Extended search: C-FIND and the staff study list also ask the regional PACS; what only it holds is fetched.

With ``[forwarding] extended_search = true`` a query is sent to the regional server at the same time as it
is answered locally. The answers are merged with one answer per entity (Patient ID, Study, Series or SOP
Instance UID, by query level): what is held locally is answered from the local index (its counts win), and
what only the regional server holds follows, with the appliance as its Retrieve AE Title (and
``NEARLINE`` availability when asked), so a workstation retrieves it from us. A C-MOVE or C-GET that finds
nothing locally first moves it from the regional server to us (C-MOVE with our AE title as destination),
then passes it on. A regional server that is down, refuses or stays silent costs at most
``dicom_timeout_ms``: the local answers stand, with a warning in the log (and on the staff page).

DICOM itself is :mod:`appliance.dicom.regional`'s; this module holds the decisions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pydicom.dataset import Dataset

LOGGER = logging.getLogger("appliance.forwarding")

#: The attribute that names one entity at each query level.
UID_KEYWORDS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
UID_TAGS = {"PATIENT": 0x00100020, "STUDY": 0x0020000D, "SERIES": 0x0020000E, "IMAGE": 0x00080018}
_RETRIEVE_AE = 0x00080054
_AVAILABILITY = 0x00080056
_LEVEL = 0x00080052
_CHARSET = 0x00080005


class Regional(Protocol):
    """The regional server's query services (DICOM: :class:`appliance.dicom.regional.DicomRegional`)."""

    def find(self, identifier: Dataset) -> list[Dataset]:
        """Every answer to a C-FIND; raises ConnectionError when the query fails."""
        ...

    def move(self, identifier: Dataset) -> int:
        """C-MOVE to us; the number of instances moved. Raises ConnectionError when it fails."""
        ...


class Pending:
    """A regional C-FIND under way (in its own thread), started before the local answers are made."""

    def __init__(self, search: ExtendedSearch, identifier: Dataset, level: str) -> None:
        self.search = search
        self.level = level
        self.identifier = identifier
        self.warning = ""
        self._answers: list[Dataset] = []
        self._error: BaseException | None = None
        self._deadline = time.monotonic() + search.timeout
        self._thread = threading.Thread(target=self._run, name="regional-find", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._answers = self.search.regional.find(self.identifier)
        except Exception as exc:  # the regional server down, refusing, silent: local answers stand
            self._error = exc

    def extra(self, held: Iterable[str], holds: Callable[[str], bool] | None = None) -> list[Dataset]:
        """The regional answers for entities not in ``held`` (the local answers' UIDs), one per UID.

        ``holds`` says whether a UID is held here, for when the local answers do not carry it.

        Waits at most until ``dicom_timeout_ms`` after the query started; on a failure or timeout logs a
        warning, sets :attr:`warning` and returns nothing.
        """
        self._thread.join(max(0.0, self._deadline - time.monotonic()))
        cfg = self.search
        if self._thread.is_alive():
            self._error = TimeoutError(f"no complete answer within {cfg.timeout:g} s")
        if self._error is not None:
            self.warning = f"the regional server {cfg.regional_ae} did not answer ({self._error}); local results only"
            LOGGER.warning("extended search: %s", self.warning)
            return []
        seen = set(held)
        out: list[Dataset] = []
        keyword = UID_KEYWORDS.get(self.level, "")
        for answer in self._answers:
            uid = str(answer.get(keyword, "")).strip()
            if not uid or uid in seen or (holds is not None and holds(uid)):
                continue
            seen.add(uid)
            out.append(self.search.as_ours(answer, self.identifier))
        return out


class ExtendedSearch:
    """The extended search of ``[forwarding]``.

    Parameters
    ----------
    regional : Regional
        The regional server's C-FIND and C-MOVE.
    our_ae : str
        Our AE title (answers' Retrieve AE Title).
    regional_ae : str
        The regional server's AE title (its own queries to us are not sent back to it).
    timeout : float
        Seconds a regional query may take (``dicom_timeout_ms``).
    """

    def __init__(self, regional: Regional, our_ae: str, regional_ae: str, timeout: float) -> None:
        self.regional = regional
        self.our_ae = our_ae
        self.regional_ae = regional_ae
        self.timeout = timeout
        #: Told the SOP Instance UIDs fetched from the regional server (forwarding must not send them back).
        self.fetched_listeners: list[Callable[[list[str]], None]] = []

    def fetched(self, sop_uids: list[str]) -> None:
        """Instances that came from the regional server by :meth:`fetch`: tell the listeners."""
        for listener in self.fetched_listeners:
            try:
                listener(sop_uids)
            except Exception:
                LOGGER.exception("extended search: a fetched-instances listener failed")

    def applies(self, peer: str) -> bool:
        """Whether a query from ``peer`` is extended (not the regional server's own: no loop)."""
        return peer.strip() != self.regional_ae

    def start(self, identifier: Dataset, level: str) -> Pending | None:
        """Send the query to the regional server now (None at a level it does not apply to)."""
        if level not in UID_KEYWORDS:
            return None
        query = Dataset()
        query.update(identifier)
        if _CHARSET in query and not query[_CHARSET].value:
            del query[_CHARSET]
        # The entity's UID is needed to merge, even when the workstation did not ask for it.
        if UID_KEYWORDS[level] not in query:
            setattr(query, UID_KEYWORDS[level], "")
        return Pending(self, query, level)

    def as_ours(self, answer: Dataset, identifier: Dataset) -> Dataset:
        """A regional answer limited to the requested keys, retrievable from us."""
        out = Dataset()
        for elem in answer:
            if elem.tag in identifier or elem.tag in (_LEVEL, _CHARSET):
                out.add(elem)
        if _RETRIEVE_AE in identifier:
            out.RetrieveAETitle = self.our_ae
        if _AVAILABILITY in identifier:
            out.InstanceAvailability = "NEARLINE"
        return out

    def fetch(self, identifier: Dataset, level: str) -> int:
        """Move what a C-MOVE/C-GET identifier names from the regional server to us; how many came (0 on failure).

        Only the unique keys of the identifier travel (Study Root), so the regional server moves exactly that.
        """
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE" if level == "IMAGE" else level
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            value = identifier.get(keyword)
            if value:
                setattr(query, keyword, value)
        if level == "PATIENT" or "StudyInstanceUID" not in query:
            return 0  # Study Root needs the study: a patient-level move of a regional-only patient is not fetched
        try:
            moved = self.regional.move(query)
        except Exception as exc:
            LOGGER.warning(
                "extended search: fetching %s from the regional server %s failed: %s",
                level.lower(),
                self.regional_ae,
                exc,
            )
            return 0
        LOGGER.info("extended search: %d instance(s) fetched from the regional server %s", moved, self.regional_ae)
        return moved

    def studies(self, criteria: dict[str, str], holds: Callable[[str], bool]) -> tuple[list[dict[str, Any]], str]:
        """Studies only the regional server holds, matching the staff search form (rows for the study list).

        Parameters
        ----------
        criteria : dict
            DICOM matching values by keyword (PatientName, PatientID, AccessionNumber, ModalitiesInStudy,
            StudyDate, PatientBirthDate); empty values are return keys.
        holds : callable
            Whether a Study Instance UID is held here (such studies are not listed).

        Returns
        -------
        (rows, warning)
            One dict per regional-only study, and a warning ('' when the regional server answered).
        """
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        for keyword in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "ModalitiesInStudy",
            "StudyDescription",
            "StudyInstanceUID",
            "NumberOfStudyRelatedInstances",
        ):
            setattr(query, keyword, criteria.get(keyword, ""))
        pending = Pending(self, query, "STUDY")
        rows = []
        for answer in pending.extra((), holds):
            rows.append(
                {
                    "study_uid": str(answer.get("StudyInstanceUID", "")),
                    "patient_name": str(answer.get("PatientName", "")),
                    "patient_id": str(answer.get("PatientID", "")),
                    "birth_date": str(answer.get("PatientBirthDate", "")),
                    "study_date": str(answer.get("StudyDate", "")),
                    "modalities": "\\".join(_values(answer.get("ModalitiesInStudy"))),
                    "description": str(answer.get("StudyDescription", "")),
                    "accession": str(answer.get("AccessionNumber", "")),
                    "num_instances": str(answer.get("NumberOfStudyRelatedInstances", "")),
                }
            )
        return rows, pending.warning


def _values(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]
