-- 0003: a line's identity across collection paths (reana_log_sse/identity.py).
-- Vector's `dedupe` digest covers the timestamp text and the stream, which the live tap
-- (the apiserver's pods/log) cannot reproduce; line_key covers workflow, pod, container,
-- the timestamp in integer nanoseconds, the message and the ordinal of identical lines in
-- the batch. Ingest's INSERT .. ON CONFLICT DO NOTHING has no conflict target, so a line
-- already stored under either index is skipped. Lines without pod or container (ship,
-- other backends) have no line_key and are deduplicated by `dedupe` alone, as before.
-- Like (dedupe, ts), the index contains the partition key; partitions attached later get
-- it from the parent.
ALTER TABLE log_lines ADD COLUMN line_key uuid;
CREATE UNIQUE INDEX log_lines_line_key ON log_lines (line_key, ts) WHERE line_key IS NOT NULL;
