-- 0001: workflows, partitioned log lines, status history, rejected events.

-- One row per workflow. last_seq is the per-workflow id counter: ingest bumps it with
-- INSERT .. ON CONFLICT DO UPDATE, which row-locks the workflow until commit, so the
-- next transaction for the same workflow can only allocate ids after this one is
-- committed and visible. Ids therefore increase in commit order per workflow, even
-- with many ingest replicas (a plain sequence hands out ids that can commit out of
-- order, and a follower reading "id > last" would skip the late one).
CREATE TABLE workflows (
    workflow_id  uuid PRIMARY KEY,
    last_seq     bigint NOT NULL DEFAULT 0,
    status       text,
    status_at    timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Log lines, partitioned by day of the line's own timestamp (when the container wrote
-- it), not by when we received it. The partition key and the dedupe key are chosen
-- together: a unique index on a partitioned table must contain the partition key, and
-- it only catches duplicates inside one partition. A retried batch carries the same
-- timestamps, so a retry that lands after midnight still goes to the same partition as
-- the first attempt and hits the same unique entry. Keyed by received_at instead, the
-- retry would land in tomorrow's partition and be stored twice.
-- dedupe is a 128-bit digest of the line's identity (workflow, kind, job, pod,
-- container, stream, timestamp text with its nanoseconds, message, and the ordinal of
-- identical lines within the batch), computed by the service.
CREATE TABLE log_lines (
    workflow_id   uuid NOT NULL,
    seq           bigint NOT NULL,
    ts            timestamptz NOT NULL,
    dedupe        uuid NOT NULL,
    kind          text NOT NULL,
    job_id        text,
    step          text,
    pod           text,
    container     text,
    stream        text NOT NULL,
    message       text NOT NULL,
    truncated     boolean NOT NULL DEFAULT false,
    collected_at  timestamptz,
    received_at   timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (ts);

CREATE UNIQUE INDEX log_lines_dedupe_key ON log_lines (dedupe, ts);
CREATE INDEX log_lines_workflow_seq ON log_lines (workflow_id, seq);

-- Status changes of a workflow or of one of its jobs. after_seq is the workflow's
-- last_seq when the change committed: lines with seq <= after_seq came before it.
CREATE TABLE status_events (
    id           bigserial PRIMARY KEY,
    workflow_id  uuid NOT NULL REFERENCES workflows ON DELETE CASCADE,
    after_seq    bigint NOT NULL,
    job_id       text,
    step         text,
    status       text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX status_events_workflow ON status_events (workflow_id, id);

-- Events that failed validation: kept with the reason, never dropped silently.
CREATE TABLE rejected_events (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    reason       text NOT NULL,
    event        text NOT NULL
);
CREATE INDEX rejected_events_received_at ON rejected_events (received_at);
