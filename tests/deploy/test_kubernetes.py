"""deploy/kubernetes rendered without a cluster.

Every kustomization (base, shared, monitoring, each overlay) is rendered with
the real kustomize (``kubectl kustomize``, or a ``kustomize`` binary); the
module skips with its reason where neither is installed (Debian's
``kubernetes-client`` 1.20 is too old: its kustomize has no components).
Where the ``kubernetes-validate`` package is importable the
built-in kinds are checked against the Kubernetes JSON schemas (strict: no
unknown fields); it skips with its reason when absent. The monitoring
kustomization's alert rules: test_kubernetes_monitoring.py.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from support.k8s_layout import ALL_DIRS, K8S, OVERLAYS, ROOT, Obj, _id, one
from support.kustomize import KUSTOMIZE_CMD, NO_KUSTOMIZE

from listener.config import Config, load_config, parse_config

STATIONS = sorted(p.stem for p in (ROOT / "config" / "stations").glob("*.yaml"))
GPU_SUFFIX = "-gpu"
STATE_MOUNT = "/var/lib/listener"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]

pytestmark = pytest.mark.skipif(KUSTOMIZE_CMD is None, reason=NO_KUSTOMIZE)


def station_of(overlay: Path) -> str:
    return overlay.name.removesuffix(GPU_SUFFIX)


def overlay_config(objs: list[Obj]) -> tuple[str, Config]:
    cm = one(objs, "ConfigMap")
    assert set(cm["data"]) == {"config.yml"}
    text = cm["data"]["config.yml"]
    return text, parse_config(text, path=f"ConfigMap {cm['metadata']['name']}")


def container(deploy: Obj) -> Obj:
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["listener"]
    return containers[0]


# --- layout -----------------------------------------------------------------------

def test_one_overlay_per_station_plus_gpu_variant() -> None:
    names = [o.name for o in OVERLAYS]
    cpu = sorted(n for n in names if not n.endswith(GPU_SUFFIX))
    assert cpu == STATIONS
    for gpu in (n for n in names if n.endswith(GPU_SUFFIX)):
        assert gpu.removesuffix(GPU_SUFFIX) in STATIONS, gpu
    assert "rpi_orcasound_lab-gpu" in names


@pytest.mark.parametrize("directory", ALL_DIRS, ids=_id)
def test_objects_are_well_formed(rendered: dict[Path, list[Obj]], directory: Path) -> None:
    objs = rendered[directory]
    assert objs
    seen = set()
    for obj in objs:
        assert obj.get("apiVersion") and obj.get("kind"), obj
        name = obj["metadata"]["name"]
        limit = 63 if obj["kind"] in ("Service", "Namespace") else 253
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= limit, name
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "listener", name
        for key, value in obj["metadata"].get("labels", {}).items():
            assert re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?",
                                str(value)), (key, value)
        key = (obj["kind"], name)
        assert key not in seen, key
        seen.add(key)


def test_station_overlays_never_collide(rendered: dict[Path, list[Obj]]) -> None:
    owner: dict[tuple[str, str], str] = {}
    for overlay in OVERLAYS:
        if overlay.name.endswith(GPU_SUFFIX):
            continue  # the GPU variant replaces its CPU twin: same names on purpose
        for obj in rendered[overlay]:
            key = (obj["kind"], obj["metadata"]["name"])
            assert key not in owner, f"{key} in both {owner.get(key)} and {overlay.name}"
            owner[key] = overlay.name


def test_gpu_variant_keeps_the_cpu_overlays_names(rendered: dict[Path, list[Obj]]) -> None:
    for overlay in (o for o in OVERLAYS if o.name.endswith(GPU_SUFFIX)):
        twin = K8S / "overlays" / station_of(overlay)

        def names(objs: list[Obj]) -> set[tuple[str, str]]:
            return {(o["kind"], o["metadata"]["name"]) for o in objs if o["kind"] != "ConfigMap"}

        # Same Deployment, Service and state PVC: switching keeps the resume point.
        assert names(rendered[overlay]) == names(rendered[twin])


# --- the Deployment -----------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS, ids=_id)
def test_deployment(rendered: dict[Path, list[Obj]], overlay: Path) -> None:
    objs = rendered[overlay]
    deploy = one(objs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert labels["station"] == station_of(overlay)
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["selector"]["matchLabels"]["station"] == station_of(overlay)

    c = container(deploy)
    assert c["args"] == ["run", "--config", "/config/config.yml"]
    assert "command" not in c  # the image's ENTRYPOINT ["listener"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9108, "protocol": "TCP"}]
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][part]), part

    # Pod and container security.
    psc, csc = pod["securityContext"], c["securityContext"]
    for sc in (psc, csc):
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert psc["fsGroup"] == 10001
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False

    # Volumes: every reference resolves to an object of this overlay, or to
    # the shared models claim.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert set(volumes) == set(mounts) == {"config", "models", "state", "tmp"}
    assert mounts["config"] == {"name": "config", "mountPath": "/config", "readOnly": True}
    assert mounts["models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert mounts["state"]["mountPath"] == STATE_MOUNT and not mounts["state"].get("readOnly")
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]
    cm = one(objs, "ConfigMap")
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    # kustomize's content-hash suffix: a config change rolls the pods.
    assert re.fullmatch(r"[a-z0-9-]+-[a-z0-9]{10}", cm["metadata"]["name"])
    pvc = one(objs, "PersistentVolumeClaim")
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "listener-models",
                                                          "readOnly": True}


@pytest.mark.parametrize("overlay", OVERLAYS, ids=_id)
def test_service_selects_the_pod(rendered: dict[Path, list[Obj]], overlay: Path) -> None:
    objs = rendered[overlay]
    service = one(objs, "Service")
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"]["station"] == station_of(overlay)
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9108,
                                         "targetPort": "metrics", "protocol": "TCP"}]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=_id)
def test_image_and_gpu(rendered: dict[Path, list[Obj]], overlay: Path) -> None:
    deploy = one(rendered[overlay], "Deployment")
    c = container(deploy)
    limits = c["resources"]["limits"]
    tolerations = deploy["spec"]["template"]["spec"].get("tolerations", [])
    _, cfg = overlay_config(rendered[overlay])
    if overlay.name.endswith(GPU_SUFFIX):
        assert c["image"] == f"listener:{VERSION}-cuda"
        assert limits["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} \
            in tolerations
        assert cfg.model.device == "cuda"
    else:
        assert c["image"] == f"listener:{VERSION}-cpu"
        assert "nvidia.com/gpu" not in limits and not tolerations
        assert cfg.model.device in ("auto", "cpu")


# --- the station config inside the ConfigMap --------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS, ids=_id)
def test_configmap_holds_a_valid_station_config(rendered: dict[Path, list[Obj]],
                                                overlay: Path) -> None:
    _, cfg = overlay_config(rendered[overlay])
    node = station_of(overlay)
    assert cfg.station.id == node
    assert cfg.stream is not None and cfg.stream.node == node
    assert cfg.metrics.enabled and cfg.metrics.host == "0.0.0.0" and cfg.metrics.port == 9108
    assert cfg.model.weights is not None and str(cfg.model.weights).startswith("/models/")
    # Everything the daemon writes must land on the state volume.
    writable = [cfg.state.dir]
    outputs = cfg.outputs
    writable += [s.path for s in (outputs.jsonl,) if s]
    writable += [s.dir for s in (outputs.orcahello, outputs.clips) if s]
    for path in writable:
        assert str(path).startswith(f"{STATE_MOUNT}/{node}/"), path
    # torch's threads = the container's CPU limit.
    cpu_limit = container(one(rendered[overlay], "Deployment"))["resources"]["limits"]["cpu"]
    assert cfg.model.cpu_threads == int(cpu_limit)


def _without(cfg: Config, drop: dict[str, set[str]]) -> dict[str, Any]:
    data = cfg.model_dump(mode="json")
    for section, keys in drop.items():
        for key in keys:
            data[section].pop(key, None)
    return data


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if not o.name.endswith(GPU_SUFFIX)],
                         ids=_id)
def test_overlay_config_is_the_station_file_with_container_paths(
        rendered: dict[Path, list[Obj]], overlay: Path) -> None:
    _, k8s = overlay_config(rendered[overlay])
    host = load_config(ROOT / "config" / "stations" / f"{overlay.name}.yaml")
    assert k8s.model.weights is not None and host.model.weights is not None
    assert k8s.model.weights.name == host.model.weights.name
    # Only the differences the overlay's config.yml header lists.
    allowed = {"model": {"weights", "cpu_threads"}}
    assert _without(k8s, allowed) == _without(host, allowed)


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o.name.endswith(GPU_SUFFIX)],
                         ids=_id)
def test_gpu_config_differs_from_its_twin_only_in_device_and_batch(
        rendered: dict[Path, list[Obj]], overlay: Path) -> None:
    _, gpu = overlay_config(rendered[overlay])
    _, cpu = overlay_config(rendered[K8S / "overlays" / station_of(overlay)])
    allowed = {"model": {"device", "batch_size"}}
    assert _without(gpu, allowed) == _without(cpu, allowed)
    assert gpu.model.batch_size >= cpu.model.batch_size


# --- shared ----------------------------------------------------------------------------

def test_shared_namespace_and_models_claim(rendered: dict[Path, list[Obj]]) -> None:
    objs = rendered[K8S / "shared"]
    ns = one(objs, "Namespace")
    assert ns["metadata"]["name"] == "listener"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    models = one(objs, "PersistentVolumeClaim")
    assert models["metadata"]["name"] == "listener-models"


# --- the real tools, where installed -----------------------------------------------------

BUILTIN_GROUPS = ("v1", "apps/v1")


def test_against_kubernetes_schemas(rendered: dict[Path, list[Obj]]) -> None:
    kv = pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate not installed (pip install "
                                    "kubernetes-validate)")
    checked = 0
    for directory, objs in rendered.items():
        for obj in objs:
            if obj["apiVersion"] not in BUILTIN_GROUPS:
                continue  # CRDs (PodMonitor, PrometheusRule) have no bundled schema
            try:
                kv.validate(obj, "1.30.0", strict=True)
            except kv.ValidationError as err:
                pytest.fail(f"{_id(directory)}: {obj['kind']}/{obj['metadata']['name']}: "
                            f"{err.message} at {'/'.join(map(str, err.path))}")
            checked += 1
    assert checked > 0
