"""Disc publishing wired from the configuration: robots, simulators, labels, the job engine.

:func:`build_publishing` picks the concrete robots (``robots.registry``) from the ``[robots.*]`` tables — or,
with none configured, the demo pair: a simulated Epson ``epson`` and a simulated Primera ``primera`` under
``<data_dir>/robots/`` — and wires the router, the delayed-group timer, the disc author and the publisher to an
:class:`~appliance.core.Appliance`. The composition root (:mod:`appliance.cli`) calls it once and hands the
result to the web site; the commands of :mod:`appliance.cli.discs` use the same functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appliance.budget import Budget
from appliance.config import Config
from appliance.errors import ConfigError

# The commands import the disc machinery (pydicom, reportlab, pycdlib) when they run, so that building the
# parser for every `appliance` command stays cheap.
if TYPE_CHECKING:  # pragma: no cover
    from appliance.core import Appliance
    from appliance.discs.authoring import DiscAuthor
    from appliance.discs.groups import GroupStore, GroupTimer
    from appliance.discs.jobs import JobEngine, JobStore
    from appliance.discs.labelling import LabelPlan
    from appliance.discs.publisher import DiscPublisher
    from appliance.discs.routing import Router
    from labels import LabelLayout
    from robots import DiscRobot
    from robots.simulator import BridgeSimulator

LOGGER = logging.getLogger("appliance")


# -- robots and labels from the configuration -------------------------------------------------------------


def robot_tables(cfg: Config) -> dict[str, dict[str, Any]]:
    """The ``[robots.*]`` tables, or the demo defaults (one simulated Epson, one simulated Primera)."""
    if cfg.robots:
        return {name: dict(table) for name, table in cfg.robots.items()}
    return {name: {"hotfolder": str(cfg.data_dir / "robots" / name), "simulate": True} for name in ("epson", "primera")}


def robot_kind(name: str, table: Mapping[str, Any]) -> str:
    """The vendor of a robot table: its ``kind`` key or its name."""
    return str(table.get("kind", name))


def build_robots(cfg: Config) -> dict[str, DiscRobot]:
    """Drivers for every configured robot.

    Raises
    ------
    ConfigError
        A robot table is invalid (the message names the table and the key).
    """
    from robots import RobotConfigError
    from robots.registry import create_robot

    try:
        return {name: create_robot(name, table) for name, table in robot_tables(cfg).items()}
    except RobotConfigError as exc:
        raise ConfigError(str(exc)) from exc


def label_plans(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, LabelPlan]:
    """What each robot prints: Epson a field file for its .tdd template, Primera our JPG (or .std merge fields)."""
    from appliance.discs.labelling import EPSON_MERGE, PRIMERA_MERGE, LabelPlan
    from labels import LabelFormat

    plans = {}
    for name, table in tables.items():
        kind = robot_kind(name, table)
        template = str(table.get("label_template", "")).lower()
        if kind == "epson":
            # Without a .tdd template TD Bridge prints nothing (unless image_labels), so no merge data is sent.
            formats = (LabelFormat.EPSON_FIELDS, *((LabelFormat.EPSON_JPG,) if table.get("image_labels") else ()))
            plans[name] = LabelPlan((LabelFormat.PDF, *formats), EPSON_MERGE if template.endswith(".tdd") else "")
        elif kind == "primera":
            merge = PRIMERA_MERGE if template.endswith(".std") else ""
            plans[name] = LabelPlan((LabelFormat.PDF, LabelFormat.PRIMERA_JPG), merge)
    return plans


def label_layout(cfg: Config) -> LabelLayout:
    """The ``[labels]`` layout.

    Raises
    ------
    ConfigError
    """
    from labels import LabelConfigError, LabelLayout

    try:
        return LabelLayout.from_options(cfg.labels, base_dir=cfg.source.resolve().parent if cfg.source else None)
    except LabelConfigError as exc:
        raise ConfigError(str(exc)) from exc


# -- the running service ------------------------------------------------------------------------------------


@dataclass
class Publishing:
    """Disc publishing wired to one appliance: start after the DICOM node, stop before the core."""

    jobs: JobStore
    groups: GroupStore
    router: Router
    author: DiscAuthor
    publisher: DiscPublisher
    engine: JobEngine
    timer: GroupTimer
    robots: dict[str, DiscRobot]
    simulators: dict[str, BridgeSimulator] = field(default_factory=dict)

    def start(self) -> None:
        """Start the bridge simulators, the group timer and the job engine."""
        for name, sim in self.simulators.items():
            sim.start()
            LOGGER.info("robot %s: built-in bridge simulator running on %s", name, sim.hotfolder)
        self.timer.start()
        self.engine.start()
        self.router.start()

    def stop(self) -> None:
        """Stop the engine, the timer and the simulators; every job and group stays in the database."""
        self.router.stop()
        self.engine.stop()
        if self.author.settings.budget is not None:
            self.author.settings.budget.close()  # its worker process
        self.timer.stop()
        for sim in self.simulators.values():
            sim.stop()


def build_publishing(
    app: Appliance,
    cfg: Config,
    simulate: bool = True,
    housekeeping_interval: float = 60.0,
    links: Callable[[str], str] | None = None,
) -> Publishing:
    """Wire disc publishing to ``app`` and attach its router to the core's listeners.

    Parameters
    ----------
    app : Appliance
    cfg : Config
    simulate : bool
        Build the simulators of robots with ``simulate = true`` (started by :meth:`Publishing.start`).
    housekeeping_interval : float
        Seconds between purges of old staging.
    links : callable, optional
        Study Instance UID -> patient link (the web site's), printed as a QR code on labels.

    Raises
    ------
    ConfigError
        A robot table or the ``[labels]`` table is invalid.
    """
    from appliance.discs.authoring import AuthorSettings, DiscAuthor
    from appliance.discs.fileset import find_dcmdump
    from appliance.discs.groups import GroupStore, GroupTimer
    from appliance.discs.jobs import JobEngine, JobStore
    from appliance.discs.labelling import DiscLabeler
    from appliance.discs.publisher import DiscPublisher
    from appliance.discs.routing import Router, routing_table
    from robots import RobotConfigError
    from robots.registry import create_simulator

    tables = robot_tables(cfg)
    robots = build_robots(cfg)
    for robot in robots.values():  # e.g. an Epson robot without a .tdd template prints no labels
        for warning in robot.setup_warnings():
            LOGGER.warning("robot %s", warning)
    simulators: dict[str, BridgeSimulator] = {}
    if simulate:
        try:
            simulators = {name: create_simulator(name, t) for name, t in tables.items() if t.get("simulate")}
        except RobotConfigError as exc:
            raise ConfigError(str(exc)) from exc
    jobs = JobStore(app.db)
    groups = GroupStore(app.db, jobs)
    # Conversions of received instances run in a worker process with a memory and time budget (issue 15).
    budget = Budget(preload=("appliance.discs.fileset",))
    settings = AuthorSettings(
        cfg.data_dir / "discs",
        cfg.store_dir,
        cfg.burn,
        cfg.institution,
        max(cfg.burn.staging_free_space_mb, cfg.dicom.free_space_limit_mb),
        find_dcmdump(),
        budget,
        resolve=app.store_area.path,
    )
    settings.discs_dir.mkdir(parents=True, exist_ok=True)
    labeler = DiscLabeler(label_layout(cfg), label_plans(tables), cfg.institution, links)
    author = DiscAuthor(app.db, jobs, settings, labeler)
    publisher = DiscPublisher(jobs, robots, cfg.burn.verify)
    engine = JobEngine(jobs, author, publisher, cfg.burn.poll_interval, author.purge_staging, housekeeping_interval)
    timer = GroupTimer(groups, lambda _job: engine.wake())
    router = Router(
        routing_table(cfg.dicom.ae_title, cfg.burn, robots),
        jobs,
        groups,
        cfg.burn.group_by,
        cfg.burn.delay,
        on_job=engine.wake,
        on_group=timer.poke,
    )
    router.attach(app)
    return Publishing(jobs, groups, router, author, publisher, engine, timer, robots, simulators)
