"""The disc commands (``burn``, ``jobs``, ``label``, ``robots``); the wiring is :mod:`appliance.discs.publishing`."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import Config
from appliance.discs.publishing import build_robots, label_layout, robot_tables
from appliance.errors import ConfigError, NotFound, PublishError
from appliance.names import display_name
from appliance.units import human_size

# The commands import the disc machinery (pydicom, reportlab, pycdlib) when they run, so that building the
# parser for every `appliance` command stays cheap.
if TYPE_CHECKING:  # pragma: no cover
    from appliance.discs.jobs import JobStore

LOGGER = logging.getLogger("appliance")


# -- commands -----------------------------------------------------------------------------------------------


def _jobs(cfg: Config) -> JobStore:
    from appliance.db import Database
    from appliance.discs.jobs import JobStore

    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    return JobStore(Database(cfg.database))


def _robot_name(cfg: Config, requested: str | None) -> str:
    tables = robot_tables(cfg)
    name = requested or cfg.burn.default_robot or next(iter(tables), "")
    if name not in tables:
        raise ConfigError(f"there is no robot {name!r}; configured robots: {', '.join(tables) or 'none'}")
    return name


def _copies(value: int | None, cfg: Config) -> int:
    copies = value or cfg.burn.copies
    if not 1 <= copies <= 99:
        raise PublishError(f"copies must be 1-99, not {copies}")
    return copies


def cmd_burn(args: argparse.Namespace, cfg: Config) -> int:
    """Queue a disc job for a stored study."""
    from appliance.discs.content import study_instances

    jobs = _jobs(cfg)
    uids = study_instances(jobs.db, args.study)
    if not uids:
        raise NotFound(f"study {args.study} is not in the store")
    robot = _robot_name(cfg, args.robot)
    job_id = jobs.create(
        robot, _copies(args.copies, cfg), uids, "manual", reason=f"appliance burn {args.study}: {len(uids)} instance(s)"
    )
    print(
        f"job {job_id} queued: study {args.study}, {len(uids)} instance(s), robot {robot}, "
        f"{_copies(args.copies, cfg)} cop{'y' if _copies(args.copies, cfg) == 1 else 'ies'}"
        " ('appliance serve' publishes it; 'appliance jobs' shows its progress)"
    )
    return 0


def cmd_jobs_list(args: argparse.Namespace, cfg: Config) -> int:
    """List disc jobs, newest first, and the pending delayed groups."""
    from appliance.discs.groups import GroupStore
    from appliance.discs.jobs import JobState

    jobs = _jobs(cfg)
    rows = jobs.recent(limit=args.limit)
    groups = GroupStore(jobs.db, jobs).pending()
    if not rows and not groups:
        print("no disc jobs")
        return 0
    if rows:
        print(
            f"{'ID':>5}  {'STATE':<10} {'ROBOT':<10} {'COPIES':>6} {'MEDIA':<6} {'DISCS':>5} {'SIZE':>10}  "
            f"{'PATIENT':<30} {'STUDIES':>7}  {'UPDATED':<19}  NOTE"
        )
    for job in rows:
        name = display_name(job.patient_name)
        patient = f"{name} ({job.patient_id})" if job.patient_id else name
        note = job.error if job.state is JobState.FAILED else job.message
        print(
            f"{job.id:>5}  {job.state.value:<10} {job.robot:<10} {job.copies:>6} {job.media or '-':<6} "
            f"{job.disc_count or '-':>5} {human_size(job.size):>10}  {patient[:30]:<30} {len(job.studies):>7}  "
            f"{job.updated[:19].replace('T', ' '):<19}  {note}"
        )
    if groups:
        print("Delayed groups waiting for quiet:")
        for g in groups:
            print(
                f"  {g.key} ({display_name(g.patient_name)}) for robot {g.robot}: {g.instances} instance(s), "
                "becomes a job in "
                f"{max(0.0, g.due - time.time()):.0f} s"
            )
    return 0


def cmd_jobs_show(args: argparse.Namespace, cfg: Config) -> int:
    """Show one job: its facts, discs and every change of state."""
    jobs = _jobs(cfg)
    job = jobs.get(args.id)
    print(f"job {job.id}: {job.state.value}" + (f" ({job.error})" if job.error else ""))
    facts = {
        "robot": job.robot,
        "copies": job.copies,
        "source": job.source + (f" of job {job.parent_id}" if job.parent_id else ""),
        "called AE": job.called_ae or "-",
        "patient": f"{display_name(job.patient_name)} ({job.patient_id})",
        "studies": ", ".join(job.studies) or "-",
        "instances": job.instances,
        "media": job.media or "-",
        "discs": job.disc_count or "-",
        "size": human_size(job.size),
        "attempt": job.attempt,
        "note": job.message or "-",
        "staging": f"purged {job.purged}" if job.purged else str(cfg.data_dir / "discs" / str(job.id)),
    }
    for key, value in facts.items():
        print(f"  {key + ':':<11} {value}")
    for disc in jobs.discs(job.id):
        print(
            f"  disc {disc.number}: {disc.media} {disc.volume} {human_size(disc.size)}, ticket {disc.ticket or '-'}, "
            f"{disc.robot_state or '-'}: {disc.reason or '-'}"
        )
    print("  history:")
    for event in jobs.events(job.id):
        print(
            f"    {event.at[:23].replace('T', ' ')}  {event.from_state or '-':>9} -> {event.to_state:<9}  "
            f"{event.reason}"
        )
    return 0


def cmd_jobs_retry(args: argparse.Namespace, cfg: Config) -> int:
    """Queue a failed or cancelled job again."""
    job = _jobs(cfg).retry(args.id, "retry requested with 'appliance jobs retry'")
    print(f"job {job.id} queued again (attempt {job.attempt})")
    return 0


def cmd_jobs_cancel(args: argparse.Namespace, cfg: Config) -> int:
    """Cancel a job that is queued or with its robot."""
    from appliance.discs.publisher import DiscPublisher

    jobs = _jobs(cfg)
    job = DiscPublisher(jobs, build_robots(cfg)).cancel(args.id, "cancelled with 'appliance jobs cancel'")
    print(f"job {job.id} cancelled")
    return 0


def _repeat(args: argparse.Namespace, cfg: Config, source: str) -> int:
    jobs = _jobs(cfg)
    robot = _robot_name(cfg, args.robot) if args.robot else None
    copies = _copies(args.copies, cfg) if args.copies else None
    job_id = jobs.repeat(args.id, source, copies, robot)
    print(f"job {job_id} queued: {source} of job {args.id}")
    return 0


def cmd_jobs_reburn(args: argparse.Namespace, cfg: Config) -> int:
    """Burn a done job's discs again, with the same labels."""
    return _repeat(args, cfg, "reburn")


