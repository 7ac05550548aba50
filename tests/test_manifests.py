"""manifests/: strict offline schema validation (kubernetes-validate), kustomization
completeness, the assembled overlay (kubectl kustomize, where kubectl is installed), and the
properties the deployment relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.vectorsim import VECTOR_YAML, load_config

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
BASE = MANIFESTS / "base"
OVERLAY = MANIFESTS / "overlays" / "example"
KUSTOMIZATION_DIRS = [BASE, OVERLAY, OVERLAY / "logs-route", OVERLAY / "postgresql",
                      ROOT / "vector"]
# The oldest Kubernetes the manifests target (preStop `sleep` is on by default from 1.30)
# and the newest the package ships schemas for.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
NAMESPACED = {"ServiceAccount", "DaemonSet", "Deployment", "Service", "Secret", "ConfigMap",
              "PodDisruptionBudget", "NetworkPolicy", "Ingress"}
# Namespaced, but in REANA's runtime namespace rather than the service's.
IN_REANA_NAMESPACE = {"Role", "RoleBinding"}


def _resource_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml")


# Custom resources: no schema in kubernetes-validate. Each is validated strictly against
# the fields it uses, with the types and bounds of its CRD (see CNPG_CLUSTER_V1).
CUSTOM_KINDS = {("postgresql.cnpg.io/v1", "Cluster")}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


# CloudNativePG's Cluster, as cloudnative-pg config/crd/bases/postgresql.cnpg.io_clusters.yaml
# (v1) declares the fields our Cluster uses: spec.instances integer >= 1 (required),
# storage.size string, bootstrap.initdb database/owner strings. Strict: any other field
# fails here until it is added with its CRD type.
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
CNPG_CLUSTER_V1 = _object({
    "apiVersion": {"const": "postgresql.cnpg.io/v1"},
    "kind": {"const": "Cluster"},
    "metadata": _object({"name": {"type": "string"}, "namespace": {"type": "string"},
                         "labels": _LABELS}, ("name",)),
    "spec": _object({
        "instances": {"type": "integer", "minimum": 1},
        "bootstrap": _object({"initdb": _object({"database": {"type": "string"},
                                                 "owner": {"type": "string"}})}),
        "storage": _object({"size": {"type": "string"}}),
    }, ("instances",)),
}, ("apiVersion", "kind", "metadata", "spec"))


def _validate(doc: dict[str, Any], version: str) -> None:
    """kubernetes-validate --strict, or for a custom resource its CRD's fields."""
    if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
        import jsonschema

        jsonschema.validate(doc, CNPG_CLUSTER_V1)
        return
    kubernetes_validate.validate(doc, version, strict=True)


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _base(kind: str, name: str) -> dict[str, Any]:
    for path in _resource_files():
        for doc in _docs(path):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind}/{name} in manifests/")


