#!/usr/bin/env python3
"""`make deploy-check`: renders every kustomize overlay in deploy/k8s offline, validates each object
against the Kubernetes JSON schemas (PyPI `kubernetes-validate`, strict: unknown fields are errors)
or, for KEDA's ScaledObject, against schemas/scaledobject-keda.sh-v1alpha1.json, and checks that the
manifests and Dockerfiles agree with the code: image and binary names, ports, the STEMSEP_* variables
each binary reads, probe paths among the REST routes, Redis list names, the ingress body limit.

Usage: deploy_check.py [KUSTOMIZATION_DIR ...]   (default: every deploy/k8s/overlays/* and each of
those with the hpa-fallback component in place of keda). Exit status 1 on any problem.

While a binary's own code defines no STEMSEP_* variable or route yet (it is being written), the
checks that need them print `pending` instead of failing; everything else is strict.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import code_facts  # noqa: E402
import render  # noqa: E402

ROOT = HERE.parents[1]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
# GKE's stable channel at the time of writing; the schemas are bundled by kubernetes-validate.
K8S_VERSION = "1.31"
KEDA_SCHEMA = HERE / "schemas" / "scaledobject-keda.sh-v1alpha1.json"
# The API takes request bodies up to 16 MiB (base64 songs) unless its code says otherwise
# (STEMSEP_MAX_BODY_MIB); nginx's default is 1 MiB.
BODY_SIZE = "16m"
# Settings without which a pod starts but cannot work in a cluster, and why.
REQUIRED_ENV = {
    "STEMSEP_REDIS_URL": "its default is 127.0.0.1, not the redis Service",
    "STEMSEP_STORAGE": "rest and worker must agree on the backend",
}
REQUIRED_ENV_WORKER = {"STEMSEP_MODEL_DIR": "its default is not where the image keeps the model"}
# Variables the binaries read that are not STEMSEP_* (tracing's filter).
OTHER_ENV = {"RUST_LOG", "RUST_BACKTRACE"}
# A job must fit in the grace period: 10 minutes of song take most of 900 s.
MIN_TERMINATION_GRACE = 600
# The bucket lifecycle rule of a gcs overlay (gcloud storage buckets update --lifecycle-file).
LIFECYCLE_FILE = "bucket-lifecycle.json"
# Where the API's objects live in the bucket (common/src/storage/mod.rs ObjectKey).
OBJECT_PREFIXES = ("output/", "queue/")


@dataclass
class Report:
    """Problems (fail the check) and pending notes (code not written yet) of one target."""

    name: str
    problems: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, msg: str) -> None:
        self.problems.append(msg)

    def print(self) -> None:
        status = "FAIL" if self.problems else "ok"
        print(f"[{status}] {self.name}")
        for n in self.notes:
            print(f"    {n}")
        for p in self.pending:
            print(f"    pending: {p}")
        for p in self.problems:
            print(f"    problem: {p}")


# ---------------------------------------------------------------------------------------------
# Rendering


def targets_default() -> list[tuple[str, Path, str | None]]:
    """(name, overlay dir, component swap) for every overlay, plus its hpa-fallback variant."""
    out = []
    for d in sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir() and not p.name.startswith(".")):
        out.append((str(d.relative_to(ROOT)), d, None))
        comps = (render._kustomization(d).get("components") or [])
        if any(Path(c).name == "keda" for c in comps):
            out.append((f"{d.relative_to(ROOT)} with hpa-fallback", d, "hpa-fallback"))
    return out


def render_target(d: Path, swap: str | None, rep: Report) -> list[dict] | None:
    """Renders `d` (with keda swapped for `swap` if given); cross-checks the python renderer."""
    work = d
    if swap:
        # A sibling copy keeps every relative path (../../base) valid for kustomize.
        work = d.parent / f".check-{d.name}-{swap}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(d, work)
        k = yaml.safe_load((work / "kustomization.yaml").read_text())
        k["components"] = [str(Path(c).parent / swap) if Path(c).name == "keda" else c
                           for c in k["components"]]
        (work / "kustomization.yaml").write_text(yaml.safe_dump(k, sort_keys=False))
    try:
        objs, how = render.render(work)
        if how == "kubectl kustomize":
            try:
                mine = render.render_python(work)
                if _keyed(mine) != _keyed(objs):
                    rep.fail("the python subset renderer disagrees with kubectl kustomize "
                             "(fix deploy/check/render.py or stay within its subset)")
            except render.RenderError as e:
                rep.notes.append(f"python renderer not comparable here: {e}")
        rep.notes.append(f"rendered {len(objs)} objects with {how}")
        return objs
    except (render.RenderError, yaml.YAMLError, OSError) as e:
        rep.fail(f"does not render: {e}")
        return None
    finally:
        if swap:
            shutil.rmtree(work, ignore_errors=True)


def _keyed(objs: list[dict]) -> dict:
    return {(o.get("kind"), o.get("metadata", {}).get("namespace"), o.get("metadata", {}).get("name")): o
            for o in objs}


# ---------------------------------------------------------------------------------------------
# Schemas


def validate_schemas(objs: list[dict], rep: Report) -> None:
    """Strict Kubernetes schemas; KEDA's ScaledObject against the committed schema."""
    keda = json.loads(KEDA_SCHEMA.read_text())
    for o in objs:
        what = f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"
        try:
            if o.get("kind") == "ScaledObject":
                jsonschema.validate(o, keda)
            else:
                kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        except jsonschema.ValidationError as e:
            where = "/".join(str(p) for p in e.absolute_path)
            rep.fail(f"{what} is invalid at {where or '(top)'}: {e.message}")
        except kubernetes_validate.utils.SchemaNotFoundError as e:
            rep.fail(f"{what}: {e.message}")
    rep.notes.append(f"schemas: Kubernetes {K8S_VERSION} (strict) + KEDA ScaledObject")


