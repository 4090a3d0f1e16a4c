"""Typed configuration, loaded once from TOML.

Every key is optional: the defaults run the appliance on one machine with no other
software (SQLite, local folders, simulated robots). ``load_config`` is the only
place that reads the file; the rest of the code receives frozen dataclasses.
Tables owned by leaf packages (``[robots.*]``, ``[labels]``, ``[tls]``) are kept as
raw mappings here and validated by their owners.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError

#: Characters allowed in an AE title: PS3.5 "AE" VR, default character repertoire
#: without backslash and control characters.
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "FATAL")


def validate_ae_title(value: str, what: str = "AE title") -> str:
    """Check an AE title and return it unchanged.

    Parameters
    ----------
    value : str
        The AE title; case-sensitive, 1-16 characters, no backslash, no control
        characters, not only spaces.
    what : str
        Name used in the error message.

    Returns
    -------
    str
        ``value`` itself.

    Raises
    ------
    ConfigError
        If the title is not valid.
    """
    if not isinstance(value, str) or not _AE_RE.match(value) or not value.strip():
        # Quoted as typed: repr() would show a typed backslash doubled.
        shown = f'"{value}"' if isinstance(value, str) and value.isprintable() else repr(value)
        raise ConfigError(f"{what} {shown} is not valid: use 1-16 printable ASCII characters, no backslash")
    if value != value.strip():
        raise ConfigError(f"{what} {value!r} must not start or end with spaces")
    return value


#: ``preferred_ts`` of a known node: the transfer syntax retrieve and forwarding convert to when the node accepts it
#: (appliance.codecs maps each name to its UID); "as-is" (the default, like "") sends what is stored.
TS_NAMES = (
    "as-is",
    "implicit",
    "explicit",
    "deflated",
    "jpeg-baseline",
    "jpeg-lossless",
    "jpeg-ls-lossless",
    "jpeg-ls-near-lossless",
    "jpeg2000-lossless",
    "jpeg2000",
    "rle",
)
#: What the staff UI shows for each of :data:`TS_NAMES`.
TS_LABELS = {
    "as-is": "As stored",
    "implicit": "Implicit VR Little Endian",
    "explicit": "Explicit VR Little Endian",
    "deflated": "Deflated Explicit VR Little Endian",
    "jpeg-baseline": "JPEG Baseline (lossy, 8-bit)",
    "jpeg-lossless": "JPEG Lossless",
    "jpeg-ls-lossless": "JPEG-LS Lossless",
    "jpeg-ls-near-lossless": "JPEG-LS Near-Lossless (lossy)",
    "jpeg2000-lossless": "JPEG 2000 Lossless",
    "jpeg2000": "JPEG 2000 (lossy)",
    "rle": "RLE Lossless",
}


@dataclass(frozen=True)
class NodeConfig:
    """A known DICOM node and what it may do here."""

    ae_title: str
    host: str = "127.0.0.1"
    port: int = 104
    tls: bool = False
    description: str = ""
    #: Rights: C-STORE to us, C-FIND, C-MOVE (as requester and as destination), C-GET, worklist.
    store: bool = True
    find: bool = True
    move: bool = True
    get: bool = True
    mwl: bool = True
    #: May ask us for Storage Commitment (N-ACTION); the N-EVENT-REPORT may come back on a new association to it.
    commit: bool = True
    #: One of :data:`TS_NAMES` ('' = as stored).
    preferred_ts: str = field(default="", kw_only=True)

    def may(self, right: str) -> bool:
        """Return whether this node holds ``right`` (store/find/move/get/mwl/commit)."""
        return bool(getattr(self, right))


@dataclass(frozen=True)
class DicomConfig:
    """The DICOM Application Entity."""

    ae_title: str = "DISCPACS"
    #: Address the listeners bind to; ``0.0.0.0`` listens on every network card.
    bind: str = "0.0.0.0"
    port: int = 11112
    #: 2762 is the IANA port for DICOM over TLS; with no [tls] certificate a demo set is made.
    tls_port: int = 2762
    accept_any_ae: bool = True
    #: A second instance with a known SOP Instance UID replaces the first instead of being ignored.
    overwrite: bool = False
    #: "reject": a C-STORE whose Study, Series, SOP Instance or SOP Class UID is not digits and dots is refused
    #: with 0xC000; "accept": stored as it is (such UIDs may break DICOMDIRs and viewers).
    invalid_uids: str = "reject"
    #: C-STORE is refused with 0xA700 when the store's disk has less free space than this.
    free_space_limit_mb: int = 500
    max_associations: int = 20
    #: Largest PDU we accept; big PDUs cut per-PDU overhead on the receive path.
    max_pdu: int = 1048576
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 120.0
    #: Log every worklist C-FIND (modalities poll every few seconds, so it is off by default).
    log_worklist_queries: bool = False
    #: Serve storage, verification and C-FIND associations on the raw socket (appliance.dicom.fast); false: all by
    #: pynetdicom (same answers, slower; for diagnosis).
    fast_path: bool = True
    nodes: tuple[NodeConfig, ...] = ()

    def node(self, ae_title: str) -> NodeConfig | None:
        """Return the known node with this AE title (case-sensitive), if any."""
        for node in self.nodes:
            if node.ae_title == ae_title:
                return node
        return None


#: Disc media, smallest first (the names robots.MEDIA uses).
DISC_MEDIA = ("CD", "DVD", "DVD-DL", "BD")
#: PS3.11 media application profiles the disc author knows; appliance/discs/fileset.py holds their transfer syntaxes.
MEDIA_PROFILES = (
    "STD-GEN-CD",
    "STD-GEN-DVD-RAM",
    "STD-GEN-BD",
    "STD-GEN-DVD-JPEG",
    "STD-GEN-DVD-J2K",
    "STD-GEN-BD-JPEG",
    "STD-GEN-BD-J2K",
    "STD-GEN-USB-JPEG",
    "STD-GEN-USB-J2K",
)
#: What a burn AE title does: one disc per association, one disc per quiet group, or only store.
ROUTE_MODES = ("association", "delayed", "store")
#: The built-in routes (called-AE suffix -> route), as the design names them.
DEFAULT_ROUTES: Mapping[str, Mapping[str, Any]] = {
    "_E": {"robot": "epson", "mode": "association"},
    "_P": {"robot": "primera", "mode": "association"},
    "_TE": {"robot": "epson", "mode": "delayed"},
    "_TP": {"robot": "primera", "mode": "delayed"},
}


@dataclass(frozen=True)
class BurnConfig:
    """Disc publishing: burn AE titles, delayed groups, disc authoring and jobs (docs/publishing.md)."""

    #: Seconds without a new instance after which a delayed (_TE/_TP) group becomes a disc job.
    delay: float = 120.0
    #: What one delayed disc holds: "patient_id" or "study_uid".
    group_by: str = "patient_id"
    #: Robot of `appliance burn` without --robot; empty: the first configured robot.
    default_robot: str = ""
    #: Discs burned per job unless the route or the command says otherwise.
    copies: int = 1
    #: "auto" (the smallest of auto_media that holds the content) or a pinned medium: CD, DVD, DVD-DL, BD.
    media: str = "auto"
    #: Media "auto" may choose from; content larger than the biggest spans several discs of it.
    auto_media: tuple[str, ...] = ("CD", "DVD", "DVD-DL", "BD")
    #: Capacities in MB (10^6 bytes) replacing the built-in ones, e.g. {CD = 650}.
    capacity_mb: Mapping[str, float] = field(default_factory=dict)
    #: Percent of each medium kept free for file-system overhead when content is planned.
    capacity_margin: float = 3.0
    #: PS3.11 media application profile; decides which transfer syntaxes go on the disc.
    profile: str = "STD-GEN-CD"
    #: Folder whose content (a DICOM viewer) is copied to every disc; empty: no viewer.
    viewer_dir: str = ""
    #: The viewer's start file, relative to viewer_dir, named in README.TXT and linked from INDEX.HTM.
    viewer_entry: str = ""
    #: Contact line printed in README.TXT (phone, e-mail of the imaging department).
    contact: str = ""
    #: The robot compares each disc with the image after writing.
    verify: bool = True
    #: Hours after which a finished job's staged files and images are deleted (labels and job files stay).
    staging_purge_hours: float = 72.0
    #: Staging stops with a clear error rather than leave less free space than this on the data disk.
    staging_free_space_mb: int = 1000
    #: Seconds between two looks at the robots' job status.
    poll_interval: float = 2.0
    #: Called-AE suffix -> {robot, mode ("association", "delayed" or "store"), copies}; added to the built-in
    #: _E, _P (association) and _TE, _TP (delayed) routes to the robots "epson" and "primera".
    routes: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(DEFAULT_ROUTES))


@dataclass(frozen=True)
class HL7Config:
    """The HL7 MLLP listener and how orders become worklist items (docs/hl7-worklist.md)."""

    bind: str = "0.0.0.0"
    #: 0 disables the listener.
    port: int = 2575
    #: The port speaks MLLP inside TLS (certificates from [tls]).
    tls: bool = False
    #: MSH-3 / MSH-4 of our ACKs; empty: the incoming MSH-5 / MSH-6.
    sending_application: str = "APPLIANCE"
    sending_facility: str = ""
    #: false: apply messages but send no ACK (for senders that do not read them).
    send_ack: bool = True
    #: Character set of messages whose MSH-18 is empty: an HL7 name (8859/1, UNICODE UTF-8) or a Python codec.
    default_charset: str = "8859/1"
    #: Days the message log keeps messages and ACKs; 0 keeps none in the database.
    log_retention_days: int = 30
    #: Largest accepted message; a bigger frame is answered AR and skipped.
    max_message_kb: int = 16384
    #: The message log keeps at most this much of each message.
    log_message_kb: int = 64
    #: Messages are refused (AR) while the database's disk has less free space than this.
    free_space_limit_mb: int = 500
    #: Seconds a connection may stay silent (after its first message) before it is closed.
    idle_timeout: float = 300.0
    #: Connections served at once; when all are open, the one idle longest is closed for a new one.
    max_connections: int = 50
    #: Connections served at once from one address.
    max_connections_per_peer: int = 10
    #: Seconds a new connection has to begin its first message.
    first_message_timeout: float = 10.0
    #: Seconds a sender has to finish a message it has begun.
    message_timeout: float = 60.0
    #: "App|Facility" (or "App") of accepted senders; empty: accept every sender.
    accepted_senders: tuple[str, ...] = ()
    #: Scheduled Station AE Title by modality, when the order names none (e.g. {CT = "CT1"}).
    station_aets: Mapping[str, str] = field(default_factory=dict)
    #: Scheduled Station AE Title when neither the order nor station_aets gives one; empty: the step is
    #: stored with an empty station (found by queries without a station key) and a warning is logged.
    default_station_aet: str = ""
    #: HL7 modality codes translated to DICOM ones, on top of the built-in table-0074 translations.
    modalities: Mapping[str, str] = field(default_factory=dict)
    #: Order without Study Instance UID: "generate" (a 2.25 UID derived from the placer/filler order number and
    #: accession number, the same for every message of the order), "accession" (derived from the accession
    #: number only) or "reject" (AE 101).
    missing_study_uid: str = "generate"
    #: Reject orders for a patient ID that ADT^A40 merged into another one.
    reject_merged_ids: bool = True
    #: ADT^A08/A31 for a patient without worklist items, ADT^A40 whose prior ID (MRG-1) has none:
    #: "accept" (AA with "nothing to update" in MSA-3) or "reject" (AE, ERR 204).
    unknown_patient: str = "accept"


@dataclass(frozen=True)
class WorklistConfig:
    """The Modality Worklist kept by the core."""

    #: Statuses a worklist C-FIND returns only when the query asks for them by value
    #: (DCMTK's wlmscpfs returns every item: set [] to answer as it does).
    hidden_statuses: tuple[str, ...] = ("CANCELED", "DISCONTINUED", "COMPLETED")
    #: Person names match without regard to case (Orthanc, dcm4chee); false: case-sensitive, as DCMTK's wlmscpfs.
    pn_ignore_case: bool = False
    #: An order update that no longer lists a step: "delete" it or mark it "cancel"ed.
    dropped_steps: str = "delete"
    #: A value longer than its DICOM VR allows: "reject" the order, or "truncate" it and log a warning.
    long_values: str = "reject"
    #: A cancel/discontinue order (ORC-1 CA, DC, OC, OD) for a step already COMPLETED (by MPPS or the RIS):
    #: "reject" it (AE, ERR 206, the completion stays) or "apply" it anyway.
    cancel_completed: str = "reject"
    #: A folder of DICOM worklist files (.wl, as wlmscpfs -dfp or Orthanc's Worklists.Database keep them),
    #: re-read when a file changes; empty: none. Its items are replaced by what the folder holds.
    folder: str = ""
    #: Seconds between two looks at ``folder`` for changes.
    folder_poll: float = 2.0


@dataclass(frozen=True)
class WebConfig:
    """The web site: the patient token site and the staff UI (docs/web.md)."""

    bind: str = "0.0.0.0"
    #: 0 disables the web site.
    port: int = 3000
    #: How long a patient link works after the study date: a number of days, or "6 months", "1 year"...
    token_days: int | str = 60
    #: Host name printed in patient links; empty: this machine's address.
    server_name: str = ""
    #: Serve HTTPS with the [tls] certificate (a demo one when none is set) instead of plain HTTP.
    https: bool = False
    #: Worker threads of the WSGI server.
    threads: int = 8
    #: Seconds a client has to send a whole request header (from its first byte; from the connection for
    #: the first request): slowly trickled headers cannot hold connections.
    header_timeout: float = 10.0
    #: Connections open at once (raise the service's open-files limit to match).
    max_connections: int = 1000
    #: Connections open at once from one client address; at the cap its stalled or idle one makes room.
    max_connections_per_client: int = 50
    #: A staff session ends after this many minutes without a request.
    session_minutes: int = 30
    #: Lifetime of the cookie a patient link is exchanged for; then the link must be opened again.
    patient_session_minutes: int = 60
    #: Failed token or login attempts allowed per client address within rate_window seconds.
    rate_limit: int = 10
    rate_window: int = 60
    #: Patient and staff study zips: "none" (files as received) or "jpeg-lossless".
    zip_compression: str = "none"
    #: Zips built at the same time; more requests wait, then get "busy, try again".
    max_zip_builds: int = 2
    #: Paper of the printed token slip: "A4", "Letter" or "receipt80".
    slip_paper: str = "A4"


@dataclass(frozen=True)
class DicomWebConfig:
    """DICOMweb (QIDO-RS, WADO-RS, STOW-RS, WADO-URI) on its own port (docs/dicomweb.md)."""

    #: Address to listen on; empty: the web site's ([web] bind).
    bind: str = ""
    #: 0 disables DICOMweb.
    port: int = 8010
    #: Worker threads of its WSGI server.
    threads: int = 8
    #: Largest STOW-RS request body, in megabytes (a bigger one is refused with 413 before it is read).
    max_upload_mb: int = 1024
    #: QIDO-RS answers at most this many matches per request when the client sends no smaller ``limit``.
    max_results: int = 10000


@dataclass(frozen=True)
class ApiConfig:
    """Who may use DICOMweb and the JSON API besides staff sessions and API keys (docs/dicomweb.md)."""

    #: Client addresses (or host names) the master cookie is accepted from; empty: from any host.
    master_cookie_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class TlsConfig:
    """Certificates for the TLS listeners and outgoing TLS connections (see docs/certificates.md)."""

    cert: str = ""
    key: str = ""
    ca: str = ""
    verify_peer: bool = False
    client_cert: str = ""
    client_key: str = ""
    check_hostname: bool = True
    key_permissions: str = "warn"
    handshake_timeout: float = 10.0
    expiry_warning_days: int = 30


@dataclass(frozen=True)
class StorageConfig:
    """One ``[[storage]]`` folder for received files (appliance.storage)."""

    path: str
    #: A disabled storage takes no new files but is still read for query, retrieve, discs and downloads.
    enabled: bool = True
    #: New files go elsewhere (or are refused with 0xA700) once the folder's disk has less free space than this.
    free_space_limit_mb: int = 2048


#: Task kinds of the weekly ``[maintenance]`` schedule.
TASK_KINDS = ("archiving", "deletion", "forwarding")


@dataclass(frozen=True)
class MaintenanceConfig:
    """Weekly windows in which upkeep tasks are collected, e.g. ``["Mon-Fri 22:00-06:00"]`` (whole hours)."""

    archiving: tuple[str, ...] = ("Mon-Sun 22:00-06:00",)
    deletion: tuple[str, ...] = ("Mon-Sun 22:00-06:00",)
    forwarding: tuple[str, ...] = ("Mon-Sun 00:00-24:00",)


#: ``[archiving] compression`` names; the transfer syntax of each is chosen in appliance.codecs (ARCHIVE_TS).
COMPRESSIONS = (
    "none",
    "source",
    "rle",
    "deflate",
    "jpeg-lossless",
    "jpeg-ls-lossless",
    "jpeg2000-lossless",
    "jpeg-lossy",
    "jpeg-ls-near-lossless",
    "jpeg2000-lossy",
)
LOSSY_COMPRESSIONS = ("jpeg-lossy", "jpeg-ls-near-lossless", "jpeg2000-lossy")


@dataclass(frozen=True)
class ArchivingConfig:
    """Scheduled compression of stored series."""

    compression: str = "none"
    #: Days after receipt before a series is compressed; 0: at the next archiving window.
    uncompressed_days: int = 0
    #: A lossy compression is refused unless this is true (the images change for good).
    confirm_lossy: bool = False


@dataclass(frozen=True)
class DeletionConfig:
    """Scheduled and low-space deletion of stored series."""

    #: Series older than this many days (since receipt) are deleted in the deletion window; 0: never.
    store_days: int = 0
    #: Delete the oldest series at once while a storage's free space is below low_space_threshold_mb.
    low_space_removal: bool = False
    low_space_threshold_mb: int = 4096
    #: Also delete studies that still have a live patient link.
    delete_shared: bool = False
    #: Also delete series not yet forwarded to the regional PACS ([forwarding]).
    remove_not_forwarded: bool = False


#: Alerts ``[email] events`` may list.
EMAIL_EVENTS = (
    "storage_unavailable",
    "free_space_limit",
    "save_error",
    "robot_needs_staff",
    "disc_job_failed",
    "certificate_expiry",
)


@dataclass(frozen=True)
class LimitsConfig:
    """Budgets for heavy work on received (untrusted) instances."""

    #: Conversions for a retrieve or DICOMweb receiver (decompress, transcode) run in this many worker processes
    #: (0: as many as the machine has cores, at most 2).
    conversion_workers: int = 0
    #: Address space one conversion may use, in MB (libraries included); an instance needing more fails alone.
    conversion_memory_mb: int = 2048
    #: Time one conversion may take, in seconds (plus 0.6 s per MB of the stored file).
    conversion_seconds: float = 60.0


@dataclass(frozen=True)
class EmailConfig:
    """E-mail alerts (appliance.notify.email); no smtp_host: no mail."""

    smtp_host: str = ""
    smtp_port: int = 587
    #: "starttls", "tls" (implicit TLS, usually port 465) or "none".
    security: str = "starttls"
    user: str = ""
    password: str = field(default="", repr=False)
    #: The From address (key ``from`` in the file).
    sender: str = ""
    to: tuple[str, ...] = ()
    events: tuple[str, ...] = EMAIL_EVENTS


@dataclass(frozen=True)
class ForwardingConfig:
    """``[forwarding]``: send every stored series to a regional PACS, with Storage Commitment."""

    enabled: bool = False
    ae_title: str = ""
    host: str = ""
    port: int = 104
    #: Connect with TLS (the [tls] client certificate; the peer verified against the [tls] CA list).
    tls: bool = False
    #: One of :data:`TS_NAMES` ('' or "as-is": as stored).
    preferred_ts: str = ""
    #: After each batch, ask the regional server to commit it (N-ACTION); failures are sent again.
    storage_commitment: bool = True
    #: C-FIND and the staff study list also ask the regional server (see docs/forwarding.md).
    extended_search: bool = False
    #: The manual's three timeouts: TCP connect, DICOM (association, N-ACTION answers, C-FIND), one transfer.
    tcp_timeout_ms: int = 10_000
    dicom_timeout_ms: int = 30_000
    transfer_timeout_ms: int = 15_000
    #: Instances per association.
    batch_size: int = 200
    #: Seconds to wait for the N-EVENT-REPORT of a batch before it is sent again.
    commitment_wait: float = 600.0
    #: First and longest pause before a failed batch is tried again (doubling in between).
    retry_min: float = 10.0
    retry_max: float = 1800.0


@dataclass(frozen=True)
class AmqpConfig:
    """Messaging with a RabbitMQ server over AMQP 0-9-1 (docs/amqp.md)."""

    enabled: bool = False
    #: Broker address: IPv4, IPv6 or a host name.
    host: str = "127.0.0.1"
    #: 5672; 5671 when tls = true and no port is given.
    port: int = 5672
    #: AMQP over TLS with the [tls] files (ca verifies the broker; client_cert/client_key when it asks for one).
    tls: bool = False
    vhost: str = "/"
    user: str = "guest"
    password: str = "guest"
    #: Seconds between heartbeats (0: none).
    heartbeat: int = 60
    #: Seconds one connection attempt may take.
    connect_timeout: float = 10.0
    #: Seconds between two connection attempts while the broker is unreachable.
    reconnect_seconds: float = 5.0
    #: Exchanges, queues and routing keys (the defaults follow the manual's shape).
    ris_exchange: str = "appliance.RIS"
    request_exchange: str = "appliance.request"
    mwl_queue: str = "appliance.MWL"
    mwl_routing_key: str = "MWL"
    mwl_changed_queue: str = "appliance.MWL_changed"
    mwl_state_routing_key: str = "mwl_state_rk"
    studies_queue: str = "appliance.Studies"
    new_study_routing_key: str = "pacs_new_study_rk"
    new_series_routing_key: str = "pacs_new_series_rk"
    #: Which events go out.
    notify_new_study: bool = True
    notify_new_series: bool = True
    notify_mwl_status: bool = True
    #: Body of outgoing messages: "xml" (the manual's shapes) or "json" (adds patient ID, accession, modality, counts).
    format: str = "xml"
    #: Take worklist orders from mwl_queue.
    consume: bool = True
    #: Largest accepted input message; a bigger one is rejected.
    max_message_kb: int = 1024
    #: Input messages the broker may hand us before we acknowledge.
    prefetch: int = 20
    #: Days the message log keeps messages in and out; 0 keeps none.
    log_retention_days: int = 30


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    data_dir: Path = Path("var")
    #: Folder for incoming files before they are moved into a storage; empty: ``tmp/`` inside each storage.
    temp_dir: str = ""
    log_level: str = "INFO"
    #: Rotate the log file when it reaches this size; keep this many old files.
    log_max_mb: float = 10.0
    log_backups: int = 10
    institution: str = ""
    dicom: DicomConfig = field(default_factory=DicomConfig)
    burn: BurnConfig = field(default_factory=BurnConfig)
    hl7: HL7Config = field(default_factory=HL7Config)
    worklist: WorklistConfig = field(default_factory=WorklistConfig)
    web: WebConfig = field(default_factory=WebConfig)
    dicomweb: DicomWebConfig = field(default_factory=DicomWebConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    robots: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    labels: Mapping[str, Any] = field(default_factory=dict)
    tls: TlsConfig = field(default_factory=TlsConfig)
    forwarding: ForwardingConfig = field(default_factory=ForwardingConfig)
    amqp: AmqpConfig = field(default_factory=AmqpConfig)
    #: ``[[storage]]`` entries; empty: the one store folder in data_dir.
    storages: tuple[StorageConfig, ...] = ()
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    archiving: ArchivingConfig = field(default_factory=ArchivingConfig)
    deletion: DeletionConfig = field(default_factory=DeletionConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    #: The file this configuration was read from, if any.
    source: Path | None = None

    @property
    def store_dir(self) -> Path:
        """Folder of the received DICOM files."""
        return self.data_dir / "store"

    @property
    def database(self) -> Path:
        """The SQLite index."""
        return self.data_dir / "appliance.db"

    @property
    def log_dir(self) -> Path:
        """Folder of the rotating log files."""
        return self.data_dir / "logs"


def _build(cls: type, table: Mapping[str, Any], section: str) -> Any:
    """Make dataclass ``cls`` from a TOML table, rejecting unknown keys and wrong types."""
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"[{section}] has an unknown key {key!r}")
        default = known[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"[{section}] {key} must be true or false, not {value!r}")
        if isinstance(default, int | float) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"[{section}] {key} must be a number, not {value!r}")
            value = type(default)(value)
        if isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"[{section}] {key} must be a string, not {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def _check_port(value: int, what: str) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{what} {value} is not a TCP port (0-65535)")


def parse_config(data: Mapping[str, Any], base_dir: Path | None = None) -> Config:
    """Build a :class:`Config` from the parsed TOML document.

    Parameters
    ----------
    data : Mapping
        The TOML document as a mapping.
    base_dir : Path, optional
        Relative ``data_dir`` paths are taken from here (the config file's folder);
        default: the working directory.

    Raises
    ------
    ConfigError
        On unknown tables or keys, wrong types or invalid values.
    """
    allowed = {
        "appliance",
        "dicom",
        "burn",
        "hl7",
        "worklist",
        "web",
        "robots",
        "labels",
        "tls",
        "forwarding",
        "dicomweb",
        "api",
        "amqp",
        "storage",
        "maintenance",
        "archiving",
        "deletion",
        "email",
        "limits",
    }
    for section in data:
        if section not in allowed:
            raise ConfigError(f"unknown table [{section}] (known: {', '.join(sorted(allowed))})")
    top = dict(data.get("appliance", {}))
    data_dir = Path(top.pop("data_dir", "var"))
    if not data_dir.is_absolute() and base_dir is not None:
        data_dir = base_dir / data_dir
    cfg = _build(Config, top, "appliance")
    if cfg.temp_dir and not Path(cfg.temp_dir).is_absolute() and base_dir is not None:
        cfg = replace(cfg, temp_dir=str(base_dir / cfg.temp_dir))
    level = cfg.log_level.upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"[appliance] log_level {cfg.log_level!r} is not one of {', '.join(LOG_LEVELS)}")

    dicom_table = dict(data.get("dicom", {}))
    node_tables = dicom_table.pop("nodes", [])
    dicom = _build(DicomConfig, dicom_table, "dicom")
    validate_ae_title(dicom.ae_title, "[dicom] ae_title")
    if len(dicom.ae_title) > 13:
        # The burn suffixes (_E, _P, _TE, _TP) must still fit in 16 characters.
        raise ConfigError(f"[dicom] ae_title {dicom.ae_title!r} is too long: at most 13 characters")
    _check_port(dicom.port, "[dicom] port")
    _check_port(dicom.tls_port, "[dicom] tls_port")
    if dicom.invalid_uids not in ("reject", "accept"):
        raise ConfigError(f"[dicom] invalid_uids must be 'reject' or 'accept', not {dicom.invalid_uids!r}")
    nodes = []
    seen: set[str] = set()
    for i, table in enumerate(node_tables):
        if "ae_title" not in table:
            raise ConfigError(f"[[dicom.nodes]] entry {i + 1} has no ae_title")
        node = _build(NodeConfig, table, "dicom.nodes")
        validate_ae_title(node.ae_title, f"[[dicom.nodes]] entry {i + 1} ae_title")
        _check_port(node.port, f"[[dicom.nodes]] {node.ae_title} port")
        if node.preferred_ts and node.preferred_ts not in TS_NAMES:
            raise ConfigError(
                f"[[dicom.nodes]] {node.ae_title} preferred_ts {node.preferred_ts!r} is not one of: "
                f"{', '.join(TS_NAMES)}"
            )
        if node.ae_title in seen:
            raise ConfigError(f"[[dicom.nodes]] {node.ae_title!r} is listed twice")
        seen.add(node.ae_title)
        nodes.append(node)
    dicom = replace(dicom, nodes=tuple(nodes))

    burn = _burn_config(data.get("burn", {}), dicom.ae_title, base_dir)
    hl7 = _hl7_config(data.get("hl7", {}))
    worklist = _worklist_config(data.get("worklist", {}))
    if worklist.folder and not Path(worklist.folder).is_absolute() and base_dir is not None:
        worklist = replace(worklist, folder=str(base_dir / worklist.folder))
    web = _web_config(data.get("web", {}))
    forwarding = _forwarding_config(data.get("forwarding", {}))
    dicomweb = _dicomweb_config(data.get("dicomweb", {}))
    api_table = dict(data.get("api", {}))
    hosts = _str_list(api_table.pop("master_cookie_hosts", []), "[api] master_cookie_hosts")
    api = replace(_build(ApiConfig, api_table, "api"), master_cookie_hosts=hosts)
    tls = _build(TlsConfig, data.get("tls", {}), "tls")
    amqp = _amqp_config(data.get("amqp", {}))
    limits: LimitsConfig = _build(LimitsConfig, data.get("limits", {}), "limits")
    if limits.conversion_workers < 0 or limits.conversion_memory_mb < 256 or limits.conversion_seconds <= 0:
        raise ConfigError(
            "[limits] conversion_workers must be 0 or more, conversion_memory_mb at least 256, "
            "conversion_seconds positive"
        )
    if tls.key_permissions not in ("refuse", "warn", "ignore"):
        raise ConfigError(f"[tls] key_permissions must be 'refuse', 'warn' or 'ignore', not {tls.key_permissions!r}")
    if base_dir is not None:
        # Certificate paths in the file are relative to the file's folder.
        tls = replace(
            tls,
            **{
                k: str(base_dir / v)
                for k in ("cert", "key", "ca", "client_cert", "client_key")
                if (v := getattr(tls, k)) and not Path(v).is_absolute()
            },
        )
    return replace(
        cfg,
        data_dir=data_dir,
        log_level=level,
        dicom=dicom,
        burn=burn,
        hl7=hl7,
        worklist=worklist,
        web=web,
        dicomweb=dicomweb,
        api=api,
        robots=dict(data.get("robots", {})),
        labels=dict(data.get("labels", {})),
        tls=tls,
        forwarding=forwarding,
        amqp=amqp,
        limits=limits,
        **_upkeep_config(data, base_dir),
    )


def _forwarding_config(table: Mapping[str, Any]) -> ForwardingConfig:
    fwd: ForwardingConfig = _build(ForwardingConfig, table, "forwarding")
    if fwd.enabled or fwd.extended_search:
        if not fwd.ae_title or not fwd.host:
            raise ConfigError(
                f"[forwarding] {'enabled' if fwd.enabled else 'extended_search'} needs ae_title and "
                "host (the regional PACS)"
            )
        validate_ae_title(fwd.ae_title, "[forwarding] ae_title")
        _check_port(fwd.port, "[forwarding] port")
    if fwd.preferred_ts and fwd.preferred_ts not in TS_NAMES:
        raise ConfigError(f"[forwarding] preferred_ts {fwd.preferred_ts!r} is not one of: {', '.join(TS_NAMES)}")
    for key in ("tcp_timeout_ms", "dicom_timeout_ms", "transfer_timeout_ms", "batch_size"):
        if getattr(fwd, key) <= 0:
            raise ConfigError(f"[forwarding] {key} must be positive")
    return fwd


_SPS_STATUSES = ("SCHEDULED", "ARRIVED", "READY", "STARTED", "DEPARTED", "COMPLETED", "DISCONTINUED", "CANCELED")


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} must be a list of strings, not {value!r}")
    return tuple(value)


def _str_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f'{what} must be a table of strings (e.g. {{CT = "CT1"}}), not {value!r}')
    return {str(k): v for k, v in value.items()}


def _hl7_config(table: Mapping[str, Any]) -> HL7Config:
    table = dict(table)
    special = {
        "accepted_senders": _str_list(table.pop("accepted_senders", []), "[hl7] accepted_senders"),
        "station_aets": _str_map(table.pop("station_aets", {}), "[hl7] station_aets"),
        "modalities": _str_map(table.pop("modalities", {}), "[hl7] modalities"),
    }
    hl7: HL7Config = replace(_build(HL7Config, table, "hl7"), **special)
    _check_port(hl7.port, "[hl7] port")
    for modality, aet in hl7.station_aets.items():
        validate_ae_title(aet, f"[hl7] station_aets {modality}")
    if hl7.default_station_aet:
        validate_ae_title(hl7.default_station_aet, "[hl7] default_station_aet")
    if hl7.missing_study_uid not in ("reject", "generate", "accession"):
        raise ConfigError(
            f"[hl7] missing_study_uid must be 'reject', 'generate' or 'accession', not {hl7.missing_study_uid!r}"
        )
    for key in (
        "log_retention_days",
        "max_message_kb",
        "max_connections",
        "max_connections_per_peer",
        "log_message_kb",
        "free_space_limit_mb",
    ):
        if getattr(hl7, key) < (0 if key in ("log_retention_days", "free_space_limit_mb") else 1):
            raise ConfigError(f"[hl7] {key} {getattr(hl7, key)} is out of range")
    for key in ("idle_timeout", "first_message_timeout", "message_timeout"):
        if getattr(hl7, key) <= 0:
            raise ConfigError(f"[hl7] {key} must be positive")
    if hl7.unknown_patient not in ("accept", "reject"):
        raise ConfigError(f"[hl7] unknown_patient must be 'accept' or 'reject', not {hl7.unknown_patient!r}")
    return hl7


def _worklist_config(table: Mapping[str, Any]) -> WorklistConfig:
    table = dict(table)
    hidden = _str_list(table.pop("hidden_statuses", list(WorklistConfig.hidden_statuses)), "[worklist] hidden_statuses")
    for status in hidden:
        if status not in _SPS_STATUSES:
            raise ConfigError(f"[worklist] hidden_statuses: {status!r} is not one of {', '.join(_SPS_STATUSES)}")
    wl: WorklistConfig = replace(_build(WorklistConfig, table, "worklist"), hidden_statuses=hidden)
    if wl.dropped_steps not in ("delete", "cancel"):
        raise ConfigError(f"[worklist] dropped_steps must be 'delete' or 'cancel', not {wl.dropped_steps!r}")
    if wl.long_values not in ("reject", "truncate"):
        raise ConfigError(f"[worklist] long_values must be 'reject' or 'truncate', not {wl.long_values!r}")
    if wl.cancel_completed not in ("reject", "apply"):
        raise ConfigError(f"[worklist] cancel_completed must be 'reject' or 'apply', not {wl.cancel_completed!r}")
    if wl.folder_poll <= 0:
        raise ConfigError("[worklist] folder_poll must be positive")
    return wl


def _amqp_config(table: Mapping[str, Any]) -> AmqpConfig:
    table = dict(table)
    amqp: AmqpConfig = _build(AmqpConfig, table, "amqp")
    if amqp.tls and "port" not in table:
        amqp = replace(amqp, port=5671)
    _check_port(amqp.port, "[amqp] port")
    if amqp.format not in ("xml", "json"):
        raise ConfigError(f"[amqp] format must be 'xml' or 'json', not {amqp.format!r}")
    if not amqp.host.strip():
        raise ConfigError("[amqp] host must not be empty")
    for key in ("max_message_kb", "prefetch"):
        if getattr(amqp, key) < 1:
            raise ConfigError(f"[amqp] {key} must be at least 1")
    for key in ("heartbeat", "log_retention_days"):
        if getattr(amqp, key) < 0:
            raise ConfigError(f"[amqp] {key} must not be negative")
    if amqp.connect_timeout <= 0 or amqp.reconnect_seconds <= 0:
        raise ConfigError("[amqp] connect_timeout and reconnect_seconds must be positive")
    names = ("ris_exchange", "request_exchange", "mwl_queue", "mwl_changed_queue", "studies_queue")
    for key in names:
        value = getattr(amqp, key)
        if not value or len(value.encode()) > 255:
            raise ConfigError(f"[amqp] {key} must be 1-255 bytes long")
    for f in fields(AmqpConfig):
        if f.name.endswith("routing_key") and len(getattr(amqp, f.name).encode()) > 255:
            raise ConfigError(f"[amqp] {f.name} is longer than 255 bytes")
    return amqp


_TOKEN_UNITS = {"day": 1, "week": 7, "month": 0, "year": 0}


def parse_validity(value: int | str) -> tuple[int, str]:
    """Read a token validity: ``60``, ``"60 days"``, ``"2 weeks"``, ``"6 months"``, ``"1 year"``.

    Parameters
    ----------
    value : int or str
        A number of days, or a count and a unit (day, week, month, year; singular or plural).

    Returns
    -------
    tuple of (int, str)
        The count and the unit, ``"days"`` (weeks become days), ``"months"`` or ``"years"``.

    Raises
    ------
    ConfigError
        If the value is neither.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        count, unit = value, "day"
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+)\s*(day|week|month|year)s?\s*", value.lower())):
        count, unit = int(m.group(1)), m.group(2)
    else:
        raise ConfigError(f'[web] token_days must be a number of days or a text such as "6 months", not {value!r}')
    if count < 1:
        raise ConfigError("[web] token_days must be at least 1")
    if unit in ("day", "week"):
        return count * _TOKEN_UNITS[unit], "days"
    return count, unit + "s"


