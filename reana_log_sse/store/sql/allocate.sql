-- Reserve `n` ids per workflow, creating unknown workflows, and widen each workflow's
-- range of line timestamps to hold the batch's (0004_workflow_days.sql). Rows are taken
-- in workflow_id order so concurrent batches lock them in the same order (no deadlock);
-- the row locks are held until commit, which serialises ingest per workflow.
INSERT INTO workflows AS w (workflow_id, last_seq, ts_first, ts_last)
SELECT workflow_id, n, ts_first, ts_last
FROM unnest(%(workflow_ids)s::uuid[], %(counts)s::bigint[], %(ts_firsts)s::timestamptz[],
            %(ts_lasts)s::timestamptz[]) AS c (workflow_id, n, ts_first, ts_last)
ORDER BY workflow_id
ON CONFLICT (workflow_id) DO UPDATE
    SET last_seq = w.last_seq + excluded.last_seq, updated_at = now(),
        ts_first = least(w.ts_first, excluded.ts_first),
        ts_last = greatest(w.ts_last, excluded.ts_last)
RETURNING workflow_id, last_seq
