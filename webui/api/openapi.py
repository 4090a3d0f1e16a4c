"""The OpenAPI 3.1 description of ``/api/v1`` (served at ``/api/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

from appliance import __version__

_PROBLEM = {
    "description": "RFC 9457 problem details",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_ERRORS = {"400": _PROBLEM, "401": _PROBLEM, "403": _PROBLEM, "404": _PROBLEM}
_JSON = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}


def _op(
    summary: str,
    tag: str,
    *,
    params: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    ok: str = "200",
    errors: tuple[str, ...] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "responses": {ok: _JSON, **_ERRORS, **{code: _PROBLEM for code in errors}},
    }
    if params:
        op["parameters"] = [{"$ref": f"#/components/parameters/{p}"} for p in params]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "appliance HTTP API",
        "version": __version__,
        "description": "Studies, disc jobs, robots, worklist, patient links, nodes and health of the DICOM "
        "appliance. DICOMweb (QIDO-RS, WADO-RS, STOW-RS) is served on its own port; see "
        "docs/dicomweb.md.",
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"apiKey": []}, {"masterCookie": []}, {"staffSession": []}],
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "appliance apikey add NAME --role ROLE"},
            "masterCookie": {
                "type": "apiKey",
                "in": "cookie",
                "name": "master_cookie",
                "description": "appliance apikey master; only from [api] master_cookie_hosts",
            },
            "staffSession": {
                "type": "apiKey",
                "in": "cookie",
                "name": "appliance_staff",
                "description": "the staff UI's session; changes need the X-CSRF-Token header",
            },
        },
        "parameters": {
            "study": {"name": "study_uid", "in": "path", "required": True, "schema": {"type": "string"}},
            "job": {"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}},
            "step": {"name": "step_id", "in": "path", "required": True, "schema": {"type": "integer"}},
            "ae": {"name": "ae_title", "in": "path", "required": True, "schema": {"type": "string"}},
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                },
            },
            "Burn": {
                "type": "object",
                "required": ["study_uid"],
                "properties": {
                    "study_uid": {"type": "string"},
                    "robot": {"type": "string"},
                    "copies": {"type": "integer", "minimum": 1, "maximum": 99},
                },
            },
            "WorklistItem": {
                "type": "object",
                "required": ["PatientID", "PatientName", "steps"],
                "description": "DICOM keywords of the item (PatientID, PatientName, PatientBirthDate, "
                "PatientSex, AccessionNumber, StudyInstanceUID, "
                "RequestedProcedureDescription...) and its steps",
                "properties": {
                    "steps": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "description": "Modality, ScheduledStationAETitle, "
                            "ScheduledProcedureStepStartDate/Time, ScheduledProcedureStepID, "
                            "ScheduledProcedureStepDescription, ScheduledProcedureStepStatus",
                        },
                    }
                },
            },
            "Extend": {
                "type": "object",
                "required": ["until"],
                "properties": {"until": {"type": "string", "format": "date"}},
            },
        },
    },
    "paths": {
        "/health": {"get": _op("Services up, storage free, robots, queue depths", "health")},
        "/studies": {
            "get": {
                **_op("Search studies", "studies"),
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string"}}
                    for n in ("name", "pid", "acc", "modality", "period", "from", "to", "birth", "page")
                ],
            }
        },
        "/studies/{study_uid}": {
            "get": _op("A study with its series and patient link", "studies", params=("study",)),
            "delete": _op("Delete a study (admin)", "studies", params=("study",)),
        },
        "/studies/{study_uid}/link": {"post": _op("The patient link (made if needed)", "links", params=("study",))},
        "/studies/{study_uid}/link/extend": {
            "post": _op(
                "Extend the patient link", "links", params=("study",), body={"$ref": "#/components/schemas/Extend"}
            )
        },
        "/studies/{study_uid}/link/revoke": {"post": _op("Revoke the patient link", "links", params=("study",))},
        "/studies/{study_uid}/link/regenerate": {"post": _op("Make a new patient link", "links", params=("study",))},
        "/studies/{study_uid}/link/slip.pdf": {
            "get": {
                **_op("The token slip", "links", params=("study",)),
                "responses": {"200": {"description": "PDF", "content": {"application/pdf": {}}}, **_ERRORS},
            }
        },
        "/jobs": {
            "get": _op("Disc jobs", "jobs"),
            "post": _op("Burn a study", "jobs", body={"$ref": "#/components/schemas/Burn"}, ok="201"),
        },
        **{
            f"/jobs/{{job_id}}/{action}": {
                "post": _op(f"{action.capitalize()} a disc job", "jobs", params=("job",), errors=("409",))
            }
            for action in ("cancel", "retry", "reburn", "reprint")
        },
        "/robots": {"get": _op("Robots and their bridge status", "robots")},
        "/worklist": {
            "get": _op("Worklist items and steps", "worklist"),
            "post": _op(
                "Create a worklist item", "worklist", body={"$ref": "#/components/schemas/WorklistItem"}, ok="201"
            ),
        },
        "/worklist/{study_uid}": {"delete": _op("Delete a worklist item (admin)", "worklist", params=("study",))},
        "/worklist/steps/{step_id}/reset": {"post": _op("Set a step back to SCHEDULED", "worklist", params=("step",))},
        "/nodes": {"get": _op("Known DICOM nodes", "nodes")},
        "/nodes/{ae_title}/echo": {"post": _op("C-ECHO a node", "nodes", params=("ae",))},
    },
}
