"""A small kustomize, enough to render deploy/kubernetes without a cluster or a binary.

It supports exactly what the project's kustomizations use and refuses any
other field, so a new feature in a kustomization fails loudly here instead of
being silently ignored:

* ``resources`` (YAML files, possibly multi-document, and directories),
* ``components`` (``kind: Component``, applied to what was accumulated so far),
* ``configMapGenerator`` (``files``, ``literals``; ``behavior`` create,
  replace or merge) with kustomize's content hash suffix,
* ``generatorOptions.disableNameSuffixHash``,
* ``namespace``, ``namePrefix``, ``nameSuffix``,
* ``labels`` (``pairs``, ``includeSelectors``, ``includeTemplates``) and
  ``commonLabels``,
* ``patches`` with a strategic-merge patch from ``path`` or inline ``patch``
  (target taken from the patch's own kind and name; lists of objects with a
  ``name`` merge by name, other lists are replaced, as Kubernetes' strategic
  merge does for containers, volumes, mounts, env and ports).

Transformers run in kustomize's order (patches, namespace, prefix/suffix,
labels), hash suffixes are added last, and references to renamed ConfigMaps
and PersistentVolumeClaims in pod templates are rewritten. Where ``kubectl``
or ``kustomize`` is installed, tests compare this renderer's output with the
real one, object for object.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "PriorityClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "resources", "components",
                "configMapGenerator", "generatorOptions", "namePrefix", "nameSuffix",
                "labels", "commonLabels", "patches"}


class KustomizeError(Exception):
    """A kustomization this renderer cannot or will not render."""


@dataclass
class Resource:
    obj: dict[str, Any]
    origin_name: str            # the name in its source, for reference rewriting
    needs_hash: bool = False

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name", ""))


def render(path: str | Path) -> list[dict[str, Any]]:
    """Render the kustomization in directory ``path``; returns the objects."""
    resources = _build(Path(path), expect_component=False)
    _add_hash_suffixes(resources)
    _rewrite_references(resources)
    return [r.obj for r in resources]


# --- loading ------------------------------------------------------------------

def _load_kustomization(directory: Path) -> dict[str, Any]:
    for name in KUSTOMIZATION_FILES:
        f = directory / name
        if f.is_file():
            data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
            unknown = sorted(set(data) - KNOWN_FIELDS)
            if unknown:
                raise KustomizeError(f"{f}: fields not supported by kustomize_lite: {unknown}")
            return data
    raise KustomizeError(f"{directory}: no kustomization file")


def _load_file(path: Path) -> list[Resource]:
    out = []
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if doc is None:
            continue
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise KustomizeError(f"{path}: not a Kubernetes object: {str(doc)[:80]}")
        out.append(Resource(doc, str(doc["metadata"].get("name", ""))))
    return out


def _build(directory: Path, expect_component: bool) -> list[Resource]:
    k = _load_kustomization(directory)
    kind = k.get("kind", "Kustomization")
    if (kind == "Component") != expect_component:
        raise KustomizeError(f"{directory}: kind {kind} used as "
                             f"{'a component' if expect_component else 'a kustomization'}")
    resources: list[Resource] = []
    _accumulate(directory, k, resources)
    return resources


def _accumulate(directory: Path, k: dict[str, Any], resources: list[Resource]) -> None:
    """Resources, then components, then generators, then transformers, in place."""
    for entry in k.get("resources", []):
        target = (directory / entry).resolve()
        found = _build(target, False) if target.is_dir() else _load_file(target)
        for res in found:
            _check_unique(resources, res, directory)
            resources.append(res)
    for entry in k.get("components", []):
        component_dir = (directory / entry).resolve()
        _accumulate(component_dir, _component(component_dir), resources)
    _generate(directory, k, resources)
    _transform(directory, k, resources)


def _component(directory: Path) -> dict[str, Any]:
    k = _load_kustomization(directory)
    if k.get("kind") != "Component":
        raise KustomizeError(f"{directory}: listed under components but kind is {k.get('kind')}")
    return k


def _check_unique(resources: list[Resource], new: Resource, where: Path) -> None:
    for r in resources:
        if r.kind == new.kind and r.name == new.name \
                and r.obj["metadata"].get("namespace") == new.obj["metadata"].get("namespace"):
            raise KustomizeError(f"{where}: {new.kind}/{new.name} defined twice")


# --- generators ---------------------------------------------------------------

def _generate(directory: Path, k: dict[str, Any], resources: list[Resource]) -> None:
    options = k.get("generatorOptions", {})
    unknown = sorted(set(options) - {"disableNameSuffixHash"})
    if unknown:
        raise KustomizeError(f"{directory}: generatorOptions {unknown} not supported")
    hashed = not options.get("disableNameSuffixHash", False)
    for gen in k.get("configMapGenerator", []):
        unknown = sorted(set(gen) - {"name", "files", "literals", "behavior", "namespace"})
        if unknown:
            raise KustomizeError(f"{directory}: configMapGenerator fields {unknown} not supported")
        data: dict[str, str] = {}
        for spec in gen.get("files", []):
            key, sep, rel = str(spec).partition("=")
            rel = rel if sep else key
            key = key if sep else Path(rel).name
            data[key] = (directory / rel).read_text(encoding="utf-8")
        for literal in gen.get("literals", []):
            key, _, value = str(literal).partition("=")
            data[key] = value
        name = gen["name"]
        behavior = gen.get("behavior", "create")
        existing = [r for r in resources if r.kind == "ConfigMap" and r.origin_name == name]
        if behavior == "create":
            if existing:
                raise KustomizeError(f"{directory}: ConfigMap {name} exists; "
                                     "use behavior: replace or merge")
            obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": name}, "data": data}
            if gen.get("namespace"):
                obj["metadata"]["namespace"] = gen["namespace"]
            resources.append(Resource(obj, name, needs_hash=hashed))
        elif behavior in ("replace", "merge"):
            if len(existing) != 1:
                raise KustomizeError(f"{directory}: behavior {behavior} needs exactly one "
                                     f"ConfigMap {name} from the resources, found {len(existing)}")
            target = existing[0]
            if behavior == "replace":
                target.obj["data"] = data
            else:
                target.obj.setdefault("data", {}).update(data)
            target.needs_hash = target.needs_hash and hashed
        else:
            raise KustomizeError(f"{directory}: unknown behavior {behavior!r}")


# --- transformers -------------------------------------------------------------

def _transform(directory: Path, k: dict[str, Any], resources: list[Resource]) -> None:
    for patch in k.get("patches", []):
        _apply_patch(directory, patch, resources)
    namespace = k.get("namespace")
    if namespace:
        for r in resources:
            if r.kind not in CLUSTER_SCOPED:
                r.obj["metadata"]["namespace"] = namespace
    prefix, suffix = k.get("namePrefix", ""), k.get("nameSuffix", "")
    if prefix or suffix:
        for r in resources:
            if r.kind not in CLUSTER_SCOPED:
                r.obj["metadata"]["name"] = f"{prefix}{r.name}{suffix}"
    label_sets = list(k.get("labels", []))
    if k.get("commonLabels"):
        label_sets.append({"pairs": k["commonLabels"], "includeSelectors": True})
    for spec in label_sets:
        unknown = sorted(set(spec) - {"pairs", "includeSelectors", "includeTemplates"})
        if unknown:
            raise KustomizeError(f"{directory}: labels fields {unknown} not supported")
        _apply_labels(resources, spec["pairs"], bool(spec.get("includeSelectors")),
                      bool(spec.get("includeTemplates")))


def _apply_labels(resources: list[Resource], pairs: dict[str, str], selectors: bool,
                  templates: bool) -> None:
    pairs = {str(k): str(v) for k, v in pairs.items()}
    for r in resources:
        r.obj["metadata"].setdefault("labels", {}).update(pairs)
        spec = r.obj.get("spec")
        if not isinstance(spec, dict):
            continue
        if r.kind in WORKLOADS:
            if selectors:
                spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
            if selectors or templates:
                template = spec.setdefault("template", {}).setdefault("metadata", {})
                template.setdefault("labels", {}).update(pairs)
        elif r.kind == "Service" and selectors:
            spec.setdefault("selector", {}).update(pairs)


def _apply_patch(directory: Path, entry: dict[str, Any], resources: list[Resource]) -> None:
    unknown = sorted(set(entry) - {"path", "patch"})
    if unknown:
        raise KustomizeError(f"{directory}: patch fields {unknown} not supported "
                             "(targets come from the patch's kind and name)")
    text = (directory / entry["path"]).read_text(encoding="utf-8") if "path" in entry \
        else entry["patch"]
    for patch in yaml.safe_load_all(text):
        if not patch:
            continue
        kind, name = patch.get("kind"), patch.get("metadata", {}).get("name")
        targets = [r for r in resources if r.kind == kind and r.name == name]
        if len(targets) != 1:
            raise KustomizeError(f"{directory}: patch for {kind}/{name} matches "
                                 f"{len(targets)} resources")
        body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
        targets[0].obj = strategic_merge(targets[0].obj, body)


def strategic_merge(base: Any, patch: Any) -> Any:
    """Merge ``patch`` into a copy of ``base`` (see the module docstring)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(str(k).startswith("$") for k in patch):
            raise KustomizeError(f"strategic-merge directives not supported: {list(patch)}")
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        out_list = copy.deepcopy(base)
        for item in patch:
            for i, existing in enumerate(out_list):
                if existing["name"] == item["name"]:
                    out_list[i] = strategic_merge(existing, item)
                    break
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


