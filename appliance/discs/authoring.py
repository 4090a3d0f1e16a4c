"""Author a disc job: stage, plan, lay out, validate and image its discs, and render their labels.

Everything of job ``N`` lives in ``<data_dir>/discs/N/``::

    job.json              what was authored (discs, their instances, files); "complete" once all is written
    label.pdf             the label of disc 1 (a hard link to disc1/label.pdf)
    disc1/fileset/        the staged DICOM File-set: DICOMDIR, PT000000/..., README.TXT, INDEX.HTM, viewer
    disc1/disc.iso        its ISO 9660 + Joliet image, volume label = File-set ID
    disc1/label.pdf ...   its label files (PDF preview and the robot's format)
    disc1/<ticket>.JDF    a copy of the job file sent to the robot (written by the publisher)

Staging never fills the data disk: it stops with a :class:`StagingSpaceError` when what a disc needs would
leave less than the configured free space, and a full disk during staging fails the job with that reason.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.budget import Budget, BudgetExceeded
from appliance.config import BurnConfig
from appliance.db import Database
from appliance.discs.content import Content, InstanceInfo, load_content
from appliance.discs.fileset import StagedInstance, allowed_syntaxes, stage_instance, validate_fileset, write_fileset
from appliance.discs.iso import build_iso, volume_id
from appliance.discs.jobs import DiscSpec, Job, JobStore
from appliance.discs.labelling import DiscLabeler
from appliance.discs.pdi import DiscInfo, copy_viewer, viewer_size, write_pdi_files
from appliance.discs.spanning import (
    IMAGE_OVERHEAD,
    Planner,
    capacity,
    choose_medium,
    sectors,
    single_disc_estimate,
    usable,
)
from appliance.errors import AuthoringError, StagingSpaceError

LOGGER = logging.getLogger(__name__)

MANIFEST = "job.json"
APPLICATION = f"appliance {__version__}"
_REPLANS = 3


@dataclass(frozen=True)
class AuthorSettings:
    """What the author needs from the configuration.

    Attributes
    ----------
    discs_dir : Path
        ``<data_dir>/discs``.
    store_dir : Path
        The file store's root (instance paths in the index are relative to it).
    burn : BurnConfig
    institution : str
    reserve_mb : int
        Free space staging always leaves on the data disk.
    dcmdump : str or None
        DCMTK's dcmdump, to check every DICOMDIR; None skips that check.
    budget : Budget or None
        Memory and time budget of each conversion of a received instance (a worker process);
        None converts in this process.
    resolve : callable or None
        Index path -> file (the storages, :meth:`appliance.storage.Storages.path`); None: ``store_dir / path``.
    """

    discs_dir: Path
    store_dir: Path
    burn: BurnConfig
    institution: str = ""
    reserve_mb: int = 1000
    dcmdump: str | None = None
    budget: Budget | None = None
    resolve: Callable[[str], Path] | None = None


class _Oversize(Exception):
    def __init__(self, excess: int) -> None:
        super().__init__(excess)
        self.excess = excess


class DiscAuthor:
    """Turns a job into discs on disk.

    Parameters
    ----------
    db : Database
    jobs : JobStore
    settings : AuthorSettings
    labeler : DiscLabeler
    """

    def __init__(self, db: Database, jobs: JobStore, settings: AuthorSettings, labeler: DiscLabeler) -> None:
        self.db = db
        self.jobs = jobs
        self.settings = settings
        self.labeler = labeler
        self.allowed = allowed_syntaxes(settings.burn.profile)

    def job_dir(self, job_id: int) -> Path:
        """The folder of a job's files."""
        return self.settings.discs_dir / str(job_id)

    # -- entry point ----------------------------------------------------------------------------------

    def author(self, job: Job) -> list[DiscSpec]:
        """Write a job's discs, reusing what is already staged when that is still valid.

        A retried job reuses its own complete staging; a reburn reuses its parent's images and labels, a
        reprint its parent's images with new labels; anything purged or incomplete is authored afresh from the
        store.

        Raises
        ------
        AuthoringError
            Instances missing from the store, an unreadable instance, an invalid File-set, an instance bigger
            than any disc.
        StagingSpaceError
            Too little free space on the data disk.
        """
        uids = self.jobs.instances(job.id)
        folder = self.job_dir(job.id)
        manifest = read_manifest(folder)
        if (
            manifest
            and manifest.get("complete")
            and manifest.get("key") == self._key(job, uids)
            and _files_present(folder, manifest)
        ):
            LOGGER.info("disc job %d: reusing its staged discs", job.id)
            return self._specs(job, folder, manifest)
        if job.parent_id is not None and job.source in ("reburn", "reprint"):
            parent = self.job_dir(job.parent_id)
            parent_manifest = read_manifest(parent)
            if parent_manifest and parent_manifest.get("complete") and _files_present(parent, parent_manifest):
                return self._from_parent(job, uids, parent, parent_manifest, relabel=job.source == "reprint")
            LOGGER.info(
                "disc job %d: the staged files of job %d are gone; authoring from the store", job.id, job.parent_id
            )
        return self._build(job, uids)

    # -- building ---------------------------------------------------------------------------------------

    def _build(self, job: Job, uids: Sequence[str]) -> list[DiscSpec]:
        content, missing = load_content(self.db, uids)
        if missing:
            raise AuthoringError(
                f"{len(missing)} of the job's {len(uids)} instance(s) are no longer in the store (e.g. {missing[0]})"
            )
        if not content.instance_count:
            raise AuthoringError("the job has no instances")
        folder = self.job_dir(job.id)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            return self._build_in(job, uids, content, folder)
        except OSError as exc:
            shutil.rmtree(folder / "pool", ignore_errors=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._remove_images(folder)
                raise StagingSpaceError(f"the data disk filled up while staging the disc(s): {exc.strerror}") from exc
            raise AuthoringError(f"cannot write the disc files in {folder}: {exc}") from exc
        except BaseException:
            shutil.rmtree(folder / "pool", ignore_errors=True)  # the links and converted copies are of no more use
            raise

    def _build_in(self, job: Job, uids: Sequence[str], content: Content, folder: Path) -> list[DiscSpec]:
        burn = self.settings.burn
        to_convert = [i for i in content.instances() if i.transfer_syntax not in self.allowed]
        # Links cost nothing; converted files may grow (decompression); the images take the content's size.
        self._check_space(content.size + 3 * sum(i.size for i in to_convert), "stage the instances")
        pool = folder / "pool"
        pool.mkdir()
        staged: dict[str, StagedInstance] = {}
        for n, inst in enumerate(content.instances()):
            source = self.settings.resolve(inst.path) if self.settings.resolve else self.settings.store_dir / inst.path
            try:
                staged[inst.sop_uid] = stage_instance(
                    source, pool / f"{n:08d}", inst.sop_uid, inst.transfer_syntax, self.allowed, self.settings.budget
                )
            except BudgetExceeded as exc:
                raise AuthoringError(f"instance {inst.sop_uid} cannot be put on a disc: {exc}") from exc
        if to_convert:
            LOGGER.info(
                "disc job %d: %d instance(s) converted to Explicit VR Little Endian for %s",
                job.id,
                len(to_convert),
                burn.profile,
            )
        viewer = Path(burn.viewer_dir) if burn.viewer_dir else None
        if viewer is not None and not viewer.is_dir():
            raise AuthoringError(f"[burn] viewer_dir {viewer} is not a folder")
        fixed = (
            IMAGE_OVERHEAD
            + sectors(4096 + 300 * len(list(content.studies())))
            + sectors(4096 + 400 * len(list(content.studies())) + 200 * content.series_count)
            + (viewer_size(viewer) if viewer else 0)
        )

        def size_of(inst: InstanceInfo) -> int:
            return staged[inst.sop_uid].size

        needed = single_disc_estimate(content, fixed, size_of)
        medium = choose_medium(needed, burn.media, burn.auto_media, burn.capacity_mb, burn.capacity_margin)
        budget = usable(medium, burn.capacity_mb, burn.capacity_margin)
        limit = capacity(medium, burn.capacity_mb)
        for _ in range(_REPLANS):
            plans = Planner(budget, fixed, size_of).plan(content)
            self._check_space(sum(p.estimate for p in plans), "write the disc image(s)")
            try:
                discs = self._lay_out(
                    job,
                    folder,
                    content,
                    [[i.sop_uid for i in p.instances] for p in plans],
                    staged,
                    medium,
                    limit,
                    viewer,
                )
                break
            except _Oversize as over:
                LOGGER.info(
                    "disc job %d: an image came out %d bytes over the %s; planning again", job.id, over.excess, medium
                )
                budget -= over.excess + 16 * 2048
        else:
            raise AuthoringError(f"the content does not fit on {medium} discs even after {_REPLANS} attempts")
        shutil.rmtree(pool, ignore_errors=True)
        manifest = {
            "job": job.id,
            "complete": True,
            "key": self._key(job, uids),
            "profile": burn.profile,
            "media": medium,
            "created": datetime.now(UTC).isoformat(),
            "discs": discs,
        }
        write_manifest(folder, manifest)
        self._link_root_label(folder)
        return self._specs(job, folder, manifest)

    def _lay_out(
        self,
        job: Job,
        folder: Path,
        content: Content,
        discs: list[list[str]],
        staged: dict[str, StagedInstance],
        medium: str,
        limit: int,
        viewer: Path | None,
    ) -> list[dict[str, Any]]:
        """Write every disc's File-set, image and labels; undo and raise :class:`_Oversize` if one is too big."""
        out: list[dict[str, Any]] = []
        placed: dict[str, Path] = {}
        created = datetime.now()
        count = len(discs)
        first = content.patients[0].patient_id if content.patients else ""
        try:
            for number, disc_uids in enumerate(discs, start=1):
                disc_dir = folder / f"disc{number}"
                root = disc_dir / "fileset"
                sub = content.subset(disc_uids)
                base = volume_id(first or f"DISC{job.id}")[:13]
                fileset_id = f"{base}_{number}" if count > 1 else base
                placed.update(write_fileset(root, fileset_id, [staged[u] for u in disc_uids]))
                if viewer is not None:
                    copy_viewer(viewer, root)
                info = DiscInfo(
                    fileset_id,
                    number,
                    count,
                    self.settings.burn.profile,
                    created,
                    APPLICATION,
                    self.settings.institution,
                    self.settings.burn.contact,
                    self.settings.burn.viewer_entry,
                    viewer is not None,
                )
                write_pdi_files(root, sub, info)
                validate_fileset(root, self.allowed, self.settings.dcmdump)
                iso = disc_dir / "disc.iso"
                size = build_iso(root, iso, fileset_id, self.settings.institution, APPLICATION)
                if size > limit:
                    raise _Oversize(size - limit)
                label = self.labeler.render(job.robot, sub, number, count, viewer is not None, disc_dir, created.date())
                out.append(
                    {
                        "number": number,
                        "count": count,
                        "media": medium,
                        "volume": fileset_id,
                        "size": size,
                        "iso": _rel(iso, folder),
                        "fileset": _rel(root, folder),
                        "instances": disc_uids,
                        "viewer": viewer is not None,
                        "label": _relative_label(label, folder),
                    }
                )
        except _Oversize:
            for uid, path in placed.items():  # put the staged files back for the next plan
                os.replace(path, staged[uid].path)
            for number in range(1, count + 1):
                shutil.rmtree(folder / f"disc{number}", ignore_errors=True)
            raise
        return out

    def _from_parent(
        self, job: Job, uids: Sequence[str], parent: Path, manifest: dict[str, Any], relabel: bool
    ) -> list[DiscSpec]:
        """A reburn or reprint: link the parent's images (and labels, unless relabelling) into this job."""
        folder = self.job_dir(job.id)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        content, _ = load_content(self.db, uids) if relabel else (Content(), [])
        discs = []
        for disc in manifest["discs"]:
            disc_dir = folder / f"disc{disc['number']}"
            disc_dir.mkdir()
            shutil.copytree(parent / disc["fileset"], folder / disc["fileset"], copy_function=_link)
            _link(str(parent / disc["iso"]), str(folder / disc["iso"]))
            entry = dict(disc)
            if relabel:
                label = self.labeler.render(
                    job.robot,
                    content.subset(disc["instances"]),
                    disc["number"],
                    disc["count"],
                    bool(disc.get("viewer")),
                    disc_dir,
                )
                entry["label"] = _relative_label(label, folder)
            else:
                label = dict(disc["label"])
                for key in ("pdf", "jpg", "bmp", "fields_file"):
                    if label.get(key):
                        _link(str(parent / label[key]), str(folder / label[key]))
                entry["label"] = label
            discs.append(entry)
        result = {**manifest, "job": job.id, "key": self._key(job, uids), "parent": job.parent_id, "discs": discs}
        write_manifest(folder, result)
        self._link_root_label(folder)
        LOGGER.info("disc job %d: %s of job %d from its staged images", job.id, job.source, job.parent_id)
        return self._specs(job, folder, result)

    # -- helpers ------------------------------------------------------------------------------------------

    def _key(self, job: Job, uids: Sequence[str]) -> str:
        """What must not have changed for staged discs to be reused: content, robot, media settings."""
        burn = self.settings.burn
        text = json.dumps(
            [
                sorted(uids),
                job.robot,
                burn.profile,
                burn.media,
                list(burn.auto_media),
                dict(burn.capacity_mb),
                burn.viewer_dir,
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def _specs(self, job: Job, folder: Path, manifest: dict[str, Any]) -> list[DiscSpec]:
        specs = []
        for disc in manifest["discs"]:
            label = {
                k: (str(folder / v) if isinstance(v, str) and k != "warnings" else v) for k, v in disc["label"].items()
            }
            files = {"iso": str(folder / disc["iso"]), "dir": str(folder / f"disc{disc['number']}"), "label": label}
            specs.append(DiscSpec(disc["number"], disc["media"], disc["size"], disc["volume"], files))
        return specs

    def _check_space(self, needed: int, what: str) -> None:
        free = shutil.disk_usage(self.settings.discs_dir).free
        reserve = self.settings.reserve_mb * 1_000_000
        if free - needed < reserve:
            raise StagingSpaceError(
                f"not enough free space to {what}: {needed / 1e6:.0f} MB needed, {free / 1e6:.0f} MB free on the "
                f"data disk, and {reserve / 1e6:.0f} MB must stay free for the store ([burn] staging_free_space_mb)"
            )

    def _link_root_label(self, folder: Path) -> None:
        first = folder / "disc1" / "label.pdf"
        if first.exists():
            (folder / "label.pdf").unlink(missing_ok=True)
            _link(str(first), str(folder / "label.pdf"))

    @staticmethod
    def _remove_images(folder: Path) -> None:
        for iso in folder.glob("disc*/disc.iso"):
            iso.unlink(missing_ok=True)

    # -- purge --------------------------------------------------------------------------------------------

    def purge_staging(self) -> list[int]:
        """Delete the file-sets and images of jobs finished more than ``staging_purge_hours`` ago.

        Labels, the copies of robot job files and ``job.json`` stay; a later reburn authors from the store.
        """
        purged = []
        for job in self.jobs.finished_before(self.settings.burn.staging_purge_hours):
            folder = self.job_dir(job.id)
            shutil.rmtree(folder / "pool", ignore_errors=True)
            for disc_dir in folder.glob("disc*"):
                shutil.rmtree(disc_dir / "fileset", ignore_errors=True)
                (disc_dir / "disc.iso").unlink(missing_ok=True)
            manifest = read_manifest(folder)
            if manifest:
                manifest["complete"] = False
                manifest["purged"] = datetime.now(UTC).isoformat()
                write_manifest(folder, manifest)
            self.jobs.set_fields(job.id, purged=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            purged.append(job.id)
        if purged:
            LOGGER.info("purged the staged discs of job(s) %s", ", ".join(map(str, purged)))
        return purged


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """A job folder's ``job.json``, or None."""
    try:
        data: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
        return data
    except (OSError, ValueError):
        return None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``job.json`` atomically."""
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / MANIFEST)


def _files_present(folder: Path, manifest: dict[str, Any]) -> bool:
    return all(
        (folder / d["iso"]).is_file() and (folder / d["fileset"] / "DICOMDIR").is_file()
        for d in manifest.get("discs", [])
    )


def _rel(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder))


def _relative_label(label: dict[str, Any], folder: Path) -> dict[str, Any]:
    out = dict(label)
    for key in ("pdf", "jpg", "bmp", "fields_file"):
        if out.get(key):
            out[key] = _rel(Path(out[key]), folder)
    return out


def _link(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