def _web_config(table: Mapping[str, Any]) -> WebConfig:
    table = dict(table)
    token_days = table.pop("token_days", WebConfig.token_days)
    parse_validity(token_days)
    web: WebConfig = replace(_build(WebConfig, table, "web"), token_days=token_days)
    _check_port(web.port, "[web] port")
    for key in (
        "threads",
        "session_minutes",
        "patient_session_minutes",
        "rate_limit",
        "rate_window",
        "max_zip_builds",
        "max_connections",
        "max_connections_per_client",
    ):
        if getattr(web, key) < 1:
            raise ConfigError(f"[web] {key} must be at least 1")
    if web.header_timeout <= 0:
        raise ConfigError("[web] header_timeout must be positive")
    if web.zip_compression not in ("none", "jpeg-lossless"):
        raise ConfigError(f"[web] zip_compression must be 'none' or 'jpeg-lossless', not {web.zip_compression!r}")
    if web.slip_paper not in ("A4", "Letter", "receipt80"):
        raise ConfigError(f"[web] slip_paper must be 'A4', 'Letter' or 'receipt80', not {web.slip_paper!r}")
    return web


def _dicomweb_config(table: Mapping[str, Any]) -> DicomWebConfig:
    dicomweb: DicomWebConfig = _build(DicomWebConfig, table, "dicomweb")
    _check_port(dicomweb.port, "[dicomweb] port")
    for key in ("threads", "max_upload_mb", "max_results"):
        if getattr(dicomweb, key) < 1:
            raise ConfigError(f"[dicomweb] {key} must be at least 1")
    return dicomweb