def _kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run([kubectl, "kustomize", str(directory)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    """The example overlay as `kubectl apply -k` would send it."""
    return _kustomize(OVERLAY)


def _env(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (container,) = [c for c in workload["spec"]["template"]["spec"]["containers"]
                    if c["name"] == workload["metadata"]["name"]]
    (env,) = [e for e in container["env"] if e["name"] == name]
    return env


def _built(built: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in built if d["kind"] == kind]


# --- schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_every_file_validates_strict(version):
    files = _resource_files()
    assert len(files) >= 12
    for path in files:
        for doc in _docs(path):
            # SchemaNotFoundError (an unknown kind or apiVersion) fails too.
            _validate(doc, version)


def test_manifests_strict_validation_rejects_unknown_fields():
    deployment = _base("Deployment", "reana-log-sse")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_manifests_one_resource_per_file_named_after_it():
    for path in _resource_files():
        docs = _docs(path)
        assert len(docs) == 1, path
        kind, name = docs[0]["kind"], docs[0]["metadata"]["name"]
        suffix = "vector" if name == "reana-log-sse-vector" else name
        assert path.stem == f"{kind.lower()}-{suffix}", path


# --- kustomize assembly ---------------------------------------------------------------------


def test_kustomization_lists_exactly_the_files_in_its_directory():
    for directory in KUSTOMIZATION_DIRS:
        k = _kustomization(directory)
        listed = [r for r in k.get("resources", []) if not r.startswith("..")]
        for name in listed:
            assert (directory / name).is_file(), f"{directory}/{name} is listed but missing"
        for parent in (r for r in k.get("resources", []) if r.startswith("..")):
            assert (directory / parent / "kustomization.yaml").is_file(), parent
        generated = [f for g in k.get("configMapGenerator", []) + k.get("secretGenerator", [])
                     for f in g.get("files", []) + g.get("envs", [])]
        for name in generated:
            assert (directory / name).is_file(), name
        on_disk = {p.name for p in directory.iterdir() if p.is_file()} - {"kustomization.yaml"}
        assert on_disk == set(listed) | set(generated), directory


def test_kustomization_base_builds_vector_configmap_from_vector_yaml():
    assert "../../vector" in _kustomization(BASE)["resources"]
    generator = _kustomization(ROOT / "vector")["configMapGenerator"]
    assert generator == [{"name": "reana-log-sse-vector", "files": ["vector.yaml"],
                          "options": generator[0]["options"]}]
    daemonset = _base("DaemonSet", "reana-log-sse-vector")
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "reana-log-sse-vector"


def test_kustomization_overlay_builds_a_valid_namespaced_whole(built):
    kinds = sorted(d["kind"] for d in built)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                            "PriorityClass", "ConfigMap", "Secret", "Service", "Deployment",
                            "DaemonSet", "PodDisruptionBudget", "NetworkPolicy",
                            "NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "Ingress",
                            "ServiceAccount", "Role", "RoleBinding"])
    for doc in built:
        for version in K8S_VERSIONS:
            _validate(doc, version)
        if doc["kind"] in NAMESPACED:
            assert doc["metadata"]["namespace"] == "reana-log-sse", doc["metadata"]["name"]
        elif doc["kind"] in IN_REANA_NAMESPACE:
            assert doc["metadata"]["namespace"] == "default", doc["metadata"]["name"]
        else:
            assert "namespace" not in doc["metadata"], doc["metadata"]["name"]
    (binding,) = _built(built, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "reana-log-sse-vector",
                                    "namespace": "reana-log-sse"}]


def test_kustomization_overlay_grants_pod_reads_in_reana_namespace_only(built):
    (deployment,) = _built(built, "Deployment")
    runtime = _env(deployment, "REANA_LOG_SSE_KUBERNETES_NAMESPACE")["value"]
    assert runtime == "default"  # REANA's default runtime namespace
    (role,) = _built(built, "Role")
    (binding,) = _built(built, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == runtime
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    # the subject is the service's account, in the service's namespace
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                    "namespace": deployment["metadata"]["namespace"]}]
    assert deployment["metadata"]["namespace"] == "reana-log-sse" != runtime
    # nothing cluster-wide grants pod logs
    for cluster_role in _built(built, "ClusterRole"):
        for rule in cluster_role["rules"]:
            assert "pods/log" not in rule["resources"]


