#!/usr/bin/env python3
"""Lint and render the Helm chart deploy/helm/atlas, then validate every
rendered manifest against the Kubernetes schemas, offline.

No `helm` binary can be installed from the registries this project uses;
helm-python-sdk (PyPI) bundles Helm's own Go SDK as a shared library, so
`helm lint` and `helm template` run here with Helm's template engine
(docs/adr/0001-helm-chart-rendered-with-helms-go-sdk.md).
kubernetes-validate (PyPI) ships the Kubernetes JSON schemas.

Usage: helm-check.py OUT_DIR   (the rendered manifests are written there)
"""

import os
import subprocess
import sys

import helm_python as helm
import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy", "helm", "atlas")
KUBERNETES_VERSION = "1.30.0"
SECRETS = {"databaseUrl": "postgres://atlas:pw@postgres:5432/atlas",
           "jwtSecret": "0" * 64, "auditSigningKey": "AAAA"}

# Value sets a user would install with: the defaults (with the secrets they
# require), an existing Secret with everything optional switched on, and
# fixed replica counts without autoscaling or disruption budgets.
CASES = {
    "defaults": {"secrets": SECRETS},
    "everything": {
        "secrets": {"existingSecret": "atlas-secrets"},
        "ingress": {"enabled": True, "className": "nginx",
                    "tls": [{"secretName": "atlas-tls", "hosts": ["atlas.example.org"]}]},
        "serviceMonitor": {"enabled": True},
        "worker": {"autoscaling": {"enabled": True}, "pdb": {"enabled": True}},
        "config": {"server.cors_allowed_origins": ["https://app.example.org"],
                   "telemetry.otlp_endpoint": "http://collector:4318/v1/traces"},
        "extraEnv": [{"name": "ATLAS_TELEMETRY__LOG_LEVEL", "value": "info,sqlx=warn"}],
    },
    "fixed-replicas": {
        "secrets": SECRETS,
        "api": {"autoscaling": {"enabled": False}, "pdb": {"enabled": False}, "replicas": 3},
        "migration": {"enabled": False},
    },
}

# Kinds without a schema in kubernetes-validate (custom resources): checked
# only for being well-formed YAML with apiVersion, kind and metadata.name.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def fail(message):
    sys.exit(f"helm-check: {message}")


def check_invariants(case, documents):
    """What the chart promises, whatever the values."""
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    for kind, name in (("Deployment", "atlas-api"), ("Deployment", "atlas-worker"),
                       ("Service", "atlas"), ("ConfigMap", "atlas")):
        if (kind, name) not in kinds:
            fail(f"{case}: no {kind} {name}")
    for d in documents:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        pod = d["spec"]["template"]["spec"]
        if not pod["securityContext"].get("runAsNonRoot"):
            fail(f"{case}: {d['metadata']['name']} may run as root")
        for c in pod["containers"]:
            sc = c["securityContext"]
            if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation", True):
                fail(f"{case}: {d['metadata']['name']}: root filesystem writable or privilege escalation allowed")
            if d["kind"] == "Deployment":
                if c["readinessProbe"]["httpGet"]["path"] != "/ready":
                    fail(f"{case}: {d['metadata']['name']}: readiness is not /ready")
                if c["livenessProbe"]["httpGet"]["path"] != "/health":
                    fail(f"{case}: {d['metadata']['name']}: liveness is not /health")
                if "resources" not in c or "requests" not in c["resources"]:
                    fail(f"{case}: {d['metadata']['name']}: no resource requests")


def main():
    if len(sys.argv) != 2:
        fail("usage: helm-check.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)

    report = helm.lint(CHART, {"secrets": SECRETS}, strict=True,
                       kube_version=f"v{KUBERNETES_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    if problems:
        fail(f"helm lint --strict: {problems}")
    print(f"ok: helm lint --strict ({len(report['messages'])} info messages)")

    files = []
    with helm.Chart.load(CHART) as chart:
        for case, values in CASES.items():
            rendered = chart.render(values, name="atlas", namespace="atlas",
                                    is_install=True)
            documents, custom = [], []
            for template, text in sorted(rendered.items()):
                if template.endswith("NOTES.txt"):
                    continue
                for doc in yaml.safe_load_all(text):
                    if not doc:
                        continue
                    if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_KINDS:
                        if not doc.get("metadata", {}).get("name"):
                            fail(f"{case}: {template}: a {doc.get('kind')} without a name")
                        custom.append(doc)
                    else:
                        documents.append(doc)
            check_invariants(case, documents)
            path = os.path.join(out_dir, f"{case}.yaml")
            with open(path, "w") as f:
                yaml.safe_dump_all(documents, f, sort_keys=False)
            files.append(path)
            kinds = sorted({d["kind"] for d in documents + custom})
            print(f"ok: rendered {case}: {len(documents) + len(custom)} manifests ({', '.join(kinds)})")

    # --strict: unknown fields are errors too.
    result = subprocess.run(["kubernetes-validate", "--strict", "--quiet",
                             "-k", KUBERNETES_VERSION, *files])
    if result.returncode != 0:
        fail("rendered manifests do not validate against the Kubernetes schemas")
    print(f"ok: every rendered manifest validates against Kubernetes {KUBERNETES_VERSION} (strict)")


if __name__ == "__main__":
    main()
