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
#     against real scrapes of a controller, a worker and a capture node);
#  4. packaging: the Dockerfile (multi-stage, non-root USER, the four binaries, file
#     capabilities on capture only), compose, Kubernetes (kustomizations and the objects
#     they bring together) and systemd units run only binaries the workspace builds, with
#     flags, REPRISE_* variables and TOML keys those binaries take (docs/CLI.md), and
#     only capture holds NET_RAW/NET_ADMIN; systemd-analyze verifies and scores the
#     units, kubectl kustomize renders the base and overlays (each where installed).
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
import tomllib

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

# ---- Packaging: the image, compose, Kubernetes and systemd files run only the daemons
# the workspace builds, with only the flags and REPRISE_* variables those accept.
DAEMONS = {"reprise-controller", "reprise-worker", "reprise-capture", "ctl"}
CAPTURE_CAPS = {"NET_RAW", "NET_ADMIN"}

built = set()
for manifest in pathlib.Path(".").glob("*/Cargo.toml"):
    built |= set(re.findall(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"', manifest.read_text()))
    built |= {p.stem for p in manifest.parent.glob("src/bin/*.rs")}
for name in sorted(DAEMONS - built):
    fail("deploy/", f"{name} is no binary of the workspace")

# docs/CLI.md is generated from --help and kept current by a test: each binary's flags
# and environment variables (ctl's subcommands count as ctl's).
accepts = {}
section = None
for line in pathlib.Path("docs/CLI.md").read_text().splitlines():
    m = re.match(r"## `([a-z-]+)", line)
    if m:
        section = accepts.setdefault(m.group(1), {"flags": set(), "env": set()})
    elif section is not None:
        section["flags"] |= set(re.findall(r"^\s+(?:-\w, )?--([a-z0-9-]+)", line))
        section["env"] |= set(re.findall(r"\[env: (REPRISE_[A-Z0-9_]+)\]", line))


def check_invocation(path, where, argv, env_names):
    """A daemon's command line and environment: the binary is built, its flags and
    REPRISE_* variables are ones it takes."""
    if not argv:
        return None
    binary = os.path.basename(str(argv[0]))
    if binary not in DAEMONS:
        fail(path, f"{where} runs {binary}, which is not one of {', '.join(sorted(DAEMONS))}")
        return None
    known = accepts.get(binary)
    if known is None:
        fail(path, f"{where}: docs/CLI.md has no section for {binary}")
        return binary
    for arg in argv[1:]:
        flag = re.match(r"--([a-z0-9-]+)", str(arg))
        if flag and flag.group(1) not in known["flags"] | {"help", "version"}:
            fail(path, f"{where}: {binary} has no flag --{flag.group(1)}")
    for name in env_names:
        if name.startswith("REPRISE_") and name not in known["env"]:
            fail(path, f"{where}: {binary} reads no {name}")
    return binary


def check_toml(path, where, binary, text):
    """A daemon's TOML file: it parses and every key is one of the daemon's long flags."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(path, f"{where} does not parse as TOML: {e}")
        return
    for key in doc:
        if key.replace("_", "-") not in accepts.get(binary, {}).get("flags", set()):
            fail(path, f"{where}: {binary} has no setting {key!r}")


# The image: a build stage and a runtime stage that runs as a non-root user, with the four
# binaries and file capabilities on reprise-capture alone.
dockerfile = pathlib.Path("deploy/Dockerfile")
if not dockerfile.is_file():
    fail(dockerfile, "missing")
else:
    text = re.sub(r"\\\n", " ", "\n".join(l for l in dockerfile.read_text().splitlines() if not l.lstrip().startswith("#")))
    stages = re.split(r"(?m)^FROM\s", text)
    if len(stages) < 3:
        fail(dockerfile, "not multi-stage (a build stage and a runtime stage)")
    users = re.findall(r"(?m)^USER\s+(\S+)", stages[-1])
    if not users or users[-1].split(":")[0] in ("root", "0"):
        fail(dockerfile, "the runtime stage does not end as a non-root USER")
    copied = set(re.findall(r"target/release/([A-Za-z0-9_-]+)", text))
    if copied != DAEMONS:
        fail(dockerfile, f"copies {sorted(copied)} out of the build, not {sorted(DAEMONS)}")
    for line in re.findall(r"setcap\s+(\S+)\s+(\S+)", text):
        caps, target = line
        if os.path.basename(target) != "reprise-capture" or set(re.findall(r"cap_(\w+)", caps.split("+")[0])) != {"net_raw", "net_admin"}:
            fail(dockerfile, f"setcap {caps} {target}: only reprise-capture gets cap_net_raw,cap_net_admin")
ignore = pathlib.Path(".dockerignore")
if not ignore.is_file() or not {"target/", ".git/"} <= set(ignore.read_text().split()):
    fail(ignore, "must leave target/ and .git/ out of the build context")

# Compose: every service has an image or a build context with a Dockerfile; the ones on
# the Reprise image run a daemon with what it accepts; secrets exist; capture gets only
# its two capabilities.
for path in files:
    if "compose" not in path.parts or path.suffix not in (".yml", ".yaml"):
        continue
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or "services" not in doc:
        continue
    secrets = set((doc.get("secrets") or {}).keys())
    configs = set((doc.get("configs") or {}).keys())
    for name, service in doc["services"].items():
        where = f"service {name}"
        build = service.get("build")
        if build is not None:
            context = path.parent / (build if isinstance(build, str) else build.get("context", "."))
            if not (context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")).is_file():
                fail(path, f"{where}: no Dockerfile in {context}")
        env = service.get("environment") or {}
        names = list(env) if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        argv = list(service.get("entrypoint") or []) + list(service.get("command") or [])
        if "reprise" in str(service.get("image", "")):
            if not argv:
                fail(path, f"{where} runs the Reprise image without naming a daemon")
            binary = check_invocation(path, where, argv, names)
        else:
            binary = None
            for n in names:
                if n.startswith("REPRISE_"):
                    fail(path, f"{where}: {n} on a service that runs no Reprise daemon")
        for s in service.get("secrets") or []:
            if (s if isinstance(s, str) else s.get("source")) not in secrets:
                fail(path, f"{where}: secret {s} is not defined")
        for c in service.get("configs") or []:
            if (c if isinstance(c, str) else c.get("source")) not in configs:
                fail(path, f"{where}: config {c} is not defined")
        caps = set(service.get("cap_add") or [])
        if caps and (binary != "reprise-capture" or not caps <= CAPTURE_CAPS):
            fail(path, f"{where}: cap_add {sorted(caps)}: only capture gets NET_RAW and NET_ADMIN")
        if service.get("privileged"):
            fail(path, f"{where} is privileged")
    if not any(s.get("network_mode") == "host" and "reprise-capture" in map(str, s.get("command") or []) for s in doc["services"].values()):
        fail(path, "no capture service on the host's network")

# Kubernetes: every kustomization's resources and patches exist; over the objects it
# brings together, workloads' selectors match their templates, Services and PDBs select
# a workload, HPAs scale one, patches and replicas name one, containers have images and
# run daemons with what they accept, ConfigMap TOML files name only real settings,
# probes use declared ports, and only capture adds capabilities (NET_RAW, NET_ADMIN).
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}


def kustomize_objects(directory, seen=()):
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        fail(directory, "a kustomize resource directory without kustomization.yaml")
        return []
    k = yaml.safe_load(kfile.read_text())
    objects = []
    for resource in k.get("resources", []):
        target = (directory / resource).resolve()
        if target.is_dir():
            if target not in seen:
                objects += kustomize_objects(target, seen + (target,))
        elif target.is_file():
            objects += [d for d in yaml.safe_load_all(target.read_text()) if isinstance(d, dict)]
        else:
            fail(kfile, f"resource {resource} does not exist")
    by_kind_name = {(o.get("kind"), (o.get("metadata") or {}).get("name")) for o in objects}
    for patch in k.get("patches", []) + [{"path": p} for p in k.get("patchesStrategicMerge", [])]:
        if "path" in patch:
            ppath = directory / patch["path"]
            if not ppath.is_file():
                fail(kfile, f"patch {patch['path']} does not exist")
                continue
            for p in yaml.safe_load_all(ppath.read_text()):
                if not isinstance(p, dict) or "target" in patch:
                    continue
                key = (p.get("kind"), p.get("metadata", {}).get("name"))
                if key not in by_kind_name:
                    fail(ppath, f"patches {key[0]} {key[1]}, which is not among the resources")
                    continue
                # What a patch adds to a container's environment must suit its daemon too.
                target = next(o for o in objects if (o.get("kind"), o["metadata"].get("name")) == key)
                commands = {c.get("name"): list(c.get("command") or [])[:1] for c in containers(target)}
                for c in containers(p):
                    env = [e.get("name", "") for e in c.get("env") or []]
                    check_invocation(ppath, f"{key[0]} {key[1]}, container {c.get('name')}", commands.get(c.get("name"), []), env)
    for r in k.get("replicas", []):
        if not any(kind in WORKLOADS and name == r.get("name") for kind, name in by_kind_name):
            fail(kfile, f"replicas for {r.get('name')}, which is no workload here")
    images = {str(c.get("image", "")).rsplit(":", 1)[0] for o in objects for c in containers(o)}
    for i in k.get("images", []):
        if i.get("name") not in images:
            fail(kfile, f"image {i.get('name')} is used by no container")
    return objects


def pod_spec(o):
    return ((o.get("spec") or {}).get("template") or {}).get("spec") or {}


def containers(o):
    if o.get("kind") not in WORKLOADS:
        return []
    spec = pod_spec(o)
    return (spec.get("containers") or []) + (spec.get("initContainers") or [])


def check_objects(path, objects):
    workloads = [o for o in objects if o.get("kind") in WORKLOADS]
    templates = {o["metadata"]["name"]: ((o["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {} for o in workloads}
    for o in workloads:
        name = o["metadata"]["name"]
        selector = (o["spec"].get("selector") or {}).get("matchLabels") or {}
        if not selector or any(templates[name].get(k) != v for k, v in selector.items()):
            fail(path, f"{o['kind']} {name}: selector {selector} does not match its template's labels")
        spec = pod_spec(o)
        pod_nonroot = (spec.get("securityContext") or {}).get("runAsNonRoot")
        volumes = {v.get("name") for v in spec.get("volumes") or []}
        for c in containers(o):
            where = f"{o['kind']} {name}, container {c.get('name')}"
            if not c.get("name") or not c.get("image"):
                fail(path, f"{where}: needs a name and an image")
            env = [e.get("name", "") for e in c.get("env") or []]
            binary = check_invocation(path, where, list(c.get("command") or []) + list(c.get("args") or []), env)
            if binary is None:
                fail(path, f"{where}: runs no Reprise daemon (command)")
            ports = {p.get("name") for p in c.get("ports") or []} | {p.get("containerPort") for p in c.get("ports") or []}
            for probe in ("readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if not p:
                    fail(path, f"{where}: no {probe}")
                    continue
                port = (p.get("httpGet") or p.get("tcpSocket") or p.get("grpc") or {}).get("port")
                if port not in ports:
                    fail(path, f"{where}: {probe} on port {port}, which the container does not declare")
            if not (c.get("resources") or {}).get("requests") or not (c.get("resources") or {}).get("limits"):
                fail(path, f"{where}: no resource requests and limits")
            sc = c.get("securityContext") or {}
            if not (pod_nonroot or sc.get("runAsNonRoot")):
                fail(path, f"{where}: not runAsNonRoot")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                fail(path, f"{where}: capabilities do not drop ALL")
            added = set(caps.get("add") or [])
            if added and (binary != "reprise-capture" or not added <= CAPTURE_CAPS):
                fail(path, f"{where}: adds {sorted(added)}: only capture gets NET_RAW and NET_ADMIN")
            if sc.get("privileged"):
                fail(path, f"{where} is privileged")
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in volumes:
                    fail(path, f"{where}: mounts {m.get('name')}, which is no volume of the pod")
    for o in objects:
        kind, name = o.get("kind"), (o.get("metadata") or {}).get("name")
        selector = None
        if kind == "Service":
            selector = (o.get("spec") or {}).get("selector")
        elif kind == "PodDisruptionBudget":
            selector = ((o.get("spec") or {}).get("selector") or {}).get("matchLabels")
        if selector is not None and not any(all(labels.get(k) == v for k, v in selector.items()) for labels in templates.values()):
            fail(path, f"{kind} {name}: selector {selector} matches no workload")
        if kind == "HorizontalPodAutoscaler":
            target = (o.get("spec") or {}).get("scaleTargetRef") or {}
            if target.get("name") not in templates:
                fail(path, f"HPA {name} scales {target.get('name')}, which is no workload here")
        if kind == "ConfigMap":
            for key, text in ((o.get("data") or {}).items()):
                if key.endswith(".toml"):
                    check_toml(path, f"ConfigMap {name} {key}", "reprise-" + key[: -len(".toml")], text)


for kfile in sorted(pathlib.Path("deploy/k8s").rglob("kustomization.yaml")):
    check_objects(kfile.parent, kustomize_objects(kfile.parent))

# systemd: each unit runs a daemon with --config /etc/reprise/<daemon>.toml, as a dynamic
# user, sandboxed, and only capture may hold (exactly) CAP_NET_RAW and CAP_NET_ADMIN.
units = sorted(pathlib.Path("deploy/systemd").glob("*.service"))
for unit in units:
    settings = {}
    for line in unit.read_text().splitlines():
        m = re.match(r"([A-Za-z]+)=(.*)", line)
        if m:
            settings.setdefault(m.group(1), []).append(m.group(2).strip())
    argv = (settings.get("ExecStart") or [""])[0].lstrip("-@:+!").split()
    env = [e.split("=", 1)[0] for v in settings.get("Environment", []) for e in v.split()]
    binary = check_invocation(unit, "ExecStart", argv, env)
    if binary is None:
        fail(unit, "ExecStart runs no Reprise daemon")
        continue
    daemon = binary[len("reprise-"):]
    if f"--config /etc/reprise/{daemon}.toml" not in " ".join(argv):
        fail(unit, f"ExecStart does not read --config /etc/reprise/{daemon}.toml")
    for key, value in [("DynamicUser", "yes"), ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("Restart", "on-failure")]:
        if settings.get(key) != [value]:
            fail(unit, f"needs {key}={value}")
    want = {"CAP_NET_RAW", "CAP_NET_ADMIN"} if binary == "reprise-capture" else set()
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        if key not in settings or set(" ".join(settings[key]).split()) != want:
            fail(unit, f"{key} must be exactly {' '.join(sorted(want)) or '(empty)'}")
    families = set(" ".join(settings.get("RestrictAddressFamilies", [])).split())
    if not families or families - {"AF_INET", "AF_INET6", "AF_UNIX"} - ({"AF_PACKET", "AF_NETLINK"} if binary == "reprise-capture" else set()):
        fail(unit, f"RestrictAddressFamilies {sorted(families)} is missing or too wide")
if {u.stem for u in units} != {"reprise-controller", "reprise-worker", "reprise-capture"}:
    fail("deploy/systemd", f"units {sorted(u.stem for u in units)}: want one per daemon")

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
# systemd's own parser on the units, with stand-in executables where the binaries would be
# (verify wants ExecStart to exist), and its offline sandboxing score (0-100: 30 is
# "3.0 OK"). Any warning fails: verify itself exits 0 on unknown keys.
if command -v systemd-analyze >/dev/null 2>&1 && systemd-analyze --version >/dev/null 2>&1; then
    units=$queries/units
    mkdir -p "$units/bin"
    for unit in deploy/systemd/*.service; do
        sed "s#/usr/local/bin/#$units/bin/#g" "$unit" >"$units/$(basename "$unit")"
        bin=$(sed -n 's#^ExecStart=/usr/local/bin/\([^ ]*\).*#\1#p' "$unit")
        printf '#!/bin/sh\n' >"$units/bin/$bin" && chmod 755 "$units/bin/$bin"
    done
    verify=$(systemd-analyze verify --man=no "$units"/*.service 2>&1) || { echo "$verify" >&2; exit 1; }
    if [ -n "$verify" ]; then
        echo "check.sh: systemd-analyze verify warns:" >&2
        echo "$verify" >&2
        exit 1
    fi
    for unit in deploy/systemd/*.service; do
        if ! systemd-analyze security --offline=true --threshold=30 --no-pager "$unit" >"$units/security" 2>&1; then
            tail -n 1 "$units/security" >&2
            echo "check.sh: $unit: exposure above 3.0 (or systemd-analyze security --offline failed)" >&2
            exit 1
        fi
        echo "check.sh: $(tail -n 1 "$units/security" | sed 's/^→ //')" >&2
    done
    echo "check.sh: systemd-analyze verify: $(ls deploy/systemd/*.service | wc -l) units clean" >&2
else
    echo "check.sh: SKIPPED systemd-analyze verify: systemd-analyze not found (Debian package systemd)" >&2
fi

# Kustomize renders the base and every overlay (kubectl's built-in kustomize, offline).
if command -v kubectl >/dev/null 2>&1; then
    for dir in $(find deploy/k8s -name kustomization.yaml -printf '%h\n' | sort); do
        kubectl kustomize "$dir" >"$queries/rendered.yaml" || { echo "check.sh: kubectl kustomize $dir failed" >&2; exit 1; }
        echo "check.sh: kubectl kustomize $dir: $(grep -c '^kind:' "$queries/rendered.yaml") objects" >&2
    done
else
    echo "check.sh: SKIPPED kubectl kustomize: kubectl not found (the checks above still read every kustomization)" >&2
fi

echo "check.sh: the deployment files are sound" >&2
