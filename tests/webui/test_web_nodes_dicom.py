"""A node added in the staff UI, then real DICOM peers talking as that node (DCMTK storescp, pynetdicom).

What an admin checks after adding a viewer in the UI with a preferred transfer syntax and without Storage
Commitment: a C-MOVE to it delivers RLE-stored images in that syntax, and it cannot ask for Storage Commitment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelMove,
)

from appliance.cli.web import build_site
from appliance.site.service import Site
from webui import create_app

import dicomdata
from conftest import HOST, Node

ADMIN = ("admin", "admin-password-1")
COMMITMENT = "1.2.840.10008.1.20.1"


@pytest.fixture
def web_node(node_factory: Callable[..., Node]) -> Iterator[tuple[Node, Any]]:
    """A running DICOM node that knows no peer, and a Flask test client signed in as admin on its staff UI."""
    node = node_factory(accept_any_ae=False)
    site: Site = build_site(node.app, node.cfg)
    flask = create_app(overrides={"TESTING": True}, site=site)
    site.attach()
    site.users.add(*ADMIN, "admin")
    client = flask.test_client()
    page = client.get("/staff/login").get_data(as_text=True)
    assert client.post("/staff/login", data={"name": ADMIN[0], "password": ADMIN[1], "csrf_token": _csrf(page)})
    yield node, client
    site.close()


def _csrf(page: str) -> str:
    marker = 'name="csrf_token" value="'
    return page.split(marker, 1)[1].split('"', 1)[0]


def _add_node(client: Any, **form: str) -> None:
    csrf = _csrf(client.get("/staff/nodes/new").get_data(as_text=True))
    response = client.post(
        "/staff/nodes/new", data={"host": HOST, "store": "on", "move": "on", **form, "csrf_token": csrf}
    )
    assert response.status_code == 302, response.get_data(as_text=True)


def _rle_instance() -> Dataset:
    inst = dicomdata.study("UINODE1", "UI^NODE", ("CT",), 1, rows=32, columns=32)[0]
    ds = inst.dataset()
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    return ds


def _associate(node: Node, aet: str) -> Any:
    ae = AE(ae_title=aet)
    ae.add_requested_context(CTImageStorage, [RLELossless])
    ae.add_requested_context(COMMITMENT)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established, f"{aet} was not let in"
    return assoc


def test_ui_node_gets_its_preferred_syntax_and_no_storage_commitment(web_node, storescp) -> None:
    node, client = web_node
    port, out = storescp("VIEWUI", "+xa")  # every syntax: what arrives is what we chose to send
    _add_node(client, ae_title="VIEWUI", port=str(port), preferred_ts="explicit")  # commit box left unticked
    _add_node(client, ae_title="MODUI", port="104", commit="on")
    row = client.get("/staff/nodes").get_data(as_text=True).split('<tr data-ae="VIEWUI">', 1)[1].split("</tr>")[0]
    assert 'data-right="commit">–<' in row and "Explicit VR Little Endian" in row

    # The node without the right: the Storage Commitment context is refused, storing and C-MOVE work.
    ds = _rle_instance()
    assoc = _associate(node, "VIEWUI")
    try:
        assert COMMITMENT not in {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert assoc.send_c_store(ds).Status == 0
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ds.StudyInstanceUID
        answers = list(assoc.send_c_move(query, "VIEWUI", StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    final = answers[-1][0]
    assert final.Status == 0 and int(final.NumberOfCompletedSuboperations) == 1, final
    stored = node.app.index.lookup(str(ds.SOPInstanceUID))
    assert stored is not None and stored.transfer_syntax == RLELossless, "stored as sent"
    (received,) = [dcmread(p) for p in out.iterdir()]
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(received.pixel_array, ds.pixel_array)

    # The one added with the box ticked may ask for it.
    assoc = _associate(node, "MODUI")
    try:
        assert COMMITMENT in {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    finally:
        assoc.release()
