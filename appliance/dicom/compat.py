"""Every use of pynetdicom's private names, in one place, checked against one version.

pynetdicom gives an acceptor no hook for an association policy, a socket class or a guarded state
machine, and its requestor has a race; the appliance reaches into it here and nowhere else, so a
pynetdicom update is checked against one module (``tests/appliance/dicom/test_compat.py`` pins the version
:data:`CHECKED_VERSION` was read against and exercises each adaptation).

**The requestor race fix** (:func:`install`).
A fix for a race in pynetdicom's requestor: its reactor can take the response a ``send_*()`` waits for.

pynetdicom (3.0.4, and its main branch as of 2026) runs a reactor thread on every association that
takes finished DIMSE messages off the message queue with ``get_msg(block=False)`` and serves them as
requests. A ``send_*()`` method pauses it by clearing ``_reactor_checkpoint`` and waiting until
``_is_paused`` is true, but the reactor sets ``_is_paused = True`` *before* it waits on the
checkpoint and back to False only after the wait returned. When the sender looks in that window it
believes the reactor paused while it is about to call ``get_msg``. If the peer answers fast (our own
fast receive path answers a C-STORE in well under a millisecond), the reactor takes the response,
logs "Received unexpected C-STORE service message", and the sender waits for the DIMSE timeout, then
aborts. It hit about one association in a hundred under load: ``appliance import``, the C-MOVE
sub-operations pynetdicom sends for us, and any pynetdicom peer in the tests.

The fix is where the message is taken: while the checkpoint is cleared a ``send_*()`` owns the
queue, so the reactor's non-blocking read takes nothing; a message it took in the instant before a
sender cleared the checkpoint is put back at the front of the queue. ``get_msg(block=True)`` (the
senders' read) is unchanged. :func:`install` applies it once, process-wide.

**Large C-STOREs received by pynetdicom go to disk** (:func:`spool_received_datasets`).
pynetdicom assembles a C-STORE's data set in memory unless ``STORE_RECV_CHUNKED_DATASET`` is set;
then it writes each fragment to a ``NamedTemporaryFile`` in the system temporary folder (which may
be a RAM disk) and leaves it behind when the association ends before the data set is complete. Here
the flag is true only while one of the appliance's acceptor associations decodes a message (other
pynetdicom users in the process, test peers and our requestors, keep the in-memory data set); the
file is created in the store's temporary folder and holds the data set alone (so the stored file
is made from it in the kernel, as from the fast path's spool), and :func:`discard_partial_datasets`
removes what an ended association left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from copy import deepcopy
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import _config, dimse_messages, evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.sop_class import _STORAGE_CLASSES
from pynetdicom.transport import AssociationServer, AssociationSocket, RequestHandler, ThreadedAssociationServer

from appliance.dicom.policy import LOCAL_LIMIT_EXCEEDED, AssociationPolicy

if TYPE_CHECKING:
    from pynetdicom.ae import ApplicationEntity

    from appliance.dicom.server import ApplianceServer

LOGGER = logging.getLogger("appliance.dicom")

#: The pynetdicom release whose internals this module was read against.
CHECKED_VERSION = "3.0.4"
#: Every storage SOP Class UID pynetdicom knows.
STORAGE_CLASS_UIDS = frozenset(_STORAGE_CLASSES.values())

# Accept private and future storage SOP classes as storage (PS3.4 B.5 allows
# any storage class; modalities send vendor-private ones).
_config.UNRESTRICTED_STORAGE_SERVICE = True
# Identifiers are logged by our handlers at the level the admin chose, not by pynetdicom.
_config.LOG_HANDLER_LEVEL = "none"

_LOCK = threading.Lock()
_ORIGINAL = DIMSEServiceProvider.get_msg


def _receiving_server() -> ApplianceServer | None:
    """The appliance listener whose acceptor association the current thread decodes messages for.

    pynetdicom decodes P-DATA in the association's DUL thread, which carries the association.
    """
    assoc = getattr(threading.current_thread(), "assoc", None)
    if not isinstance(assoc, Association) or not assoc.is_acceptor:
        return None
    server = association_server(assoc)
    return server if server is not None and hasattr(server, "spool_folder") else None


class _ForOurAcceptors:
    """``STORE_RECV_CHUNKED_DATASET`` that is true only in the DUL thread of one of our acceptors."""

    def __bool__(self) -> bool:
        return _receiving_server() is not None

    def __repr__(self) -> str:
        return "True for the appliance's acceptor associations"


class _DataSetFile:
    """pynetdicom's chunked C-STORE file, holding the data set only (as the fast path's spool does).

    pynetdicom (3.0.4 ``DIMSEMessage.decode_msg``) writes a preamble, ``DICM`` and its file meta in three
    writes before the first data set fragment; the appliance writes its own file meta (calling AE
    included) in front of the data set when it stores it, so these three are dropped here.
    """

    _HEADER = (lambda b: bytes(b) == bytes(128), lambda b: bytes(b) == b"DICM", lambda b: bytes(b[:2]) == b"\x02\x00")

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._header = 0
        self.name: str = handle.name
        self.file = handle.file  # pynetdicom flushes this one after each fragment

    def write(self, data: bytes) -> int:
        if self._header < len(self._HEADER):
            if not self._HEADER[self._header](data):  # checked against CHECKED_VERSION by the tests
                raise RuntimeError("pynetdicom wrote its C-STORE data set file in an unexpected order")
            self._header += 1
            return len(data)
        return int(self._handle.write(data))

    def close(self) -> None:
        self._handle.close()


def _spool_file(**kwargs: Any) -> Any:
    """pynetdicom's ``NamedTemporaryFile(delete=False, ...)``: for our acceptors, in the store's tmp/, data set only."""
    server = _receiving_server()
    if server is None:
        return tempfile.NamedTemporaryFile(**kwargs)
    kwargs.update(dir=server.spool_folder(), prefix="pynetdicom-", suffix=".spool")
    return _DataSetFile(tempfile.NamedTemporaryFile(**kwargs))


def spool_received_datasets() -> None:
    """Make pynetdicom write the C-STORE data sets our acceptors receive to the store's temporary folder.

    The handler then finds the file at ``event.dataset_path`` (:func:`received_dataset`). Idempotent.
    """
    _config.STORE_RECV_CHUNKED_DATASET = cast(bool, _ForOurAcceptors())
    dimse_messages.NamedTemporaryFile = _spool_file  # type: ignore[assignment]


def received_dataset(event: evt.Event) -> Path | None:
    """The file pynetdicom wrote a C-STORE's data set to (the data set only, see :class:`_DataSetFile`), None when
    it is in memory."""
    try:
        path = event.dataset_path
    except AttributeError:
        return None
    return Path(path) if isinstance(path, str | os.PathLike) else None


def discard_partial_datasets(assoc: Association) -> None:
    """Remove the data set files of C-STOREs an ended association left unfinished or unserved."""
    if not isinstance(assoc, Association):
        return  # a fast-path association: it removes its own spool
    files = []
    message = getattr(assoc.dimse, "message", None)
    if message is not None:
        files.append(getattr(message, "_data_set_file", None))
    queue = assoc.dimse.msg_queue
    with queue.mutex:
        files += [getattr(item[1], "_dataset_file", None) for item in queue.queue if isinstance(item, tuple)]
    for handle in files:
        if handle is None:
            continue
        with contextlib.suppress(OSError):
            handle.close()
        with contextlib.suppress(OSError):
            os.unlink(handle.name)


def unrestricted_storage() -> bool:
    """Whether pynetdicom negotiates any storage-like SOP class (it does, set above)."""
    return bool(_config.UNRESTRICTED_STORAGE_SERVICE)


def server_handlers(server: AssociationServer) -> dict[Any, Any]:
    """The event handlers bound to a listener (pynetdicom copies them to each association)."""
    return cast(dict[Any, Any], server._handlers)


def register_server(ae: ApplicationEntity, server: ThreadedAssociationServer) -> None:
    """Make ``ae`` count and shut down a listener started outside ``start_server``."""
    ae._servers.append(server)


def association_server(assoc: Association) -> ApplianceServer | None:
    """The listener that accepted ``assoc`` (None for a requestor)."""
    return cast("ApplianceServer | None", getattr(assoc, "_server", None))


def pynetdicom_acceptors(server: AssociationServer) -> int:
    """How many acceptor associations pynetdicom's threads serve for the listener's AE."""
    return sum(1 for a in server.ae.active_associations if a.is_acceptor)


def over_limit(assoc: Association) -> bool:
    """Whether a pynetdicom acceptor association, counted with the fast path's, exceeds the limit.

    pynetdicom counts only its own association threads (itself included); the fast path's
    associations are added here so that both kinds share ``max_associations``.
    """
    server = association_server(assoc)
    registry = getattr(server, "fast", None)
    if server is None or registry is None:
        return False
    return len(registry) + pynetdicom_acceptors(server) > server.ae.maximum_associations


def _get_msg(self: DIMSEServiceProvider, block: bool = False) -> Any:
    if block:
        return _ORIGINAL(self, True)
    checkpoint: threading.Event | None = getattr(self.assoc, "_reactor_checkpoint", None)
    if checkpoint is not None and not checkpoint.is_set():
        return None, None  # a send_*() method is waiting for its response: leave the queue to it
    item = _ORIGINAL(self, False)
    if item[1] is not None and checkpoint is not None and not checkpoint.is_set():
        # A sender paused the reactor while it was taking this message: the message is the sender's.
        queue = self.msg_queue
        with queue.mutex:
            queue.queue.appendleft(item)
            queue.not_empty.notify()
        return None, None
    return item


def install() -> None:
    """Apply the fix to pynetdicom's DIMSE provider (idempotent)."""
    with _LOCK:
        if DIMSEServiceProvider.get_msg is not _get_msg:
            DIMSEServiceProvider.get_msg = _get_msg  # type: ignore[method-assign]


