-- Reserve `n` ids per workflow, creating unknown workflows. Rows are taken in
-- workflow_id order so concurrent batches lock them in the same order (no deadlock);
-- the row locks are held until commit, which serialises ingest per workflow.
INSERT INTO workflows AS w (workflow_id, last_seq)
SELECT workflow_id, n
FROM unnest(%(workflow_ids)s::uuid[], %(counts)s::bigint[]) AS c (workflow_id, n)
ORDER BY workflow_id
ON CONFLICT (workflow_id) DO UPDATE
    SET last_seq = w.last_seq + excluded.last_seq, updated_at = now()
RETURNING workflow_id, last_seq
