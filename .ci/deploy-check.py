#!/usr/bin/env python3
"""Keep deploy/ true to the code:

- every ATLAS_* variable set in the compose file, the Dockerfile and the Helm
  chart's `config` values names a setting documented in
  docs/configuration.md;
- every metric the Prometheus alert rules and the Grafana dashboard query is
  one Atlas exports (a `"atlas_…"` name in the Rust sources);
- the Prometheus, collector and Grafana files parse.
"""

import glob
import json
import os
import re
import sys

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
errors = []


def path(*parts):
    return os.path.join(ROOT, *parts)


def documented_settings():
    """Dotted keys from the tables of docs/configuration.md."""
    keys, section = set(), None
    for line in open(path("docs", "configuration.md")):
        heading = re.match(r"^## (?:`\[(?P<s>[a-z_.]+)\]`|(?P<top>Top level))", line)
        if heading:
            section = heading.group("s") or ""
            continue
        if line.startswith("## "):
            section = None
        if section is None or not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        for key in re.findall(r"`([a-z_]+)`", cell):
            keys.add(f"{section}.{key}" if section else key)
    return keys


def setting_of(variable):
    return ".".join(part.lower() for part in variable[len("ATLAS_"):].split("__"))


def check_variables(settings):
    found = []  # (where, variable)
    compose = yaml.safe_load(open(path("deploy", "docker-compose.yml")))
    blocks = [compose.get("x-atlas", {})] + list(compose["services"].values())
    for block in blocks:
        env = block.get("environment") or {}
        names = env.keys() if isinstance(env, dict) else [e.split("=")[0] for e in env]
        found += [("deploy/docker-compose.yml", n) for n in names if n.startswith("ATLAS_")]
    for line in open(path("deploy", "Dockerfile")):
        found += [("deploy/Dockerfile", n) for n in re.findall(r"\b(ATLAS_[A-Z_]+)=", line)]
    values = yaml.safe_load(open(path("deploy", "helm", "atlas", "values.yaml")))
    found += [("deploy/helm/atlas/values.yaml config", "ATLAS_" + k.replace(".", "__").upper())
              for k in values["config"]]
    for template in glob.glob(path("deploy", "helm", "atlas", "templates", "*")):
        for n in re.findall(r"name: (ATLAS_[A-Z_]+)", open(template).read()):
            found.append((os.path.relpath(template, ROOT), n))
    for where, variable in found:
        if setting_of(variable) not in settings:
            errors.append(f"{where}: {variable} is not a documented setting "
                          f"(`{setting_of(variable)}` in docs/configuration.md)")
    return len(found)


def exported_metrics():
    names = set()
    sources = [f for top in ("src", "crates", "modules")
               for f in glob.glob(path(top, "**", "*.rs"), recursive=True)]
    for source in sources:
        names.update(re.findall(r'"(atlas_[a-z0-9_]+)"', open(source, encoding="utf-8").read()))
    return names


def queried_metrics(text):
    out = set()
    for name in re.findall(r"\batlas_[a-z0-9_]+", text):
        out.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return out


def check_metrics(exported):
    sources = {
        "deploy/observability/alerts.yml": open(path("deploy", "observability", "alerts.yml")).read(),
    }
    for dashboard in glob.glob(path("deploy", "observability", "grafana", "dashboards", "*.json")):
        doc = json.load(open(dashboard))
        exprs = []

        def walk(panels):
            for p in panels:
                exprs.extend(t.get("expr", "") for t in p.get("targets", []))
                walk(p.get("panels", []))

        walk(doc["panels"])
        sources[os.path.relpath(dashboard, ROOT)] = "\n".join(exprs)
    count = 0
    for where, text in sources.items():
        # Job names of the scrape config (atlas-api) are not metrics.
        for metric in sorted(queried_metrics(text)):
            count += 1
            if metric not in exported:
                errors.append(f"{where}: {metric} is not a metric Atlas exports")
    rules = yaml.safe_load(sources["deploy/observability/alerts.yml"])
    for group in rules["groups"]:
        for rule in group["rules"]:
            if not {"alert", "expr", "labels", "annotations"} <= rule.keys():
                errors.append(f"alerts.yml: rule {rule.get('alert')} lacks alert, expr, labels or annotations")
    return count


def main():
    settings = documented_settings()
    variables = check_variables(settings)
    metrics = check_metrics(exported_metrics())
    for f in ("prometheus.yml", "otel-collector.yaml"):
        yaml.safe_load(open(path("deploy", "observability", f)))
    if errors:
        sys.exit("deploy-check:\n  " + "\n  ".join(errors))
    print(f"ok: {variables} ATLAS_* variables are documented settings; "
          f"{metrics} queried metrics are exported by Atlas")


if __name__ == "__main__":
    main()
