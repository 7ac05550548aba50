-- Run by the ingest of the path of record (Vector, ship) only when its batch had
-- duplicates: a line the live tap stored first (its dedupe is its line_key: the tap
-- cannot compute Vector's digest) takes the fields only the path of record knows, above
-- all the stream (the merged pods/log API does not say stdout or stderr) and a Dask pod's
-- component (its step, vector/vector.yaml), and its
-- dedupe digest, so a later retry of the same batch is a duplicate by either index and
-- the line is counted as adopted once. Skipped, leaving the tap's copy as it is, when
-- another row already holds that digest (identical lines cut into different batches).
UPDATE log_lines AS l
SET stream = i.stream, dedupe = i.dedupe, kind = i.kind, job_id = i.job_id,
    step = coalesce(i.step, l.step), collected_at = i.collected_at
FROM incoming AS i
WHERE i.line_key IS NOT NULL
  AND l.line_key IS NOT NULL
  AND l.line_key = i.line_key
  AND l.ts = i.ts
  AND l.workflow_id = i.workflow_id
  AND l.dedupe = l.line_key
  AND NOT EXISTS (SELECT 1 FROM log_lines AS o WHERE o.dedupe = i.dedupe AND o.ts = i.ts)
