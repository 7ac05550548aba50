-- Move the staged batch into log_lines. ids are base + ord, where base comes from the
-- workflow counters just bumped (and locked) in this transaction; duplicates of lines
-- already stored are skipped by the (dedupe, ts) unique index and leave a gap in the ids,
-- which is harmless: ids only need to increase.
INSERT INTO log_lines (workflow_id, seq, ts, dedupe, kind, job_id, step, pod, container,
                       stream, message, truncated, collected_at)
SELECT i.workflow_id, b.base + i.ord, i.ts, i.dedupe, i.kind, i.job_id, i.step, i.pod,
       i.container, i.stream, i.message, i.truncated, i.collected_at
FROM incoming AS i
JOIN unnest(%(workflow_ids)s::uuid[], %(bases)s::bigint[]) AS b (workflow_id, base)
  USING (workflow_id)
ORDER BY i.workflow_id, i.ord
ON CONFLICT DO NOTHING
