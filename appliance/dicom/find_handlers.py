"""Thin pynetdicom handlers for the Modality Worklist (C-FIND) and MPPS (N-CREATE, N-SET).

pynetdicom binds one handler per intervention event, so :func:`handle_c_find`
sends Modality Worklist queries here and every other C-FIND to the Q/R handler
(:func:`find_responses`, which the fast path calls too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from appliance.core import Appliance
from appliance.dicom import guard, handlers, status
from appliance.query import Answer
from appliance.worklist.query import find_items
from appliance.worklist.store import from_dataset

LOGGER = logging.getLogger("appliance.dicom")


def handle_c_find(event: Event, app: Appliance) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """C-FIND: :func:`find_responses` with each answer as a data set.

    Yields
    ------
    (status, identifier)
        As :func:`handlers.find_answers <appliance.dicom.handlers.find_answers>` (Q/R) and
        :func:`mwl_answers` (Modality Worklist).
    """
    req: Any = event.request
    responses = find_responses(
        app,
        handlers.calling_ae(event),
        str(req.AffectedSOPClassUID),
        lambda: event.identifier,
        lambda: event.is_cancelled,
    )
    for result, answer in responses:
        yield result, answer.dataset() if isinstance(answer, Answer) else answer


def find_responses(
    app: Appliance, peer: str, sop_class: str, identifier: Callable[[], Dataset], cancelled: Callable[[], bool]
) -> Iterator[tuple[int | Dataset, Answer | Dataset | None]]:
    """Every C-FIND's decisions: Modality Worklist queries to :func:`mwl_answers`, the rest to Q/R.

    The one place that decides rights, statuses and log lines of a C-FIND, for pynetdicom's handler
    and the fast path (:mod:`appliance.dicom.fast.find`) alike.

    Parameters
    ----------
    app : Appliance
        The core that answers.
    peer : str
        The calling AE title.
    sop_class : str
        The request's Affected SOP Class UID.
    identifier : callable
        Returns the decoded request identifier; may raise when it cannot be decoded.
    cancelled : callable
        Whether the peer has cancelled the request (asked before each answer).
    """
    if sop_class == ModalityWorklistInformationFind:
        return mwl_answers(app, peer, identifier, cancelled)
    return handlers.find_answers(app, peer, identifier, cancelled)


def handle_mwl_find(event: Event, app: Appliance) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """Modality Worklist C-FIND (see :func:`mwl_answers`)."""
    return mwl_answers(app, handlers.calling_ae(event), lambda: event.identifier, lambda: event.is_cancelled)


def mwl_answers(
    app: Appliance, peer: str, identifier: Callable[[], Dataset], cancelled: Callable[[], bool]
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """Modality Worklist C-FIND: one pending answer per matching step.

    Parameters
    ----------
    app : Appliance
        The core that answers.
    peer : str
        The calling AE title.
    identifier : callable
        Returns the decoded request identifier; may raise when it cannot be decoded.
    cancelled : callable
        Whether the peer has cancelled the request (asked before each answer).

    Yields
    ------
    (status, identifier)
        0xFF00 with each answer; 0xFE00 when cancelled; 0x0124 when the calling AE
        has no mwl right; 0xC001 when the identifier cannot be decoded.
    """
    if not app.may(peer, "mwl"):
        LOGGER.error("worklist C-FIND from %s refused: node has no mwl right", peer)
        yield guard.refusal(status.NOT_AUTHORIZED, "calling AE has no mwl right"), None
        return
    try:
        answers = find_items(
            app.db.conn,
            identifier(),
            app.config.worklist.hidden_statuses,
            pn_ignore_case=app.config.worklist.pn_ignore_case,
        )
        count = 0
        for answer in answers:
            if cancelled():
                LOGGER.info("worklist C-FIND from %s cancelled after %d answers", peer, count)
                yield status.CANCEL, None
                return
            count += 1
            yield status.PENDING, answer
    except Exception as exc:
        yield guard.failure("MWL", exc, peer), None
        return
    level = logging.INFO if app.config.dicom.log_worklist_queries else logging.DEBUG
    LOGGER.log(level, "worklist C-FIND from %s: %d answer(s)", peer, count)


def handle_n_create(event: Event, app: Appliance) -> tuple[int | Dataset, Dataset | None]:
    """MPPS N-CREATE: record the step IN PROGRESS and start the linked worklist steps.

    Returns
    -------
    (status, attribute list)
        0x0000 created; 0x0111 duplicate SOP Instance; 0x0120 Performed Procedure
        Step Status missing; 0x0106 not IN PROGRESS; 0x0124 no mwl right; 0x0118
        not an MPPS SOP class; 0x0110 any other failure.
    """
    req: Any = event.request  # N-CREATE primitive

    def create(peer: str) -> Dataset:
        attrs = event.attribute_list
        app.mpps.create(str(req.AffectedSOPInstanceUID or ""), from_dataset(attrs), peer)
        return attrs

    return _mpps_request(event, app, "N-CREATE", str(req.AffectedSOPClassUID), create)


def handle_n_set(event: Event, app: Appliance) -> tuple[int | Dataset, Dataset | None]:
    """MPPS N-SET: change a step IN PROGRESS; COMPLETED/DISCONTINUED moves the linked worklist steps.

    Returns
    -------
    (status, modification list)
        0x0000 set; 0x0112 no such SOP Instance; 0x0110 (error ID 0xA710) no
        longer IN PROGRESS; 0x0106 invalid status; 0x0124 no mwl right; 0x0118 not
        an MPPS SOP class.
    """
    req: Any = event.request  # N-SET primitive

    def set_(peer: str) -> Dataset:
        mods = event.modification_list
        app.mpps.set(str(req.RequestedSOPInstanceUID), from_dataset(mods))
        return mods

    return _mpps_request(event, app, "N-SET", str(req.RequestedSOPClassUID), set_)


def _mpps_request(
    event: Event, app: Appliance, verb: str, sop_class: str, apply: Callable[[str], Dataset]
) -> tuple[int | Dataset, Dataset | None]:
    """The guard of N-CREATE and N-SET: the mwl right, the SOP Class, then ``apply(peer)`` with failures mapped.

    Returns
    -------
    (status, data set)
        0x0000 and what ``apply`` returned; 0x0124 no mwl right; 0x0118 not an MPPS SOP class; an
        :class:`~appliance.worklist.mpps.MppsError` as :data:`appliance.dicom.guard.TABLE` maps it; 0x0110 any
        other failure.
    """
    peer = handlers.calling_ae(event)
    if not app.may(peer, "mwl"):
        return status.NOT_AUTHORIZED, None
    if sop_class != _MPPS_CLASS:
        return 0x0118, None
    try:
        data = apply(peer)
    except Exception as exc:
        return guard.failure("MPPS", exc, peer, verb), None
    return status.SUCCESS, data


_MPPS_CLASS = "1.2.840.10008.3.1.2.3.3"
