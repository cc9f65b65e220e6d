"""Renders a kustomization offline into a list of Kubernetes objects.

Two renderers, the same answer:
* `kubectl kustomize` (kustomize v5 built into kubectl) when kubectl is installed — the real thing;
* `render_python`, a small renderer for exactly the kustomize subset deploy/k8s uses (resources,
  components, namespace, labels, images, strategic-merge and JSON 6902 patches), for machines
  without kubectl (Debian's own kubectl is 1.20, whose kustomize v2 predates components).
When both exist, deploy_check compares them, so the fallback cannot drift from kustomize.
"""
from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import yaml

# Kinds the namespace transformer leaves alone (the subset that could appear here).
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                   "StorageClass", "PersistentVolume", "IngressClass", "PriorityClass"}
# Strategic-merge keys of the lists this project patches; other lists are replaced whole.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
               "volumeMounts": "mountPath", "imagePullSecrets": "name"}


class RenderError(Exception):
    """A kustomization that does not render."""


def kubectl_available() -> bool:
    """Whether `kubectl kustomize` can be used."""
    return shutil.which("kubectl") is not None


def render_kubectl(path: Path) -> list[dict]:
    """Objects rendered by `kubectl kustomize path`."""
    run = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    if run.returncode != 0:
        raise RenderError(f"kubectl kustomize {path}: {run.stderr.strip()}")
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def render(path: Path) -> tuple[list[dict], str]:
    """Objects of the kustomization at `path`, and which renderer made them."""
    if kubectl_available():
        return render_kubectl(path), "kubectl kustomize"
    return render_python(path), "python subset renderer"


def _load_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _kustomization(path: Path) -> dict:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (path / name).exists():
            return yaml.safe_load((path / name).read_text()) or {}
    raise RenderError(f"{path}: no kustomization.yaml")


_SUPPORTED = {"apiVersion", "kind", "resources", "components", "namespace", "labels", "images",
              "patches"}


def render_python(path: Path) -> list[dict]:
    """Renders the kustomization at `path` with the subset renderer."""
    objects = _build(Path(path).resolve(), [])
    for o in objects:  # kustomize drops metadata maps a patch emptied
        meta = o.get("metadata", {})
        for k in ("annotations", "labels"):
            if meta.get(k) == {}:
                del meta[k]
    return objects


def _build(path: Path, objects: list[dict]) -> list[dict]:
    k = _kustomization(path)
    unknown = set(k) - _SUPPORTED
    if unknown:
        raise RenderError(f"{path}: fields outside the python renderer's subset: {sorted(unknown)}")
    objects = list(objects) if k.get("kind") == "Component" else []
    for res in k.get("resources", []):
        p = (path / res).resolve()
        objects += render_python(p) if p.is_dir() else _load_docs(p)
    for comp in k.get("components", []):
        objects = _build((path / comp).resolve(), objects)
    for patch in k.get("patches", []):
        _apply_patch(path, patch, objects)
    for pairs in (lbl.get("pairs", {}) for lbl in k.get("labels", [])):
        for o in objects:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    if "namespace" in k:
        for o in objects:
            if o.get("kind") not in _CLUSTER_SCOPED:
                o.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for o in objects:
            for c in _containers(o):
                _set_image(c, image)
    return objects


def _containers(o: dict) -> list[dict]:
    spec = o.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if "template" in spec else {}
    return pod.get("containers", []) + pod.get("initContainers", [])


def _split_image(ref: str) -> tuple[str, str | None]:
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:  # no tag (a registry port is not a tag)
        return ref, None
    return name, tag


def _set_image(container: dict, image: dict) -> None:
    name, tag = _split_image(container.get("image", ""))
    if name != image["name"]:
        return
    name = image.get("newName", name)
    tag = image.get("newTag", tag)
    container["image"] = f"{name}:{tag}" if tag else name


def _apply_patch(path: Path, patch: dict, objects: list[dict]) -> None:
    body = yaml.safe_load((path / patch["path"]).read_text()) if "path" in patch \
        else yaml.safe_load(patch["patch"])
    if isinstance(body, list):  # JSON 6902 operations on `target`
        target = patch.get("target") or {}
        hits = [o for o in objects if _matches(o, target)]
        if not hits:
            raise RenderError(f"{path}: patch target {target} matches nothing")
        for o in hits:
            for op in body:
                _json6902(o, op)
        return
    target = {"kind": body["kind"], "name": body["metadata"]["name"]}
    hits = [o for o in objects if _matches(o, target)]
    if not hits:
        raise RenderError(f"{path}: patch {patch.get('path')} matches no {target}")
    for o in hits:
        merged = _merge(o, copy.deepcopy(body))
        o.clear()
        o.update(merged)


def _matches(o: dict, target: dict) -> bool:
    return all(o.get(k) == v if k == "kind" else o.get("metadata", {}).get(k) == v
               for k, v in target.items() if k in ("kind", "name", "namespace"))


def _merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out and k in _MERGE_KEYS and isinstance(v, list):
                out[k] = _merge_list(out[k], v, _MERGE_KEYS[k])
            elif k in out and k == "ports" and isinstance(v, list):
                key = "containerPort" if any("containerPort" in p for p in v) else "port"
                out[k] = _merge_list(out[k], v, key)
            else:
                out[k] = _merge(out.get(k), v)
        return out
    return patch


def _merge_list(base: list, patch: list, key: str) -> list:
    # Like kustomize's strategic merge, items new to the list come first, in the patch's order.
    out = [copy.deepcopy(b) for b in base]
    new = []
    for item in patch:
        idx = next((i for i, b in enumerate(out) if b.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            new.append(item)
        else:
            out[idx] = _merge(out[idx], item)
    return new + out


def _pointer(doc, path: str):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    parent = doc
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
    return parent, parts[-1]


def _json6902(doc: dict, op: dict) -> None:
    parent, last = _pointer(doc, op["path"])
    kind = op["op"]
    if isinstance(parent, list):
        i = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(i, op["value"])
        elif kind == "replace":
            parent[i] = op["value"]
        elif kind == "remove":
            parent.pop(i)
        else:
            raise RenderError(f"json patch op {kind} outside the python renderer's subset")
        return
    if kind in ("add", "replace"):
        parent[last] = op["value"]
    elif kind == "remove":
        if last not in parent:
            raise RenderError(f"json patch: remove of missing {op['path']}")
        del parent[last]
    else:
        raise RenderError(f"json patch op {kind} outside the python renderer's subset")