_ROUTE_SUFFIX_RE = re.compile(r"^_[A-Z0-9_]{1,14}$")


def _burn_config(table: Mapping[str, Any], ae_title: str, base_dir: Path | None) -> BurnConfig:
    """Build and check ``[burn]``: the scalar keys via :func:`_build`, lists and tables here."""
    table = dict(table)
    auto_media = table.pop("auto_media", list(DISC_MEDIA))
    if not isinstance(auto_media, list | tuple) or not auto_media or any(m not in DISC_MEDIA for m in auto_media):
        raise ConfigError(f"[burn] auto_media must be a non-empty list of {', '.join(DISC_MEDIA)}, not {auto_media!r}")
    capacity = table.pop("capacity_mb", {})
    if not isinstance(capacity, Mapping):
        raise ConfigError(f"[burn] capacity_mb must be a table such as {{CD = 650}}, not {capacity!r}")
    for medium, mb in capacity.items():
        if medium not in DISC_MEDIA or isinstance(mb, bool) or not isinstance(mb, int | float) or mb <= 0:
            raise ConfigError(f"[burn] capacity_mb.{medium} = {mb!r}: use {', '.join(DISC_MEDIA)} with a size in MB")
    routes: dict[str, Mapping[str, Any]] = dict(DEFAULT_ROUTES)
    raw_routes = table.pop("routes", {})
    if not isinstance(raw_routes, Mapping):
        raise ConfigError(f"[burn] routes must be a table of suffix = {{robot, mode}}, not {raw_routes!r}")
    for suffix, route in raw_routes.items():
        where = f"[burn.routes] {suffix!r}"
        if not _ROUTE_SUFFIX_RE.match(suffix):
            raise ConfigError(f"{where}: a suffix is '_' and 1-14 characters from A-Z 0-9 _")
        if len(ae_title + suffix) > 16:
            raise ConfigError(f"{where}: {ae_title + suffix!r} is longer than the 16 characters of an AE title")
        if not isinstance(route, Mapping) or set(route) - {"robot", "mode", "copies"}:
            raise ConfigError(f"{where}: use a table with robot, mode and optionally copies")
        mode = route.get("mode", "association")
        robot = route.get("robot", "")
        copies = route.get("copies", 0)
        if mode not in ROUTE_MODES:
            raise ConfigError(f"{where}: mode must be one of {', '.join(ROUTE_MODES)}, not {mode!r}")
        if mode != "store" and (not isinstance(robot, str) or not robot):
            raise ConfigError(f"{where}: robot (the name of a [robots.<name>] table) is required")
        if isinstance(copies, bool) or not isinstance(copies, int) or not 0 <= copies <= 99:
            raise ConfigError(f"{where}: copies must be a whole number 1-99")
        routes[suffix] = {"robot": robot, "mode": mode, "copies": copies}
    burn: BurnConfig = replace(
        _build(BurnConfig, table, "burn"), auto_media=tuple(auto_media), capacity_mb=dict(capacity), routes=routes
    )
    if burn.group_by not in ("patient_id", "study_uid"):
        raise ConfigError(f"[burn] group_by must be 'patient_id' or 'study_uid', not {burn.group_by!r}")
    if burn.media != "auto" and burn.media not in DISC_MEDIA:
        raise ConfigError(f"[burn] media must be 'auto' or one of {', '.join(DISC_MEDIA)}, not {burn.media!r}")
    if burn.profile not in MEDIA_PROFILES:
        raise ConfigError(f"[burn] profile {burn.profile!r} is not one of {', '.join(MEDIA_PROFILES)}")
    checks = {
        "delay": burn.delay >= 0,
        "copies": 1 <= burn.copies <= 99,
        "capacity_margin": 0 <= burn.capacity_margin < 50,
        "staging_purge_hours": burn.staging_purge_hours >= 0,
        "staging_free_space_mb": burn.staging_free_space_mb >= 0,
        "poll_interval": burn.poll_interval > 0,
    }
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"[burn] {key} {getattr(burn, key)!r} is out of range")
    if burn.viewer_dir:
        viewer = Path(burn.viewer_dir)
        if not viewer.is_absolute() and base_dir is not None:
            viewer = base_dir / viewer
        burn = replace(burn, viewer_dir=str(viewer))
    return burn


