"""The Orthanc launcher used as a real peer (tests/orthanc_support.py) does what the other tests rely on."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread

import dicomdata
from conftest import HOST, Node, dcmtk
from orthanc_support import Orthanc, OrthancError

pytestmark = pytest.mark.dcmtk


def test_orthanc_stores_and_answers_rest(orthanc: Orthanc, tmp_path: Path) -> None:
    insts = dicomdata.study("ORTH1", "ORTHANC^SUPPORT", ("CT",), 2)
    for inst in insts:
        inst.write(tmp_path)
    dcmtk("storescu", "-aec", orthanc.aet, "+sd", HOST, str(orthanc.dicom_port), str(tmp_path), check=True)
    sops = {i.sop_uid for i in insts}
    assert orthanc.sop_uids(insts[0].study_uid) == sops
    oid = orthanc.instance_id(insts[0].sop_uid)
    assert oid in orthanc.instances()
    assert orthanc.instance_tags(oid)["PatientID"] == "ORTH1"
    assert dcmread(BytesIO(orthanc.instance_file(oid))).SOPInstanceUID == insts[0].sop_uid
    with pytest.raises(OrthancError) as err:
        orthanc.get("/instances/no-such-instance")
    assert err.value.status == 404


def test_orthanc_queries_a_node_through_rest(orthanc: Orthanc, node: Node, tmp_path: Path) -> None:
    inst = dicomdata.study("ORTH2", "ORTHANC^QUERY", ("CT",), 1)[0]
    inst.write(tmp_path)
    dcmtk("storescu", "-aec", node.aet, "+sd", HOST, str(node.port), str(tmp_path), check=True)
    orthanc.put_modality("testnode", node.aet, node.port)
    orthanc.echo("testnode")
    qid = orthanc.query("testnode", "Study", {"PatientID": "ORTH2", "StudyInstanceUID": ""})
    assert [a["StudyInstanceUID"] for a in orthanc.query_answers(qid)] == [inst.study_uid]
