"""Helpers for the forwarding tests: an appliance with forwarding wired as ``appliance serve`` wires it, a
pynetdicom regional server that can misbehave on purpose (reject, abort, be slow), synthetic studies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from appliance import tls_contexts
from appliance.cli.forwarding import build_forwarding
from appliance.config import parse_config
from appliance.core import Appliance
from appliance.dicom.server import DicomNode
from appliance.forwarding.queue import ForwardQueue
from appliance.forwarding.worker import Forwarder

import dicomdata
from conftest import HOST, free_port

COMMITMENT = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


class Appliance_:
    """An appliance node with forwarding wired as ``appliance serve`` wires it (``hold``: the worker is started
    by the test, once what it must send in one batch is stored)."""

    def __init__(
        self,
        data_dir: Path,
        forwarding: dict[str, Any],
        nodes: list[dict[str, Any]] | None = None,
        hold: bool = False,
        dicom: dict[str, Any] | None = None,
        **tables: Any,
    ) -> None:
        self.cfg = parse_config(
            {
                "appliance": {"data_dir": str(data_dir)},
                "dicom": {
                    "bind": HOST,
                    "port": free_port(),
                    "tls_port": 0,
                    "free_space_limit_mb": 1,
                    "nodes": nodes or [],
                    **(dicom or {}),
                },
                "forwarding": {"retry_min": 0.2, "retry_max": 1.0, "batch_size": 50, **forwarding},
                **tables,
            }
        )
        cfg = self.cfg
        self.app = Appliance(cfg, client_tls=lambda: tls_contexts.client_context(cfg))
        self.app.start()
        self.dicom = DicomNode(self.app)
        self.forwarder = build_forwarding(self.app, self.cfg)
        assert self.forwarder is None or isinstance(self.forwarder, Forwarder)
        if self.forwarder is not None:
            self.forwarder.poll = 0.1
        self.dicom.start()
        if self.forwarder is not None and not hold:
            self.forwarder.start()
        self.queue = ForwardQueue(self.app.db)
        self.port = self.cfg.dicom.port

    def store(self, instances: list[dicomdata.Instance]) -> None:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate(HOST, self.port, ae_title=self.cfg.dicom.ae_title)
        for inst in instances:
            assert assoc.send_c_store(inst.dataset()).Status == 0
        assoc.release()

    def stop(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
        self.dicom.stop(grace=2.0)
        self.app.stop()


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Callable[..., Appliance_]]:
    started: list[Appliance_] = []

    def start(
        forwarding: dict[str, Any],
        nodes: list[dict[str, Any]] | None = None,
        hold: bool = False,
        dicom: dict[str, Any] | None = None,
        **tables: Any,
    ) -> Appliance_:
        node = Appliance_(tmp_path / f"app{len(started)}", forwarding, nodes, hold, dicom, **tables)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def study(pid: str, count: int, series: int = 1) -> list[dicomdata.Instance]:
    """``series`` CT series of ``count`` instances each, in one study per call of dicomdata.study."""
    out: list[dicomdata.Instance] = []
    for _ in range(series):
        out += dicomdata.study(pid, f"FWD^{pid}", ("CT",), count)
    return out


def reference(item: Dataset, reason: int | None = None) -> Dataset:
    """A Referenced/Failed SOP Sequence item of a commitment report."""
    out = Dataset()
    out.ReferencedSOPClassUID = item.ReferencedSOPClassUID
    out.ReferencedSOPInstanceUID = item.ReferencedSOPInstanceUID
    if reason is not None:
        out.FailureReason = reason
    return out


class FaultyRegional:
    """A regional server (pynetdicom) that stores CT and commits everything on the asking association, and can
    misbehave on purpose: reject associations, abort one association at its n-th C-STORE, or hold one C-STORE
    for ``slow`` seconds before answering.

    Every fault is switched off by the test (or happens once), so the test can watch the retry succeed.
    """

    def __init__(self, ssl_context: Any = None) -> None:
        self.port = free_port()
        self.stored: list[str] = []
        self.associations = 0
        self.abort_at = 0  # abort the association at this C-STORE of the next association (once)
        self.slow = 0.0  # hold the first C-STORE this long (once)
        self.commit = True  # answer N-ACTION with a report
        self.lock = threading.Lock()
        self.ae = AE(ae_title="REGIONAL")
        self.ae.add_supported_context(CTImageStorage)
        self.ae.add_supported_context(COMMITMENT, scu_role=True, scp_role=True)
        self.ae.network_timeout = 30
        self._count = 0
        self.server = self.ae.start_server(
            (HOST, self.port),
            block=False,
            ssl_context=ssl_context,
            evt_handlers=[
                (evt.EVT_C_STORE, self._store),
                (evt.EVT_N_ACTION, self._action),
                (evt.EVT_REQUESTED, self._requested),
            ],
        )

    def reject(self, on: bool) -> None:
        """Reject every association (calling AE title not recognised) while on."""
        self.ae.require_calling_aet = ["NOBODY"] if on else []

    def _requested(self, event: Any) -> None:
        with self.lock:
            self.associations += 1
            self._count = 0

    def _store(self, event: Any) -> int:
        with self.lock:
            self._count += 1
            abort = self.abort_at and self._count == self.abort_at
            if abort:
                self.abort_at = 0
            slow, self.slow = self.slow, 0.0
        if abort:
            event.assoc.abort()
            return 0xA700
        if slow:
            time.sleep(slow)
        with self.lock:
            self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    def _action(self, event: Any) -> tuple[int, None]:
        info = event.action_information
        assoc = event.assoc

        def report() -> None:
            out = Dataset()
            out.TransactionUID = info.TransactionUID
            out.ReferencedSOPSequence = [reference(i) for i in info.ReferencedSOPSequence]
            assoc.send_n_event_report(out, 1, COMMITMENT, COMMITMENT_INSTANCE)

        if self.commit:
            threading.Timer(0.05, report).start()
        return 0, None

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
