-- Per-connection staging table for one ingest batch: rows arrive by COPY, then move to
-- log_lines in one INSERT .. SELECT .. ON CONFLICT DO NOTHING (COPY itself cannot skip
-- duplicates). Emptied at every commit.
CREATE TEMPORARY TABLE IF NOT EXISTS incoming (
    workflow_id   uuid NOT NULL,
    ord           bigint NOT NULL,
    ts            timestamptz NOT NULL,
    dedupe        uuid NOT NULL,
    kind          text NOT NULL,
    job_id        text,
    step          text,
    pod           text,
    container     text,
    stream        text NOT NULL,
    message       text NOT NULL,
    truncated     boolean NOT NULL,
    collected_at  timestamptz,
    line_key      uuid
) ON COMMIT DELETE ROWS;
