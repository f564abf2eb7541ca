#!/usr/bin/env python3
"""Validates what deploy/ ships, offline: no cluster, no Docker.

- The Helm chart: every value set in deploy/helm/cartwheel/ci/ passes the chart's
  values.schema.json, lints clean (helm v4 through helm-python-sdk, strict) and renders;
  every rendered manifest validates against the Kubernetes schemas
  (kubernetes-validate --strict); assertions on what matters (the PDB, the grace period,
  the probes, node ids, secrets only from the Secret, the security context); values the
  schema must refuse are refused.
- Prometheus: the alert rules (promtool check rules, promtool test rules) and the
  scrape config (promtool check config --syntax-only).
- Grafana: the dashboard and the provisioning files parse and reference only Prometheus
  queries.

`deploy/check.py metric-names` prints every cartwheel_* series the dashboard and the
alert rules use (tests/deploy.rs checks them against a real scrape); `env-names` every
variable the chart sets, by subcommand (checked against the binary's --help).

Needs the venv of `scripts/setup --test` (helm-python-sdk, kubernetes-validate, PyYAML)
and promtool on PATH.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
CHART = DEPLOY / "helm" / "cartwheel"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
KUBE_VERSION = "1.32.0"
# What a node needs at most to hand over (SHUTDOWN_TIMEOUT in src/run.rs) plus margin.
HANDOVER_SECS = 20

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
    return ok


def metric_names():
    """Every cartwheel_* series referenced by the dashboards and the alert rules."""
    exprs = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash.get("panels", []):
            for target in panel.get("targets", []):
                exprs.append(target.get("expr", ""))
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            exprs.append(rule["expr"])
    names = set()
    for e in exprs:
        names.update(re.findall(r"\bcartwheel_[a-z0-9_]+", e))
    return sorted(names)


def render(values, name="shop"):
    from helm_python import chart

    ch = chart.Chart.load(str(CHART))
    ch.validate_schema(values)
    out = ch.render(values, name=name, namespace="shop", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def by_kind(docs, kind, component=None):
    return [
        d
        for d in docs
        if d["kind"] == kind
        and (
            component is None
            or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        )
    ]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def from_secret(env, name, key=None):
    e = env.get(name)
    ref = (e or {}).get("valueFrom", {}).get("secretKeyRef")
    return ref is not None and (key is None or ref["key"] == key)


def kube_validate(docs, where):
    """kubernetes-validate --strict on every manifest but the CRD-backed ServiceMonitor."""
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, d in enumerate(docs):
            if d["kind"] == "ServiceMonitor":
                continue
            f = Path(tmp) / f"{i:02d}-{d['kind'].lower()}.yaml"
            f.write_text(yaml.safe_dump(d))
            files.append(str(f))
        bin_dir = Path(sys.executable).parent
        run = subprocess.run(
            [str(bin_dir / "kubernetes-validate"), "--strict", "--no-warn", "-k", KUBE_VERSION, *files],
            capture_output=True,
            text=True,
        )
        check(run.returncode == 0, f"{where}: kubernetes-validate failed:\n{run.stdout}{run.stderr}")
        return len(files)


def check_common(docs, where, values):
    node_sets = by_kind(docs, "StatefulSet", "node")
    edges = by_kind(docs, "Deployment", "edge")
    if not (check(len(node_sets) == 1, f"{where}: one node StatefulSet") and check(len(edges) == 1, f"{where}: one edge Deployment")):
        return
    sts, edge = node_sets[0], edges[0]
    node_pod, edge_pod = sts["spec"]["template"], edge["spec"]["template"]
    node_c, edge_c = node_pod["spec"]["containers"][0], edge_pod["spec"]["containers"][0]
    node_env, edge_env = env_of(node_c), env_of(edge_c)

    # Stable node ids: the pod's name.
    check(
        node_env.get("CARTWHEEL_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
        f"{where}: node id from the pod name",
    )
    want_nodes = values.get("node", {}).get("replicas", 2)
    check(sts["spec"]["replicas"] == want_nodes, f"{where}: {want_nodes} nodes, got {sts['spec']['replicas']}")
    # A drain moves one node's partitions at a time, and waits out a hand-over.
    pdbs = by_kind(docs, "PodDisruptionBudget", "node")
    if check(len(pdbs) == 1, f"{where}: a node PodDisruptionBudget"):
        pdb = pdbs[0]["spec"]
        check(pdb.get("maxUnavailable") == 1, f"{where}: node PDB maxUnavailable 1, got {pdb}")
        check(pdb["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"], f"{where}: node PDB selects the nodes")
    grace = node_pod["spec"]["terminationGracePeriodSeconds"]
    check(grace > HANDOVER_SECS, f"{where}: node grace period {grace}s longer than a hand-over ({HANDOVER_SECS}s)")
    # Probes: liveness on /healthz, readiness on /readyz, on the ports the processes serve.
    for c, port_name, port_env, want in [
        (node_c, "metrics", "CARTWHEEL_METRICS_ADDR", values.get("node", {}).get("metricsPort", 9090)),
        (edge_c, "http", "CARTWHEEL_HTTP_ADDR", values.get("edge", {}).get("port", 8080)),
    ]:
        name = c["name"]
        check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{where}: {name} liveness on /healthz")
        check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{where}: {name} readiness on /readyz")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        check(ports.get(port_name) == want, f"{where}: {name} port {port_name}={want}, got {ports}")
        env = env_of(c)
        check(env.get(port_env, {}).get("value") == f"0.0.0.0:{want}", f"{where}: {name} listens on {want}: {env.get(port_env)}")
        sc = c["securityContext"]
        check(sc.get("readOnlyRootFilesystem") is True, f"{where}: {name} read-only root")
        check(sc.get("allowPrivilegeEscalation") is False, f"{where}: {name} no privilege escalation")
        check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}: {name} drops every capability")
    for pod in (node_pod, edge_pod):
        check(pod["spec"]["securityContext"].get("runAsNonRoot") is True, f"{where}: pods run as non-root")
    # Connection strings and secrets only from the Secret, never inline.
    for env in (node_env, edge_env):
        check(from_secret(env, "CARTWHEEL_NATS_URL", "nats-url"), f"{where}: NATS URL from the Secret")
        for k, e in env.items():
            if re.search(r"SECRET|STORE$|REDIS|NATS_URL|PASSWORD|TOKEN|NATS_USER", k):
                check("value" not in e, f"{where}: {k} inline instead of from the Secret")
            if re.search(r"NATS_CREDS|NATS_NKEY|NATS_TLS_", k):
                # Files: a path into the Secret's volume, never the content.
                check(e.get("value", "").startswith("/etc/cartwheel/nats/"), f"{where}: {k} is not a file from the Secret: {e}")
    check(from_secret(node_env, "CARTWHEEL_STORE", "store"), f"{where}: store URI from the Secret")
    check(from_secret(node_env, "CARTWHEEL_CART_STORE", "cart-store"), f"{where}: cart store URI from the Secret")
    check(node_env["CARTWHEEL_REPLICAS"]["value"] == str(values.get("storage", {}).get("replicas", 1)), f"{where}: stream/bucket replicas")
    # The Secret: created by the chart, or the operator's own.
    existing = values.get("secrets", {}).get("existingSecret")
    secrets = by_kind(docs, "Secret")
    secret_name = node_env["CARTWHEEL_NATS_URL"]["valueFrom"]["secretKeyRef"]["name"]
    if existing:
        check(not secrets, f"{where}: no Secret rendered beside existingSecret")
        check(secret_name == existing, f"{where}: env reads the existing Secret")
    elif check(len(secrets) == 1, f"{where}: one Secret"):
        data = secrets[0]["stringData"]
        check(secrets[0]["metadata"]["name"] == secret_name, f"{where}: env reads the chart's Secret")
        check(data["nats-url"] == values.get("nats", {}).get("url", "nats://nats:4222"), f"{where}: nats-url in the Secret")
        store = values.get("storage", {}).get("store", "nats")
        check(data.get("store", "nats") == store, f"{where}: store in the Secret")
        jwt = values.get("auth", {}).get("jwt", {})
        if values.get("auth", {}).get("mode", "jwt") == "jwt" and not (jwt.get("publicKey") or jwt.get("jwksUrl")):
            check(len(data.get("jwt-hs256-secret", "")) >= 32, f"{where}: an HS256 secret of 32+ characters")
    # Edge: autoscaled or fixed, and never a zero-capacity rollout.
    hpas = by_kind(docs, "HorizontalPodAutoscaler", "edge")
    if values.get("edge", {}).get("autoscaling", {}).get("enabled", True):
        if check(len(hpas) == 1, f"{where}: an edge HPA"):
            check(hpas[0]["spec"]["scaleTargetRef"]["name"] == edge["metadata"]["name"], f"{where}: HPA targets the edge")
        check("replicas" not in edge["spec"], f"{where}: the HPA owns the edge's replicas")
    else:
        check(not hpas, f"{where}: no HPA when autoscaling is off")
    check(edge["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, f"{where}: edge rollout keeps capacity")
    # The rate is always explicit (unset, the edge would apply its own default).
    want_rps = str(values.get("edge", {}).get("rateLimit", {}).get("rps", 20))
    check(edge_env.get("CARTWHEEL_RATE_LIMIT_RPS", {}).get("value") == want_rps, f"{where}: rate limit {want_rps}/s")
    check(edge_c["lifecycle"]["preStop"]["sleep"]["seconds"] >= 1, f"{where}: edge waits for load balancers on SIGTERM")
    # Every Service selects pods that exist.
    pod_labels = [node_pod["metadata"]["labels"], edge_pod["metadata"]["labels"]]
    for svc in by_kind(docs, "Service"):
        sel = svc["spec"]["selector"]
        check(any(all(l.get(k) == v for k, v in sel.items()) for l in pod_labels), f"{where}: Service {svc['metadata']['name']} selects pods")
    return node_env, edge_env, edge_pod


def check_chart():
    from helm_python import chart

    sets = sorted((CHART / "ci").glob("*-values.yaml"))
    check(len(sets) >= 5, f"five value sets or more, found {len(sets)}")
    for path in sets:
        where = path.name
        values = yaml.safe_load(path.read_text()) or {}
        report = chart.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
        check(not bad, f"{where}: helm lint: {bad}")
        try:
            docs = render(values)
        except Exception as e:  # noqa: BLE001 - the message is the report
            check(False, f"{where}: render failed: {e}")
            continue
        n = kube_validate(docs, where)
        got = check_common(docs, where, values)
        print(f"{where}: {len(docs)} manifests rendered, {n} validated against Kubernetes {KUBE_VERSION}")
        if not got:
            continue
        node_env, edge_env, edge_pod = got
        auth = values.get("auth", {})
        jwt = auth.get("jwt", {})
        secrets = by_kind(docs, "Secret")
        secret_keys = set(secrets[0].get("stringData", {})) if secrets else set()
        if jwt.get("jwksUrl"):
            check(edge_env["CARTWHEEL_JWT_JWKS_URL"]["value"] == jwt["jwksUrl"], f"{where}: JWKS URL")
            # No HS256 secret beside a provider's keys (it would be a second way in).
            check("CARTWHEEL_JWT_HS256_SECRET" not in edge_env, f"{where}: no HS256 secret beside a JWKS")
            check("jwt-hs256-secret" not in secret_keys, f"{where}: no generated HS256 secret beside a JWKS")
            check(from_secret(edge_env, "CARTWHEEL_RATE_LIMIT_REDIS", "rate-limit-redis"), f"{where}: shared rate limits from the Secret")
            check(len(by_kind(docs, "ServiceMonitor")) == 2, f"{where}: ServiceMonitors for edge and nodes")
        if auth.get("loginUrl"):
            check(edge_env.get("CARTWHEEL_LOGIN_URL", {}).get("value") == auth["loginUrl"], f"{where}: the page's login URL")
        if jwt.get("publicKey"):
            check(edge_env["CARTWHEEL_JWT_PUBLIC_KEY_FILE"]["value"] == "/etc/cartwheel/jwt/public.pem", f"{where}: public key file")
            vols = {v["name"]: v for v in edge_pod["spec"].get("volumes", [])}
            check(vols.get("jwt", {}).get("secret", {}).get("items", [{}])[0].get("key") == "jwt-public-key.pem", f"{where}: public key from the Secret")
            check("CARTWHEEL_JWT_HS256_SECRET" not in edge_env, f"{where}: no HS256 secret beside a public key")
        if jwt.get("issuer"):
            check(edge_env["CARTWHEEL_JWT_ISSUER"]["value"] == jwt["issuer"], f"{where}: issuer")
        if jwt.get("audience"):
            check(edge_env["CARTWHEEL_JWT_AUDIENCE"]["value"] == jwt["audience"], f"{where}: audience")
        if auth.get("mode", "jwt") == "jwt" and not (jwt.get("jwksUrl") or jwt.get("publicKey")):
            check(from_secret(edge_env, "CARTWHEEL_JWT_HS256_SECRET", "jwt-hs256-secret"), f"{where}: HS256 secret from the Secret")
        check(edge_env["CARTWHEEL_AUTH"]["value"] == auth.get("mode", "jwt"), f"{where}: auth mode")
        # NATS identity and TLS, the same for nodes and edges.
        nats = values.get("nats", {})
        node_pod = by_kind(docs, "StatefulSet", "node")[0]["spec"]["template"]
        for env, pod, who in ((node_env, node_pod, "node"), (edge_env, edge_pod, "edge")):
            method = nats.get("auth", "none")
            if method == "userPassword":
                check(from_secret(env, "CARTWHEEL_NATS_USER", "nats-user") and from_secret(env, "CARTWHEEL_NATS_PASSWORD", "nats-password"), f"{where}: {who} NATS user and password from the Secret")
            if method == "token":
                check(from_secret(env, "CARTWHEEL_NATS_TOKEN", "nats-token"), f"{where}: {who} NATS token from the Secret")
            files = {}
            if method == "creds":
                files["CARTWHEEL_NATS_CREDS"] = "nats.creds"
            if method == "nkey":
                files["CARTWHEEL_NATS_NKEY"] = "nats.nkey"
            if nats.get("tls", {}).get("enabled"):
                files["CARTWHEEL_NATS_TLS_CA"] = "nats-ca.pem"
            if nats.get("tls", {}).get("clientCert"):
                files["CARTWHEEL_NATS_TLS_CERT"] = "nats-client.pem"
                files["CARTWHEEL_NATS_TLS_KEY"] = "nats-client-key.pem"
            vols = {v["name"]: v for v in pod["spec"].get("volumes", [])}
            items = {i["key"]: i["path"] for i in vols.get("nats", {}).get("secret", {}).get("items", [])}
            for var, key in files.items():
                check(env.get(var, {}).get("value") == f"/etc/cartwheel/nats/{key}", f"{where}: {who} {var}")
                check(items.get(key) == key, f"{where}: {who} mounts {key} from the Secret")
            if files:
                check(vols["nats"]["secret"]["secretName"] == env["CARTWHEEL_NATS_URL"]["valueFrom"]["secretKeyRef"]["name"], f"{where}: {who} NATS files from the same Secret")
            else:
                check("nats" not in vols, f"{where}: {who} mounts no NATS files it does not use")

    # Values the schema refuses (a typo must not render a broken deployment).
    for bad, why in [
        ({"node": {"terminationGracePeriodSeconds": 10}}, "a grace period shorter than a hand-over"),
        ({"auth": {"mode": "none"}}, "an unknown auth mode"),
        ({"storage": {"store": "postgres://db"}}, "an unsupported store"),
        ({"storage": {"replicas": 2}}, "an even replica count"),
        ({"edge": {"prot": 8080}}, "an unknown key"),
        ({"nats": {"url": "http://nats:4222"}}, "a NATS URL that is not nats://"),
        ({"auth": {"mode": "jwt", "jwt": {"jwksUrl": "id.example.com/certs"}}}, "a JWKS URL that is not http(s)"),
        ({"nats": {"url": "nats://nats:4222", "auth": "password"}}, "an unknown NATS auth method"),
    ]:
        try:
            render(bad)
            check(False, f"the schema accepted {why}: {bad}")
        except Exception as e:  # noqa: BLE001
            if "render" in type(e).__name__.lower():
                check(False, f"{why} failed in a template, not the schema: {e}")


def check_prometheus():
    prom = DEPLOY / "prometheus"
    for args in (
        ["check", "rules", str(ALERTS)],
        ["test", "rules", str(prom / "alerts_test.yml")],
        ["check", "config", "--syntax-only", str(prom / "prometheus.yml")],
    ):
        run = subprocess.run(["promtool", *args], capture_output=True, text=True)
        check(run.returncode == 0, f"promtool {' '.join(args)}:\n{run.stdout}{run.stderr}")
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    for r in rules:
        check(r.get("labels", {}).get("severity") in ("critical", "warning"), f"alert {r.get('alert')}: severity label")
        check("summary" in r.get("annotations", {}), f"alert {r.get('alert')}: summary")
    print(f"alerts: {len(rules)} rules checked and unit-tested")


def check_grafana():
    grafana = DEPLOY / "grafana"
    for path in sorted(grafana.glob("provisioning/*/*.yaml")):
        doc = yaml.safe_load(path.read_text())
        check(doc.get("apiVersion") == 1, f"{path.name}: provisioning apiVersion 1")
    n = 0
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text())
        check(bool(dash.get("uid")) and bool(dash.get("title")), f"{path.name}: uid and title")
        ids = set()
        for panel in dash["panels"]:
            check(panel["id"] not in ids, f"{path.name}: panel id {panel['id']} twice")
            ids.add(panel["id"])
            if panel["type"] == "row":
                continue
            n += 1
            check(bool(panel.get("targets")), f"{path.name}: panel {panel['title']} has no query")
            for t in panel.get("targets", []):
                check(t.get("expr", "").strip() != "", f"{path.name}: panel {panel['title']} has an empty query")
    print(f"grafana: {n} panels checked")


def env_names():
    """`<subcommand> <NAME>` for every variable the chart sets, over every value set."""
    out = set()
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        docs = render(yaml.safe_load(path.read_text()) or {})
        for kind, component in (("StatefulSet", "node"), ("Deployment", "edge")):
            for d in by_kind(docs, kind, component):
                c = d["spec"]["template"]["spec"]["containers"][0]
                for e in c.get("env", []):
                    out.add(f"{c['args'][0]} {e['name']}")
    return sorted(out)


def main():
    if sys.argv[1:] == ["metric-names"]:
        print("\n".join(metric_names()))
        return 0
    if sys.argv[1:] == ["env-names"]:
        print("\n".join(env_names()))
        return 0
    check_chart()
    check_prometheus()
    check_grafana()
    if failures:
        print(f"{len(failures)} problem(s):", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print("deploy: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
