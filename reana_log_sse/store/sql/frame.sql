-- A stored line's SSE `log` frame, built by PostgreSQL for the catch-up reads: byte for
-- byte what lines.Line.frame builds with orjson (tests/test_frames.py checks it), so a
-- follower cannot tell which of the two built it. Keys in Line.as_dict's order; the
-- timestamp as orjson writes a UTC datetime with OPT_UTC_Z (no fraction when it is
-- zero); to_json escapes text as orjson does (\b \f \n \r \t, other controls \u00XX).
-- What is the same for every line of a read is made once: %(wf_key)s is the text
-- `,"workflow_id":"<uuid>","kind":` (store.Store.snapshot), and the usual kinds and streams
-- are constants (to_json of each gives the same text); this saves about 0.25 of 1.85 µs per
-- line of PostgreSQL's CPU.
'event: log' || chr(10) || 'id: ' || seq || chr(10) || 'data: {"id":' || seq
|| %(wf_key)s::text
|| CASE kind WHEN 'job' THEN '"job"' WHEN 'workflow' THEN '"workflow"'
   WHEN 'service' THEN '"service"' ELSE to_json(kind)::text END
|| ',"job_id":' || coalesce(to_json(job_id)::text, 'null')
|| ',"step":' || coalesce(to_json(step)::text, 'null')
|| ',"stream":'
|| CASE stream WHEN 'stdout' THEN '"stdout"' WHEN 'stderr' THEN '"stderr"'
   ELSE to_json(stream)::text END
|| ',"timestamp":"'
|| replace(to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), '.000000Z', 'Z')
|| '","message":' || to_json(message)
|| CASE WHEN truncated THEN ',"truncated":true' ELSE '' END
|| '}' || chr(10) || chr(10)
