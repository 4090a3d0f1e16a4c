"""Pictures of stored studies: series thumbnails (cached, pre-rendered) and the viewer's images.

Thumbnails are rendered in separate processes (:class:`~appliance.site.thumbnails.RenderPool`), cached on disk
and pre-rendered in the background when an association that stored a series ends.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from appliance.core import Appliance
from appliance.errors import NotFound
from appliance.site.catalog import Catalog
from appliance.site.imaging import VIEW_SIZE, ThumbnailCache, Window, jpeg_bytes, picture, placeholder
from appliance.site.studies import Studies
from appliance.site.thumbnails import PrerenderWorker, RenderFailed, RenderPool, log_placeholder

LOGGER = logging.getLogger(__name__)


class Pictures:
    """Thumbnails and viewer images.

    Parameters
    ----------
    appliance : Appliance
        The core (index, store, association listeners).
    catalog : Catalog
        The web's look-ups over the index.
    studies : Studies
        The stored studies (a picture is only of a stored instance; deleted ones leave the cache).
    """

    def __init__(self, appliance: Appliance, catalog: Catalog, studies: Studies) -> None:
        self.app = appliance
        self.catalog = catalog
        self.studies = studies
        self.renderer = RenderPool()
        self.thumbs = ThumbnailCache(appliance.config.data_dir / "cache" / "thumbs", renderer=self._render_thumbnail)
        self.prerender = PrerenderWorker(self._series_of, self.prerender_series)
        studies.deleted_listeners.append(self.thumbs.forget)

    def attach(self) -> None:
        """Render the thumbnails of newly stored series in the background when their association ends."""
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
        """Stop the thumbnail worker and the render processes (still queued ones are rendered on first view)."""
        self.prerender.close()
        self.renderer.close()

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
        self.studies.series(series_uid, study_uid)
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

    def view_image(
        self, sop_uid: str, study_uid: str | None = None, window: Window | None = None, size: int = VIEW_SIZE
    ) -> tuple[bytes, Window | None]:
        """JPEG of an instance for the viewer, with the window used.

        Raises
        ------
        NotFound
            If the instance is not stored (in that study).
        """
        info = self.studies.instance(sop_uid, study_uid)
        return picture(self.app.store_area.path(info["path"]), max(64, min(size, 2048)), window)

    def viewer_series(self, study_uid: str) -> list[dict[str, Any]]:
        """Series of a study with their instance UIDs, for the viewer."""
        out = []
        for s in self.catalog.series(study_uid):
            s = dict(s)
            s["instances"] = [i["sop_uid"] for i in self.catalog.instances(s["series_uid"])]
            out.append(s)
        return out
