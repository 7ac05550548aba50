"""The shapes that cross the service's edge: ingested events and status updates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TERMINAL_STATUSES = frozenset({"finished", "failed", "stopped", "deleted"})
WorkflowStatus = Literal[
    "created", "queued", "pending", "running", "finished", "failed", "stopped", "deleted"
]


def _aware(value: datetime) -> datetime:
    """Naive timestamps are taken as UTC (CRI timestamps always carry a zone)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class LogEvent(BaseModel):
    """One log line, as vector/vector.yaml's remap emits it (CONTRACT.md section 2)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    workflow_id: uuid.UUID
    kind: Literal["job", "workflow"] = "job"
    job_id: str | None = Field(default=None, max_length=253)
    step: str | None = Field(default=None, max_length=253)
    pod: str | None = Field(default=None, max_length=253)
    container: str | None = Field(default=None, max_length=253)
    stream: Literal["stdout", "stderr"]
    timestamp: datetime
    message: str
    collected_at: datetime | None = None

    _aware_timestamp = field_validator("timestamp", "collected_at")(
        lambda value: None if value is None else _aware(value)
    )


class StatusUpdate(BaseModel):
    """Body of POST /api/workflows/{id}/status (CONTRACT.md section 3)."""

    model_config = ConfigDict(extra="ignore")

    status: WorkflowStatus
    job_id: str | None = Field(default=None, max_length=253)
    step: str | None = Field(default=None, max_length=253)
    # What REANA knows of a job and no pod carries; kept for the format=reana answer.
    reana_job_id: str | None = None
    job_name: str | None = None
    compute_backend: str | None = None
    docker_img: str | None = None
    cmd: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def is_workflow_level(self) -> bool:
        return self.job_id is None and self.step is None

    @property
    def ends_stream(self) -> bool:
        return self.is_workflow_level and self.status in TERMINAL_STATUSES
