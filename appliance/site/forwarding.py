"""Forwarding to the regional PACS, for the front desk: the queue's state and buttons, and the extended search.

The room of the forwarding page and of what the study list shows of forwarding. The queue lives in the database
(:class:`~appliance.forwarding.queue.ForwardQueue`); the running worker picks up a retry or a restart at its next
look at the queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from appliance.core import Appliance
from appliance.forwarding.queue import ForwardQueue, QueueStatus
from appliance.site.catalog import StudyQuery


def _wildcard(value: str) -> str:
    """The study list's matching (from the start; a leading * anywhere) as a DICOM wildcard value."""
    value = value.strip()
    return "" if not value else value if value.endswith("*") else value + "*"


class Forwarding:
    """The forwarding queue and the extended search of the regional PACS.

    Parameters
    ----------
    appliance : Appliance
        The core (database, index, and its extended search when ``[forwarding] extended_search`` is on).
    """

    def __init__(self, appliance: Appliance) -> None:
        self.app = appliance
        self.queue = ForwardQueue(appliance.db)

    def status(self) -> QueueStatus:
        """Instances and series per state, the oldest waiting, the last error."""
        return self.queue.status()

    def retry_failed(self) -> int:
        """Try every failed instance now; how many."""
        return self.queue.retry_failed()

    def restart(self) -> int:
        """Queue every stored instance again (the regional server gets everything anew); how many."""
        return self.queue.restart()

    def study_states(self, study_uids: Iterable[str]) -> dict[str, str]:
        """The forwarding state of each of these studies that has one."""
        return self.queue.study_states(study_uids)

    def regional_studies(self, q: StudyQuery) -> tuple[list[dict[str, Any]], str] | None:
        """Studies only the regional PACS holds that match the staff search, with a warning when it did not answer.

        Returns
        -------
        tuple or None
            (rows for the study list, warning); None when the extended search is off.
        """
        search = self.app.extended_search
        if search is None:
            return None
        dates = f"{q.date_from}-{q.date_to}" if q.date_from or q.date_to else ""
        criteria = {
            "PatientName": _wildcard(q.name.upper()),
            "PatientID": _wildcard(q.patient_id),
            "AccessionNumber": _wildcard(q.accession),
            "ModalitiesInStudy": q.modality.strip().upper(),
            "StudyDate": dates,
            "PatientBirthDate": q.birth_date,
        }
        return search.studies(criteria, lambda uid: self.app.index.holds("STUDY", uid))
