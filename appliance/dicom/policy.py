"""The association policy: who may associate, under which called AE title, and for which services.

One object decides for both acceptors (pynetdicom's, through :class:`appliance.dicom.compat.PolicyACSE`,
and the fast path, :meth:`appliance.dicom.fast.association.FastAssociation.negotiate`), so a request is
judged the same whichever path serves it.

pynetdicom checks one called AE title; we answer to ``AET`` and its burn forms (``_E``, ``_P``,
``_TE``, ``_TP``), refuse unknown calling AEs when ``accept_any_ae = false`` (A-ASSOCIATE-RJ 1/1/3),
unknown called AEs (1/1/7), associations beyond ``max_associations`` (2/3/2), and reject the
query/retrieve contexts of the services a known node has no right to (user rejection), so its
C-FIND/C-MOVE/C-GET is refused at negotiation.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

#: Storage Commitment Push Model SOP Class.
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"

if TYPE_CHECKING:
    from appliance.core import Appliance

LOGGER = logging.getLogger("appliance.dicom")

#: Query/retrieve SOP classes and the right a known node needs to use them.
RIGHTS = {
    PatientRootQueryRetrieveInformationModelFind: "find",
    StudyRootQueryRetrieveInformationModelFind: "find",
    PatientRootQueryRetrieveInformationModelMove: "move",
    StudyRootQueryRetrieveInformationModelMove: "move",
    PatientRootQueryRetrieveInformationModelGet: "get",
    StudyRootQueryRetrieveInformationModelGet: "get",
    ModalityWorklistInformationFind: "mwl",
    ModalityPerformedProcedureStep: "mwl",
    STORAGE_COMMITMENT: "commit",
}

#: A-ASSOCIATE-RJ (result, source, reason/diagnostic).
RejectReason = tuple[int, int, int]
CALLING_AE_NOT_RECOGNISED: RejectReason = (0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNISED: RejectReason = (0x01, 0x01, 0x07)
LOCAL_LIMIT_EXCEEDED: RejectReason = (0x02, 0x03, 0x02)


class AssociationPolicy:
    """The appliance's association policy.

    Parameters
    ----------
    app : Appliance
        The core: known nodes, their rights, our AE titles.
    """

    def __init__(self, app: Appliance) -> None:
        self.app = app

    def refusal(self, calling: str, called: str) -> RejectReason | None:
        """Why an A-ASSOCIATE-RQ from ``calling`` to ``called`` is rejected (None: it is not).

        The association limit is the acceptor's to check (it knows what is open).
        """
        if not self.app.may_associate(calling):
            return CALLING_AE_NOT_RECOGNISED
        if called not in self.app.ae_titles():
            return CALLED_AE_NOT_RECOGNISED
        return None

    def log_rejection(self, reason: RejectReason, calling: str, called: str, peer: str) -> None:
        """The one log line of a rejected association."""
        if reason == CALLING_AE_NOT_RECOGNISED:
            LOGGER.warning("association from %s (%s) rejected: calling AE not known", calling, peer)
        elif reason == CALLED_AE_NOT_RECOGNISED:
            LOGGER.warning(
                "association from %s (%s) rejected: called AE %r is not ours (%s)",
                calling,
                peer,
                called,
                ", ".join(sorted(self.app.ae_titles())),
            )
        else:
            LOGGER.warning(
                "association from %s (%s) rejected: local limit exceeded (%d associations open)",
                calling,
                peer,
                self.app.config.dicom.max_associations,
            )

    def denied(self, calling: str) -> set[str]:
        """The SOP Class UIDs whose contexts ``calling`` is refused (the rights it lacks)."""
        return {str(uid) for uid, right in RIGHTS.items() if not self.app.may(calling, right)}

    def log_denied(self, calling: str, denied: set[str]) -> None:
        """The log line of an accepted association whose services were restricted."""
        if denied:
            LOGGER.info(
                "association from %s: %d query/retrieve service(s) not permitted, their contexts are rejected",
                calling,
                len(denied),
            )