# ---------------------------------------------------------------------------------------------
# Agreement with the code


class Rendered:
    """Lookups over one rendered overlay."""

    def __init__(self, objs: list[dict]):
        self.objs = objs

    def get(self, kind: str, name: str) -> dict | None:
        return next((o for o in self.objs if o.get("kind") == kind
                     and o.get("metadata", {}).get("name") == name), None)

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objs if o.get("kind") == kind]


def pod_spec(o: dict) -> dict:
    return o.get("spec", {}).get("template", {}).get("spec", {})


def container(o: dict, name: str) -> dict | None:
    cs = pod_spec(o).get("containers", [])
    return next((c for c in cs if c.get("name") == name), cs[0] if cs else None)


def resolve_env(c: dict, r: Rendered, rep: Report, who: str) -> dict[str, str]:
    """Name → value the container sees: envFrom ConfigMaps/Secrets first, then env (which wins)."""
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if ref in src:
                name = src[ref]["name"]
                obj = r.get(kind, name)
                if obj is None:
                    if not src[ref].get("optional"):
                        rep.fail(f"{who}: envFrom names {kind} {name}, which is not in the manifests")
                    continue
                prefix = src.get("prefix", "")
                data = {**obj.get("data", {}), **obj.get("stringData", {})}
                env.update({prefix + k: str(v) for k, v in data.items()})
    for e in c.get("env", []):
        env[e["name"]] = str(e.get("value", "<from " + ",".join(e.get("valueFrom", {})) + ">"))
    return env


