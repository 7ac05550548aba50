-- The status a pod-derived change competes with, read under the workflow's row lock
-- (taken just before by the INSERT .. ON CONFLICT DO UPDATE on workflows), so replicas
-- watching the same pods decide one after the other and store each change once:
-- the workflow's status, the job's latest status (NULL when the job has none yet), and
-- whether any job's latest status is `failed`.
SELECT w.status,
       (SELECT s.status FROM status_events AS s
        WHERE s.workflow_id = w.workflow_id AND s.job_id = %(job_id)s
        ORDER BY s.id DESC LIMIT 1),
       EXISTS (SELECT 1 FROM (
                 SELECT DISTINCT ON (s.job_id) s.status FROM status_events AS s
                 WHERE s.workflow_id = w.workflow_id AND s.job_id IS NOT NULL
                 ORDER BY s.job_id, s.id DESC) AS latest
               WHERE latest.status = 'failed')
FROM workflows AS w
WHERE w.workflow_id = %(workflow_id)s
