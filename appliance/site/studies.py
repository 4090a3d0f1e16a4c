"""Stored studies for the web: look-ups, downloads and deletion.

The room of the staff study pages and of the patient's study page; it knows nothing of HTTP.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import IO, Any

from appliance.core import Appliance
from appliance.errors import NotFound
from appliance.site.catalog import Catalog
from appliance.site.export import Exporter, ZipItem, series_label, zip_name
from appliance.site.tokens import Tokens

LOGGER = logging.getLogger(__name__)

#: Called with (SOP Instance UID, store path) for each instance deleted (the thumbnail cache forgets it).
DeletedListener = Callable[[str, str], None]


class Studies:
    """Stored studies, series and instances; their zips; their deletion.

    Parameters
    ----------
    appliance : Appliance
        The core (index, store).
    catalog : Catalog
        The web's read-only look-ups over the index.
    tokens : Tokens
        The patient tokens (a deleted study's token goes with it).
    """

    def __init__(self, appliance: Appliance, catalog: Catalog, tokens: Tokens) -> None:
        self.app = appliance
        self.config = appliance.config
        self.catalog = catalog
        self.tokens = tokens
        #: Told about every deleted instance.
        self.deleted_listeners: list[DeletedListener] = []

    @functools.cached_property
    def exporter(self) -> Exporter:
        """Download zip builder (made on first use: it empties its work folder)."""
        web = self.config.web
        return Exporter(self.config.data_dir / "cache" / "zips", web.zip_compression, web.max_zip_builds)

    # -- look-ups -----------------------------------------------------------------------------------

    def find(self, study_uid: str) -> dict[str, Any] | None:
        """A stored study with its patient, None when it is not stored."""
        return self.app.index.study(study_uid)

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
        return _of_study(self.catalog.series_info(series_uid), study_uid, f"series {series_uid}")

    def instance(self, sop_uid: str, study_uid: str | None = None) -> dict[str, Any]:
        """An instance (of ``study_uid``, when given).

        Raises
        ------
        NotFound
            If there is no such instance in that study.
        """
        return _of_study(self.catalog.instance(sop_uid), study_uid, f"instance {sop_uid}")

    def counts(self) -> dict[str, int]:
        """Patients, studies, series and instances stored."""
        return self.app.index.counts()

    def free_space(self) -> int:
        """Free bytes on the store's disk."""
        return self.app.store_area.free_bytes()

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
            for listener in self.deleted_listeners:
                listener(inst.sop_uid, inst.path)
        self.app.index.remove_paths([i.path for i in instances])
        if self.app.index.study(study_uid) is None:
            self.tokens.delete(study_uid)
        LOGGER.info(
            "deleted %d instance(s) of %s %s",
            len(instances),
            "series" if series_uid else "study",
            series_uid or study_uid,
        )
        return len(instances)


def _of_study(info: dict[str, Any] | None, study_uid: str | None, what: str) -> dict[str, Any]:
    """``info`` when it exists and belongs to ``study_uid`` (when given); NotFound naming ``what`` otherwise."""
    if info is None or (study_uid is not None and info["study_uid"] != study_uid):
        raise NotFound(f"{what} is not stored")
    return info