def check_env(comp: str, env: dict[str, str], facts: code_facts.CodeFacts, rep: Report, who: str) -> None:
    """Every variable set is one the binary reads; the required ones are set."""
    allowed = facts.allowed_env(comp)
    for name in sorted(env):
        if name in allowed or name in OTHER_ENV:
            continue
        if name.startswith("STEMSEP_") and not facts.own_env_known(comp):
            rep.pending.append(f"{who}: {name} is not read by common/ and {comp}/src defines no "
                               f"STEMSEP_* variable yet")
            continue
        rep.fail(f"{who}: sets {name}, which the {comp} code does not read "
                 f"(known: {', '.join(sorted(allowed))})")
    required = dict(REQUIRED_ENV, **(REQUIRED_ENV_WORKER if comp == "worker" else {}))
    storage = env.get("STEMSEP_STORAGE", allowed.get("STEMSEP_STORAGE", code_facts.EnvVar("", None, "")).default)
    if storage == "gcs":
        required["STEMSEP_GCS_BUCKET"] = "the gcs backend needs a bucket"
    elif storage == "local":
        required["STEMSEP_STORAGE_DIR"] = "local storage must be a volume shared by rest and workers"
    for name, why in required.items():
        if name not in env:
            rep.fail(f"{who}: {name} is not set ({why})")


def port_of(bind: str) -> int | None:
    m = re.search(r":(\d+)$", bind or "")
    return int(m.group(1)) if m else None


def container_port(c: dict, port) -> int | None:
    """A probe's or Service's port (name or number) as a number, if the container declares it."""
    for p in c.get("ports", []):
        if port in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    return port if isinstance(port, int) else None


def effective(name: str, env: dict[str, str], allowed: dict) -> str | None:
    if name in env:
        return env[name]
    var = allowed.get(name)
    return var.default if var else None


def check_component(comp: str, r: Rendered, facts: code_facts.CodeFacts, rep: Report) -> dict:
    """Image, command, env of the rest or worker Deployment; returns its resolved env."""
    dep = r.get("Deployment", comp)
    if dep is None:
        rep.fail(f"no Deployment named {comp}")
        return {}
    c = container(dep, comp)
    who = f"Deployment/{comp}"
    binary = facts.components[comp].binary
    image = c.get("image", "")
    repo = render._split_image(image)[0].rsplit("/", 1)[-1]
    if repo != binary:
        rep.fail(f"{who}: image {image} is not the {binary} image (its repository must end in /{binary})")
    if c.get("command") and Path(c["command"][0]).name != binary:
        rep.fail(f"{who}: command {c['command'][0]} is not the {binary} binary")
    env = resolve_env(c, r, rep, who)
    check_env(comp, env, facts, rep, who)
    storage = env.get("STEMSEP_STORAGE")
    if storage == "local":
        d = env.get("STEMSEP_STORAGE_DIR", "")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in pod_spec(dep).get("volumes", [])}
        mount = next((n for p, n in mounts.items() if d == p or d.startswith(p.rstrip("/") + "/")), None)
        if mount is None or "persistentVolumeClaim" not in vols.get(mount, {}):
            rep.fail(f"{who}: STEMSEP_STORAGE_DIR {d} is not on a PersistentVolumeClaim volume "
                     f"(stems must be shared by rest and workers)")
    if storage == "gcs" and not env.get("STEMSEP_GCS_ENDPOINT"):
        sa = r.get("ServiceAccount", pod_spec(dep).get("serviceAccountName", "default"))
        gsa = (sa or {}).get("metadata", {}).get("annotations", {}).get("iam.gke.io/gcp-service-account", "")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.iam\.gserviceaccount\.com", gsa):
            rep.fail(f"{who}: gcs storage without Workload Identity: its ServiceAccount has no "
                     f"iam.gke.io/gcp-service-account annotation")
    if "GOOGLE_APPLICATION_CREDENTIALS" in env:
        rep.fail(f"{who}: GOOGLE_APPLICATION_CREDENTIALS points at a key file; use Workload Identity")
    return env


