"""The OpenSearch room: REANA's own seam for live logs, answered from the store.

reana-workflow-controller asks OpenSearch for each job's and the engine's lines when
`REANA_OPENSEARCH_ENABLED` is set (reana_workflow_controller/opensearch.py
`OpenSearchLogFetcher`, called from rest/utils.py `build_workflow_logs` and
rest/workflows_status.py `get_workflow_logs`). Pointed here (`REANA_OPENSEARCH_HOST`,
`_PORT`, `_URL_PREFIX`), it gets this service's complete lines, through REANA's own auth:

- query.py: which lines a search names (the bodies that fetcher sends);
- route.py: `POST <prefix>/<index>/_search` with Basic auth, the body bounded in bytes and
  time, and the hits streamed in id order, the answer capped in bytes.

May import: store, follow, settings, metrics.
"""
