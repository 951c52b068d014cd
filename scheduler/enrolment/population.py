"""Enrolling a population: a stored PlanDefinition applied to every Patient a search matches,
each resulting CarePlan stored (and so scheduled like any other).

Idempotent: each CarePlan is created on the condition that no CarePlan carries its enrolment
identifier (one per PlanDefinition and Patient, scheduler/enrolment/apply.py), so enrolling
twice, or a run interrupted and started again, makes no second CarePlan for anyone.

`prepare` does everything that can refuse the whole enrolment (the PlanDefinition, the search,
the start, the right to write CarePlans) before any patient is enrolled; `run` then reads the
matched Patients (their ids, zones and birth dates only) and enrols them CHECKED at a time: one
search finds who of them is already enrolled, the others are created in one transaction (one
commit). If any of them is refused (e.g. a CarePlan over the scheduler's limits), each is
created on its own, so the refusal is that patient's alone, reported with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from fhirstore import BadRequest, FhirError, Store, process_transaction
from fhirstore.access import Access
from fhirstore.search import parse_search
from fhirstore.validation import ID_PATTERN
from fhirstore.wire import ENROLMENT_SYSTEM
from scheduler.enrolment.actions import Note
from scheduler.enrolment.activity import Definitions
from scheduler.enrolment.apply import (
    Options,
    apply_plan,
    enrolment_key,
    subject_of,
)
from scheduler.enrolment.definitions import read_definitions
from scheduler.enrolment.timing import Unresolved, enrolment_start
from scheduler.policy import SchedulePolicy

PAGE = 500  # Patients read per search page
CHECKED = 100  # Patients whose enrolment is looked up by one search (HERALD_SEARCH_MAX_OR_VALUES)
# Search parameters that shape result pages rather than select Patients: Herald pages itself.
PAGING = frozenset({"_count", "_offset", "_sort", "_total", "_summary", "_elements"})
SHOWN_FAILURES = 1_000  # failures kept with their reason (all are counted)
SHOWN_NOTES = 100


@dataclass(frozen=True, slots=True)
class Failure:
    patient: str  # "Patient/{id}"
    reason: str


@dataclass(slots=True)
class Summary:
    """What an enrolment did so far: Patients matched, CarePlans created, Patients already
    enrolled, failures (the first SHOWN_FAILURES with their reason), and the distinct notes
    on what of the plan was not applied."""

    matched: int | None = None  # None until the search has been read through
    enrolled: int = 0
    already: int = 0
    failed: int = 0
    failures: list[Failure] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.enrolled + self.already + self.failed

    def note(self, notes: Sequence[Note]) -> None:
        for note in notes:
            if note not in self.notes and len(self.notes) < SHOWN_NOTES:
                self.notes.append(note)

    def fail(self, patient: str, reason: str) -> None:
        self.failed += 1
        if len(self.failures) < SHOWN_FAILURES:
            self.failures.append(Failure(patient, reason))


Progress = Callable[[Summary], None]


@dataclass(frozen=True, slots=True)
class Prepared:
    """An enrolment checked and ready to run."""

    plan_id: str
    plan: Mapping[str, Any]
    definitions: Definitions
    criteria: list[tuple[str, str]]
    start: str | None
    access: Access | None
    encounter: str | None = None
    practitioner: str | None = None
    organization: str | None = None


def patient_criteria(subject: str) -> list[tuple[str, str]]:
    """The Patient search a `subject` stands for: `Patient?...` or `Patient/{id}`. Raises
    BadRequest."""
    if subject.startswith("Patient?"):
        query = parse_qsl(subject.removeprefix("Patient?"), keep_blank_values=True)
        return [(k, v) for k, v in query if k not in PAGING]
    patient_id = subject.removeprefix("Patient/")
    if subject.startswith("Patient/") and ID_PATTERN.match(patient_id):
        return [("_id", patient_id)]
    raise BadRequest(
        "subject must be a Patient (Patient/{id}) or a Patient search (Patient?name=value...);"
        " Herald enrols patients, one CarePlan each",
        expression=["subject"],
    )


class Population:
    """Enrolments of many patients into a stored PlanDefinition."""

    def __init__(self, store: Store, policy: SchedulePolicy) -> None:
        self._store = store
        self._policy = policy

    async def prepare(
        self,
        plan_id: str,
        subject: str,
        *,
        start: str | None = None,
        access: Access | None = None,
        **people: str | None,
    ) -> Prepared:
        """Check everything that refuses the whole enrolment, before anyone is enrolled.
        Raises FhirError (404 for a PlanDefinition the caller may not read, 403 without the
        right to create CarePlans, 400 for a bad search or start)."""
        if access is not None:
            access.reach("CarePlan", "c")
        stored = await self._store.read("PlanDefinition", plan_id, access=access)
        criteria = patient_criteria(subject)
        self._search(criteria, 0)  # a bad search is refused now, not after the 202
        try:
            enrolment_start(start, self._policy.default_zone, self._store.clock.now())
        except Unresolved as error:
            raise BadRequest(error.reason, expression=["start"]) from None
        assert stored.body is not None  # a deleted one is Gone
        plan = orjson.loads(stored.body)
        definitions = await read_definitions(self._store, plan, access)
        return Prepared(plan_id, plan, definitions, criteria, start, access, **people)

    async def run(
        self,
        prepared: Prepared,
        progress: Progress | None = None,
        summary: Summary | None = None,
    ) -> Summary:
        """Enrol every Patient the search matches (within the caller's access), counting in
        `summary` (default: a new one) as it goes."""
        summary = summary if summary is not None else Summary()
        patients = await self._patients(prepared)
        summary.matched = len(patients)
        for start in range(0, len(patients), CHECKED):
            chunk = patients[start : start + CHECKED]
            enrolled = await self._enrolled(prepared, [p["id"] for p in chunk])
            summary.already += len(enrolled)
            await self._enrol_together(
                prepared, [p for p in chunk if p["id"] not in enrolled], summary
            )
            if progress is not None:
                progress(summary)
        return summary

    async def _enrol_together(
        self, prepared: Prepared, patients: list[dict[str, Any]], summary: Summary
    ) -> None:
        """Enrol `patients` in one transaction (one commit for them all); if any of them is
        refused, each on its own, so that the refusal is that patient's alone."""
        if not patients:
            return
        applied = [self._applied(prepared, patient) for patient in patients]
        entries = [
            {
                "resource": careplan,
                "request": {"method": "POST", "url": "CarePlan", "ifNoneExist": condition},
            }
            for careplan, condition, _ in applied
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        try:
            response = await process_transaction(self._store, bundle, prepared.access)
        except FhirError:
            for careplan, condition, notes in applied:
                await self._enrol(prepared, careplan, condition, summary)
                summary.note(notes)
            return
        for entry, (_, _, notes) in zip(response["entry"], applied, strict=True):
            if entry["response"]["status"].startswith("201"):
                summary.enrolled += 1
            else:
                summary.already += 1
            summary.note(notes)

    async def _enrolled(self, prepared: Prepared, patient_ids: list[str]) -> set[str]:
        """Those of `patient_ids` already enrolled, as far as the caller may see (one search
        for many, so that enrolling again is cheap; the conditional create decides the rest)."""
        access = prepared.access
        if access is not None and access.may("CarePlan", "s") is None:
            return set()
        keys = {enrolment_key(prepared.plan_id, p): p for p in patient_ids}
        wanted = ",".join(f"{ENROLMENT_SYSTEM}|{key}" for key in keys)
        request = parse_search(
            "CarePlan",
            [("identifier", wanted), ("_count", str(len(keys)))],
            max_count=len(keys),
            now=self._store.clock.now(),
            limits=self._store.search_limits,
        )
        result = await self._store.search(request, access=access)
        found: set[str] = set()
        for body in result.resources:
            for identifier in orjson.loads(body).get("identifier") or ():
                if identifier.get("system") == ENROLMENT_SYSTEM and identifier.get("value") in keys:
                    found.add(keys[identifier["value"]])
        return found

    def _search(self, criteria: list[tuple[str, str]], offset: int) -> Any:
        params = [*criteria, ("_count", str(PAGE)), ("_offset", str(offset))]
        return parse_search(
            "Patient",
            params,
            max_count=PAGE,
            now=self._store.clock.now(),
            limits=self._store.search_limits,
        )

    async def _patients(self, prepared: Prepared) -> list[dict[str, Any]]:
        """The matched Patients (each once), read through page by page."""
        found: dict[str, dict[str, Any]] = {}
        whole = _has_dynamic_values([prepared.plan, *prepared.definitions.values()])
        offset = 0
        while True:
            request = self._search(prepared.criteria, offset)
            result = await self._store.search(request, access=prepared.access)
            for body in result.resources:
                patient = orjson.loads(body)
                found.setdefault(patient["id"], patient if whole else _slim(patient))
            if not result.has_more or not result.resources:
                return list(found.values())
            offset += len(result.resources)

    def _applied(
        self, prepared: Prepared, patient: dict[str, Any]
    ) -> tuple[dict[str, Any], str, tuple[Note, ...]]:
        """The patient's CarePlan, the condition it is created on, and the notes."""
        subject = subject_of(patient, self._policy.default_zone)
        now = self._store.clock.now()
        start = enrolment_start(prepared.start, subject.zone, now)
        options = Options(
            start.astimezone(UTC),
            now,
            encounter=prepared.encounter,
            practitioner=prepared.practitioner,
            organization=prepared.organization,
            tag=self._policy.tag,
        )
        applied = apply_plan(
            prepared.plan, prepared.plan_id, prepared.definitions, subject, options
        )
        key = enrolment_key(prepared.plan_id, subject.patient_id)
        condition = urlencode([("identifier", f"{ENROLMENT_SYSTEM}|{key}")])
        return applied.careplan, condition, applied.notes

    async def _enrol(
        self, prepared: Prepared, careplan: dict[str, Any], condition: str, summary: Summary
    ) -> None:
        try:
            outcome = await self._store.create(
                careplan, if_none_exist=parse_qsl(condition), access=prepared.access
            )
        except FhirError as error:
            summary.fail(careplan["subject"]["reference"], error.diagnostics)
            return
        if outcome.created:
            summary.enrolled += 1
        else:
            summary.already += 1


def _has_dynamic_values(found: Any) -> bool:
    """Whether a dynamicValue is anywhere in `found` (then each Patient is kept whole: its
    paths may read any element)."""
    if isinstance(found, Mapping):
        return "dynamicValue" in found or any(_has_dynamic_values(v) for v in found.values())
    if isinstance(found, list):
        return any(_has_dynamic_values(v) for v in found)
    return False


def _slim(patient: Mapping[str, Any]) -> dict[str, Any]:
    """What enrolment needs of a Patient (its id, zone and birth date), kept per match when
    the plan has no dynamicValue."""
    return {k: patient[k] for k in ("id", "extension", "birthDate") if k in patient}
