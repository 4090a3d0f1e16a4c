"""Job states and delayed groups as stored: allowed transitions only, every change persisted with its time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.db import Database
from appliance.discs.groups import GroupStore
from appliance.discs.jobs import TRANSITIONS, JobState, JobStore
from appliance.errors import InvalidTransition, NotFound


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobStore]:
    db = Database(tmp_path / "appliance.db")
    yield JobStore(db)
    db.close()


def test_a_job_moves_only_along_allowed_transitions(jobs: JobStore) -> None:
    job_id = jobs.create("epson", 2, ["1.2.3", "1.2.4", "1.2.3"], "manual", reason="test")
    job = jobs.get(job_id)
    assert (job.state, job.copies, job.instances, job.attempt) == (JobState.QUEUED, 2, 2, 1)
    assert sorted(jobs.instances(job_id)) == ["1.2.3", "1.2.4"]
    with pytest.raises(InvalidTransition, match="job 1 is queued; it cannot become done"):
        jobs.transition(job_id, JobState.DONE)
    claimed = jobs.claim_next()
    assert claimed is not None and claimed.state is JobState.AUTHORING
    assert jobs.claim_next() is None
    with pytest.raises(InvalidTransition):
        jobs.transition(job_id, JobState.BURNING, expect=JobState.QUEUED)
    jobs.transition(job_id, JobState.SUBMITTED, "ready", media="DVD", disc_count=2, size=123)
    jobs.transition(job_id, JobState.BURNING)
    failed = jobs.transition(job_id, JobState.FAILED, "ink out", error="ink out")
    assert (failed.media, failed.disc_count, failed.size, failed.error) == ("DVD", 2, 123, "ink out")
    with pytest.raises(InvalidTransition):
        jobs.repeat(job_id, "reburn")
    again = jobs.retry(job_id)
    assert (again.state, again.attempt, again.error) == (JobState.QUEUED, 2, "")
    events = jobs.events(job_id)
    assert [(e.from_state, e.to_state) for e in events] == [
        ("", "queued"),
        ("queued", "authoring"),
        ("authoring", "submitted"),
        ("submitted", "burning"),
        ("burning", "failed"),
        ("failed", "queued"),
    ]
    assert [e.at for e in events] == sorted(e.at for e in events) and all(e.at.endswith("Z") for e in events)
    assert events[4].reason == "ink out"


def test_done_is_final_and_reburn_makes_a_new_job(jobs: JobStore) -> None:
    job_id = jobs.create("primera", 1, ["1.2.9"], "association", "DISCPACS_P")
    for state in (JobState.AUTHORING, JobState.SUBMITTED, JobState.DONE):
        jobs.transition(job_id, state)
    for state in JobState:
        with pytest.raises(InvalidTransition):
            jobs.transition(job_id, state)
    with pytest.raises(InvalidTransition, match=f"is done; to burn its discs again use reburn .*jobs reburn {job_id}"):
        jobs.retry(job_id)
    child = jobs.get(jobs.repeat(job_id, "reprint", copies=3, robot="epson"))
    assert (child.parent_id, child.source, child.copies, child.robot, child.called_ae) == (
        job_id,
        "reprint",
        3,
        "epson",
        "DISCPACS_P",
    )
    assert jobs.instances(child.id) == ["1.2.9"]
    assert TRANSITIONS[JobState.DONE] == frozenset()


def test_unknown_job_and_unknown_fields(jobs: JobStore) -> None:
    with pytest.raises(NotFound, match="there is no disc job 42"):
        jobs.get(42)
    with pytest.raises(NotFound):
        jobs.transition(42, JobState.CANCELLED)
    job_id = jobs.create("epson", 1, ["1"], "manual")
    with pytest.raises(ValueError, match="cannot set state"):
        jobs.transition(job_id, JobState.CANCELLED, state="done")


def test_a_second_store_sees_the_first_ones_changes(tmp_path: Path) -> None:
    """The engine and a CLI command use separate connections (processes): a stale read cannot win."""
    one = JobStore(Database(tmp_path / "a.db"))
    two = JobStore(Database(tmp_path / "a.db"))
    job_id = one.create("epson", 1, ["1"], "manual")
    two.transition(job_id, JobState.CANCELLED, "from the CLI")
    with pytest.raises(InvalidTransition, match="is cancelled"):
        one.transition(job_id, JobState.AUTHORING, expect=JobState.QUEUED)
    assert one.claim_next() is None


def test_a_group_waits_for_quiet_and_turns_into_one_job_once(jobs: JobStore) -> None:
    groups = GroupStore(jobs.db, jobs)
    due1 = groups.add("epson", "PID1", "1.1", delay=10, called_ae="X_TE", patient_id="PID1", now=1000.0)
    due2 = groups.add("epson", "PID1", "1.2", delay=10, now=1005.0)
    groups.add("epson", "PID1", "1.2", delay=10, now=1006.0)  # a resent instance counts once
    groups.add("primera", "PID1", "1.3", delay=10, now=1006.0)  # another robot: another group
    assert (due1, due2) == (1010.0, 1015.0)
    pending = groups.pending()
    assert [(g.robot, g.instances, g.due) for g in pending] == [("epson", 2, 1016.0), ("primera", 1, 1016.0)]
    assert groups.publish_due(now=1015.9) == []
    created = groups.publish_due(now=1016.0)
    assert len(created) == 2 and groups.publish_due(now=2000.0) == [] and groups.pending() == []
    epson = next(jobs.get(j) for j in created if jobs.get(j).robot == "epson")
    assert epson.source == "group" and epson.called_ae == "X_TE" and sorted(jobs.instances(epson.id)) == ["1.1", "1.2"]
    assert "quiet for 10 s" in jobs.events(epson.id)[0].reason
    # A late instance opens a new group: a follow-up disc, not a change to the published one.
    groups.add("epson", "PID1", "1.4", delay=10, now=2001.0)
    assert [g.instances for g in groups.pending()] == [1]
