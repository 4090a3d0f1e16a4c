"""Which series must not be deleted yet: the rules in one place, for deletion and its dry run."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import date


def not_yet_forwarded(conn: sqlite3.Connection, series_uids: Iterable[str], commitment: bool = True) -> set[str]:
    """Series that still wait to be forwarded to the regional PACS (``[forwarding]``).

    Forwarding's own rule (:func:`appliance.forwarding.queue.not_forwarded`): an instance is forwarded once the
    regional server committed it, or, without Storage Commitment, once it was sent. Series never queued (forwarding
    off) wait for nothing.
    """
    from appliance.forwarding.queue import not_forwarded

    return not_forwarded(conn, series_uids, commitment)


def in_unfinished_disc_job(conn: sqlite3.Connection) -> set[str]:
    """Series with an instance in a disc job that is neither done nor cancelled, or in a pending burn group."""
    rows = conn.execute(
        "SELECT DISTINCT s.series_uid FROM disc_job_instances dji JOIN disc_jobs j ON j.id = dji.job_id"
        " JOIN instances i ON i.sop_uid = dji.sop_uid JOIN series s ON s.id = i.series_fk"
        " WHERE j.state NOT IN ('done', 'cancelled')"
        " UNION SELECT DISTINCT s.series_uid FROM burn_group_instances bgi JOIN burn_groups g ON g.id = bgi.group_id"
        " JOIN instances i ON i.sop_uid = bgi.sop_uid JOIN series s ON s.id = i.series_fk WHERE g.state = 'pending'"
    )
    return {r[0] for r in rows}


def with_live_patient_link(conn: sqlite3.Connection, today: date) -> set[str]:
    """Series of studies whose patient link still works (not revoked, not expired)."""
    rows = conn.execute(
        "SELECT s.series_uid FROM series s JOIN studies st ON st.id = s.study_fk JOIN tokens t"
        " ON t.study_uid = st.study_uid WHERE t.revoked = '' AND t.valid_until >= ?",
        (today.isoformat(),),
    )
    return {r[0] for r in rows}


def protected(
    conn: sqlite3.Connection,
    series_uids: Iterable[str],
    delete_shared: bool,
    remove_not_forwarded: bool,
    today: date,
    forwarding_commitment: bool = True,
) -> dict[str, str]:
    """The series among ``series_uids`` that must be kept, with the reason.

    Parameters
    ----------
    conn : sqlite3.Connection
        The appliance database.
    series_uids : iterable of str
        Candidates for deletion.
    delete_shared, remove_not_forwarded : bool
        ``[deletion]`` switches that lift the patient-link and forwarding rules.
    today : date
        For the patient links' validity.
    forwarding_commitment : bool
        ``[forwarding] storage_commitment``: only committed instances count as forwarded.
    """
    uids = list(series_uids)
    kept: dict[str, str] = {}
    if not uids:
        return kept
    if not remove_not_forwarded:
        for uid in not_yet_forwarded(conn, uids, forwarding_commitment):
            kept[uid] = "not yet forwarded"
    if not delete_shared:
        live = with_live_patient_link(conn, today)
        for uid in uids:
            if uid in live:
                kept[uid] = "the study has a live patient link"
    jobs = in_unfinished_disc_job(conn)
    for uid in uids:
        if uid in jobs:
            kept[uid] = "in a disc job that is not done"
    return kept
