-- 0005: which workflow a job's lines belong to, by the job id alone. REANA asks for a
-- job's lines by its Kubernetes Job name only (reana-workflow-controller opensearch.py
-- `fetch_job_logs(backend_job_id)`, a `match` on `kubernetes.labels.job-name`), and
-- log_lines is read by workflow. Ingest adds a row for each (job, workflow) it has not
-- seen, in the transaction that stores the lines (Store.ingest_together, _ingest_staged),
-- so a line that is visible has its row. Jobs whose lines were all stored before this
-- migration have no row: REANA then shows its own logs for them.
CREATE TABLE job_workflows (
    job_id       text NOT NULL,
    workflow_id  uuid NOT NULL REFERENCES workflows ON DELETE CASCADE,
    PRIMARY KEY (job_id, workflow_id)
);
