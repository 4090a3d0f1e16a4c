"""C-MOVE and C-GET decisions, for pynetdicom's handlers and the fast path alike.

Which instances, which presentation contexts to propose (PS3.4 B.4.1 / C.4.2: one context per
stored transfer syntax, and one with Explicit and Implicit VR Little Endian, per SOP class), in which
transfer syntax each instance goes (:func:`appliance.codecs.choose`), the bytes to send, and the
final status from the sub-operation counts (PS3.4 C.4.2.1.5-6, C.4.3.1.4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from pydicom.dataset import Dataset

from appliance import codecs, conversion
from appliance.config import NodeConfig
from appliance.core import Appliance
from appliance.dicom import status
from appliance.errors import CodecError, NotFound
from appliance.index import StoredInstance

LOGGER = logging.getLogger("appliance.dicom")

#: An association carries at most 128 presentation contexts (context IDs are odd numbers 1-255).
MAX_CONTEXTS = 128
#: Sub-operation statuses that count as warnings (PS3.4 B.2.3: coercion, elements discarded, SOP class mismatch).
_WARNINGS = frozenset({0x0001, 0xB000, 0xB006, 0xB007})


def level(identifier: Dataset) -> str:
    """The request's Query/Retrieve Level, upper case ('' when absent)."""
    return str(identifier.get("QueryRetrieveLevel", "")).strip().upper()


def destination(app: Appliance, move_destination: str) -> NodeConfig:
    """The known node a C-MOVE sends to.

    Raises
    ------
    NotFound
        When it is not a known node with the move right (0xA801).
    """
    node = app.node(move_destination.strip())
    if node is None or not node.move:
        raise NotFound(f"move destination {move_destination.strip()!r} is not a known node with the move right")
    return node


def preferred(node: NodeConfig | None) -> str | None:
    """The transfer syntax UID a node prefers (None: as stored)."""
    return preferred_name(node.preferred_ts if node is not None else "")


def preferred_name(name: str) -> str | None:
    """The transfer syntax UID of a ``preferred_ts`` name (None for '' and "as-is": as stored)."""
    if not name:
        return None
    syntax = codecs.preferred_syntax(name)
    return str(syntax) if syntax is not None else None


class Sendable(Protocol):
    """What context planning needs of an instance (a stored one, or a file to import)."""

    @property
    def sop_class_uid(self) -> str: ...

    @property
    def transfer_syntax(self) -> str: ...


def store_contexts(instances: Iterable[Sendable], prefer: str | None = None) -> list[tuple[str, list[str]]]:
    """The presentation contexts to propose for sending ``instances`` (at most :data:`MAX_CONTEXTS`).

    Per SOP class: the node's preferred syntax (alone), each stored syntax (alone), then Explicit +
    Implicit VR Little Endian together, so a receiver that accepts only uncompressed data still gets
    every instance (decompressed), and one that accepts the stored syntax gets it unchanged. When the
    classes need more than 128 contexts, the uncompressed one of every class comes first.
    """
    stored: dict[str, list[str]] = {}
    for inst in instances:
        syntaxes = stored.setdefault(inst.sop_class_uid, [])
        if inst.transfer_syntax not in syntaxes:
            syntaxes.append(inst.transfer_syntax)
    plain = [str(ts) for ts in codecs.UNCOMPRESSED]
    essential = [(sop_class, plain) for sop_class in stored]
    extra: list[tuple[str, list[str]]] = []
    for sop_class, syntaxes in stored.items():
        own = [prefer] if prefer else []  # alone, also a plain one: the receiver then cannot pick the other
        own += [ts for ts in syntaxes if ts not in plain and ts not in own]
        extra += [(sop_class, [ts]) for ts in own]
    room = max(0, MAX_CONTEXTS - len(essential))
    chosen = essential[:MAX_CONTEXTS] + extra[:room]
    order = {sop_class: i for i, sop_class in enumerate(stored)}
    # Each class's own syntaxes before its uncompressed context: receivers that accept both pick as proposed.
    return sorted(chosen, key=lambda cx: (order[cx[0]], cx[1] == plain))


def payload(
    app: Appliance, inst: StoredInstance, accepted: Sequence[str], prefer: str | None = None
) -> tuple[str, bytes | memoryview]:
    """The transfer syntax and data set bytes to send ``inst`` in, given the syntaxes accepted for its class.

    A conversion runs in the conversion service's budgeted worker (:mod:`appliance.conversion`).

    Raises
    ------
    CodecError
        When no accepted syntax can carry it, or the file cannot be read or converted, or the conversion
        needed more memory or time than its budget (the reason says which); the caller fails that
        sub-operation.
    """
    syntax = target_syntax(inst, accepted, prefer)
    if syntax == inst.transfer_syntax:
        return syntax, _as_stored(app, inst)
    return _converted(app, inst, accepted, prefer, syntax, lambda: _convert(app, inst, syntax))


def _as_stored(app: Appliance, inst: StoredInstance) -> memoryview:
    data = codecs.read_stored(app.file_path(inst))
    return memoryview(data)[codecs.dataset_offset(data) :]


def _convert(app: Appliance, inst: StoredInstance, syntax: str) -> bytes:
    return conversion.convert(app.conversions, app.file_path(inst), syntax, f"converting instance {inst.sop_uid}")


