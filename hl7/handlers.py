"""HL7 message handlers: decode and parse, call the worklist once, build the ACK.

Handlers are bound as data in :data:`HANDLERS` by (MSH-9.1, MSH-9.2). One guard,
:meth:`MessageProcessor.process`, turns every failure into an ACK and logs it:

* ``AA`` - the message was applied;
* ``AE`` + ERR - the content is wrong (missing or malformed field, unknown order
  control, incomplete worklist item, merged patient ID, bytes not valid in the
  message's character set); nothing was changed;
* ``AR`` + ERR - not HL7 (no MSH), unsupported message type (200) or event (201),
  sender not accepted (103), message too large or an internal error (207; when the
  database cannot be written, the ERR text says why, e.g. that it is read-only, or its disk has less free
  space than ``[hl7] free_space_limit_mb``).

Every message and its ACK go to the log file and the database message log. Values quoted in ACK texts and
log lines are cut (:func:`appliance.log.clip`), and the message log keeps at most ``[hl7] log_message_kb`` of
each message, so that a huge field is not repeated whole.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import HL7Config
from appliance.core import Appliance
from appliance.db import describe
from appliance.errors import (
    IncompleteItem,
    InvalidItem,
    PatientMismatch,
    StepCompleted,
    UnknownPatient,
    WorklistError,
)
from appliance.log import clip
from appliance.worklist.store import SpsStatus
from hl7.ack import AckError, build_ack
from hl7.er7 import ER7Error, Message, decode, msh_field, parse
from hl7.mapping import MappingError, field_of, map_order, map_patient_update
from hl7.mllp import Oversize

LOGGER = logging.getLogger("hl7")


@dataclass(frozen=True)
class Outcome:
    """What a handler reports: ACK code, error, and a line for the log."""

    code: str
    error: AckError | None = None
    summary: str = ""
    #: Applied, but something the sender or the staff should know (logged as a warning).
    warning: str = ""


Handler = Callable[[Message, Appliance, HL7Config], Outcome]


def handle_order(msg: Message, app: Appliance, cfg: HL7Config) -> Outcome:
    """ORM^O01 / OMI^O23: create, update, cancel, discontinue or complete worklist steps.

    Returns
    -------
    Outcome
        AA; errors are raised (:class:`MappingError`, :class:`WorklistError`) and
        turned into AE by the guard.
    """
    orders = map_order(msg, cfg)
    result = app.worklist.apply_orders(orders)
    # Only a scheduling order says where a step is to be done; cancels need no station.
    stationless = [
        f"{s.sps_id} ({s.attrs.get('Modality') or 'no modality'})"
        for o in orders
        for s in o.steps
        if s.status == SpsStatus.SCHEDULED and not s.attrs.get("ScheduledStationAETitle")
    ]
    warning = ""
    if stationless:
        warning = (
            f"no Scheduled Station AE Title for step(s) {', '.join(stationless)}: stored with an empty "
            "station, found only by queries without a station key (set [hl7] station_aets or "
            "default_station_aet)"
        )
    return Outcome("AA", summary=result.summary(), warning=warning)


def handle_patient(msg: Message, app: Appliance, cfg: HL7Config) -> Outcome:
    """ADT^A08 / A31 (update) and ADT^A40 (merge): change every open item of the patient.

    A patient (for A40: a prior patient ID) without worklist items gets AA with
    "Nothing to update" in MSA-3, or AE 204 when ``[hl7] unknown_patient = "reject"``.
    """
    update = map_patient_update(msg)
    result = app.worklist.update_patient(update, unknown_is_error=cfg.unknown_patient == "reject")
    merged = f" ({update.merged.patient_id} merged in)" if update.merged else ""
    summary = f"{result.changed} item(s) of patient {update.patient.patient_id} updated{merged}"
    if not result.known:
        who = (
            f"prior patient ID {update.merged.patient_id}"
            if update.merged
            else f"patient ID {update.patient.patient_id}"
        )
        return Outcome("AA", AckError(0, "", f"Nothing to update: {who} has no worklist item"), summary)
    return Outcome("AA", summary=summary)


#: (MSH-9.1, MSH-9.2) -> handler.
HANDLERS: dict[tuple[str, str], Handler] = {
    ("ORM", "O01"): handle_order,
    ("OMI", "O23"): handle_order,
    ("ADT", "A08"): handle_patient,
    ("ADT", "A31"): handle_patient,
    ("ADT", "A40"): handle_patient,
}
_KNOWN_TYPES = {t for t, _ in HANDLERS}

#: Worklist errors -> (HL7 error code, default location).
_WORKLIST_CODES: dict[type[WorklistError], int] = {
    IncompleteItem: 101,
    InvalidItem: 102,
    UnknownPatient: 204,
    PatientMismatch: 205,
    StepCompleted: 206,
}


class MessageProcessor:
    """Turns MLLP frames into ACKs; the one place where HL7 failures are contained.

    Parameters
    ----------
    app : Appliance
        The core.
    cfg : HL7Config
        The ``[hl7]`` settings.
    """

    def __init__(self, app: Appliance, cfg: HL7Config) -> None:
        self.app = app
        self.cfg = cfg
        self.handlers = dict(HANDLERS)
        self.accepted = {s.strip().upper() for s in cfg.accepted_senders if s.strip()}
        self.db_dir = app.db.path.parent

    def disk_too_full(self) -> str:
        """Why the database's disk takes no more messages (less free space than the limit), or ``""``."""
        try:
            free = shutil.disk_usage(self.db_dir).free
        except OSError:
            return ""
        limit = self.cfg.free_space_limit_mb * 1024 * 1024
        if free >= limit:
            return ""
        return (
            f"the database disk has {free // (1024 * 1024)} MB free, limit is {self.cfg.free_space_limit_mb} MB;"
            " send again later"
        )

    def __call__(self, payload: bytes | Oversize, peer: str) -> bytes | None:
        """Process one frame; return the ACK bytes, or None when ACKs are off."""
        raw = payload.head if isinstance(payload, Oversize) else payload
        msg: Message | None = None
        codec = "ascii"
        if isinstance(payload, Oversize):
            msg = _header_only(raw)
            outcome = Outcome(
                "AR",
                AckError(207, "", f"Message too large ({payload.size} bytes, limit {self.cfg.max_message_kb} KiB)"),
            )
        else:
            try:
                text, charset = decode(raw, self.cfg.default_charset)
                codec = charset.codec
                msg = parse(text, charset)
                full = self.disk_too_full()
                outcome = (
                    Outcome("AR", AckError(207, "", f"Application internal error: {full}"))
                    if full
                    else self.process(msg)
                )
            except ER7Error as exc:
                # Undecodable text is wrong content (AE); no MSH at all is not HL7 (AR).
                outcome = Outcome("AR" if exc.code == 100 else "AE", AckError(exc.code, exc.location, str(exc)))
                msg = msg or _header_only(raw)
        ack = build_ack(outcome.code, msg, self.cfg.sending_application, self.cfg.sending_facility, outcome.error)
        self._log(peer, msg, raw, outcome, ack)
        if not self.cfg.send_ack:
            return None
        return ack.encode(codec, "replace")

    def process(self, msg: Message) -> Outcome:
        """Run the handler of a parsed message inside the guard."""
        kind, event = msg.message_type
        if self.accepted:
            sender = msg.msh.text(3).upper()
            facility = msg.msh.text(4).upper()
            if sender not in self.accepted and f"{sender}|{facility}" not in self.accepted:
                return Outcome(
                    "AR",
                    AckError(
                        103,
                        "MSH^1^3^1^1",
                        f"Table value not found: sending application {sender}|{facility} is not accepted",
                    ),
                )
        handler = self.handlers.get((kind, event))
        if handler is None:
            if kind in _KNOWN_TYPES:
                return Outcome("AR", AckError(201, "MSH^1^9^1^2", f"Unsupported event code {kind}^{event}"))
            return Outcome("AR", AckError(200, "MSH^1^9^1^1", f"Unsupported message type {kind}^{event}"))
        omi = kind == "OMI"
        try:
            return handler(msg, self.app, self.cfg)
        except MappingError as exc:
            return Outcome("AE", AckError(exc.code, exc.location, str(exc)))
        except WorklistError as exc:
            code = next((c for t, c in _WORKLIST_CODES.items() if isinstance(exc, t)), 207)
            location = field_of(exc.attribute, omi)
            if isinstance(exc, UnknownPatient) and kind == "ADT":
                location = "MRG^1^1^1^1" if exc.attribute == "OtherPatientIDs" else "PID^1^3^1^1"
            elif isinstance(exc, StepCompleted):
                location = "ORC^1^1^1^1"
            return Outcome("AE", AckError(code, location, str(exc)))
        except sqlite3.Error as exc:  # read-only, locked or full database: the sender should retry later
            LOGGER.error("HL7 %s^%s %s could not be applied: %s", kind, event, clip(msg.control_id, 64), describe(exc))
            return Outcome("AR", AckError(207, "", f"Application internal error: {describe(exc)}"))
        except Exception as exc:
            LOGGER.exception("HL7 %s^%s %s could not be processed", kind, event, clip(msg.control_id, 64))
            return Outcome("AR", AckError(207, "", f"Application internal error: {type(exc).__name__}"))

    def _log(self, peer: str, msg: Message | None, raw: bytes, outcome: Outcome, ack: str) -> None:
        kind = clip("^".join(msg.message_type), 40) if msg is not None else "?"
        control = clip(msg.control_id, 64) if msg is not None else ""
        error = outcome.error.text if outcome.error else ""
        if outcome.code == "AA" and outcome.warning:
            error = clip(outcome.warning, 500)
            LOGGER.warning("HL7 %s %s from %s: AA, %s; %s", kind, control, peer, clip(outcome.summary, 500), error)
        elif outcome.code == "AA":
            LOGGER.info(
                "HL7 %s %s from %s: AA, %s%s",
                kind,
                control,
                peer,
                clip(outcome.summary, 500),
                f" ({error})" if error else "",
            )
        else:
            LOGGER.warning(
                "HL7 %s %s from %s: %s, %s%s",
                kind,
                control,
                peer,
                outcome.code,
                error,
                f" ({outcome.error.location})" if outcome.error and outcome.error.location else "",
            )
        cap = self.cfg.log_message_kb * 1024
        if len(raw) > cap:
            raw = raw[:cap] + f"\r[... {len(raw) - cap} more bytes not kept]".encode("ascii")
        if self.disk_too_full():
            return  # the log line above is all that is kept
        try:
            self.app.hl7_log.record(peer, kind, control, outcome.code, error, raw, ack)
        except sqlite3.Error as exc:
            LOGGER.error("HL7 message %s could not be written to the message log: %s", control, describe(exc))
        except Exception:
            LOGGER.exception("HL7 message %s could not be written to the message log", control)


def _header_only(raw: bytes) -> Message | None:
    """The MSH of a message that cannot be decoded or parsed, to address the ACK (MSH is ASCII)."""
    if not msh_field(raw, 9):
        return None
    start = raw.find(b"MSH")
    end = min([i for i in (raw.find(b"\r", start), raw.find(b"\n", start)) if i >= 0] or [len(raw)])
    try:
        return parse(raw[start:end].decode("ascii", "replace"))
    except ER7Error:
        return None