def installed() -> bool:
    """Whether :func:`install` has been applied in this process."""
    return DIMSEServiceProvider.get_msg is _get_msg


class PolicyACSE(ACSE):
    """ACSE that applies the :class:`~appliance.dicom.policy.AssociationPolicy` before negotiating."""

    def __init__(
        self, assoc: Association, policy: AssociationPolicy, over_limit: Callable[[Association], bool]
    ) -> None:
        super().__init__(assoc)
        self.policy = policy
        self.over_limit = over_limit
        self._denied: set[str] = set()

    def _negotiate_as_acceptor(self) -> None:
        rq = self.requestor.primitive
        calling = str(rq.calling_ae_title).strip()  # type: ignore[union-attr]
        called = str(rq.called_ae_title).strip()  # type: ignore[union-attr]
        self.requestor.ae_title = calling
        peer_info = self.requestor.address_info
        peer = peer_info.address if peer_info is not None else "?"
        reject = self.policy.refusal(calling, called)
        if reject is None and self.over_limit(self.assoc):  # pynetdicom counts only its own associations
            reject = LOCAL_LIMIT_EXCEEDED
        if reject:
            self.policy.log_rejection(reject, calling, called, peer)
            self.send_reject(*reject)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        # The AC echoes the title that was called, burn suffix included.
        self.acceptor.ae_title = called
        denied = self.policy.denied(calling)
        self._denied = denied
        self.policy.log_denied(calling, denied)
        if denied:
            self.acceptor.supported_contexts = [
                cx for cx in self.acceptor.supported_contexts if str(cx.abstract_syntax) not in denied
            ]
        super()._negotiate_as_acceptor()

    def send_accept(self) -> None:
        # Unrestricted storage accepts any class whose pynetdicom keyword differs from pydicom's
        # (MWL Find is "ModalityWorklistInformationModelFind" in pydicom), stripped ones included.
        for cx_id, cx in list(self.assoc._accepted_cx.items()):
            if str(cx.abstract_syntax) in self._denied:
                cx.result = 0x01  # user rejection
                self.assoc._rejected_cx.append(self.assoc._accepted_cx.pop(cx_id))
        super().send_accept()


