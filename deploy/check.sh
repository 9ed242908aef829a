#!/usr/bin/env bash
# Offline checks of the deployment files (CI runs them after clippy):
#  1. every YAML and JSON file under deploy/ parses, and the kinds known here have their
#     required keys (Prometheus config and rules, Grafana dashboards, Kubernetes
#     manifests, compose files);
#  2. promtool checks the Prometheus config and the alert rules, runs the rules' unit
#     tests (every alert has one), and parses the dashboards' queries (as recording
#     rules);
#  3. every reprise_* metric the rules and the dashboards use is one the code exports
#     (by its name in the Rust sources; loadtests/tests/metrics.rs checks the same names
#     against real scrapes of a controller, a worker and a capture node).
# Needs python3 with PyYAML and promtool (deploy/local/setup.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
    echo "check.sh: promtool not found: run deploy/local/setup.sh (Debian package prometheus)" >&2
    exit 1
fi

queries=$(mktemp -d)
trap 'rm -rf "$queries"' EXIT

QUERIES="$queries" python3 - <<'EOF'
import json
import os
import pathlib
import re
import sys

import yaml

errors = []


def fail(path, message):
    errors.append(f"{path}: {message}")


def need(path, mapping, keys, where="top level"):
    if not isinstance(mapping, dict):
        fail(path, f"{where} is not a mapping")
        return False
    missing = [k for k in keys if k not in mapping]
    if missing:
        fail(path, f"{where} lacks {', '.join(missing)}")
    return not missing


def check_prometheus_config(path, doc):
    if not need(path, doc, ["scrape_configs", "rule_files"]):
        return
    jobs = set()
    for i, job in enumerate(doc["scrape_configs"]):
        if need(path, job, ["job_name"], f"scrape_configs[{i}]"):
            jobs.add(job["job_name"])
        if not any(k == "static_configs" or k.endswith("_sd_configs") for k in job):
            fail(path, f"scrape_configs[{i}] has no targets (static_configs or a service discovery)")
    for job in ["reprise-controller", "reprise-worker", "reprise-capture"]:
        if job not in jobs:
            fail(path, f"no scrape job {job} (the rules and the dashboard use it)")
    for rules in doc["rule_files"]:
        if not (path.parent / rules).is_file():
            fail(path, f"rule file {rules} does not exist")


def check_rules(path, doc):
    if not need(path, doc, ["groups"]):
        return
    for group in doc["groups"]:
        if not need(path, group, ["name", "rules"], "a group"):
            continue
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record") or "?"
            need(path, rule, ["expr"], f"rule {name}")
            if "alert" in rule:
                need(path, rule, ["labels", "annotations"], f"alert {name}")
                need(path, rule.get("labels", {}), ["severity"], f"alert {name}'s labels")
                need(path, rule.get("annotations", {}), ["summary"], f"alert {name}'s annotations")


def check_dashboard(path, doc):
    if not need(path, doc, ["title", "uid", "panels", "schemaVersion"]):
        return
    ids = [p.get("id") for p in doc["panels"]]
    if len(ids) != len(set(ids)):
        fail(path, "panel ids repeat")
    for panel in doc["panels"]:
        where = f"panel {panel.get('title', '?')!r}"
        need(path, panel, ["id", "title", "type", "gridPos"], where)
        if panel.get("type") == "row":
            continue
        if need(path, panel, ["targets"], where):
            for target in panel["targets"]:
                need(path, target, ["refId", "expr"], f"{where}'s target")


def check_manifest(path, doc):
    need(path, doc, ["apiVersion", "kind", "metadata"], f"{doc.get('kind')} manifest")
    need(path, doc.get("metadata") or {}, ["name"], f"{doc.get('kind')}'s metadata")


def check_compose(path, doc):
    if need(path, doc, ["services"]):
        for name, service in doc["services"].items():
            if not (isinstance(service, dict) and ("image" in service or "build" in service)):
                fail(path, f"service {name} has neither image nor build")


def check(path, doc):
    if not isinstance(doc, dict):
        return
    if path.name == "prometheus.yml":
        check_prometheus_config(path, doc)
    elif "groups" in doc:
        check_rules(path, doc)
    elif "panels" in doc:
        check_dashboard(path, doc)
    elif doc.get("kind") == "Kustomization":
        if not any(k in doc for k in ("resources", "bases", "components", "patches")):
            fail(path, "a kustomization with nothing in it")
    elif "kind" in doc or "k8s" in path.parts:
        check_manifest(path, doc)
    elif "compose" in path.name:
        check_compose(path, doc)


files = sorted(p for p in pathlib.Path("deploy").rglob("*") if p.suffix in (".yml", ".yaml", ".json") and p.is_file())
used = {}
for path in files:
    text = path.read_text()
    try:
        docs = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
    except (ValueError, yaml.YAMLError) as e:
        fail(path, f"does not parse: {e}")
        continue
    for doc in docs:
        check(path, doc)
    if path.suffix == ".json" and "panels" in docs[0] or any(isinstance(d, dict) and "groups" in d for d in docs):
        for name in re.findall(r"\breprise_[a-z0-9_]+", text):
            used.setdefault(name, path)

# Every alert has a unit test (rules_test.yml, run by promtool below).
rules = yaml.safe_load(pathlib.Path("deploy/prometheus/rules.yml").read_text())
alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
tests = yaml.safe_load(pathlib.Path("deploy/prometheus/rules_test.yml").read_text())
tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
for alert in sorted(alerts - tested):
    fail("deploy/prometheus/rules_test.yml", f"no test shows {alert} firing")

# The dashboards' queries, as recording rules, so that promtool parses their PromQL
# (Grafana's variables replaced by values of the same kind).
exprs = []
for path in files:
    if path.suffix == ".json":
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "panels" in doc:
            for panel in doc["panels"]:
                exprs += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
variables = {"$__rate_interval": "1m", "$__interval": "15s", "$replay": ".*"}
for i, expr in enumerate(exprs):
    for variable, value in variables.items():
        expr = expr.replace(variable, value)
    exprs[i] = expr
group = {"name": "dashboard-queries", "rules": [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}
with open(os.path.join(os.environ["QUERIES"], "dashboards.yml"), "w") as f:
    yaml.safe_dump({"groups": [group]}, f)

# A family's name in the sources is the exported one without the prefix, a counter's
# _total, a histogram's series suffix and the unit (the encoder adds them).
sources = "\n".join(p.read_text() for p in pathlib.Path(".").glob("*/src/**/*.rs"))
for name, path in sorted(used.items()):
    base = re.sub(r"_(total|bucket|sum|count)$", "", name[len("reprise_"):])
    base = re.sub(r"_(seconds|bytes)$", "", base)
    if f'"{base}"' not in sources:
        fail(path, f"uses {name}, which no daemon exports (no family {base!r} in the sources)")

print(f"check.sh: {len(files)} YAML/JSON files parsed, {len(used)} metric names checked", file=sys.stderr)
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
EOF

promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/rules.yml
promtool test rules deploy/prometheus/rules_test.yml
echo "check.sh: the dashboards' queries parse as PromQL:" >&2
promtool check rules "$queries/dashboards.yml"
echo "check.sh: the deployment files are sound" >&2
