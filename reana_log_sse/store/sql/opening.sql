-- A new stream's opening read (snapshot.read_opening): in ONE statement, so one snapshot
-- and one round trip (the general read_snapshot takes six: BEGIN, SET TRANSACTION, the
-- workflow's row, its lines, its jobs' statuses, COMMIT), for the 5,000 streams that may
-- open within a second (docs/performance.md, issue 22). One row, none for an unknown
-- workflow: the workflow's counters and status, the highest status id, the frames of the
-- first %(limit)s matching lines after %(after)s (frame.sql, joined here: how many, the
-- last id, the bytes), and each job's latest status as arrays in id order.
-- The lines' range of timestamps comes from the workflow's row (0004_workflow_days.sql)
-- inside the statement: PostgreSQL prunes the daily partitions at run time.
SELECT w.last_seq, w.status, extract(epoch FROM now() - w.status_at)::float8,
       (SELECT coalesce(max(id), 0) FROM status_events s WHERE s.workflow_id = w.workflow_id),
       f.n, f.last, f.frames, j.ids, j.after_seqs, j.job_ids, j.steps, j.statuses
FROM workflows w
CROSS JOIN LATERAL (
    SELECT count(*) AS n, max(seq) AS last,
           convert_to(string_agg(frame, '' ORDER BY seq), 'UTF8') AS frames
    FROM (SELECT seq, {frame} AS frame FROM log_lines
          WHERE workflow_id = w.workflow_id AND seq > %(after)s AND seq <= w.last_seq
            AND ts >= w.ts_first AND ts <= w.ts_last
            AND (%(jobs)s::text[] IS NULL OR job_id = ANY(%(jobs)s) OR step = ANY(%(jobs)s))
            AND (%(kind)s::text IS NULL OR kind = %(kind)s)
          ORDER BY seq LIMIT %(limit)s) AS x
) AS f
CROSS JOIN LATERAL (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(after_seq ORDER BY id) AS after_seqs,
           array_agg(job_id ORDER BY id) AS job_ids, array_agg(step ORDER BY id) AS steps,
           array_agg(status ORDER BY id) AS statuses
    FROM (SELECT DISTINCT ON (coalesce(job_id, ''), coalesce(step, ''))
                 id, after_seq, job_id, step, status
          FROM status_events
          WHERE workflow_id = w.workflow_id AND (job_id IS NOT NULL OR step IS NOT NULL)
          ORDER BY coalesce(job_id, ''), coalesce(step, ''), id DESC) AS latest
) AS j
WHERE w.workflow_id = %(wf)s
