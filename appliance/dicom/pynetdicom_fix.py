"""A fix for a race in pynetdicom's requestor: its reactor can take the response a ``send_*()`` waits for.

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
"""

from __future__ import annotations

import threading
from typing import Any

from pynetdicom.dimse import DIMSEServiceProvider

_LOCK = threading.Lock()
_ORIGINAL = DIMSEServiceProvider.get_msg


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