_WINDOW_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(?:-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))? "
    r"([01]\d|2[0-4]):00-([01]\d|2[0-4]):00$"
)


def check_window(text: str, what: str) -> re.Match[str]:
    """Check one weekly window such as ``"Mon-Fri 22:00-06:00"`` (whole hours; 24:00 ends a day).

    Raises
    ------
    ConfigError
        With the expected form.
    """
    match = _WINDOW_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(3)) == 24 or int(match.group(3)) == int(match.group(4)):
        raise ConfigError(
            f'{what}: {text!r} is not a window such as "Mon-Fri 22:00-06:00" (days Mon..Sun, '
            "whole hours, start before 24:00 and not equal to the end)"
        )
    return match


def _upkeep_config(data: Mapping[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """``[[storage]]``, ``[maintenance]``, ``[archiving]``, ``[deletion]`` and ``[email]``."""
    raw = data.get("storage", [])
    if not isinstance(raw, list):
        raise ConfigError("storage must be written as [[storage]] entries with path, enabled, free_space_limit_mb")
    storages = []
    seen: set[str] = set()
    for i, table in enumerate(raw):
        if not isinstance(table, Mapping) or not table.get("path"):
            raise ConfigError(f"[[storage]] entry {i + 1} has no path")
        entry: StorageConfig = _build(StorageConfig, table, "storage")
        path = Path(entry.path)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if entry.free_space_limit_mb < 0:
            raise ConfigError(f"[[storage]] {entry.path}: free_space_limit_mb must not be negative")
        if str(path) in seen:
            raise ConfigError(f"[[storage]] {entry.path} is listed twice")
        seen.add(str(path))
        storages.append(replace(entry, path=str(path)))
    maint_table = dict(data.get("maintenance", {}))
    windows: dict[str, tuple[str, ...]] = {}
    for kind in list(maint_table):
        if kind not in TASK_KINDS:
            raise ConfigError(f"[maintenance] has an unknown key {kind!r} (known: {', '.join(TASK_KINDS)})")
        value = maint_table[kind]
        items = _str_list([value] if isinstance(value, str) else value, f"[maintenance] {kind}")
        for item in items:
            check_window(item, f"[maintenance] {kind}")
        windows[kind] = tuple(w.strip() for w in items)
    maintenance = replace(MaintenanceConfig(), **windows)
    archiving: ArchivingConfig = _build(ArchivingConfig, data.get("archiving", {}), "archiving")
    if archiving.compression not in COMPRESSIONS:
        raise ConfigError(
            f"[archiving] compression must be one of {', '.join(COMPRESSIONS)}, not {archiving.compression!r}"
        )
    if archiving.compression in LOSSY_COMPRESSIONS and not archiving.confirm_lossy:
        raise ConfigError(
            f"[archiving] compression {archiving.compression!r} is lossy: the stored images change for"
            " good. Use a lossless one, or set confirm_lossy = true"
        )
    if archiving.uncompressed_days < 0:
        raise ConfigError("[archiving] uncompressed_days must not be negative")
    deletion: DeletionConfig = _build(DeletionConfig, data.get("deletion", {}), "deletion")
    if deletion.store_days < 0 or deletion.low_space_threshold_mb < 0:
        raise ConfigError("[deletion] store_days and low_space_threshold_mb must not be negative")
    email_table = dict(data.get("email", {}))
    if "from" in email_table:
        email_table["sender"] = email_table.pop("from")
    if "sender" in data.get("email", {}):
        raise ConfigError("[email] has an unknown key 'sender' (the From address is 'from')")
    to = _str_list(email_table.pop("to", []), "[email] to")
    events = _str_list(email_table.pop("events", list(EMAIL_EVENTS)), "[email] events")
    for event in events:
        if event not in EMAIL_EVENTS:
            raise ConfigError(f"[email] events: {event!r} is not one of {', '.join(EMAIL_EVENTS)}")
    email: EmailConfig = replace(_build(EmailConfig, email_table, "email"), to=to, events=events)
    _check_port(email.smtp_port, "[email] smtp_port")
    if email.security not in ("starttls", "tls", "none"):
        raise ConfigError(f"[email] security must be 'starttls', 'tls' or 'none', not {email.security!r}")
    if email.smtp_host and (not email.to or not email.sender):
        raise ConfigError("[email] needs from and a to list when smtp_host is set")
    return {
        "storages": tuple(storages),
        "maintenance": maintenance,
        "archiving": archiving,
        "deletion": deletion,
        "email": email,
    }


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """Resolve which config file to read: explicit, ``$APPLIANCE_CONFIG``, ``./appliance.toml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("APPLIANCE_CONFIG")
    if env:
        return Path(env)
    local = Path("appliance.toml")
    return local if local.is_file() else None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the configuration the way every CLI command does.

    Parameters
    ----------
    path : path-like, optional
        ``--config FILE``; when absent, ``$APPLIANCE_CONFIG``, then ``appliance.toml``
        in the working directory, then the built-in defaults.

    Raises
    ------
    ConfigError
        If the file is missing, not TOML, or holds invalid settings.
    """
    file = find_config_file(path)
    if file is None:
        return parse_config({})
    try:
        with open(file, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    cfg = parse_config(data, base_dir=file.resolve().parent)
    return replace(cfg, source=file)
