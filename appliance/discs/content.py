"""What a disc holds: patients, studies, series and instances of a job, read from the index.

The disc author, the README/INDEX writers and the label all work from this one tree, so they agree on what is
on each disc. :func:`load_content` builds it for a list of SOP Instance UIDs; a disc of a spanned job holds a
sub-tree (:meth:`Content.subset`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from appliance.db import INSTANCES, PATIENTS, SERIES, STUDIES, Database
from labels import DiscLabelFields, LabelStudy

_BATCH = 500  # SQLite allows 999 parameters per statement in old builds


@dataclass(frozen=True)
class InstanceInfo:
    """One stored instance as the disc author needs it."""

    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str
    size: int
    instance_number: str


@dataclass
class SeriesInfo:
    """A series and the instances of it that go on a disc."""

    series_uid: str
    modality: str
    number: str
    description: str
    instances: list[InstanceInfo] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes of the stored instances."""
        return sum(i.size for i in self.instances)


@dataclass
class StudyInfo:
    """A study and the series of it that go on a disc."""

    study_uid: str
    date: str
    time: str
    description: str
    accession: str
    study_id: str
    series: list[SeriesInfo] = field(default_factory=list)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities of the series on this disc, without repeats."""
        return tuple(dict.fromkeys(s.modality for s in self.series if s.modality))

    @property
    def size(self) -> int:
        """Bytes of the stored instances."""
        return sum(s.size for s in self.series)

    @property
    def instance_count(self) -> int:
        """Number of instances on this disc."""
        return sum(len(s.instances) for s in self.series)


@dataclass
class PatientInfo:
    """A patient and the studies of them that go on a disc."""

    patient_id: str
    name: str
    birth_date: str
    sex: str
    studies: list[StudyInfo] = field(default_factory=list)


@dataclass
class Content:
    """The patients, studies, series and instances of a job or of one of its discs."""

    patients: list[PatientInfo] = field(default_factory=list)

    def instances(self) -> Iterator[InstanceInfo]:
        """Every instance, in patient / study / series / instance order."""
        for patient in self.patients:
            for study in patient.studies:
                for series in study.series:
                    yield from series.instances

    def studies(self) -> Iterator[StudyInfo]:
        """Every study, in order."""
        for patient in self.patients:
            yield from patient.studies

    @property
    def size(self) -> int:
        """Bytes of the stored instances."""
        return sum(i.size for i in self.instances())

    @property
    def instance_count(self) -> int:
        """Number of instances."""
        return sum(1 for _ in self.instances())

    @property
    def series_count(self) -> int:
        """Number of series."""
        return sum(len(s.series) for s in self.studies())

    def subset(self, sop_uids: Iterable[str]) -> Content:
        """The same tree restricted to some instances (empty series, studies and patients are left out)."""
        wanted = set(sop_uids)
        patients = []
        for patient in self.patients:
            studies = []
            for study in patient.studies:
                series = [
                    SeriesInfo(
                        s.series_uid,
                        s.modality,
                        s.number,
                        s.description,
                        [i for i in s.instances if i.sop_uid in wanted],
                    )
                    for s in study.series
                ]
                series = [s for s in series if s.instances]
                if series:
                    studies.append(
                        StudyInfo(
                            study.study_uid,
                            study.date,
                            study.time,
                            study.description,
                            study.accession,
                            study.study_id,
                            series,
                        )
                    )
            if studies:
                patients.append(PatientInfo(patient.patient_id, patient.name, patient.birth_date, patient.sex, studies))
        return Content(patients)


def load_content(db: Database, sop_uids: Iterable[str]) -> tuple[Content, list[str]]:
    """Read the index rows of some instances and arrange them as a tree.

    Parameters
    ----------
    db : Database
    sop_uids : iterable of str
        SOP Instance UIDs of the job.

    Returns
    -------
    content : Content
        Patients (by ID), studies (by date and time), series (by number), instances (by number).
    missing : list of str
        The UIDs the index no longer knows (deleted from the store).
    """
    uids = list(dict.fromkeys(sop_uids))
    rows = []
    for start in range(0, len(uids), _BATCH):
        chunk = uids[start : start + _BATCH]
        marks = ",".join("?" * len(chunk))
        rows += db.conn.execute(
            "SELECT p.patient_id, p.patient_name, p.birth_date, p.sex, st.study_uid, st.study_date, st.study_time,"
            " st.description AS study_description, st.accession, st.study_id, s.series_uid, s.modality,"
            " s.series_number, s.description AS series_description, i.sop_uid, i.sop_class_uid,"
            " i.transfer_syntax, i.path, i.size, i.instance_number"
            f" FROM {INSTANCES} i JOIN {SERIES} s ON s.id = i.series_fk JOIN {STUDIES} st ON st.id = s.study_fk"
            f" JOIN {PATIENTS} p ON p.id = st.patient_fk WHERE i.sop_uid IN ({marks})",
            chunk,
        ).fetchall()
    rows.sort(
        key=lambda r: (
            r["patient_id"],
            r["study_date"],
            r["study_time"],
            r["study_uid"],
            _number(r["series_number"]),
            r["series_uid"],
            _number(r["instance_number"]),
            r["sop_uid"],
        )
    )
    content = Content()
    patients: dict[str, PatientInfo] = {}
    studies: dict[str, StudyInfo] = {}
    series: dict[str, SeriesInfo] = {}
    for r in rows:
        patient = patients.get(r["patient_id"])
        if patient is None:
            patient = patients[r["patient_id"]] = PatientInfo(
                r["patient_id"], r["patient_name"], r["birth_date"], r["sex"]
            )
            content.patients.append(patient)
        study = studies.get(r["study_uid"])
        if study is None:
            study = studies[r["study_uid"]] = StudyInfo(
                r["study_uid"], r["study_date"], r["study_time"], r["study_description"], r["accession"], r["study_id"]
            )
            patient.studies.append(study)
        ser = series.get(r["series_uid"])
        if ser is None:
            ser = series[r["series_uid"]] = SeriesInfo(
                r["series_uid"], r["modality"], r["series_number"], r["series_description"]
            )
            study.series.append(ser)
        ser.instances.append(
            InstanceInfo(
                r["sop_uid"], r["sop_class_uid"], r["transfer_syntax"], r["path"], r["size"], r["instance_number"]
            )
        )
    found = {r["sop_uid"] for r in rows}
    return content, [u for u in uids if u not in found]


def study_instances(db: Database, study_uid: str) -> list[str]:
    """SOP Instance UIDs of a stored study (empty when the study is unknown)."""
    rows = db.conn.execute(
        f"SELECT i.sop_uid FROM {INSTANCES} i JOIN {SERIES} s ON s.id = i.series_fk"
        f" JOIN {STUDIES} st ON st.id = s.study_fk WHERE st.study_uid = ? ORDER BY i.id",
        (study_uid,),
    ).fetchall()
    return [r[0] for r in rows]


def label_fields(
    content: Content,
    disc_number: int = 1,
    disc_count: int = 1,
    institution: str = "",
    with_viewer: bool = False,
    created: dt.date | None = None,
    token_url: str = "",
) -> DiscLabelFields:
    """The values printed on a disc holding ``content`` (``token_url``: the patient link of its first study).

    A label names one patient; when a disc holds several (an association that sent several patients), the
    first is printed and every study is listed.
    """
    first = content.patients[0] if content.patients else PatientInfo("", "", "", "")
    studies = tuple(LabelStudy(s.date, s.description, s.modalities, s.accession) for s in content.studies())
    return DiscLabelFields(
        patient_name=first.name,
        patient_id=first.patient_id,
        birth_date=first.birth_date,
        studies=studies,
        institution=institution,
        disc_number=disc_number,
        disc_count=disc_count,
        with_viewer=with_viewer,
        created=created,
        token_url=token_url,
    )


def _number(text: str) -> tuple[int, str]:
    """Sort key of an IS value: numbers by value, anything else after them."""
    try:
        return (int(str(text).strip()), "")
    except ValueError:
        return (2**31, str(text))
