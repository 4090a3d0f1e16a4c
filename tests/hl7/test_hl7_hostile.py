"""Hostile HL7 input (issue 15): what an attacker on the network can send to the MLLP port, and the bounds that hold.

Every attack client here is bounded in count and time and talks to a listener on loopback.
"""

from __future__ import annotations

from pathlib import Path

from hl7support import HL7Node, MLLPClient, findscu_mwl, orm, segments

SAET_MR1 = "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MR1"


def test_hex_escape_nul_does_not_reach_names(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    """``\\X00\\`` in a name spelled a NUL that the worklist stored and C-FIND returned."""
    msg = orm(name="Evil\\X00\\Doe^Ja\\X0007\\ne", obr4="^^^MRHEAD^MRI\\X1B5B\\ head^L")
    assert segments(client.request(msg))["MSA"] == "MSA|AA|MSG0001"
    [answer] = findscu_mwl(hl7_node, tmp_path, SAET_MR1)
    assert answer.PatientName == "EvilDoe^Jane"
    assert answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription == "MRI[ head"
    stored, _, _ = hl7_node.app.worklist.item(_key("1.2.3.4", "SPS-1"))
    assert stored["PatientName"] == "EvilDoe^Jane"


def _key(study: str, sps_id: str):
    from appliance.worklist.store import ItemKey

    return ItemKey(study, sps_id)
