"""Known DICOM nodes: list, add, edit, delete (admins; config-file nodes are read-only) and echo."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance.config import TS_LABELS, NodeConfig
from appliance.errors import InvalidValue
from appliance.nodes import RIGHTS
from webui.extensions import get_site
from webui.security import admin_required, login_required
from webui.staff import audit, bp


def node_from_form() -> NodeConfig:
    """A node from the add/edit form.

    Raises
    ------
    InvalidValue
        When the port is not a number (the registry checks everything else).
    """
    form = request.form
    port = form.get("port", "").strip()
    if not port.isdigit():
        raise InvalidValue(f"port {port!r} is not a number")
    rights: dict[str, Any] = {right: form.get(right) == "on" for right in RIGHTS}
    return NodeConfig(
        ae_title=form.get("ae_title", "").strip(),
        host=form.get("host", "").strip(),
        port=int(port),
        tls=form.get("tls") == "on",
        description=form.get("description", "").strip(),
        **rights,
        preferred_ts=form.get("preferred_ts", "").strip(),
    )


@bp.get("/nodes")
@login_required
def nodes() -> str:
    """Known nodes with their rights; config-file ones are marked read-only."""
    return render_template("staff/nodes.html", nodes=get_site().nodes.all(), rights=RIGHTS, ts_labels=TS_LABELS)


@bp.route("/nodes/new", methods=["GET", "POST"])
@admin_required
def node_new() -> Any:
    """Add a node (form, then validation: AE title, host, port, preferred transfer syntax)."""
    if request.method == "GET":
        return render_template("staff/node_form.html", node=None, rights=RIGHTS, ts_labels=TS_LABELS, error="")
    try:
        node = get_site().nodes.add(node_from_form())
    except InvalidValue as exc:
        return render_template(
            "staff/node_form.html", node=None, form=request.form, rights=RIGHTS, ts_labels=TS_LABELS, error=str(exc)
        ), 400
    audit("node.add", detail=f"{node.ae_title} {node.host}:{node.port}")
    flash(f"Node {node.ae_title} added.", "success")
    return redirect(url_for("staff.nodes"))


def _editable(ae_title: str) -> Any:
    """The UI-added node with this AE title.

    :raise 404: no such node.
    :raise 403: the node is defined in the config file.
    """
    known = get_site().nodes.find(ae_title)
    if known is None:
        abort(404)
    if not known.editable:
        abort(403, description="This node is defined in the config file; change it there.")
    return known


@bp.route("/nodes/<ae_title>/edit", methods=["GET", "POST"])
@admin_required
def node_edit(ae_title: str) -> Any:
    """Edit a node added in the UI.

    :raise 404: no such node.
    :raise 403: the node is defined in the config file.
    """
    known = _editable(ae_title)
    if request.method == "GET":
        return render_template("staff/node_form.html", node=known.node, rights=RIGHTS, ts_labels=TS_LABELS, error="")
    try:
        node = get_site().nodes.update(ae_title, node_from_form())
    except InvalidValue as exc:
        return render_template(
            "staff/node_form.html",
            node=known.node,
            form=request.form,
            rights=RIGHTS,
            ts_labels=TS_LABELS,
            error=str(exc),
        ), 400
    audit("node.edit", detail=f"{ae_title} -> {node.ae_title} {node.host}:{node.port}")
    flash(f"Node {node.ae_title} saved.", "success")
    return redirect(url_for("staff.nodes"))


@bp.route("/nodes/<ae_title>/delete", methods=["GET", "POST"])
@admin_required
def node_delete(ae_title: str) -> Any:
    """Confirm, then delete a node added in the UI.

    :raise 404: no such node.
    :raise 403: the node is defined in the config file.
    """
    known = _editable(ae_title)
    if request.method == "GET":
        return render_template("staff/confirm_node_delete.html", node=known.node)
    get_site().nodes.delete(ae_title)
    audit("node.delete", detail=ae_title)
    flash(f"Node {ae_title} deleted.", "success")
    return redirect(url_for("staff.nodes"))


@bp.post("/nodes/<ae_title>/echo")
@login_required
def node_echo(ae_title: str) -> Response:
    """C-ECHO a node and show Online/Offline with the reason (the page's script calls the API instead).

    :raise 404: no such node.
    """
    online, reason = get_site().admin.echo(ae_title)
    audit("node.echo", detail=f"{ae_title}: {reason}", outcome="success" if online else "failure")
    flash(f"{ae_title}: {reason}", "success" if online else "error")
    return redirect(url_for("staff.nodes"))