def check_rest(r: Rendered, env: dict[str, str], facts: code_facts.CodeFacts, rep: Report) -> None:
    dep = r.get("Deployment", "rest")
    if dep is None:
        return
    c = container(dep, "rest")
    who = "Deployment/rest"
    if dep["spec"].get("replicas", 1) < 2:
        rep.fail(f"{who}: {dep['spec'].get('replicas', 1)} replica(s); the API needs at least 2")
    allowed = facts.allowed_env("rest")
    bind = effective("STEMSEP_BIND", env, allowed)
    port = port_of(bind) if bind else None
    if port is None:
        rep.pending.append(f"{who}: no STEMSEP_BIND in the manifest or rest/src: port unchecked")
    declared = [p["containerPort"] for p in c.get("ports", [])]
    if port is not None and port not in declared:
        rep.fail(f"{who}: the server binds port {port} (STEMSEP_BIND {bind}) but the container "
                 f"declares {declared}")
    routes = facts.components["rest"].paths
    for probe in ("readinessProbe", "livenessProbe"):
        get = c.get(probe, {}).get("httpGet")
        if not get:
            rep.fail(f"{who}: no httpGet {probe}")
            continue
        if not routes:
            rep.pending.append(f"{who}: {probe} path {get.get('path')} unchecked (rest/src has no routes yet)")
        elif get.get("path") not in routes:
            rep.fail(f"{who}: {probe} path {get.get('path')} is not a route in rest/src")
        p = container_port(c, get.get("port"))
        if port is not None and p != port:
            rep.fail(f"{who}: {probe} port {get.get('port')} is not the server's port {port}")
    check_edge(env, allowed, rep, who)
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        rep.fail(f"{who}: readiness must be /healthz (Redis and storage reachable)")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/":
        rep.fail(f"{who}: liveness must be / (a Redis outage must not restart the API)")

    svc = r.get("Service", "rest")
    if svc is None:
        rep.fail("no Service named rest")
        return
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    if not svc["spec"].get("selector") or any(labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
        rep.fail("Service/rest: its selector does not match the rest pods' labels")
    for sp in svc["spec"].get("ports", []):
        tp = container_port(c, sp.get("targetPort", sp.get("port")))
        if tp not in declared:
            rep.fail(f"Service/rest: targetPort {sp.get('targetPort')} is no port of the rest container")
    # ingress-nginx must let through whatever the API itself accepts (nginx's `m` is MiB).
    mib = effective("STEMSEP_MAX_BODY_MIB", env, allowed)
    body = f"{mib}m" if mib and mib.isdigit() else BODY_SIZE
    for ing in r.all("Ingress"):
        check_ingress(ing, r, rep, body)


def check_edge(env: dict[str, str], allowed: dict, rep: Report, who: str) -> None:
    """A cluster is on the open internet: API keys on, taken from a Secret, and no removal by GET."""
    if "STEMSEP_AUTH" not in allowed:
        rep.pending.append(f"{who}: rest/src reads no STEMSEP_AUTH yet: authentication unchecked")
        return
    if effective("STEMSEP_AUTH", env, allowed) != "keys":
        rep.fail(f"{who}: STEMSEP_AUTH must be keys in a cluster (anyone reaching the ingress could "
                 f"enqueue songs, list hashes and delete stems)")
    keys = env.get("STEMSEP_API_KEYS", "")
    if not keys.startswith("<from secretKeyRef"):
        rep.fail(f"{who}: STEMSEP_API_KEYS must come from a Secret (env valueFrom.secretKeyRef), "
                 f"never a value in the manifests")
    if effective("STEMSEP_REMOVE_BY_GET", env, allowed) != "false":
        rep.fail(f"{who}: STEMSEP_REMOVE_BY_GET must be false in a cluster (a link would delete stems)")


def find_file(d: Path, name: str) -> Path | None:
    """`name` in the kustomization `d` or, failing that, in the directories it builds on."""
    if (d / name).is_file():
        return d / name
    for res in render._kustomization(d).get("resources") or []:
        sub = (d / res).resolve()
        if sub.is_dir():
            found = find_file(sub, name)
            if found:
                return found
    return None


def check_lifecycle(d: Path, env: dict[str, str], facts: code_facts.CodeFacts, rep: Report) -> None:
    """With gcs storage, the bucket's lifecycle rule deletes objects when the workers' retention
    deletes them: the same number of days (0: no Delete rule on the API's objects)."""
    if env.get("STEMSEP_STORAGE") != "gcs":
        return
    allowed = facts.allowed_env("worker")
    if "STEMSEP_RETENTION_SECS" not in allowed:
        rep.pending.append("common/src reads no STEMSEP_RETENTION_SECS yet: lifecycle unchecked")
        return
    raw = effective("STEMSEP_RETENTION_SECS", env, allowed) or "0"
    if not raw.isdigit():
        rep.fail(f"STEMSEP_RETENTION_SECS {raw!r} is not a number of seconds")
        return
    secs = int(raw)
    path = find_file(d, LIFECYCLE_FILE)
    if path is None:
        rep.fail(f"gcs storage without {LIFECYCLE_FILE} next to the overlay: the bucket keeps what "
                 f"the workers' retention (STEMSEP_RETENTION_SECS {secs}) deletes, and orphans forever")
        return
    try:
        rules = json.loads(path.read_text()).get("rule", [])
    except (json.JSONDecodeError, AttributeError) as e:
        rep.fail(f"{path.name} is not a lifecycle configuration: {e}")
        return
    want = -(-secs // 86400)
    for prefix in OBJECT_PREFIXES:
        ages = [r.get("condition", {}).get("age") for r in rules
                if r.get("action", {}).get("type") == "Delete"
                and prefix in r.get("condition", {}).get("matchesPrefix", [])]
        if secs == 0 and ages:
            rep.fail(f"{path.name}: deletes {prefix} objects after {ages} day(s), but "
                     f"STEMSEP_RETENTION_SECS 0 keeps them")
        elif secs and ages != [want]:
            rep.fail(f"{path.name}: the lifecycle rule for {prefix} must delete after {want} day(s) "
                     f"(STEMSEP_RETENTION_SECS {secs}), found {ages or 'none'}")
    rep.notes.append(f"bucket lifecycle: {path.relative_to(ROOT)} matches the retention")


def check_ingress(ing: dict, r: Rendered, rep: Report, body_size: str = BODY_SIZE) -> None:
    who = f"Ingress/{ing['metadata']['name']}"
    spec = ing.get("spec", {})
    ann = ing.get("metadata", {}).get("annotations", {})
    backends = [spec["defaultBackend"]] if "defaultBackend" in spec else []
    for rule in spec.get("rules", []):
        backends += [p["backend"] for p in rule.get("http", {}).get("paths", [])]
    for b in backends:
        name = b.get("service", {}).get("name")
        svc = r.get("Service", name)
        if svc is None:
            rep.fail(f"{who}: backend Service {name} does not exist")
            continue
        port = b["service"].get("port", {})
        if not any(port.get("name") == p.get("name") or port.get("number") == p.get("port")
                   for p in svc["spec"].get("ports", [])):
            rep.fail(f"{who}: backend port {port} is no port of Service {name}")
    cls = spec.get("ingressClassName") or ann.get("kubernetes.io/ingress.class")
    if spec.get("ingressClassName") and "kubernetes.io/ingress.class" in ann:
        rep.fail(f"{who}: sets both ingressClassName and the kubernetes.io/ingress.class annotation")
    if cls == "nginx":
        size = ann.get("nginx.ingress.kubernetes.io/proxy-body-size")
        if size != body_size:
            rep.fail(f"{who}: nginx needs nginx.ingress.kubernetes.io/proxy-body-size: {body_size} "
                     f"(the API's body limit; nginx's default is 1m), found {size!r}")
    elif cls == "gce":
        if spec.get("ingressClassName"):
            rep.fail(f"{who}: GKE selects gce by the kubernetes.io/ingress.class annotation")
        for b in backends:
            svc = r.get("Service", b.get("service", {}).get("name")) or {}
            neg = "cloud.google.com/neg" in svc.get("metadata", {}).get("annotations", {})
            if svc.get("spec", {}).get("type") not in ("NodePort", "LoadBalancer") and not neg:
                rep.fail(f"{who}: the gce load balancer needs Service {svc.get('metadata', {}).get('name')} "
                         f"of type NodePort (or container-native NEGs)")
    else:
        rep.fail(f"{who}: names no ingress class this project targets (nginx or gce): {cls!r}")


def check_worker(r: Rendered, env: dict[str, str], facts: code_facts.CodeFacts, rep: Report) -> None:
    dep = r.get("Deployment", "worker")
    if dep is None:
        return
    who = "Deployment/worker"
    c = container(dep, "worker")
    allowed = facts.allowed_env("worker")
    tgps = pod_spec(dep).get("terminationGracePeriodSeconds", 30)
    if tgps < MIN_TERMINATION_GRACE:
        rep.fail(f"{who}: terminationGracePeriodSeconds {tgps} < {MIN_TERMINATION_GRACE}: a long "
                 f"song's job cannot finish on shutdown")
    grace = effective("STEMSEP_GRACE_SECS", env, allowed)
    if grace is not None and grace.isdigit() and int(grace) >= tgps:
        rep.fail(f"{who}: STEMSEP_GRACE_SECS {grace} is not below terminationGracePeriodSeconds "
                 f"{tgps}: the kubelet kills the worker before it hands its job back")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        for what in ("cpu", "memory"):
            if what not in res.get(kind, {}):
                rep.fail(f"{who}: no {what} {kind}")
    metrics = port_of(effective("STEMSEP_METRICS_BIND", env, allowed) or "")
    for p in c.get("ports", []):
        if p.get("name") == "metrics" and metrics is not None and p["containerPort"] != metrics:
            rep.fail(f"{who}: metrics port {p['containerPort']} is not STEMSEP_METRICS_BIND's {metrics}")
    model_dir = env.get("STEMSEP_MODEL_DIR")
    dockerfile = (DOCKER / "worker.Dockerfile").read_text()
    if model_dir and not re.search(rf"^COPY --from=model \S+ {re.escape(model_dir.rstrip('/'))}/?\s*$",
                                   dockerfile, re.M):
        rep.fail(f"{who}: STEMSEP_MODEL_DIR {model_dir} is not where worker.Dockerfile puts the model")

    scalers = [o for o in r.all("ScaledObject") + r.all("HorizontalPodAutoscaler")
               if o["spec"].get("scaleTargetRef", {}).get("name") == "worker"]
    if len(scalers) != 1:
        rep.fail(f"{who}: {len(scalers)} autoscalers target it; exactly one (KEDA or HPA) must")
    for s in scalers:
        if s["kind"] == "ScaledObject":
            check_scaledobject(s, r, env, facts, rep)
        else:
            check_hpa(s, c, rep)


def check_scaledobject(so: dict, r: Rendered, env: dict, facts: code_facts.CodeFacts, rep: Report) -> None:
    who = f"ScaledObject/{so['metadata']['name']}"
    ref = so["spec"]["scaleTargetRef"]
    if ref.get("kind", "Deployment") != "Deployment" or ref.get("name") != "worker":
        rep.fail(f"{who}: scales {ref}, not the worker Deployment")
    prefix = env.get("STEMSEP_KEY_PREFIX", "")
    want = {prefix + "toWorker", prefix + "processing"}
    for base in ("toWorker", "processing"):
        if base not in facts.queue_lists:
            rep.fail(f"{who}: common/src/queue.rs builds no list named {base}")
    triggers = so["spec"].get("triggers", [])
    lists = {t["metadata"].get("listName") for t in triggers if t.get("type") == "redis"}
    if not want <= lists:
        rep.fail(f"{who}: watches Redis lists {sorted(x for x in lists if x)}, must watch {sorted(want)} "
                 f"(STEMSEP_KEY_PREFIX {prefix!r})")
    redis_svc = r.get("Service", "redis")
    ns = so["metadata"].get("namespace", "default")
    ports = {p["port"] for p in (redis_svc or {}).get("spec", {}).get("ports", [])}
    for t in triggers:
        addr = t["metadata"].get("address", "")
        host, _, port = addr.rpartition(":")
        if host not in (f"redis.{ns}.svc.cluster.local", f"redis.{ns}.svc", f"redis.{ns}") \
                or not port.isdigit() or int(port) not in ports:
            rep.fail(f"{who}: trigger address {addr!r} is not the redis Service "
                     f"(redis.{ns}.svc.cluster.local:{'/'.join(map(str, sorted(ports)))}); KEDA "
                     f"resolves it from its own namespace")
    formula = so["spec"].get("advanced", {}).get("scalingModifiers", {}).get("formula")
    if formula:
        names = {t.get("name") for t in triggers}
        unknown = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", formula)) - names - {"max", "min", "abs", "ceil", "floor"}
        if unknown:
            rep.fail(f"{who}: formula {formula!r} names no trigger {sorted(unknown)}")


def check_hpa(hpa: dict, c: dict, rep: Report) -> None:
    who = f"HorizontalPodAutoscaler/{hpa['metadata']['name']}"
    if hpa["spec"].get("minReplicas", 1) < 1:
        rep.fail(f"{who}: minReplicas must be at least 1 (a plain HPA cannot wake from 0)")
    cpu = [m for m in hpa["spec"].get("metrics", [])
           if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"]
    if not cpu:
        rep.fail(f"{who}: no cpu Resource metric")
    if "cpu" not in c.get("resources", {}).get("requests", {}):
        rep.fail(f"{who}: CPU utilisation needs the worker's cpu request")


def check_redis(r: Rendered, envs: dict[str, dict], rep: Report) -> None:
    sts = r.get("StatefulSet", "redis")
    svc = r.get("Service", "redis")
    if sts is None or svc is None:
        rep.fail("Redis needs a StatefulSet and a Service named redis")
        return
    c = container(sts, "redis")
    args = [str(a) for a in (c.get("command", []) + c.get("args", []))]
    joined = " ".join(args)
    if not re.search(r"--appendonly\s+yes", joined):
        rep.fail("StatefulSet/redis: AOF persistence is off (needs --appendonly yes)")
    m = re.search(r"--dir\s+(\S+)", joined)
    data_dir = m.group(1) if m else "/data"
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    if not any(vm["name"] in claims and vm["mountPath"].rstrip("/") == data_dir.rstrip("/")
               for vm in c.get("volumeMounts", [])):
        rep.fail(f"StatefulSet/redis: its data dir {data_dir} is not on a volumeClaimTemplate")
    ports = {p["port"] for p in svc["spec"].get("ports", [])}
    for comp, env in envs.items():
        url = urlparse(env.get("STEMSEP_REDIS_URL", ""))
        if url.hostname and url.hostname.split(".")[0] == "redis" and (url.port or 6379) not in ports:
            rep.fail(f"Deployment/{comp}: STEMSEP_REDIS_URL port {url.port or 6379} is not a port of Service redis")
        elif url.hostname and url.hostname.split(".")[0] != "redis":
            rep.notes.append(f"Deployment/{comp}: uses an external Redis at {url.hostname}")


def check_agreement(objs: list[dict], facts: code_facts.CodeFacts, rep: Report,
                    target: Path | None = None) -> None:
    r = Rendered(objs)
    envs = {comp: check_component(comp, r, facts, rep) for comp in ("rest", "worker")}
    # Settings both binaries read must reach both with one value (e.g. a song-length limit the API
    # enforces at submission and the worker again).
    shared = set(facts.common_env) | (set(facts.components["rest"].env) & set(facts.components["worker"].env))
    for name in sorted(shared):
        values = {comp: env.get(name) for comp, env in envs.items()}
        if len(set(values.values())) > 1:
            rep.fail(f"rest and worker disagree on {name}: {values}")
    check_rest(r, envs["rest"], facts, rep)
    check_worker(r, envs["worker"], facts, rep)
    check_redis(r, envs, rep)
    if target is not None:
        check_lifecycle(target, envs["worker"], facts, rep)


# ---------------------------------------------------------------------------------------------
# Dockerfiles


def check_dockerfiles(facts: code_facts.CodeFacts, rep: Report, docker: Path = DOCKER) -> None:
    """Each image builds its component's binary and runs it, as a non-root user."""
    for comp, c in facts.components.items():
        path = docker / f"{comp}.Dockerfile"
        who = f"{docker.name}/{path.name}"
        if not path.exists():
            rep.fail(f"{who} is missing")
            continue
        text = path.read_text()
        if not re.search(rf"cargo build --release\b.*-p {re.escape(c.package)}\b", text):
            rep.fail(f"{who}: no `cargo build --release -p {c.package}`")
        entry = re.search(r'^ENTRYPOINT \["([^"]+)"', text, re.M)
        if not entry or Path(entry.group(1)).name != c.binary:
            rep.fail(f"{who}: ENTRYPOINT does not run {c.binary}")
        if c.binary not in c.binaries:
            rep.fail(f"{who}: {comp}/Cargo.toml builds no binary {c.binary}")
        last_stage = text[text.rfind("\nFROM "):]
        user = re.findall(r"^USER (\S+)", last_stage, re.M)
        if not user or user[-1].split(":")[0] in ("0", "root"):
            rep.fail(f"{who}: the runtime stage does not switch to a non-root USER")
        env = dict(re.findall(r"(STEMSEP_[A-Z0-9_]+)=(\S+)", "\n".join(re.findall(r"^ENV (.*)$", text, re.M))))
        check_env_names_only(comp, env, facts, rep, who)
        if comp == "rest":
            bind = env.get("STEMSEP_BIND") or (facts.allowed_env("rest").get("STEMSEP_BIND") or code_facts.EnvVar("", None, "")).default
            exposed = re.findall(r"^EXPOSE (\d+)", text, re.M)
            if bind and str(port_of(bind)) not in exposed:
                rep.fail(f"{who}: EXPOSE {exposed} does not include the bind port {port_of(bind)}")
        if comp == "worker":
            for req in re.findall(r"-r (model/\S+)", text):
                if not (facts.root / req).exists():
                    rep.pending.append(f"{who}: installs {req}, which does not exist yet")
            run = re.search(r"model/export\.py(.*)$", text, re.M)
            if not run:
                rep.fail(f"{who}: the model stage does not run model/export.py")
            elif facts.export_flags:
                for flag in re.findall(r"(--[a-z0-9-]+)", run.group(1)):
                    if flag not in facts.export_flags:
                        rep.fail(f"{who}: model/export.py has no option {flag}")
            else:
                rep.pending.append(f"{who}: model/export.py not found: its options unchecked")
    rep.notes.append("images: " + ", ".join(f"{c.binary} ({c.name}.Dockerfile)" for c in facts.components.values()))


def check_env_names_only(comp: str, env: dict, facts: code_facts.CodeFacts, rep: Report, who: str) -> None:
    for name in env:
        if name in facts.allowed_env(comp):
            continue
        if not facts.own_env_known(comp):
            rep.pending.append(f"{who}: {name} unchecked ({comp}/src defines no STEMSEP_* variable yet)")
        else:
            rep.fail(f"{who}: sets {name}, which the {comp} code does not read")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="*", type=Path, help="kustomization directories (default: every overlay)")
    args = ap.parse_args(argv)
    facts = code_facts.load(ROOT)
    reports = []
    images = Report("Dockerfiles")
    check_dockerfiles(facts, images)
    reports.append(images)
    targets = [(str(d), d.resolve(), None) for d in args.dirs] or targets_default()
    for name, d, swap in targets:
        rep = Report(name)
        objs = render_target(d, swap, rep)
        if objs is not None:
            validate_schemas(objs, rep)
            check_agreement(objs, facts, rep, d)
        reports.append(rep)
    for rep in reports:
        rep.print()
    failed = [r.name for r in reports if r.problems]
    print(f"deploy-check: {len(reports) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
