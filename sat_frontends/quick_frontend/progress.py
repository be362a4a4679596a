"""Long jobs (file transfers, archive synchronisation...) followed through the Progress* signals."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sat_frontends.quick_frontend.events import Events

__all__ = ["Job", "ProgressTracker"]


@dataclass(slots=True)
class Job:
    id: str
    profile: str
    metadata: dict = field(default_factory=dict)
    position: int = 0
    #: -1 when unknown
    size: int = -1
    #: running, done or error
    state: str = "running"
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def fraction(self) -> float | None:
        """0..1, or None when the size is unknown."""
        if self.state == "done":
            return 1.0
        if self.size and self.size > 0:
            return max(0.0, min(1.0, self.position / self.size))
        return None

    @property
    def label(self) -> str:
        meta = self.metadata
        return str(
            meta.get("name")
            or meta.get("title")
            or meta.get("description")
            or meta.get("type")
            or self.id
        )


class ProgressTracker:
    #: seconds a finished job stays listed
    LINGER = 10.0

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.events = Events()

    def started(self, profile: str, job_id: str, metadata: dict) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            job = self.jobs[job_id] = Job(job_id, profile, dict(metadata or {}))
        else:
            job.metadata.update(metadata or {})
        self.events.emit("changed", job)
        return job

    def updated(self, profile: str, job_id: str, position: int, size: int) -> Job:
        job = self.jobs.get(job_id) or self.started(profile, job_id, {})
        job.position, job.size = position, size
        self.events.emit("changed", job)
        return job

    def finished(self, profile: str, job_id: str, metadata: dict) -> Job:
        job = self.jobs.get(job_id) or self.started(profile, job_id, {})
        job.metadata.update(metadata or {})
        job.state = "done"
        job.ended = time.monotonic()
        if job.size > 0:
            job.position = job.size
        self.events.emit("changed", job)
        return job

    def failed(self, profile: str, job_id: str, error: str) -> Job:
        job = self.jobs.get(job_id) or self.started(profile, job_id, {})
        job.state = "error"
        job.error = error
        job.ended = time.monotonic()
        self.events.emit("changed", job)
        return job

    def active(self, now: float | None = None) -> list[Job]:
        """Running jobs, and finished ones for :attr:`LINGER` seconds."""
        now = time.monotonic() if now is None else now
        return [j for j in self.jobs.values() if j.ended is None or now - j.ended < self.LINGER]

    def prune(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for job_id in [
            j.id for j in self.jobs.values() if j.ended is not None and now - j.ended >= self.LINGER
        ]:
            del self.jobs[job_id]
