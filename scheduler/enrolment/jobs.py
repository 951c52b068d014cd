"""Asynchronous enrolments (the FHIR asynchronous request pattern): each runs as a task in the
process that accepted it, and is asked about by its id.

Jobs are held in memory: a restart loses the running ones, and a status URL of a lost job
answers 404 saying so. Nothing is lost that matters, since enrolment is idempotent: start it
again and the patients already enrolled are counted as such. `herald enrol` is the path that
needs no server to stay up.

A job is seen (status, cancel) only by the principal that started it, or an administrator; to
anyone else it does not exist. A finished job's summary is kept for KEPT_FOR after it ends.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fhirstore import Clock, FhirError, NotFound
from fhirstore.access import Principal
from scheduler.enrolment.population import Summary

log = logging.getLogger(__name__)

KEPT_FOR = timedelta(hours=24)
LOST = (
    "there is no enrolment job {id} here: it finished more than a day ago, was cancelled, or"
    " was lost when Herald restarted (jobs are held in memory). Enrolment is idempotent:"
    " start it again, and patients already enrolled are counted as such"
)

Work = Callable[[Summary], Awaitable[None]]


@dataclass(slots=True)
class Job:
    id: str
    owner: str
    plan_id: str
    started: datetime
    summary: Summary = field(default_factory=Summary)
    finished: datetime | None = None
    error: str | None = None  # why it stopped early
    task: asyncio.Task[None] | None = None


class Jobs:
    """The enrolment jobs of this process."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._jobs: dict[str, Job] = {}

    def start(self, principal: Principal, plan_id: str, work: Work) -> Job:
        """Run `work` (which fills in the job's summary as it goes) as a new job."""
        self._forget_old()
        job = Job(str(uuid.uuid4()), principal.subject, plan_id, self._clock.now())
        job.task = asyncio.create_task(self._run(job, work), name=f"enrolment {job.id}")
        self._jobs[job.id] = job
        return job

    def get(self, job_id: str, principal: Principal) -> Job:
        """The job, if `principal` may see it. Raises NotFound."""
        job = self._jobs.get(job_id)
        if job is None or not (principal.admin or job.owner == principal.subject):
            raise NotFound(LOST.format(id=job_id))
        return job

    def cancel(self, job_id: str, principal: Principal) -> None:
        """Stop the job (the patients enrolled so far stay enrolled) and forget it."""
        job = self.get(job_id, principal)
        if job.task is not None:
            job.task.cancel()
        del self._jobs[job_id]
        log.info("enrolment job %s cancelled after %d patients", job_id, job.summary.done)

    async def close(self) -> None:
        """Cancel every running job (the process is stopping)."""
        tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job: Job, work: Work) -> None:
        try:
            await work(job.summary)
        except asyncio.CancelledError:
            raise
        except FhirError as error:  # e.g. the search cannot be answered any more
            job.error = f"the enrolment stopped early: {error.diagnostics}"
            log.warning("enrolment job %s stopped: %s", job.id, type(error).__name__)
        except Exception as error:
            job.error = (
                f"the enrolment stopped early on an unexpected error ({type(error).__name__});"
                " start it again (patients enrolled so far are kept), and report it if it"
                " keeps failing"
            )
            log.error("enrolment job %s stopped: %s", job.id, type(error).__name__)
        finally:
            job.finished = self._clock.now()
        log.info(
            "enrolment job %s done: %d enrolled, %d already, %d failed",
            job.id,
            job.summary.enrolled,
            job.summary.already,
            job.summary.failed,
        )

    def _forget_old(self) -> None:
        now = self._clock.now()
        for job_id, job in list(self._jobs.items()):
            if job.finished is not None and now - job.finished > KEPT_FOR:
                del self._jobs[job_id]