def _converted(
    app: Appliance,
    inst: StoredInstance,
    accepted: Sequence[str],
    prefer: str | None,
    syntax: str,
    result: Callable[[], bytes],
) -> tuple[str, bytes | memoryview]:
    """``syntax`` and the bytes ``result`` converts ``inst`` to; when that is the node's preferred syntax and it
    cannot hold ``inst`` (a 16-bit CT in 8-bit JPEG Baseline), the receiver gets it as without a preference."""
    try:
        return syntax, result()
    except CodecError as exc:
        if not prefer or syntax != prefer:
            raise
        fallback = codecs.choose(inst.transfer_syntax, [ts for ts in accepted if ts != prefer])
        if fallback is None:
            raise CodecError(
                f"{inst.sop_uid} cannot be encoded in the preferred {prefer} and no other accepted syntax can carry it"
            ) from exc
    if fallback == inst.transfer_syntax:
        return fallback, _as_stored(app, inst)
    return fallback, _convert(app, inst, fallback)


def target_syntax(inst: StoredInstance, accepted: Sequence[str], prefer: str | None = None) -> str:
    """The transfer syntax ``inst`` goes in (:func:`appliance.codecs.choose`); CodecError when none fits."""
    syntax = codecs.choose(inst.transfer_syntax, accepted, prefer)
    if syntax is None:
        offered = ", ".join(accepted) or "none"
        raise CodecError(
            f"no accepted presentation context can carry {inst.transfer_syntax} (accepted for its SOP class: {offered})"
        )
    return syntax


class Payloads:
    """The payloads of one retrieve's instances in order, the next conversions running ahead.

    While instance *n* is sent, the conversions of the next instances that need one already run in
    the conversion service's workers (as many ahead as it has workers), so a retrieve that must
    decompress for its receiver uses every worker and the sending never waits for a decode that
    could have been done meanwhile.

    Parameters
    ----------
    app : Appliance
        The core (files, conversion service).
    instances : list of StoredInstance
        The retrieve's instances, in sending order.
    accepted : mapping
        SOP Class UID -> transfer syntaxes the receiver accepted for it.
    prefer : str, optional
        The receiver's preferred transfer syntax.
    """

    def __init__(
        self,
        app: Appliance,
        instances: Sequence[StoredInstance],
        accepted: Mapping[str, Sequence[str]],
        prefer: str | None = None,
    ) -> None:
        self.app = app
        self.instances = instances
        self.accepted = accepted
        self.prefer = prefer
        self.ahead = app.conversions.workers if app.conversions is not None else 0
        self._pending: dict[int, tuple[str, Future[bytes]]] = {}  # index -> (target syntax, its conversion)
        self._next = 0  # the first index not yet looked at for a conversion to start

    def get(self, index: int) -> tuple[str, bytes | memoryview]:
        """The transfer syntax and bytes of instance ``index`` (as :func:`payload`; CodecError likewise)."""
        inst = self.instances[index]
        self._start_until(index + 1 + self.ahead)
        accepted = self.accepted.get(inst.sop_class_uid, ())
        started = self._pending.pop(index, None)
        if started is None:
            return payload(self.app, inst, accepted, self.prefer)
        syntax, future = started
        return _converted(self.app, inst, accepted, self.prefer, syntax, future.result)

    def _start_until(self, end: int) -> None:
        end = min(end, len(self.instances))
        while self._next < end:
            index, self._next = self._next, self._next + 1
            inst = self.instances[index]
            try:
                syntax = target_syntax(inst, self.accepted.get(inst.sop_class_uid, ()), self.prefer)
            except CodecError:
                continue  # get() raises it for that instance
            if syntax != inst.transfer_syntax and self.app.conversions is not None:
                try:
                    future = self.app.conversions.submit(
                        self.app.file_path(inst), syntax, f"converting instance {inst.sop_uid}"
                    )
                    self._pending[index] = (syntax, future)
                except CodecError:
                    continue  # the service has stopped: get() converts it (and fails) on its own

    def close(self) -> None:
        """Drop the conversions not collected (a cancelled or cut-off retrieve)."""
        for _, future in self._pending.values():
            future.cancel()
        self._pending.clear()


@dataclass
class SubOperations:
    """The counts of a C-MOVE/C-GET's sub-operations and the UIDs that failed."""

    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        """Sub-operations not yet done."""
        return self.total - self.completed - self.failed - self.warning

    def record(self, sop_uid: str, code: int | None) -> None:
        """Count one sub-operation's C-STORE status (None: it could not be sent)."""
        if code == 0x0000:
            self.completed += 1
        elif code is not None and code in _WARNINGS:
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(sop_uid)

    def fail_rest(self, uids: Iterable[str]) -> None:
        """Count the sub-operations that will not be attempted (association lost) as failed."""
        for uid in uids:
            self.failed += 1
            self.failed_uids.append(uid)

    def final_status(self) -> int:
        """0x0000 all completed; 0xB000 some failed or warned; 0xA702 all failed (PS3.4 C.4.2.1.5)."""
        if self.failed and not (self.completed or self.warning):
            return 0xA702
        if self.failed or self.warning:
            return 0xB000
        return status.SUCCESS

    def failed_list(self) -> Dataset | None:
        """The identifier of a final or cancel response: the Failed SOP Instance UID List (None when empty)."""
        if not self.failed_uids:
            return None
        ds = Dataset()
        ds.FailedSOPInstanceUIDList = self.failed_uids
        return ds

    def summary(self) -> str:
        """Counts for the log line."""
        return f"{self.completed} completed, {self.warning} warning, {self.failed} failed"
