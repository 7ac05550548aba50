"""Which lines a search names: the bodies reana-workflow-controller's
reana_workflow_controller/opensearch.py `OpenSearchLogFetcher.fetch_logs` sends.

    {"query": {"match": {<field>: <id>}}, "sort": [{"@timestamp": {"order": "asc"}}]}
    {"query": {"bool": {"must": [{"match": {<field>: <value>}}, ...]}}, "sort": [...]}

with `size` (its `max_rows`, 5000) and `timeout` in the query string. The indices and
fields are that fetcher's defaults:

- `fluentbit-job_log`, `kubernetes.labels.job-name.keyword` = REANA's `backend_job_id`:
  the `kind=job` lines of that Kubernetes Job;
- `fluentbit-workflow_log`, `kubernetes.labels.reana-run-batch-workflow-uuid.keyword` =
  the workflow id: its `kind=workflow` lines (the engine's);
- `fluentbit-dask_log`, `kubernetes.labels.dask.org/cluster-name.keyword` =
  `reana-run-dask-<id cut short>` and `kubernetes.labels.dask.org/component` =
  `scheduler` or `worker`: the `kind=service` lines of that component.

The Dask cluster's name is reana-commons reana_commons/utils.py
`get_dask_component_name(workflow_id, "cluster")`: `reana-run-dask-` and the workflow id
up to its first dash (`get_trimmed_workflow_id(id, 4)`).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any

JOB_INDEX = "fluentbit-job_log"
WORKFLOW_INDEX = "fluentbit-workflow_log"
DASK_INDEX = "fluentbit-dask_log"
INDICES = (JOB_INDEX, WORKFLOW_INDEX, DASK_INDEX)

JOB_FIELD = "kubernetes.labels.job-name.keyword"
WORKFLOW_FIELD = "kubernetes.labels.reana-run-batch-workflow-uuid.keyword"
DASK_CLUSTER_FIELD = "kubernetes.labels.dask.org/cluster-name.keyword"
DASK_COMPONENT_FIELD = "kubernetes.labels.dask.org/component"
_DASK_CLUSTER = re.compile(r"reana-run-dask-([0-9a-f]{1,32})\Z")


class BadQuery(ValueError):
    """A search this seam cannot answer (OpenSearch's 400 `parsing_exception`)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """The lines a search asks for: `job` (a Kubernetes Job name), `workflow` (an engine's
    workflow id) or `dask` (a workflow id's first group and a component)."""

    index: str
    kind: str  # job | workflow | service
    key: str
    component: str | None = None


def parse(index: str, body: Any) -> Target:
    if not isinstance(body, dict) or not isinstance(body.get("query"), dict):
        raise BadQuery("the body has no query")
    matches = _matches(body["query"])
    if _descending(body.get("sort")):  # the fetcher's `order` is "asc"; ids go one way
        raise BadQuery("only ascending `@timestamp` order is served")
    if index == JOB_INDEX:
        return Target(index, "job", _one(matches, JOB_FIELD))
    if index == WORKFLOW_INDEX:
        value = _one(matches, WORKFLOW_FIELD)
        try:
            uuid.UUID(value)
        except ValueError:
            raise BadQuery(f"{WORKFLOW_FIELD} is not a workflow id") from None
        return Target(index, "workflow", value)
    if index == DASK_INDEX:
        cluster = _DASK_CLUSTER.match(_one(matches, DASK_CLUSTER_FIELD))
        if cluster is None:
            raise BadQuery(f"{DASK_CLUSTER_FIELD} is not a REANA Dask cluster's name")
        component = _one(matches, DASK_COMPONENT_FIELD)
        return Target(index, "service", cluster.group(1), component)
    raise BadQuery(f"unknown index {index}")  # the route answers 404 before this


def _matches(query: dict[str, Any]) -> dict[str, str]:
    """{field: value} of a `match` or a `bool.must` of `match`es."""
    if set(query) == {"match"}:
        clauses = [query]
    elif set(query) == {"bool"} and isinstance(query["bool"], dict) and \
            set(query["bool"]) == {"must"} and isinstance(query["bool"]["must"], list):
        clauses = query["bool"]["must"]
    else:
        raise BadQuery("only `match` and `bool.must` of `match` are understood")
    out: dict[str, str] = {}
    for clause in clauses:
        match = clause.get("match") if isinstance(clause, dict) else None
        if not isinstance(match, dict) or len(match) != 1:
            raise BadQuery("a `match` names one field")
        (field, value), = match.items()
        if isinstance(value, dict):  # the long form, {"query": value}
            value = value.get("query")
        if not isinstance(value, str | int):
            raise BadQuery(f"`match` on {field} needs a text value")
        out[str(field)] = str(value)
    return out


def _one(matches: dict[str, str], field: str) -> str:
    if field not in matches:
        raise BadQuery(f"this index is searched by {field}")
    return matches[field]


def _descending(sort: Any) -> bool:
    if sort is None:
        return False
    for item in sort if isinstance(sort, list) else [sort]:
        if isinstance(item, dict) and "@timestamp" in item:
            order = item["@timestamp"]
            order = order.get("order", "asc") if isinstance(order, dict) else order
            return str(order).lower() == "desc"
    return False
