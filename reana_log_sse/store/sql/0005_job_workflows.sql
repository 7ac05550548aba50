-- 0005: which workflow a job's lines belong to, and where among its ids they lie, by the
-- job id alone. REANA asks for a job's lines by its Kubernetes Job name only
-- (reana-workflow-controller opensearch.py `fetch_job_logs(backend_job_id)`, a `match` on
-- `kubernetes.labels.job-name`), and log_lines is read by workflow and id: the span
-- first_seq .. last_seq bounds that read to the job's own stretch of the workflow's ids
-- (one search per job for a 200-job workflow would otherwise read the whole workflow 200
-- times). Ingest widens the span in the transaction that stores the lines, after taking
-- the workflow's row lock (allocate.sql), so a line that is visible lies in its span.
-- Jobs whose lines were all stored before this migration have no row: REANA then shows
-- its own logs for them. A workflow's rows go with its lines: on `deleted`
-- (Store.set_status), and at partition maintenance once the workflow wrote nothing inside
-- the kept days (partitions.maintain).
CREATE TABLE job_workflows (
    job_id       text NOT NULL,
    workflow_id  uuid NOT NULL REFERENCES workflows ON DELETE CASCADE,
    first_seq    bigint NOT NULL,
    last_seq     bigint NOT NULL,
    PRIMARY KEY (job_id, workflow_id)
);
CREATE INDEX job_workflows_workflow ON job_workflows (workflow_id);
