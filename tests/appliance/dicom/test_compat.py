"""appliance.dicom.compat: the pynetdicom version it was read against, and the requestor race fix.

Without the fix, one pynetdicom association in about a hundred stalled for the DIMSE timeout under load: the
requestor's reactor thread took the C-STORE-RSP its ``send_c_store()`` was waiting for.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]  # generated at import time

from appliance.dicom import compat as pynetdicom_fix

import dicomdata
from conftest import HOST, Node


def _requestor() -> Association:
    ae = AE(ae_title="RACE")
    return Association(ae, "requestor")


def _response(message_id: int) -> tuple[int, C_STORE]:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.Status = 0x0000
    return 1, rsp


def test_the_fix_is_installed_with_the_dicom_package() -> None:
    assert pynetdicom_fix.installed()


def test_pynetdicom_is_the_version_the_compat_module_was_checked_against() -> None:
    """appliance.dicom.compat reaches into pynetdicom's internals: re-read it before changing this pin."""
    import pynetdicom

    assert pynetdicom.__version__ == pynetdicom_fix.CHECKED_VERSION


def test_a_paused_reactor_leaves_the_response_to_the_sender() -> None:
    assoc = _requestor()
    item = _response(7)
    assoc.dimse.msg_queue.put(item)
    assoc._reactor_checkpoint.clear()  # what send_c_store() does before it sends
    assert assoc.dimse.get_msg(block=False) == (None, None)
    assert assoc.dimse.get_msg(block=True) == item


def test_a_running_reactor_still_takes_requests() -> None:
    assoc = _requestor()
    item = _response(8)
    assoc.dimse.msg_queue.put(item)
    assert assoc.dimse.get_msg(block=False) == item
    assert assoc.dimse.get_msg(block=False) == (None, None)


def test_a_message_taken_as_the_sender_paused_is_put_back_first() -> None:
    """The interleaving the pre-check cannot see: the sender clears the checkpoint while the reactor takes."""
    assoc = _requestor()
    first, second = _response(1), _response(2)
    queue = assoc.dimse.msg_queue
    queue.put(first)
    queue.put(second)
    original_get = queue.get

    def get_then_pause(*args: Any, **kwargs: Any) -> Any:
        item = original_get(*args, **kwargs)
        assoc._reactor_checkpoint.clear()
        return item

    queue.get = get_then_pause  # type: ignore[method-assign]
    assert assoc.dimse.get_msg(block=False) == (None, None)
    queue.get = original_get  # type: ignore[method-assign]
    assert assoc.dimse.get_msg(block=True) == first
    assert assoc.dimse.get_msg(block=True) == second


class _SlowCheckpoint(threading.Event):
    """A reactor checkpoint whose wait() returns late: the reactor is preempted in the window of the race."""

    def wait(self, timeout: float | None = None) -> bool:
        passed = super().wait(timeout)
        time.sleep(0.2)  # the reactor is held here with _is_paused still True
        return passed


def test_every_store_is_answered_when_both_threads_are_preempted_in_the_race(node: Node) -> None:
    """A real association to the appliance, with the two threads held where the race needs them.

    The reactor is held after its checkpoint let it through (``_is_paused`` still True), and the sender after
    it sent its request (before it reads the queue), as a loaded machine does now and then. Unfixed, the
    reactor then takes the C-STORE-RSP and the sender waits for the DIMSE timeout.
    """
    ae = AE(ae_title="RACE")
    ae.add_requested_context(CTImageStorage)
    ae.dimse_timeout = 5
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    checkpoint = _SlowCheckpoint()
    checkpoint.set()
    assoc._reactor_checkpoint = checkpoint
    dimse = assoc.dimse
    send_msg = dimse.send_msg

    def send_then_stall(primitive: Any, context_id: int) -> None:
        send_msg(primitive, context_id)
        time.sleep(0.4)  # the reactor leaves the window meanwhile and reads the queue

    dimse.send_msg = send_then_stall  # type: ignore[method-assign]
    statuses = []
    for inst in dicomdata.study("PRACE", "RACE^REACTOR", ("CT",), 4):
        status = assoc.send_c_store(inst.dataset())
        statuses.append(None if status is None else int(status.Status))
    if assoc.is_established:
        assoc.release()
    assert statuses == [0x0000] * 4
