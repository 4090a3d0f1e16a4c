"""Per-service rights at association negotiation: the SOP classes a calling AE's contexts are refused for.

A known node without the find, move, get or mwl right has the contexts of those services rejected
(user rejection) when it associates, so its C-FIND/C-MOVE/C-GET is refused before any request.
Both acceptors (pynetdicom's, through :class:`appliance.dicom.server.PolicyACSE`, and the fast
path) apply it from here.
"""

from __future__ import annotations

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

if TYPE_CHECKING:
    from appliance.core import Appliance

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
}


def denied_classes(app: Appliance, calling: str) -> set[str]:
    """The SOP Class UIDs whose contexts ``calling`` is refused (the rights it lacks).

    Parameters
    ----------
    app : Appliance
        The core (known nodes and their rights).
    calling : str
        The calling AE title.
    """
    return {str(uid) for uid, right in RIGHTS.items() if not app.may(calling, right)}
