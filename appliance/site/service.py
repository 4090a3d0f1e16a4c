"""What the web site asks of the core: one object, so that each Flask view is one call and a translation.

:class:`Site` bundles the patient tokens, staff users, known nodes, the audit log, study search, pictures and
downloads over one :class:`~appliance.core.Appliance`. It knows nothing of HTTP; ``webui`` holds all of that.
The CLI builds it too (``appliance token``, ``appliance user add``) and attaches the token store listener in
``appliance serve``, so studies get their token even when the web site is disabled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import io
import ipaddress
import logging
import re
import socket
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from appliance.config import Config
from appliance.core import Appliance
from appliance.errors import InvalidTransition, InvalidValue, NotFound
from appliance.log import LOG_FILE
from appliance.site.apikeys import ApiKeys
from appliance.site.audit import Audit, BatchWriter
from appliance.site.catalog import Catalog
from appliance.site.dicomweb import DicomWeb
from appliance.site.export import Exporter, ZipItem, series_label, zip_name
from appliance.site.imaging import VIEW_SIZE, ThumbnailCache, Window, jpeg_bytes, picture, placeholder
from appliance.site.sessions import PatientSessions
from appliance.site.thumbnails import PrerenderWorker, RenderFailed, RenderPool, log_placeholder
from appliance.site.tokens import Tokens, parse_da
from appliance.site.users import Users

if TYPE_CHECKING:  # pragma: no cover
    from appliance.discs.jobs import Job, JobStore
    from appliance.discs.publishing import Publishing
    from robots import DiscRobot

LOGGER = logging.getLogger(__name__)

#: Disc job actions and the job states that allow them (as ``appliance jobs retry|cancel|reburn|reprint``).
JOB_ACTIONS: dict[str, tuple[str, ...]] = {
    "retry": ("failed", "cancelled"),
    "cancel": ("queued", "authoring", "submitted", "burning"),
    "reburn": ("done",),
    "reprint": ("done",),
}
_DONE_WORDS = {"retry": "retried", "cancel": "cancelled", "reburn": "burned again", "reprint": "reprinted"}
#: Worklist step statuses the staff UI shows in green (done) and orange (ended without being done).
WORKLIST_DONE = ("COMPLETED",)
WORKLIST_ENDED = ("DISCONTINUED", "CANCELED", "CANCELLED", "MISSED")
#: Seconds the certificate expiry warnings are cached (reading certificates on every page is wasteful).
_CERT_CACHE_SECONDS = 600.0

#: Config keys whose values the settings page never shows.
_SECRET_RE = re.compile(r"password|passphrase|secret|api_key|private|credential", re.IGNORECASE)
_LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (TRACE|DEBUG|INFO|WARNING|ERROR|FATAL|CRITICAL)\s+"
                     r"(\S+): (.*)$")
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "FATAL")


@dataclasses.dataclass(frozen=True)
class LogRecord:
    """One record of the appliance log (continuation lines, such as tracebacks, in ``text``)."""

    time: str
    level: str
    logger: str
    text: str


def interface_addresses() -> list[str]:
    """This machine's interface addresses: IPv4 (Linux ``SIOCGIFADDR`` per interface), then IPv6 (``if_inet6``)."""
    import fcntl
    import struct

    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
                found.append(socket.inet_ntoa(packed[20:24]))
    with contextlib.suppress(OSError), open("/proc/net/if_inet6", encoding="ascii") as table:
        for line in table:
            raw = line.split()[0]
            found.append(str(ipaddress.IPv6Address(int(raw, 16))))
    return found


def machine_address(addresses: list[str] | None = None) -> str:
    """The address patient links name when ``[web] server_name`` is empty.

    The first interface address a phone on the network can reach: IPv4 first, else a global IPv6 address
    (loopback and link-local skipped). The host name only when there is none (the log then warns: a name from
    ``/etc/hosts`` often resolves to 127.0.1.1 and reaches nobody else).
    """
    usable = []
    for text in interface_addresses() if addresses is None else addresses:
        address = ipaddress.ip_address(text)
        if not (address.is_loopback or address.is_link_local or address.is_unspecified):
            usable.append(address)
    usable.sort(key=lambda a: a.version)  # IPv4 first
    if not usable:
        return socket.gethostname()
    best = usable[0]
    return f"[{best}]" if best.version == 6 else str(best)


