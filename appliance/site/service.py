"""What the web site asks of the core: one room per audience, composed by a thin :class:`Site`.

========================  ==========================================================================
room                      for
========================  ==========================================================================
:mod:`~.studies`          stored studies, their zips and deletion (staff study pages, patient pages)
:mod:`~.pictures`         thumbnails and viewer images
:mod:`~.links`            patient links, the address they name, token slips
:mod:`~.discs`            burn a study, the burn queue, job actions, robots
:mod:`~.worklist`         worklist items and HL7 messages
:mod:`~.forwarding`       the forwarding queue's state and buttons, the extended search of the regional PACS
:mod:`~.upkeep`           storages, maintenance tasks and e-mail alerts
:mod:`~.admin`            settings, logs, messaging, certificate warnings, C-ECHO of known nodes
========================  ==========================================================================

The shared stores (patient tokens, staff users, API keys, patient sessions, the audit log, the catalog and
DICOMweb) are attributes of :class:`Site` too. None of it knows HTTP; ``webui`` holds all of that. Nothing here
builds robots, publishers or DICOM associations: :mod:`appliance.cli` (the composition root) hands them over
(:func:`appliance.cli.web.build_site`). The CLI uses the site too (``appliance token``, ``appliance user add``),
and attaches the token store listener in ``appliance serve``, so studies get their token even when the web site
is disabled.
"""

from __future__ import annotations

from appliance.config import Config
from appliance.core import Appliance
from appliance.discs.jobs import JobStore
from appliance.nodes import NodeRegistry
from appliance.site.admin import Admin, Echo
from appliance.site.apikeys import ApiKeys
from appliance.site.audit import Audit, BatchWriter
from appliance.site.catalog import Catalog
from appliance.site.dicomweb import DicomWeb
from appliance.site.discs import Discs
from appliance.site.forwarding import Forwarding
from appliance.site.links import Links
from appliance.site.pictures import Pictures
from appliance.site.sessions import PatientSessions
from appliance.site.studies import Studies
from appliance.site.tokens import Tokens
from appliance.site.upkeep import UpkeepView
from appliance.site.users import Users
from appliance.site.worklist import Worklist


class Site:
    """The web site's view of the appliance: shared stores and one room per audience.

    Parameters
    ----------
    appliance : Appliance
        The core, already constructed (started or not).
    echo : Echo, optional
        C-ECHO of a known node (the admin room's node check).
    """

    def __init__(self, appliance: Appliance, echo: Echo | None = None) -> None:
        self.app = appliance
        self.config: Config = appliance.config
        db = appliance.db
        self.writer = BatchWriter(db)
        self.tokens = Tokens(
            db, self.config.data_dir / "secrets" / "token.key", self.config.web.token_days, writer=self.writer
        )
        self.users = Users(db)
        self.patient_sessions = PatientSessions(db)
        self.apikeys = ApiKeys(db)
        self.dicomweb = DicomWeb(appliance)
        self.audit = Audit(db, self.writer)
        self.catalog = Catalog(db)
        self.studies = Studies(appliance, self.catalog, self.tokens)
        self.pictures = Pictures(appliance, self.catalog, self.studies)
        self.links = Links(self.config, self.tokens, self.studies)
        self.discs = Discs(self.config, db, self.studies, JobStore(db))
        self.worklist = Worklist(appliance)
        self.forwarding = Forwarding(appliance)
        self.upkeep = UpkeepView(appliance, self.config)
        self.admin = Admin(self.config, db, appliance.node_registry, echo)

    @property
    def nodes(self) -> NodeRegistry:
        """The node registry that the DICOM policy consults too."""
        return self.app.node_registry

    def attach(self, prerender: bool = True) -> None:
        """Give every newly stored study a patient token, and render thumbnails when an association ends.

        Parameters
        ----------
        prerender : bool
            Render the thumbnails of newly stored series in the background (pointless with the web site off).
        """
        self.app.stored_listeners.append(self.tokens.on_stored)
        if prerender:
            self.pictures.attach()

    def close(self) -> None:
        """Commit the audit rows still queued, stop the thumbnail worker and the render processes.

        Call before the appliance stops. Thumbnails still queued for pre-rendering are rendered on first view.
        """
        self.writer.close()
        self.pictures.close()