class PolicyRequestHandler(RequestHandler):
    """Creates acceptor associations with our ACSE and socket classes (pynetdicom's ``_create_association``)."""

    server: ApplianceServer
    #: The socket class of accepted associations (set by the server module).
    socket_class: type[AssociationSocket] = AssociationSocket

    def _create_association(self) -> Association:
        ae = self.ae
        assoc = Association(ae, "acceptor")
        assoc._server = self.server  # read back by association_server()
        assoc.acse = PolicyACSE(assoc, self.server.policy, over_limit)
        assoc.name = f"Acceptor@{datetime.now():%Y%m%d%H%M%S}"
        sock = self.socket_class(assoc, client_socket=cast(socket.socket, self.request))
        assoc.set_socket(sock)
        assoc.acceptor.maximum_length = ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)
        assoc.requestor.address_info = self.remote
        guard_state_machine(assoc)
        for event, bound in self.server._handlers.items():
            if event.is_intervention and bound:
                assoc.bind(event, *bound)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in bound:  # type: ignore[misc]
                    assoc.bind(event, handler, args)
        return assoc


def guard_state_machine(assoc: Association) -> None:
    """Abort the association when a malformed message makes pynetdicom's state machine raise.

    pynetdicom runs state-machine actions outside its reactor's exception guard: a
    command set without CommandField, for one, kills the DUL thread and leaves the
    association counted as active forever (a slow denial of service through
    max_associations). Here such an error aborts the association as any protocol
    error would.
    """
    dul = assoc.dul
    machine = dul.state_machine
    action = machine.do_action

    def guarded(event: str) -> None:
        try:
            action(event)
        except Exception as exc:
            LOGGER.error(
                "association from %s aborted: malformed message (%s: %s)",
                assoc.requestor.ae_title,
                type(exc).__name__,
                exc,
            )
            abort = A_ABORT_RQ()
            abort.source = 0x02
            abort.reason_diagnostic = 0x00
            with contextlib.suppress(Exception):
                dul.socket.send(abort.encode())  # type: ignore[union-attr]
            assoc.is_aborted = True
            assoc.is_established = False
            assoc._kill = True
            dul._kill_thread = True
            with contextlib.suppress(Exception):
                dul.socket.close()  # type: ignore[union-attr]

    machine.do_action = guarded  # type: ignore[method-assign]
