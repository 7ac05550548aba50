-- 0004: the range of line timestamps a workflow's lines lie in, so that its reads name it
-- and PostgreSQL reads only the daily partitions of log_lines that range touches (a
-- read by workflow_id and seq alone probes the index of every partition: 30 days of
-- retention, 32 partitions). Ingest widens the range in the transaction that stores the
-- lines (allocate.sql, under the workflow's row lock), so every snapshot that sees a line
-- sees a range holding its ts. The range only widens: lines later dropped with their
-- partition or deleted leave it as wide as it was, which is harmless.
-- Rows that exist now may have lines anywhere: -infinity to infinity (no pruning; a
-- constant default, so no table rewrite). A workflow created from now on starts empty
-- (infinity to -infinity) and takes the bounds of its first batch.
ALTER TABLE workflows
    ADD COLUMN ts_first timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN ts_last timestamptz NOT NULL DEFAULT 'infinity';
ALTER TABLE workflows
    ALTER COLUMN ts_first SET DEFAULT 'infinity',
    ALTER COLUMN ts_last SET DEFAULT '-infinity';