def cmd_jobs_reprint(args: argparse.Namespace, cfg: Config) -> int:
    """Burn a done job's discs again with freshly rendered labels."""
    return _repeat(args, cfg, "reprint")


def cmd_label(args: argparse.Namespace, cfg: Config) -> int:
    """Render the disc label of a stored study as a PDF."""
    from appliance.discs.content import label_fields, load_content, study_instances
    from labels import LabelFormat, render_disc_label

    jobs = _jobs(cfg)
    uids = study_instances(jobs.db, args.study)
    if not uids:
        raise NotFound(f"study {args.study} is not in the store")
    content, _ = load_content(jobs.db, uids)
    fields = label_fields(content, 1, 1, cfg.institution, bool(cfg.burn.viewer_dir))
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        rendered = render_disc_label(fields, label_layout(cfg), Path(tmp), [LabelFormat.PDF])
        assert rendered.pdf is not None
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(rendered.pdf, out)
    for warning in rendered.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"label of study {args.study} written to {out}")
    return 0


def cmd_robots(args: argparse.Namespace, cfg: Config) -> int:
    """Print the configured robots, their bridges' status and the USB devices."""
    from robots.report import describe

    tables = robot_tables(cfg)
    if not cfg.robots:
        print("No [robots] table: the demo robots below are simulated ('appliance serve' runs their bridges).")
    print(describe(build_robots(cfg)), end="")
    simulated = [name for name, t in tables.items() if t.get("simulate")]
    if simulated:
        print(f"Simulated by 'appliance serve': {', '.join(simulated)}")
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``burn``, ``jobs ...``, ``label`` and ``robots``."""
    parent_common = common
    p = sub.add_parser("burn", parents=[common], help="queue a disc job for a stored study")
    p.add_argument("study", metavar="STUDY_UID")
    p.add_argument(
        "--robot", help="robot name, e.g. epson or primera (default: [burn] default_robot, else the first robot)"
    )
    p.add_argument("--copies", type=int, help="discs to burn (default: [burn] copies)")
    p.set_defaults(func=cmd_burn)

    p = sub.add_parser("jobs", parents=[common], help="list disc jobs; show, retry, cancel, reburn, reprint one")
    p.add_argument("--limit", type=int, default=50, help="newest jobs listed (default 50)")
    p.set_defaults(func=cmd_jobs_list)
    jobs_sub = p.add_subparsers(dest="jobs_command", metavar="JOBS_COMMAND")
    # --config may come before or after the job command: a default here would hide one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="config file (default: $APPLIANCE_CONFIG, else ./appliance.toml, else built-in defaults)",
    )
    q = jobs_sub.add_parser("list", parents=[common], help="list disc jobs and pending delayed groups")
    q.add_argument("--limit", type=int, default=argparse.SUPPRESS, help="newest jobs listed (default 50)")
    q.set_defaults(func=cmd_jobs_list)
    for name, func, text in (
        ("show", cmd_jobs_show, "show a job's discs and history"),
        ("retry", cmd_jobs_retry, "queue a failed or cancelled job again"),
        ("cancel", cmd_jobs_cancel, "cancel a queued job or one with its robot"),
    ):
        q = jobs_sub.add_parser(name, parents=[common], help=text)
        q.add_argument("id", metavar="ID", type=int)
        q.set_defaults(func=func)
    for name, func, text in (
        ("reburn", cmd_jobs_reburn, "burn a done job again with the same labels"),
        ("reprint", cmd_jobs_reprint, "burn a done job again with freshly rendered labels"),
    ):
        q = jobs_sub.add_parser(name, parents=[common], help=text)
        q.add_argument("id", metavar="ID", type=int)
        q.add_argument("--copies", type=int, help="discs to burn (default: as the job)")
        q.add_argument("--robot", help="another robot (default: the job's)")
        q.set_defaults(func=func)

    p = sub.add_parser("label", parents=[parent_common], help="preview the disc label of a stored study as a PDF")
    p.add_argument("--study", required=True, metavar="STUDY_UID")
    p.add_argument("--out", required=True, metavar="FILE.pdf")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("robots", parents=[parent_common], help="list robots, their bridge status and USB devices")
    p.set_defaults(func=cmd_robots)
