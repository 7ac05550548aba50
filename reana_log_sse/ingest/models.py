"""The shapes that cross the service's edge: ingested events and status updates."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

WorkflowStatus = Literal[
    "created", "queued", "pending", "running", "finished", "failed", "stopped", "deleted"
]


class LogEvent(BaseModel):
    """One log line, as vector/vector.yaml's remap emits it (README, "The interface")."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    workflow_id: uuid.UUID
    # "service": Dask and other per-workflow service pods (vector/vector.yaml).
    kind: Literal["job", "workflow", "service"] = "job"
    job_id: str | None = Field(default=None, max_length=253)
    step: str | None = Field(default=None, max_length=253)
    pod: str | None = Field(default=None, max_length=253)
    container: str | None = Field(default=None, max_length=253)
    stream: Literal["stdout", "stderr"]
    timestamp: datetime
    message: str
    collected_at: datetime | None = None
    # Naive timestamps are taken as UTC by the ingest (not here: a Python validator per
    # field costs more than the rest of the model's validation).


class StatusUpdate(BaseModel):
    """Body of POST /api/workflows/{id}/status (README, "The interface")."""

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
    # A batch job's exit code (`reana-log-sse ship` sends it with finished/failed).
    exit_code: int | None = None

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """PostgreSQL text and jsonb cannot hold NUL: it is replaced, as in a log line."""
        if isinstance(value, str) and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value

    @property
    def is_workflow_level(self) -> bool:
        return self.job_id is None and self.step is None