def mask_settings(cfg: Config) -> list[tuple[str, list[tuple[str, str]]]]:
    """The effective configuration as (section, [(key, value)]) for display, secrets replaced by ``••••••``."""

    def show(key: str, value: Any) -> str:
        if _SECRET_RE.search(key) and value not in ("", None):
            return "••••••"
        if isinstance(value, Mapping):
            return ", ".join(f"{k} = {show(str(k), v)}" for k, v in value.items()) or "(none)"
        if isinstance(value, list | tuple):
            return ", ".join(show(key, v) for v in value) or "(none)"
        if isinstance(value, bool):  # as the config file spells it, so it can be copied there
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    sections: list[tuple[str, list[tuple[str, str]]]] = []
    top: list[tuple[str, str]] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            rows = []
            for g in dataclasses.fields(value):
                inner = getattr(value, g.name)
                if g.name == "nodes":
                    continue
                rows.append((g.name, show(g.name, inner)))
            sections.append((f.name, rows))
        elif isinstance(value, Mapping):
            if not value and f.name == "robots":  # the built-in demo robots run when no table is given
                from appliance.discs.publishing import robot_tables

                value = {f"{name} (built-in demo)": table for name, table in robot_tables(cfg).items()}
            if not value:
                sections.append((f.name, [("(every key)", "the defaults (see docs)")]))
                continue
            flat = [(str(k), show(str(k), v)) for k, v in value.items() if not isinstance(v, Mapping)]
            if flat:
                sections.append((f.name, flat))
            for name, table in value.items():
                if isinstance(table, Mapping):
                    sections.append((f"{f.name}.{name}", [(str(k), show(str(k), v)) for k, v in table.items()]))
        else:
            top.append((f.name, show(f.name, value)))
    return [("appliance", top), *sections]


