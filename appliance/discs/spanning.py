"""Which medium a job needs and how its content is split over several discs.

Sizes are estimated the way the ISO image will spend them: every file takes whole 2048-byte sectors, every
folder at least one sector in each of the two name spaces (ISO 9660 and Joliet), every instance a directory
record in both name spaces and one in the DICOMDIR. The author checks the finished image against the medium's
real capacity, so an estimate that is a little off costs a re-plan, never a disc that does not fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from appliance.discs.content import Content, InstanceInfo, PatientInfo, SeriesInfo, StudyInfo
from appliance.errors import AuthoringError

SECTOR = 2048
#: Nominal capacities in MB (10^6 bytes): CD-R 80 min, DVD±R, DVD±R DL, BD-R single layer.
DEFAULT_CAPACITY_MB: Mapping[str, float] = {"CD": 700, "DVD": 4700, "DVD-DL": 8500, "BD": 25000}
#: Directory records of a file in the ISO and Joliet name spaces, plus its DICOMDIR record.
INSTANCE_OVERHEAD = 2 * 80 + 420
#: A folder: one sector in each name space, path-table entries, and its DICOMDIR record.
FOLDER_OVERHEAD = 2 * SECTOR + 400
#: The image's fixed part: system area, volume descriptors, four path tables, the root folders.
IMAGE_OVERHEAD = 40 * SECTOR


def sectors(size: int) -> int:
    """Bytes a file of ``size`` bytes takes on the disc (whole sectors)."""
    return -(-size // SECTOR) * SECTOR


def capacity(medium: str, overrides: Mapping[str, float]) -> int:
    """Capacity of a medium in bytes (``[burn] capacity_mb`` overrides the built-in figure)."""
    return int(overrides.get(medium, DEFAULT_CAPACITY_MB[medium]) * 1_000_000)


@dataclass
class DiscPlan:
    """The instances that go on one disc and the estimated bytes they take."""

    instances: list[InstanceInfo] = field(default_factory=list)
    estimate: int = 0
    _folders: set[str] = field(default_factory=set)


class Planner:
    """Pack a job's content onto discs of one size, keeping studies, then series, whole where possible.

    Parameters
    ----------
    budget : int
        Bytes usable on one disc (capacity minus the safety margin).
    fixed : int
        Bytes every disc spends before any instance: image overhead, README, INDEX, viewer.
    size_of : callable
        Size of an instance as staged (after transcoding), in bytes.
    """

    def __init__(self, budget: int, fixed: int, size_of: Callable[[InstanceInfo], int]) -> None:
        self.budget = budget
        self.fixed = fixed
        self.size_of = size_of
        self.discs: list[DiscPlan] = []

    def _new_disc(self) -> DiscPlan:
        disc = DiscPlan(estimate=self.fixed)
        self.discs.append(disc)
        return disc

    def _cost(self, disc: DiscPlan, items: Sequence[tuple[InstanceInfo, tuple[str, ...]]]) -> int:
        """Extra bytes ``items`` (instance, its folder keys) would take on ``disc``."""
        folders = {key for _, keys in items for key in keys} - disc._folders
        return sum(sectors(self.size_of(i)) + INSTANCE_OVERHEAD for i, _ in items) + FOLDER_OVERHEAD * len(folders)

    def _add(self, disc: DiscPlan, items: Sequence[tuple[InstanceInfo, tuple[str, ...]]]) -> None:
        disc.estimate += self._cost(disc, items)
        disc.instances.extend(i for i, _ in items)
        disc._folders.update(key for _, keys in items for key in keys)

    def _place(self, items: Sequence[tuple[InstanceInfo, tuple[str, ...]]]) -> bool:
        """Put a unit on the current disc, or whole on a fresh one; False if it fits on no disc whole."""
        current = self.discs[-1] if self.discs else self._new_disc()
        if current.estimate + self._cost(current, items) <= self.budget:
            self._add(current, items)
            return True
        empty = DiscPlan(estimate=self.fixed)
        if empty.estimate + self._cost(empty, items) > self.budget:
            return False
        self._add(self._new_disc() if current.instances else current, items)
        return True

    def plan(self, content: Content) -> list[DiscPlan]:
        """Split ``content``: whole studies, else whole series, else (a series bigger than a disc) instances.

        Raises
        ------
        AuthoringError
            An instance alone is bigger than a disc.
        """
        for patient in content.patients:
            for study in patient.studies:
                if self._place(_items(patient, study, study.series)):
                    continue
                for series in study.series:
                    if self._place(_items(patient, study, [series])):
                        continue
                    for instance in series.instances:
                        unit = _items(
                            patient,
                            study,
                            [
                                SeriesInfo(
                                    series.series_uid, series.modality, series.number, series.description, [instance]
                                )
                            ],
                        )
                        if not self._place(unit):
                            raise AuthoringError(
                                f"instance {instance.sop_uid} ({self.size_of(instance) / 1e6:.1f} MB) is bigger "
                                f"than a disc ({self.budget / 1e6:.1f} MB usable)"
                            )
        return [d for d in self.discs if d.instances]


def _items(
    patient: PatientInfo, study: StudyInfo, series_list: Sequence[SeriesInfo]
) -> list[tuple[InstanceInfo, tuple[str, ...]]]:
    keys_of = ("P" + patient.patient_id, "S" + study.study_uid)
    return [(i, (*keys_of, "E" + s.series_uid)) for s in series_list for i in s.instances]


def single_disc_estimate(content: Content, fixed: int, size_of: Callable[[InstanceInfo], int]) -> int:
    """Bytes the whole content would take on one disc."""
    planner = Planner(2**62, fixed, size_of)
    plans = planner.plan(content)
    return plans[0].estimate if plans else fixed


def choose_medium(
    needed: int, pinned: str, choices: Sequence[str], overrides: Mapping[str, float], margin_percent: float
) -> str:
    """The medium for a job: the pinned one, else the smallest choice whose usable space holds ``needed``.

    When nothing holds it, the biggest choice is returned and the content spans several discs of it.
    """
    if pinned != "auto":
        return pinned
    ordered = sorted(choices, key=lambda m: capacity(m, overrides))
    for medium in ordered:
        if needed <= usable(medium, overrides, margin_percent):
            return medium
    return ordered[-1]


def usable(medium: str, overrides: Mapping[str, float], margin_percent: float) -> int:
    """Bytes planned onto one disc of ``medium``: its capacity less the margin."""
    return int(capacity(medium, overrides) * (1 - margin_percent / 100))
