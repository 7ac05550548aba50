-- The feeds' live reads (live.LiveReads, follow/hub.py Feed.refresh): what read_snapshot(
-- after=, status_after=, limit=) reads in six round trips (BEGIN, SET TRANSACTION, the
-- workflow's row, its lines, its statuses, COMMIT), in ONE statement, one snapshot and
-- one round trip, for every feed that asks at once: a NOTIFY names each workflow a
-- commit touched and each of their feeds reads, so at 100 busy follows a commit makes
-- dozens of reads (docs/performance.md, issue 22).
-- One row per known workflow asked for (q.i: its position in the arrays): its counters
-- and status; its lines after q.after up to its last_seq as of this statement's snapshot
-- (never max(seq): lines may be stored before their workflow's last_seq publishes them),
-- the first q.lim of them and at most about %(bytes)s of messages (the line that crosses
-- it is the last: snapshot._LINES_READ's cut), as one array per column; the horizon
-- (every line with seq <= horizon is in the read or before it); and the status events
-- with id > q.status_after and after_seq <= horizon, as arrays in id order.
-- The lines' range of timestamps comes from the workflow's row (0004_workflow_days.sql)
-- inside the statement: PostgreSQL prunes the daily partitions at run time, per workflow.
SELECT q.i, w.last_seq, w.status, extract(epoch FROM now() - w.status_at)::float8,
       h.horizon, l.seqs, l.kinds, l.job_ids, l.steps, l.streams, l.tss, l.messages,
       l.truncs, s.ids, s.after_seqs, s.job_ids, s.steps, s.statuses
FROM unnest(%(wfs)s::uuid[], %(afters)s::bigint[], %(status_afters)s::bigint[],
            %(limits)s::bigint[]) WITH ORDINALITY AS q (wf, after, status_after, lim, i)
CROSS JOIN LATERAL (
    -- by the primary key, one workflow at a time (OFFSET 0: not flattened into a join
    -- that could read the whole table)
    SELECT workflow_id, last_seq, status, status_at, ts_first, ts_last FROM workflows
    WHERE workflow_id = q.wf OFFSET 0
) AS w
CROSS JOIN LATERAL (
    -- one aggregate pass over the rows, which come sorted by seq (PostgreSQL 16+ sees
    -- that every ORDER BY is the same and sorts nothing)
    SELECT count(*) AS n, max(seq) AS last, max(run) AS run,
           array_agg(seq ORDER BY seq) AS seqs, array_agg(kind ORDER BY seq) AS kinds,
           array_agg(job_id ORDER BY seq) AS job_ids, array_agg(step ORDER BY seq) AS steps,
           array_agg(stream ORDER BY seq) AS streams, array_agg(ts ORDER BY seq) AS tss,
           array_agg(message ORDER BY seq) AS messages,
           array_agg(truncated ORDER BY seq) AS truncs
    FROM (SELECT * FROM (
              SELECT seq, kind, job_id, step, stream, ts, message, truncated,
                     sum(octet_length(message)) OVER (ORDER BY seq) AS run
              FROM log_lines
              WHERE workflow_id = w.workflow_id AND seq > q.after AND seq <= w.last_seq
                AND ts >= w.ts_first AND ts <= w.ts_last
              ORDER BY seq LIMIT q.lim) AS x
          WHERE run - octet_length(message) < %(bytes)s) AS y
) AS l
CROSS JOIN LATERAL (
    -- a read cut by its limit or its bytes ends at its last line; a whole read at last_seq
    SELECT CASE WHEN l.n >= q.lim OR l.run >= %(bytes)s THEN l.last
                ELSE greatest(w.last_seq, q.after) END AS horizon
) AS h
CROSS JOIN LATERAL (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(after_seq ORDER BY id) AS after_seqs,
           array_agg(job_id ORDER BY id) AS job_ids, array_agg(step ORDER BY id) AS steps,
           array_agg(status ORDER BY id) AS statuses
    FROM status_events
    WHERE workflow_id = w.workflow_id AND id > q.status_after AND after_seq <= h.horizon
) AS s
