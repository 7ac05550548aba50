-- Move the staged batch into log_lines. ids are base + ord, where base comes from the
-- workflow counters just bumped (and locked) in this transaction; duplicates of lines
-- already stored are skipped by the (dedupe, ts) unique index and leave a gap in the ids,
-- which is harmless: ids only need to increase. A line the live tap stored first is skipped
-- by the (line_key, ts) partial unique index (0003_line_key.sql): no target, so either index. A line without a step takes its job's step
-- from job_steps (pods do not carry step names; REANA's status POST does).
INSERT INTO log_lines (workflow_id, seq, ts, dedupe, kind, job_id, step, pod, container,
                       stream, message, truncated, collected_at, line_key)
SELECT i.workflow_id, b.base + i.ord, i.ts, i.dedupe, i.kind, i.job_id, coalesce(i.step, j.step), i.pod,
       i.container, i.stream, i.message, i.truncated, i.collected_at, i.line_key
FROM incoming AS i
JOIN unnest(%(workflow_ids)s::uuid[], %(bases)s::bigint[]) AS b (workflow_id, base)
  USING (workflow_id)
LEFT JOIN job_steps AS j ON j.workflow_id = i.workflow_id AND j.job_id = i.job_id
ORDER BY i.workflow_id, i.ord
ON CONFLICT DO NOTHING