class Site:
    """The web site's view of the appliance.

    Parameters
    ----------
    appliance : Appliance
        The core, already constructed (started or not).
    """

    def __init__(self, appliance: Appliance) -> None:
        self.app = appliance
        self.config: Config = appliance.config
        data = self.config.data_dir
        self.writer = BatchWriter(appliance.db)
        self.tokens = Tokens(appliance.db, data / "secrets" / "token.key", self.config.web.token_days,
                             writer=self.writer)
        self.users = Users(appliance.db)
        self.patient_sessions = PatientSessions(appliance.db)
        self.apikeys = ApiKeys(appliance.db)
        self.dicomweb = DicomWeb(appliance)
        self.audit = Audit(appliance.db, self.writer)
        self.catalog = Catalog(appliance.db)
        self.renderer = RenderPool()
        self.thumbs = ThumbnailCache(data / "cache" / "thumbs", renderer=self._render_thumbnail)
        self.prerender = PrerenderWorker(self._series_of, self.prerender_series)
        self.publishing: Publishing | None = None
        #: The running AMQP service of ``appliance serve`` (status() -> dict), if [amqp] is enabled.
        self.messaging: Any = None
        self._jobs: JobStore | None = None
        self._robots: dict[str, DiscRobot] | None = None
        self._cert_cache: tuple[float, list[str]] | None = None

    @property
    def nodes(self) -> Any:
        """The node registry that the DICOM policy consults too."""
        return self.app.node_registry

    @functools.cached_property
    def exporter(self) -> Exporter:
        """Download zip builder (made on first use: it empties its work folder)."""
        web = self.config.web
        return Exporter(self.config.data_dir / "cache" / "zips", web.zip_compression, web.max_zip_builds)

    def attach(self, prerender: bool = True) -> None:
        """Give every newly stored study a patient token, and render thumbnails when an association ends.

        Parameters
        ----------
        prerender : bool
            Render the thumbnails of newly stored series in the background (pointless with the web site off).
        """
        self.app.stored_listeners.append(self.tokens.on_stored)
        if prerender:
            self.app.released_listeners.append(self._prerender)

    def _prerender(self, called_ae: str, association_id: str, sop_uids: list[str], released: bool) -> None:
        """Association listener: queue the thumbnails of the series it stored (rendered in the background).

        The first page view of a study then finds them cached instead of rendering them while the patient waits.
        Only the UIDs are queued here: the association's thread does no index look-up and never waits.
        """
        self.prerender.submit_instances(sop_uids)

    def _series_of(self, sop_uids: list[str]) -> list[str]:
        """The stored series of these instances (for the pre-render worker)."""
        return sorted({inst.series_uid for uid in sop_uids if (inst := self.app.index.lookup(uid)) is not None})

    def close(self) -> None:
        """Commit the audit rows still queued, stop the thumbnail worker and the render processes.

        Call before the appliance stops. Thumbnails still queued for pre-rendering are rendered on first view.
        """
        self.writer.close()
        self.prerender.close()
        self.renderer.close()

    # -- links --------------------------------------------------------------------------------------

    def base_url(self) -> str:
        """``http(s)://host:port`` of patient links: ``[web] server_name``, else the bind or machine address."""
        web = self.config.web
        scheme = "https" if web.https else "http"
        host = web.server_name or (web.bind if web.bind not in ("0.0.0.0", "::", "") else machine_address())
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        default = 443 if web.https else 80
        return f"{scheme}://{host}" + ("" if web.port == default else f":{web.port}")

    def link(self, study_uid: str) -> str:
        """The patient link of a stored study, giving it a token first if it has none.

        Raises
        ------
        NotFound
            If the study is not stored.
        """
        study = self.study(study_uid)
        self.tokens.ensure(study_uid, study["study_date"])
        return f"{self.base_url()}/token?{self.tokens.token(study_uid)}"

    # -- studies ------------------------------------------------------------------------------------

    def study(self, study_uid: str) -> dict[str, Any]:
        """A stored study with its patient.

        Raises
        ------
        NotFound
            If it is not stored.
        """
        study = self.app.index.study(study_uid)
        if study is None:
            raise NotFound(f"study {study_uid} is not stored")
        return study

    def series(self, series_uid: str, study_uid: str | None = None) -> dict[str, Any]:
        """A series (of ``study_uid``, when given).

        Raises
        ------
        NotFound
            If there is no such series in that study.
        """
        info = self.catalog.series_info(series_uid)
        if info is None or (study_uid is not None and info["study_uid"] != study_uid):
            raise NotFound(f"series {series_uid} is not stored")
        return info

    def instance(self, sop_uid: str, study_uid: str | None = None) -> dict[str, Any]:
        """An instance (of ``study_uid``, when given).

        Raises
        ------
        NotFound
            If there is no such instance in that study.
        """
        info = self.catalog.instance(sop_uid)
        if info is None or (study_uid is not None and info["study_uid"] != study_uid):
            raise NotFound(f"instance {sop_uid} is not stored")
        return info

    # -- pictures -----------------------------------------------------------------------------------

    def _render_thumbnail(self, file: Path, size: int) -> bytes:
        """The thumbnail cache's renderer: a render process, and a log line for a placeholder."""
        data, reason = self.renderer.thumbnail(file, size)
        if reason:
            log_placeholder(file.name, reason)
        return data

    def _thumbnail_source(self, series_uid: str) -> dict[str, Any] | None:
        """The instance whose picture stands for a series (its middle one), None for an empty series."""
        instances = self.catalog.instances(series_uid)
        return instances[len(instances) // 2] if instances else None

    def series_thumbnail(self, series_uid: str, study_uid: str | None = None) -> bytes:
        """JPEG thumbnail of a series: its middle instance (a placeholder, not cached, when rendering failed).

        Raises
        ------
        NotFound
            If the series is not stored (in that study).
        """
        self.series(series_uid, study_uid)
        middle = self._thumbnail_source(series_uid)
        if middle is None:
            raise NotFound(f"series {series_uid} has no instances")
        try:
            return self.thumbs.get(middle["sop_uid"], middle["path"], self.app.store_area.path(middle["path"]))
        except RenderFailed as exc:
            # Not cached: the next view tries again in a fresh render process.
            LOGGER.error("thumbnail of series %s: %s", series_uid, exc)
            return jpeg_bytes(placeholder(self.thumbs.size), self.thumbs.size)

    def prerender_series(self, series_uid: str) -> bool:
        """Render and cache a series' thumbnail unless it is cached (the pre-render worker's job).

        Returns
        -------
        bool
            True when it was rendered now; False when it was cached already or the series is gone.

        Raises
        ------
        RenderFailed
            The render process died or took too long on it.
        """
        middle = self._thumbnail_source(series_uid)
        if middle is None or self.thumbs.has(middle["sop_uid"], middle["path"]):
            return False
        self.thumbs.get(middle["sop_uid"], middle["path"], self.app.store_area.path(middle["path"]))
        return True

    def view_image(self, sop_uid: str, study_uid: str | None = None, window: Window | None = None,
                   size: int = VIEW_SIZE) -> tuple[bytes, Window | None]:
        """JPEG of an instance for the viewer, with the window used.

        Raises
        ------
        NotFound
            If the instance is not stored (in that study).
        """
        info = self.instance(sop_uid, study_uid)
        return picture(self.app.store_area.path(info["path"]), max(64, min(size, 2048)), window)

    def viewer_series(self, study_uid: str) -> list[dict[str, Any]]:
        """Series of a study with their instance UIDs, for the viewer."""
        out = []
        for s in self.catalog.series(study_uid):
            s = dict(s)
            s["instances"] = [i["sop_uid"] for i in self.catalog.instances(s["series_uid"])]
            out.append(s)
        return out

    # -- downloads ----------------------------------------------------------------------------------

    def _items(self, study_uid: str, series_uid: str | None) -> list[ZipItem]:
        items = []
        for index, s in enumerate(self.catalog.series(study_uid), start=1):
            if series_uid is not None and s["series_uid"] != series_uid:
                continue
            label = series_label(s["series_number"], s["description"] or s["modality"], index)
            for number, inst in enumerate(self.catalog.instances(s["series_uid"]), start=1):
                items.append(ZipItem(self.app.store_area.path(inst["path"]), label, number))
        return items

    def download(self, kind: str, study_uid: str, series_uid: str | None = None) -> tuple[IO[bytes], str]:
        """A zip of a study or one of its series: ``kind`` ``"dicom"`` (file-set) or ``"jpeg"``.

        Returns
        -------
        tuple
            An open, rewound file (already unlinked) and the download's file name.

        Raises
        ------
        NotFound
            If the study or series is not stored, or ``kind`` is unknown.
        Busy
            When too many zips are being built.
        """
        study = self.study(study_uid)
        suffix = ""
        if series_uid is not None:
            s = self.series(series_uid, study_uid)
            suffix = f"S{s['series_number'] or s['id']}"
        if kind not in ("dicom", "jpeg"):
            raise NotFound(f"unknown download {kind!r}")
        items = self._items(study_uid, series_uid)
        build = self.exporter.dicom_zip if kind == "dicom" else self.exporter.jpeg_zip
        return build(items), zip_name(kind, study["study_date"], study["accession"], suffix)

    # -- deletion -----------------------------------------------------------------------------------

    def delete(self, study_uid: str, series_uid: str | None = None) -> int:
        """Delete a study, or one series of it: files first, then index rows, thumbnails and the token.

        Files go first: a crash in between leaves index rows without files, which the next start drops
        (:meth:`Appliance.reconcile`); the other order would leave files that it would index again.

        Returns
        -------
        int
            Number of instances deleted.

        Raises
        ------
        NotFound
            If the study or series is not stored.
        """
        self.study(study_uid)
        if series_uid is not None:
            self.series(series_uid, study_uid)
            instances = self.app.index.instances_of("SERIES", series_uid)
        else:
            instances = self.app.index.instances_of("STUDY", study_uid)
        for inst in instances:
            self.app.store_area.delete(inst.path)
            self.thumbs.forget(inst.sop_uid, inst.path)
        self.app.index.remove_paths([i.path for i in instances])
        if self.app.index.study(study_uid) is None:
            self.tokens.delete(study_uid)
        LOGGER.info("deleted %d instance(s) of %s %s", len(instances), "series" if series_uid else "study",
                    series_uid or study_uid)
        return len(instances)

    # -- token slip ---------------------------------------------------------------------------------

    def token_slip(self, study_uid: str, paper: str | None = None) -> bytes:
        """The patient's token slip as PDF bytes (labels.render_token_slip).

        Raises
        ------
        NotFound
            If the study is not stored.
        """
        from labels import LabelLayout, TokenSlipFields, render_token_slip

        study = self.study(study_uid)
        link = self.link(study_uid)
        info = self.tokens.get(study_uid)
        base = self.config.source.parent if self.config.source else None
        layout = LabelLayout.from_options(self.config.labels, base_dir=base)
        fields = TokenSlipFields(link=link, patient_name=study["patient_name"], study_date=study["study_date"],
                                 expires=info.valid_until if info else None, institution=self.config.institution)
        with tempfile.TemporaryDirectory() as tmp:
            out = render_token_slip(fields, paper or self.config.web.slip_paper, Path(tmp) / "slip.pdf", layout)
            return out.read_bytes()

    # -- nodes --------------------------------------------------------------------------------------

    def echo(self, ae_title: str, timeout: float = 5.0) -> tuple[bool, str]:
        """C-ECHO a known node: (online, reason).

        Raises
        ------
        NotFound
            If the node is not known.
        """
        from appliance.dicom.scu import echo

        node = self.nodes.get(ae_title)
        if node is None:
            raise NotFound(f"no node with AE title {ae_title!r}")
        tls = self.app.client_tls() if node.tls and self.app.client_tls else None
        result = echo(node.host, node.port, node.ae_title, self.config.dicom.ae_title, timeout, tls)
        return result.online, "Online" if result.online else result.reason

    # -- administration -----------------------------------------------------------------------------

    def settings(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """The effective configuration, secrets masked."""
        return mask_settings(self.config)

    def log_files(self) -> list[Path]:
        """The log file and its rotated copies, oldest first."""
        folder = self.config.log_dir
        files = sorted(folder.glob(LOG_FILE + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit()
                       else 0)
        current = folder / LOG_FILE
        return files + ([current] if current.exists() else [])

    def log_records(self, min_level: str = "INFO", limit: int = 500) -> list[LogRecord]:
        """The newest ``limit`` records at ``min_level`` or above, newest first."""
        wanted = set(LOG_LEVELS[LOG_LEVELS.index(min_level):]) | ({"CRITICAL"} if min_level != "TRACE" else set())
        records: list[LogRecord] = []
        for path in reversed(self.log_files()):
            for record in reversed(list(self._parse(path))):
                if record.level in wanted:
                    records.append(record)
                    if len(records) >= limit:
                        return records
        return records

    @staticmethod
    def _parse(path: Path, tail: int = 4 * 1024 * 1024) -> Iterator[LogRecord]:
        with open(path, "rb") as fh:
            fh.seek(0, io.SEEK_END)
            fh.seek(max(0, fh.tell() - tail))
            text = fh.read().decode("utf-8", "replace")
        current: LogRecord | None = None
        for line in text.splitlines():
            m = _LOG_RE.match(line)
            if m:
                if current:
                    yield current
                level = "FATAL" if m.group(2) == "CRITICAL" else m.group(2)
                current = LogRecord(m.group(1), level, m.group(3), m.group(4))
            elif current:
                current = dataclasses.replace(current, text=current.text + "\n" + line)
        if current:
            yield current

    def logs_zip(self) -> IO[bytes]:
        """Every log file in one zip, rewound."""
        out = tempfile.TemporaryFile()  # noqa: SIM115
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in self.log_files():
                zf.write(path, path.name)
        out.seek(0)
        return out

    def counts(self) -> dict[str, int]:
        """Patients, studies, series and instances stored."""
        return self.app.index.counts()

    def free_space(self) -> int:
        """Free bytes on the store's disk."""
        return self.app.store_area.free_bytes()

    def today(self) -> dt.date:
        """Today, by the token clock."""
        return self.tokens.today()

    @staticmethod
    def study_date(value: str) -> dt.date | None:
        """A DA as a date (None when empty or invalid), for display."""
        return parse_da(value)

    # -- disc jobs ----------------------------------------------------------------------------------

    def use_publishing(self, publishing: Publishing) -> None:
        """Use the running disc publishing of ``appliance serve`` (its robots, engine and publisher)."""
        self.publishing = publishing

    @property
    def jobs(self) -> JobStore:
        """The disc job store (the running engine's, else one on the same database)."""
        if self.publishing is not None:
            return self.publishing.jobs
        if self._jobs is None:
            from appliance.discs.jobs import JobStore

            self._jobs = JobStore(self.app.db)
        return self._jobs

    @property
    def robots(self) -> dict[str, DiscRobot]:
        """The configured robots by name (the demo pair when there is no ``[robots.*]`` table)."""
        if self.publishing is not None:
            return self.publishing.robots
        if self._robots is None:
            from appliance.discs.publishing import build_robots

            self._robots = build_robots(self.config)
        return self._robots

    def robot_names(self) -> list[str]:
        """Names of the configured robots, the default one first."""
        from appliance.discs.publishing import robot_tables

        names = list(robot_tables(self.config))
        default = self.config.burn.default_robot
        return sorted(names, key=lambda n: n != default)

    def _wake(self) -> None:
        if self.publishing is not None:
            self.publishing.engine.wake()

    def burn(self, study_uid: str, robot: str = "", copies: int | None = None, actor: str = "") -> Job:
        """Queue a disc job for a stored study, as ``appliance burn`` does.

        Parameters
        ----------
        study_uid : str
        robot : str
            A configured robot; default ``[burn] default_robot``, else the first one.
        copies : int, optional
            1-99; default ``[burn] copies``.
        actor : str
            Who asked (kept in the job's first event).

        Returns
        -------
        Job
            The queued job.

        Raises
        ------
        NotFound
            The study is not stored.
        InvalidValue
            Unknown robot or copies out of range.
        """
        from appliance.discs.content import study_instances

        self.study(study_uid)
        uids = study_instances(self.app.db, study_uid)
        if not uids:
            raise NotFound(f"study {study_uid} has no instances")
        names = self.robot_names()
        robot = robot or (names[0] if names else "")
        if robot not in names:
            raise InvalidValue(f"there is no robot {robot!r}; configured robots: {', '.join(names) or 'none'}")
        copies = self.config.burn.copies if copies is None else copies
        if not 1 <= copies <= 99:
            raise InvalidValue(f"copies must be 1-99, not {copies}")
        job_id = self.jobs.create(robot, copies, uids, "manual",
                                  reason=f"burn requested on the web by {actor or 'staff'}: {len(uids)} instance(s)")
        self._wake()
        return self.jobs.get(job_id)

    def job(self, job_id: int) -> Job:
        """A disc job.

        Raises
        ------
        NotFound
        """
        return self.jobs.get(job_id)

    def study_labels(self, study_uids: list[str]) -> dict[str, str]:
        """A short name for each stored study, as the burn queue shows it: date, then description or modalities."""
        out: dict[str, str] = {}
        for start in range(0, len(study_uids), 500):
            part = study_uids[start:start + 500]
            rows = self.app.db.conn.execute(
                f"SELECT study_uid, study_date, description, modalities FROM studies WHERE study_uid IN "
                f"({','.join('?' * len(part))})", part)
            for row in rows:
                date = row["study_date"]
                shown = f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else date
                what = row["description"] or row["modalities"].replace("\\", "/") or "study"
                out[row["study_uid"]] = f"{shown} {what}".strip()
        return out

    def job_rows(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest disc jobs as plain data for the burn queue page and its JSON.

        Each row has ``id, state, patient_name, patient_id, studies, study_labels, robot, media, discs, copies,
        size, source, parent_id, attempt, note, needs_staff, progress`` (one text per disc), ``updated``,
        ``actions`` (those its state allows) and ``labels`` (disc numbers with a label PDF to preview).
        """
        rows = []
        recent = self.jobs.recent(limit=limit)
        names = self.study_labels(sorted({s for job in recent for s in job.studies}))
        for job in recent:
            discs = self.jobs.discs(job.id)
            progress = [f"disc {d.number}: {d.robot_state or 'waiting'}" + (f" – {d.reason}" if d.reason else "")
                        for d in discs if d.ticket or d.robot_state]
            rows.append({
                "id": job.id, "state": job.state.value, "patient_name": job.patient_name,
                "patient_id": job.patient_id, "studies": list(job.studies),
                "study_labels": [names.get(s, f"study {n}") for n, s in enumerate(job.studies, 1)], "robot": job.robot,
                "media": job.media, "discs": job.disc_count, "copies": job.copies, "size": job.size,
                "source": job.source, "parent_id": job.parent_id, "attempt": job.attempt,
                "note": job.error if job.state.value == "failed" else job.message,
                "needs_staff": job.needs_staff, "progress": progress, "updated": job.updated,
                "actions": [a for a, states in JOB_ACTIONS.items() if job.state.value in states],
                "labels": [d.number for d in discs if self._label_path(d.files) is not None],
            })
        return rows

    @staticmethod
    def _label_path(files: Mapping[str, Any]) -> Path | None:
        value = (files.get("label") or {}).get("pdf")
        path = Path(value) if value else None
        return path if path is not None and path.is_file() else None

    def job_label(self, job_id: int, disc: int = 1) -> Path:
        """The label PDF of one disc of a job.

        Raises
        ------
        NotFound
            No such job or disc, or its label is not (or no longer) staged.
        """
        self.jobs.get(job_id)
        for d in self.jobs.discs(job_id):
            if d.number == disc and (path := self._label_path(d.files)) is not None:
                return path
        raise NotFound(f"job {job_id} has no label for disc {disc}")

    def job_action(self, job_id: int, action: str, actor: str = "") -> Job:
        """Retry, cancel, reburn or reprint a job, as ``appliance jobs <action>``.

        Returns
        -------
        Job
            The job changed (retry, cancel) or the new job (reburn, reprint).

        Raises
        ------
        NotFound
            No such job or action.
        InvalidTransition
            The job's state does not allow it (the message says which states do).
        PublishError
            The robot refused to cancel.
        """
        if action not in JOB_ACTIONS:
            raise NotFound(f"unknown job action {action!r}")
        job = self.jobs.get(job_id)
        by = f"on the web by {actor or 'staff'}"
        if job.state.value not in JOB_ACTIONS[action]:
            raise InvalidTransition(f"job {job_id} is {job.state.value}; only {' or '.join(JOB_ACTIONS[action])} "
                                    f"jobs can be {_DONE_WORDS[action]}")
        if action == "retry":
            result = self.jobs.retry(job_id, f"retry requested {by}")
        elif action == "cancel":
            from appliance.discs.publisher import DiscPublisher

            publisher = self.publishing.publisher if self.publishing else DiscPublisher(self.jobs, self.robots)
            result = publisher.cancel(job_id, f"cancelled {by}")
        else:
            result = self.jobs.get(self.jobs.repeat(job_id, action))
        self._wake()
        return result

    # -- robots -------------------------------------------------------------------------------------

    def robot_report(self) -> list[dict[str, Any]]:
        """Every configured robot with its bridge status (``robot.status()``), as plain data."""
        from robots import RobotError

        out = []
        for name, robot in self.robots.items():
            row: dict[str, Any] = {"name": name, "vendor": robot.vendor, "location": robot.location,
                                   "simulated": bool(self.publishing and name in self.publishing.simulators)}
            try:
                st = robot.status()
            except RobotError as exc:
                row.update(online=False, state="unknown", reason=f"status unavailable: {exc}", ink={}, media={},
                           media_unit="%", drives=[], errors=[], bridge="")
            else:
                row.update(online=st.online, state=st.state.value, reason=st.reason, ink=dict(st.ink),
                           media=dict(st.media), media_unit=st.media_unit, errors=list(st.errors), bridge=st.bridge,
                           drives=[{"name": d.name, "state": d.state, "percent": d.percent} for d in st.drives])
            out.append(row)
        return out

    @staticmethod
    def usb_summary() -> dict[str, Any]:
        """The USB detection: ``{"available", "devices": [text], "message"}``."""
        from robots.detect import detect_usb

        scan = detect_usb()
        return {"available": scan.available, "devices": [d.describe() for d in scan.devices], "message": scan.message}

    # -- worklist -----------------------------------------------------------------------------------

    def worklist_items(self, status: str = "", patient: str = "", date: str = "",
                       modality: str = "") -> list[dict[str, Any]]:
        """Worklist items (one per requested procedure) with their steps, earliest first.

        Parameters
        ----------
        status : str
            Only steps of this status.
        patient : str
            Patient ID or name (from the start; ``*`` and ``?`` as wildcards).
        date : str
            ``YYYYMMDD`` or ``YYYYMMDD-YYYYMMDD``.
        modality : str
            Only steps of this modality.
        """
        items: dict[str, dict[str, Any]] = {}
        for row in self.app.worklist.items(status=status or None, patient=patient or None, date=date or None):
            if modality and row.modality.upper() != modality.upper():
                continue
            item = items.setdefault(row.study_uid, {
                "study_uid": row.study_uid, "patient_name": row.patient_name, "patient_id": row.patient_id,
                "accession": row.accession, "source": row.source, "steps": []})
            item["steps"].append({**dataclasses.asdict(row), "tone": worklist_tone(row.status)})
        for item in items.values():
            tones = {s["tone"] for s in item["steps"]}
            item["tone"] = "done" if tones == {"done"} else "ended" if tones <= {"done", "ended"} else "open"
        return list(items.values())

    def worklist_delete_item(self, study_uid: str) -> int:
        """Delete every step of a worklist item; the number deleted.

        Raises
        ------
        NotFound
        """
        return self.app.worklist.delete_study(study_uid)

    def worklist_delete_step(self, step_id: int) -> int:
        """Delete one step.

        Raises
        ------
        NotFound
        """
        return self.app.worklist.delete_steps([step_id])

    def worklist_purge(self) -> int:
        """Delete every COMPLETED, DISCONTINUED and CANCELED step."""
        return self.app.worklist.purge()

    def worklist_reset(self, step_id: int) -> int:
        """Set a step back to SCHEDULED.

        Raises
        ------
        NotFound
        """
        return self.app.worklist.reset([step_id])

    # -- HL7 and certificates -----------------------------------------------------------------------

    def hl7_messages(self, limit: int = 100, ack_code: str = "") -> list[dict[str, Any]]:
        """The newest HL7 messages and their ACKs, newest first (text with one segment a line)."""
        out = []
        for m in self.app.hl7_log.recent(limit, ack_code or None):
            out.append({"id": m.id, "received": m.received, "peer": m.peer, "type": m.message_type,
                        "control_id": m.control_id, "ack_code": m.ack_code, "error": m.error,
                        "text": m.message.decode("latin-1").replace("\r\n", "\n").replace("\r", "\n").strip(),
                        "ack": m.ack.replace("\r", "\n").strip()})
        return out

    def amqp_state(self) -> dict[str, Any]:
        """The AMQP links, the outbox backlog and the newest messages in and out (for the settings page)."""
        from appliance.notify.log import AmqpLog

        state: dict[str, Any] = {"enabled": self.config.amqp.enabled, "status": None}
        if self.messaging is not None:
            state["status"] = self.messaging.status()
        state["messages"] = [
            {"time": m.time, "direction": m.direction, "address": m.address, "message_id": m.message_id,
             "outcome": m.outcome, "error": m.error, "text": m.body.decode("utf-8", "replace")[:2000]}
            for m in AmqpLog(self.app.db).recent(50)]
        return state

    def cert_warnings(self) -> list[str]:
        """Certificates that expire within ``[tls] expiry_warning_days`` (cached for a few minutes)."""
        import time

        from appliance import tls_contexts

        now = time.monotonic()
        if self._cert_cache is None or now - self._cert_cache[0] > _CERT_CACHE_SECONDS:
            try:
                warnings = tls_contexts.expiry_warnings(self.config)
            except Exception as exc:  # a broken certificate file must not break every staff page
                warnings = [f"The certificates could not be checked: {exc}"]
            self._cert_cache = (now, warnings)
        return self._cert_cache[1]


def worklist_tone(status: str) -> str:
    """``done`` (COMPLETED), ``ended`` (discontinued, cancelled, missed) or ``open``, for the status colour."""
    status = status.upper()
    return "done" if status in WORKLIST_DONE else "ended" if status in WORKLIST_ENDED else "open"
