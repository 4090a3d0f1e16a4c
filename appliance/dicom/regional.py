"""C-FIND and C-MOVE to the regional PACS of ``[forwarding]``, for the extended search.

The :class:`~appliance.forwarding.search.Regional` of :mod:`appliance.forwarding.search`: one
association per query, every wait bounded by ``dicom_timeout_ms`` (the TCP connect by
``tcp_timeout_ms``), TLS with the ``[tls]`` client certificate when ``[forwarding] tls`` is on.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from appliance.config import ForwardingConfig
from appliance.core import IMPLEMENTATION_VERSION

#: C-MOVE final statuses that mean every sub-operation went well or some did.
_MOVE_DONE = (0x0000, 0xB000)


class DicomRegional:
    """Queries the regional server as ``our_ae``.

    Parameters
    ----------
    config : ForwardingConfig
        The regional server and the timeouts.
    our_ae : str
        Our AE title (calling AE, and the C-MOVE destination).
    client_tls : callable, optional
        Makes the client TLS context when ``[forwarding] tls`` is on.
    """

    def __init__(
        self, config: ForwardingConfig, our_ae: str, client_tls: Callable[[], ssl.SSLContext] | None = None
    ) -> None:
        self.config = config
        self.our_ae = our_ae
        self.client_tls = client_tls

    def _associate(self, context: str) -> Any:
        cfg = self.config
        ae = AE(ae_title=self.our_ae)
        ae.implementation_version_name = IMPLEMENTATION_VERSION
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.dicom_timeout_ms / 1000
        ae.connection_timeout = cfg.tcp_timeout_ms / 1000
        ae.add_requested_context(context)
        tls_args = None
        if cfg.tls:
            if self.client_tls is None:
                raise ConnectionError("[forwarding] tls needs the [tls] settings")
            tls_args = (self.client_tls(), cfg.host)
        assoc = ae.associate(cfg.host, cfg.port, ae_title=cfg.ae_title, tls_args=tls_args)
        if not assoc.is_established:
            why = "rejected the association" if assoc.is_rejected else "did not answer the association request"
            raise ConnectionError(f"{cfg.ae_title}@{cfg.host}:{cfg.port} {why}")
        return assoc

    def find(self, identifier: Dataset) -> list[Dataset]:
        """C-FIND ``identifier`` (Study Root; Patient Root at PATIENT level); every answer.

        Raises
        ------
        ConnectionError
            No association, the peer went silent or aborted, or it ended the query with a failure.
        """
        level = str(identifier.get("QueryRetrieveLevel", "")).upper()
        model = (
            PatientRootQueryRetrieveInformationModelFind
            if level == "PATIENT"
            else StudyRootQueryRetrieveInformationModelFind
        )
        assoc = self._associate(model)
        answers: list[Dataset] = []
        try:
            for rsp, ds in assoc.send_c_find(identifier, model):
                code = rsp.get("Status") if rsp is not None else None
                if code is None:
                    raise ConnectionError(
                        f"{self.config.ae_title} aborted or stopped answering the C-FIND (does it know our AE title?)"
                    )
                if code in (0xFF00, 0xFF01):
                    if ds is not None:
                        answers.append(ds)
                elif code != 0x0000:
                    raise ConnectionError(f"{self.config.ae_title} ended the C-FIND with 0x{int(code):04X}")
        finally:
            if assoc.is_established:
                assoc.release()
        return answers

    def move(self, identifier: Dataset) -> int:
        """C-MOVE what ``identifier`` names from the regional server to us; the number of instances moved.

        Raises
        ------
        ConnectionError
            No association, the peer went silent, or the move failed altogether.
        """
        model = StudyRootQueryRetrieveInformationModelMove
        assoc = self._associate(model)
        moved = 0
        code = None
        try:
            for rsp, _ in assoc.send_c_move(identifier, self.our_ae, model):
                code = rsp.get("Status") if rsp is not None else None
                if code is None:
                    raise ConnectionError(
                        f"{self.config.ae_title} aborted or stopped answering the C-MOVE (does it know our AE title?)"
                    )
                moved = int(rsp.get("NumberOfCompletedSuboperations", moved))
        finally:
            if assoc.is_established:
                assoc.release()
        if code not in _MOVE_DONE:
            raise ConnectionError(
                f"{self.config.ae_title} ended the C-MOVE to {self.our_ae} with 0x{int(code or 0):04X}"
            )
        return moved