def test_kustomization_overlay_rbac_follows_a_patched_runtime_namespace(tmp_path):
    # An admin whose REANA runs jobs in `reana-runtime` patches only the env var.
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    shutil.copytree(ROOT / "vector", tmp_path / "vector")
    overlay = tmp_path / "manifests" / "overlays" / "example"
    k = _kustomization(overlay)
    k["patches"].append({"patch": yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reana-log-sse"},
        "spec": {"template": {"spec": {"containers": [{"name": "reana-log-sse", "env": [
            {"name": "REANA_LOG_SSE_KUBERNETES_NAMESPACE", "value": "reana-runtime"}]}]}}}})})
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(k), encoding="utf-8")
    out = _kustomize(overlay)
    (deployment,) = _built(out, "Deployment")
    assert _env(deployment, "REANA_LOG_SSE_KUBERNETES_NAMESPACE")["value"] == "reana-runtime"
    (role,) = _built(out, "Role")
    (binding,) = _built(out, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "reana-runtime"
    assert binding["subjects"][0]["namespace"] == "reana-log-sse"


def test_kustomization_overlay_ships_vector_yaml_verbatim(built):
    (configmap,) = _built(built, "ConfigMap")
    assert configmap["data"] == {"vector.yaml": VECTOR_YAML.read_text(encoding="utf-8")}
    (daemonset,) = _built(built, "DaemonSet")
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    # the hashed name, so a config change rolls the DaemonSet
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert configmap["metadata"]["name"].startswith("reana-log-sse-vector-")


def test_kustomization_overlay_secret_has_every_key_the_pods_read(built):
    (secret,) = _built(built, "Secret")
    assert "stringData" not in secret  # the base's placeholders are replaced whole
    keys = set(secret["data"])
    for workload in _built(built, "Deployment") + _built(built, "DaemonSet"):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"]
                    assert ref["key"] in keys


# --- the service ----------------------------------------------------------------------------


def test_deployment_runs_two_probed_replicas_with_graceful_shutdown():
    d = _base("Deployment", "reana-log-sse")
    spec = d["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert d["spec"]["replicas"] == 2
    assert c["image"] == "reanahub/reana-log-sse:0.1.0"
    assert c["command"] == ["reana-log-sse", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # preStop sleep + uvicorn's 5 s drain of SSE streams (reana_log_sse/cli.py) fit inside
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > pre_stop + 5
    env = {e["name"]: e for e in c["env"]}
    assert env["REANA_LOG_SSE_AUTH"]["value"] == "reana"
    assert env["REANA_LOG_SSE_REANA_SERVER_URL"]["value"].startswith("http")
    for name in ("REANA_LOG_SSE_DATABASE_URL", "REANA_LOG_SSE_INGEST_TOKENS"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "reana-log-sse", "key": name}
    assert set(_base("Secret", "reana-log-sse")["stringData"]) == {
        "REANA_LOG_SSE_DATABASE_URL", "REANA_LOG_SSE_INGEST_TOKENS",
        "REANA_LOG_SSE_INGEST_TOKEN"}


def test_deployment_selectors_match_its_pods():
    pod_labels = _base("Deployment", "reana-log-sse")["spec"]["template"]["metadata"]["labels"]
    selectors = [
        _base("Deployment", "reana-log-sse")["spec"]["selector"]["matchLabels"],
        _base("Service", "reana-log-sse")["spec"]["selector"],
        _base("PodDisruptionBudget", "reana-log-sse")["spec"]["selector"]["matchLabels"],
        _base("NetworkPolicy", "reana-log-sse")["spec"]["podSelector"]["matchLabels"],
        _base("NetworkPolicy", "reana-log-sse-egress")["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    assert _base("PodDisruptionBudget", "reana-log-sse")["spec"]["minAvailable"] == 1


def test_networkpolicy_admits_vector_pods_to_the_ingest_port():
    policy = _base("NetworkPolicy", "reana-log-sse")
    vector_pod = _base("DaemonSet", "reana-log-sse-vector")["spec"]["template"]["metadata"]
    rules = [r for r in policy["spec"]["ingress"]
             if any("podSelector" in f for f in r["from"])]
    assert len(rules) == 1
    (peer,) = rules[0]["from"]
    assert peer["podSelector"]["matchLabels"].items() <= vector_pod["labels"].items()
    assert rules[0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    # no rule admits everyone
    assert all(r.get("from") for r in policy["spec"]["ingress"])


def test_networkpolicy_egress_allows_dns_database_reana_server_and_apiserver():
    policy = _base("NetworkPolicy", "reana-log-sse-egress")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    # the ingress policy stays ingress-only: egress is decided in one place
    assert _base("NetworkPolicy", "reana-log-sse")["spec"]["policyTypes"] == ["Ingress"]
    allowed = {(p["port"], p["protocol"]): rule.get("to")
               for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert set(allowed) == {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (5000, "TCP"),
                            (80, "TCP"), (443, "TCP"), (6443, "TCP")}
    # the apiserver's endpoint addresses vary per cluster: any address, those ports only
    assert allowed[(443, "TCP")] is None and allowed[(6443, "TCP")] is None
    # reana-server only in REANA's namespace (its pods listen on 5000 behind port 80)
    assert allowed[(5000, "TCP")] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "default"}}}]
    url = _env(_base("Deployment", "reana-log-sse"), "REANA_LOG_SSE_REANA_SERVER_URL")["value"]
    assert url == "http://reana-server.default.svc.cluster.local"


def test_service_role_grants_exactly_pods_list_watch_and_log_get():
    role = _base("Role", "reana-log-sse")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    deployment = _base("Deployment", "reana-log-sse")
    assert role["metadata"]["namespace"] == _env(
        deployment, "REANA_LOG_SSE_KUBERNETES_NAMESPACE")["value"] == "default"
    binding = _base("RoleBinding", "reana-log-sse")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "reana-log-sse"}
    account = _base("ServiceAccount", "reana-log-sse")
    assert binding["subjects"] == [{"kind": "ServiceAccount",
                                    "name": account["metadata"]["name"],
                                    "namespace": "default"}]  # kustomize sets the overlay's
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    # the token is mounted, so REANA_LOG_SSE_KUBERNETES=auto turns the pod watch on
    assert spec["automountServiceAccountToken"] is True
    assert _env(deployment, "REANA_LOG_SSE_KUBERNETES")["value"] == "auto"


# REANA's own Ingress, as reanahub/reana helm/reana/templates/ingress.yaml writes it: `/api`
# and `/oauth` (Prefix) to reana-server, `/` (Prefix) to reana-ui, on `reana_hostname`,
# with no ingressClassName (Traefik, the chart's default class). Its Traefik router rule is
# Host(`<host>`) && PathPrefix(`/api`).
REANA_PATHS = {"/api": "reana-server", "/oauth": "reana-server", "/": "reana-ui"}
STREAM = "/api/workflows/{}/logs/stream"
LOGS = "/api/workflows/{}/logs"
WORKFLOWS = ["0b5e8d9a-3c1e-4d7a-9f43-8a2b6c1d7e10", "myanalysis.42", "myanalysis"]
OTHER_API = ["/api/workflows/{}/status", "/api/workflows/{}/logs/streamx",
             "/api/workflows/{}/logs/stream/x", "/api/workflows", "/api/you", "/api/ping",
             "/api/workflows/{}/workspace/logs/stream"]


def _paths(ingress: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(rule["host"], p["path"], p["backend"]["service"]["name"])
            for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]


def _traefik(ingresses: list[dict[str, Any]], host: str, path: str) -> str:
    """Which backend Traefik picks: the matching router of highest priority, a router's
    priority being its annotation or else its rule's length (Traefik v3 rules and
    priority; ImplementationSpecific paths use router.pathmatcher, Prefix PathPrefix)."""
    routers = [(len(f"Host(`{host}`) && PathPrefix(`{p}`)"), "prefix", p, b)
               for p, b in REANA_PATHS.items()]
    for ing in ingresses:
        notes = ing["metadata"].get("annotations", {})
        for h, p, backend in _paths(ing):
            assert h == host
            matcher = notes.get("traefik.ingress.kubernetes.io/router.pathmatcher",
                                "PathPrefix")
            rule = f"Host(`{h}`) && {matcher}(`{p}`)"
            priority = int(notes.get("traefik.ingress.kubernetes.io/router.priority",
                                     len(rule)))
            routers.append((priority, "regex" if matcher == "PathRegexp" else "prefix", p,
                            backend))
    for _, kind, p, backend in sorted(routers, key=lambda r: -r[0]):
        if (re.search(p, path) if kind == "regex" else
                path == p or path.startswith(p.rstrip("/") + "/")):
            return backend
    raise AssertionError(f"no Traefik router matches {path}")


def _nginx(ingresses: list[dict[str, Any]], path: str) -> str:
    """Which backend ingress-nginx picks once any Ingress of the host sets use-regex: every
    path of the host is a case-insensitive regex location `^<path>`, written longest first,
    and NGINX takes the first that matches (ingress-nginx ingress-path-matching)."""
    locations = list(REANA_PATHS.items())
    for ing in ingresses:
        assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/use-regex"] == "true"
        locations += [(p, backend) for _, p, backend in _paths(ing)]
    for p, backend in sorted(locations, key=lambda loc: -len(loc[0])):
        if re.match("^" + p, path, re.IGNORECASE):
            return backend
    raise AssertionError(f"no location matches {path}")


def _routes(ingresses: list[dict[str, Any]], path: str) -> str:
    host = ingresses[0]["spec"]["rules"][0]["host"]
    traefik, nginx = _traefik(ingresses, host, path), _nginx(ingresses, path)
    assert traefik == nginx, (path, traefik, nginx)
    return traefik


def test_ingress_stream_path_wins_over_reanas_api_ingress_the_rest_stays_reanas():
    ingress = _base("Ingress", "reana-log-sse")
    for wf in WORKFLOWS:
        assert _routes([ingress], STREAM.format(wf)) == "reana-log-sse"
        assert _routes([ingress], LOGS.format(wf)) == "reana-server"  # opt-in only
        for other in OTHER_API:
            assert _routes([ingress], other.format(wf)) == "reana-server", other
    assert _routes([ingress], "/ingest/vector") == "reana-ui"  # never this service
    assert _routes([ingress], "/") == "reana-ui"
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 60
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 60
    # the explicit priority beats REANA's /api router for any legal hostname (<= 253)
    longest = len(f"Host(`{'h' * 253}`) && PathPrefix(`/api`)")
    assert int(notes["traefik.ingress.kubernetes.io/router.priority"]) > longest
    assert "ingressClassName" not in ingress["spec"]  # the default class, like REANA's


@pytest.fixture
def overlay_with_logs_route(tmp_path: Path) -> Any:
    """The example overlay with the documented opt-in made: `logs-route` uncommented."""
    return _overlay_with(tmp_path, "logs-route")


def _overlay_with(tmp_path: Path, *components: str, root: Path = ROOT,
                  overlay: str = "example") -> list[dict[str, Any]]:
    """An overlay (of the clone at `root`) with the documented opt-ins uncommented
    (docs/deploy.md), built as `kubectl kustomize` builds it."""
    copy = tmp_path / "manifests"
    shutil.copytree(root / "manifests", copy)
    shutil.copytree(root / "vector", tmp_path / "vector")
    path = copy / "overlays" / overlay / "kustomization.yaml"
    text = path.read_text().replace("# components:", "components:")
    for name in components:
        text = text.replace(f"#   - {name}\n", f"  - {name}\n")
    path.write_text(text)
    return _kustomize(path.parent)


def test_postgresql_component_adds_a_cnpg_cluster_the_service_connects_to(tmp_path):
    built = _overlay_with(tmp_path, "postgresql")
    (cluster,) = [d for d in built if d["kind"] == "Cluster"]
    for version in K8S_VERSIONS:
        for doc in built:
            _validate(doc, version)
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["metadata"]["namespace"] == "reana-log-sse"
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    assert initdb == {"database": "reana_log_sse", "owner": "reana_log_sse"}
    assert cluster["spec"]["instances"] >= 2
    (deployment,) = _built(built, "Deployment")
    # the operator's Secret for the owner role: <cluster>-app, key uri (applications.md)
    assert _env(deployment, "REANA_LOG_SSE_DATABASE_URL") == {
        "name": "REANA_LOG_SSE_DATABASE_URL", "valueFrom": {"secretKeyRef": {
            "name": f"{cluster['metadata']['name']}-app", "key": "uri"}}}
    # the rest of the overlay is unchanged by it
    assert len(built) == len(_kustomize(OVERLAY)) + 1


def test_postgresql_cluster_schema_is_strict():
    import jsonschema

    cluster = _base("Cluster", "reana-log-sse-db")
    cluster["spec"]["instance"] = 2  # a typo of `instances`
    with pytest.raises(jsonschema.ValidationError):
        _validate(cluster, K8S_VERSIONS[0])


def test_overlay_names_the_image_repository_and_tag_and_no_missing_doc():
    k = _kustomization(OVERLAY)
    (image,) = [i for i in k["images"] if i["name"] == "reanahub/reana-log-sse"]
    assert set(image) == {"name", "newName", "newTag"}
    text = (OVERLAY / "kustomization.yaml").read_text()
    for doc in re.findall(r"docs/[\w.-]+\.md", text):
        assert (ROOT / doc).is_file(), doc


def test_ingress_logs_route_is_an_opt_in_that_takes_only_reanas_logs_path(
        built, overlay_with_logs_route):
    assert [i["metadata"]["name"] for i in _built(built, "Ingress")] == ["reana-log-sse"]
    ingresses = _built(overlay_with_logs_route, "Ingress")
    assert sorted(i["metadata"]["name"] for i in ingresses) == ["reana-log-sse",
                                                                "reana-log-sse-logs"]
    for ing in ingresses:
        assert ing["metadata"]["namespace"] == "reana-log-sse"
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(ing, version, strict=True)
    for wf in WORKFLOWS:
        assert _routes(ingresses, LOGS.format(wf)) == "reana-log-sse"
        assert _routes(ingresses, STREAM.format(wf)) == "reana-log-sse"
        for other in OTHER_API:
            assert _routes(ingresses, other.format(wf)) == "reana-server", other


def test_networkpolicy_admits_reanas_runtime_namespace_batch_pods_not_job_pods(built):
    (deployment,) = _built(built, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    runtime = env["REANA_LOG_SSE_KUBERNETES_NAMESPACE"]["value"]
    (policy,) = [p for p in _built(built, "NetworkPolicy")
                 if p["metadata"]["name"] == "reana-log-sse-reana-runtime"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": runtime}}
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]

    def admitted(labels: dict[str, str]) -> bool:  # matchExpressions, operator Exists
        return all(e["operator"] == "Exists" and e["key"] in labels
                   for e in peer["podSelector"]["matchExpressions"])

    # labels as reana-workflow-controller and reana-job-controller set them
    # (docs/reana-integration.md section 0)
    assert admitted({"reana-run-batch-workflow-uuid": "7b2e5c0a"})
    assert not admitted({"reana-run-job-workflow-uuid": "7b2e5c0a",
                         "job-name": "reana-run-job-1"})
    assert policy["spec"]["podSelector"] == _base("NetworkPolicy", "reana-log-sse")["spec"][
        "podSelector"]


def test_networkpolicy_runtime_namespace_follows_the_deployments_setting():
    """Setting REANA's runtime namespace once (the Deployment's
    REANA_LOG_SSE_KUBERNETES_NAMESPACE) moves the NetworkPolicy's namespace with it."""
    k = _kustomization(OVERLAY)
    (replacement,) = [r for r in k["replacements"]
                      if r["source"].get("fieldPath", "").endswith(
                          "[name=REANA_LOG_SSE_KUBERNETES_NAMESPACE].value")]
    targets = {t["select"]["name"]: t["fieldPaths"] for t in replacement["targets"]}
    assert targets["reana-log-sse-reana-runtime"] == [
        "spec.ingress.0.from.0.namespaceSelector.matchLabels.[kubernetes.io/metadata.name]"]


def test_overlay_status_tokens_split_from_ingest_and_reana_host_set(built):
    (deployment,) = _built(built, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["REANA_LOG_SSE_STATUS_TOKENS"]["valueFrom"]["secretKeyRef"]
    values = dict(line.split("=", 1) for line in
                  (OVERLAY / "secrets.env").read_text(encoding="utf-8").splitlines()
                  if line and not line.startswith("#"))
    assert ref["key"] == "REANA_LOG_SSE_STATUS_TOKENS"
    assert values["REANA_LOG_SSE_STATUS_TOKENS"] not in values["REANA_LOG_SSE_INGEST_TOKENS"]
    (ingress,) = _built(built, "Ingress")
    assert env["REANA_LOG_SSE_REANA_SERVER_HOST"]["value"] == ingress["spec"]["rules"][0]["host"]
    assert "reana-db" not in values["REANA_LOG_SSE_DATABASE_URL"]  # postgres:12.13 is refused


# --- Vector ---------------------------------------------------------------------------------


def test_vector_daemonset_mounts_what_vector_yaml_uses():
    ds = _base("DaemonSet", "reana-log-sse-vector")
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["image"] == "timberio/vector:0.57.0-distroless-libc"
    assert c["args"] == ["--config", "/etc/vector/vector.yaml"]
    env = {e["name"]: e for e in c["env"]}
    assert env["VECTOR_SELF_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath":
                                                                      "spec.nodeName"}}
    assert env["REANA_LOG_SSE_INGEST_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "reana-log-sse", "key": "REANA_LOG_SSE_INGEST_TOKEN"}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["/var/log/pods"]["readOnly"] is True
    assert volumes[mounts["/var/log/pods"]["name"]]["hostPath"]["path"] == "/var/log/pods"
    data_dir = load_config()["data_dir"]
    assert volumes[mounts[data_dir]["name"]]["hostPath"]["type"] == "DirectoryOrCreate"
    assert mounts["/etc/vector"]["readOnly"] is True
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert spec["serviceAccountName"] == _base("ServiceAccount",
                                               "reana-log-sse-vector")["metadata"]["name"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= \
        ds["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert f"0.0.0.0:{ports['metrics']}" == load_config()["sinks"]["vector_prometheus"]["address"]


def test_vector_daemonset_has_a_priority_class_that_never_preempts():
    # as REANA's Fluent Bit (reanahub/reana helm/reana/templates/priority-classes.yaml)
    priority = _base("PriorityClass", "reana-log-sse-vector")
    spec = _base("DaemonSet", "reana-log-sse-vector")["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == priority["metadata"]["name"]
    assert priority["value"] == 1000000
    assert priority["preemptionPolicy"] == "Never"
    assert priority["globalDefault"] is False
    assert "namespace" not in priority["metadata"]  # cluster-scoped


def test_vector_clusterrole_grants_exactly_list_watch_pods_nodes():
    role = _base("ClusterRole", "reana-log-sse-vector")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "nodes"],
                              "verbs": ["list", "watch"]}]
    # namespaces are not needed because the source does not watch them
    assert load_config()["sources"]["reana_pods"]["insert_namespace_fields"] is False
    binding = _base("ClusterRoleBinding", "reana-log-sse-vector")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


# --- everywhere -----------------------------------------------------------------------------


def test_every_pod_is_locked_down_and_excluded_from_collection():
    for kind, name in [("Deployment", "reana-log-sse"), ("DaemonSet", "reana-log-sse-vector")]:
        template = _base(kind, name)["spec"]["template"]
        assert template["metadata"]["labels"]["vector.dev/exclude"] == "true"
        spec = template["spec"]
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc.get("privileged", False) is False
    service = _base("Deployment", "reana-log-sse")["spec"]["template"]["spec"]
    assert service["securityContext"]["runAsNonRoot"] is True
    # Vector reads root-owned 0640 log files: root without capabilities (documented there)
    vector = _base("DaemonSet", "reana-log-sse-vector")["spec"]["template"]["spec"]
    assert vector["containers"][0]["securityContext"]["runAsUser"] == 0


def test_every_resource_carries_the_recommended_labels():
    for path in _resource_files():
        for doc in _docs(path):
            labels = doc["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/part-of") == "reana-log-sse", path
            if doc["kind"] != "Namespace":
                for key in ("name", "instance", "component"):
                    assert f"app.kubernetes.io/{key}" in labels, (path, key)


SEAM = OVERLAY / "opensearch-seam"


def test_opensearch_seam_component_lists_exactly_its_files():
    k = _kustomization(SEAM)
    assert k["kind"] == "Component"
    generated = {f for g in k["secretGenerator"] for f in g["envs"]}
    on_disk = {p.name for p in SEAM.iterdir() if p.is_file()} - {"kustomization.yaml"}
    assert on_disk == generated == {"opensearch.env"}


def test_opensearch_seam_component_gives_the_service_its_credentials_from_a_secret(tmp_path):
    """The example overlay with `components: [opensearch-seam]` uncommented, as an admin
    makes it (docs/reana-integration.md)."""
    built = _overlay_with(tmp_path, "opensearch-seam")
    secrets = {s["metadata"]["name"]: s for s in _built(built, "Secret")}
    (seam_secret,) = [n for n in secrets if n.startswith("reana-log-sse-opensearch-")]
    assert set(secrets[seam_secret]["data"]) == {"REANA_LOG_SSE_OPENSEARCH_USER",
                                                 "REANA_LOG_SSE_OPENSEARCH_PASSWORD"}
    assert secrets[seam_secret]["metadata"]["namespace"] == "reana-log-sse"
    (deployment,) = _built(built, "Deployment")
    for key in ("REANA_LOG_SSE_OPENSEARCH_USER", "REANA_LOG_SSE_OPENSEARCH_PASSWORD"):
        ref = _env(deployment, key)["valueFrom"]["secretKeyRef"]
        assert ref == {"name": seam_secret, "key": key}
    assert _env(deployment, "REANA_LOG_SSE_REANA_SERVER_URL")  # the overlay's patch stays
    for doc in (deployment, secrets[seam_secret]):
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "reana-log-sse"
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
