"""Association policy and per-service rights (known nodes, accept_any_ae = false)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification  # type: ignore[attr-defined]

from appliance.config import ConfigError, NodeConfig, parse_config, validate_ae_title
from appliance.dicom.policy import RIGHTS as POLICY_RIGHTS
from appliance.nodes import RIGHTS

import dicomdata
from conftest import HOST, Node, dcmtk

NODES = [
    {"ae_title": "FULL", "host": HOST, "port": 104},
    {"ae_title": "STOREONLY", "host": HOST, "port": 104, "find": False, "move": False, "get": False},
    {"ae_title": "QUERYONLY", "host": HOST, "port": 104, "store": False},
]


@pytest.fixture
def strict(node_factory) -> Node:
    return node_factory(accept_any_ae=False, nodes=NODES)


def _associate(node: Node, calling: str, called: str | None = None, *contexts: str):
    ae = AE(ae_title=calling)
    for cx in contexts or (Verification,):
        ae.add_requested_context(cx)
    return ae.associate(HOST, node.port, ae_title=called or node.aet)


def _reject_reason(assoc) -> tuple[int, int, int]:
    prim = assoc.acceptor.primitive
    return int(prim.result), int(prim.result_source), int(prim.diagnostic)


def test_unknown_calling_ae_is_rejected(strict: Node) -> None:
    assoc = _associate(strict, "STRANGER")
    assert assoc.is_rejected
    assert _reject_reason(assoc) == (1, 1, 3)
    proc = dcmtk("echoscu", "-aet", "STRANGER", "-aec", strict.aet, HOST, str(strict.port))
    assert proc.returncode != 0
    assert "Calling AE Title Not Recognized" in proc.stderr


def test_ae_titles_are_case_sensitive(strict: Node) -> None:
    assert _associate(strict, "full").is_rejected
    assoc = _associate(strict, "FULL")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert _reject_reason(_associate(strict, "FULL", strict.aet.lower())) == (1, 1, 7)


def test_unknown_called_ae_is_rejected_and_burn_forms_accepted(node: Node) -> None:
    assert _reject_reason(_associate(node, "ANY", "SOMEONE")) == (1, 1, 7)
    assert _reject_reason(_associate(node, "ANY", node.aet + "_X")) == (1, 1, 7)
    for suffix in ("", "_E", "_P", "_TE", "_TP"):
        proc = dcmtk("echoscu", "-aec", node.aet + suffix, HOST, str(node.port))
        assert proc.returncode == 0, proc.stderr


def test_query_right_is_enforced_at_negotiation(strict: Node) -> None:
    assoc = _associate(strict, "STOREONLY", None, CTImageStorage, StudyRootQueryRetrieveInformationModelFind)
    assert assoc.is_established
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    rejected = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
    assoc.release()
    assert CTImageStorage in accepted
    assert StudyRootQueryRetrieveInformationModelFind in rejected
    proc = dcmtk(
        "findscu",
        "-S",
        "-aet",
        "STOREONLY",
        "-aec",
        strict.aet,
        "-k",
        "QueryRetrieveLevel=STUDY",
        HOST,
        str(strict.port),
    )
    assert proc.returncode != 0
    assert "Find Response" not in proc.stderr


def test_store_right_is_enforced_per_operation(strict: Node) -> None:
    ds = dicomdata.study("PRIGHT", "RIGHT^TEST", ("CT",), 1)[0].dataset()
    assoc = _associate(strict, "QUERYONLY", None, CTImageStorage, StudyRootQueryRetrieveInformationModelFind)
    status = assoc.send_c_store(ds)
    assert status.Status == 0x0124
    assert "store right" in status.ErrorComment
    # The same association may still query.
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = ""
    results = [s.Status for s, _ in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind)]
    assoc.release()
    assert results == [0x0000]
    assert strict.app.index.counts()["instances"] == 0
    full = _associate(strict, "FULL", None, CTImageStorage)
    assert full.send_c_store(ds).Status == 0
    full.release()


def test_max_associations_rejects_then_recovers(node_factory) -> None:
    node = node_factory(max_associations=2)
    open_ = [_associate(node, f"A{i}") for i in range(2)]
    assert all(a.is_established for a in open_)
    extra = _associate(node, "A3")
    assert extra.is_rejected
    assert _reject_reason(extra) == (2, 3, 2)
    # Existing associations are still served.
    assert open_[0].send_c_echo().Status == 0
    for a in open_:
        a.release()
    from conftest import wait_until

    wait_until(lambda: not node.dicom.active())
    again = _associate(node, "A4")
    assert again.is_established
    again.release()


@pytest.mark.parametrize("title", ["", "A" * 17, "BACK\\SLASH", "TAB\tX", "   ", " LEAD"])
def test_invalid_ae_titles_are_refused(title: str) -> None:
    with pytest.raises(ConfigError):
        validate_ae_title(title)
    with pytest.raises(ConfigError):
        parse_config({"dicom": {"nodes": [{"ae_title": title}]}})


def test_the_error_shows_the_title_as_typed() -> None:
    """Issue 20, item 11: a typed backslash is shown once, not doubled by repr()."""
    with pytest.raises(ConfigError, match=r'"BACK\\SLASH" is not valid'):
        validate_ae_title("BACK\\SLASH")


def test_valid_ae_titles() -> None:
    for title in ("A", "X" * 16, "MOD-1_CT.2", "lower case"):
        assert validate_ae_title(title) == title


def test_every_right_the_policy_checks_is_a_node_setting_the_staff_ui_edits() -> None:
    """The association policy asks for rights by name; each is a field of a node and a box of the node form."""
    assert set(POLICY_RIGHTS.values()) <= set(RIGHTS)
    assert all(isinstance(getattr(NodeConfig("X"), right), bool) for right in RIGHTS)