# --- hash suffixes and name references ------------------------------------------

def configmap_hash(data: dict[str, str]) -> str:
    """kustomize's name suffix for a ConfigMap with ``data``.

    sha256 of Go's ``json.Marshal`` of ``{"data", "kind", "name"}`` (sorted
    keys, HTML characters escaped), first 10 hex digits with 0,1,3,a,e mapped
    to g,h,k,m,t. kustomize looks the name up under a path it never finds, so
    the name hashed is always "" (kustomize api/hasher).
    """
    encoded = json.dumps({"data": data, "kind": "ConfigMap", "name": ""}, sort_keys=True,
                         separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        encoded = encoded.replace(char, escape)
    digest = hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _add_hash_suffixes(resources: list[Resource]) -> None:
    for r in resources:
        if r.needs_hash:
            r.obj["metadata"]["name"] = f"{r.name}-{configmap_hash(r.obj.get('data', {}))}"


def _rewrite_references(resources: list[Resource]) -> None:
    """Point pod-template references at the final names of our ConfigMaps and PVCs."""
    final = {(r.kind, r.origin_name): r.name for r in resources}
    for r in resources:
        if r.kind not in WORKLOADS:
            continue
        pod = r.obj.get("spec", {}).get("template", {}).get("spec", {})
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                ref = volume["configMap"]
                ref["name"] = final.get(("ConfigMap", ref["name"]), ref["name"])
            if "persistentVolumeClaim" in volume:
                ref = volume["persistentVolumeClaim"]
                key = ("PersistentVolumeClaim", ref["claimName"])
                ref["claimName"] = final.get(key, ref["claimName"])
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]
                    ref["name"] = final.get(("ConfigMap", ref["name"]), ref["name"])
