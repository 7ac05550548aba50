-- 0002: which step a job runs. Pods carry the Kubernetes Job name but no step name;
-- REANA's status POST names both, and ingest fills `step` of lines from here, so that
-- `job=<step>` filters and `[step]` prefixes work for lines from pods too.
CREATE TABLE job_steps (
    workflow_id  uuid NOT NULL REFERENCES workflows ON DELETE CASCADE,
    job_id       text NOT NULL,
    step         text NOT NULL,
    PRIMARY KEY (workflow_id, job_id)
);
