"""deploy/kubernetes rendered without a cluster.

Every kustomization (base, shared, monitoring, each overlay) is rendered with
the real kustomize (``kubectl kustomize``, or a ``kustomize`` binary); the
module skips with its reason where neither is installed (Debian's
``kubernetes-client`` 1.20 is too old: its kustomize has no components).
Where the ``kubernetes-validate`` package is importable the
built-in kinds are checked against the Kubernetes JSON schemas (strict: no
unknown fields); where ``promtool`` is installed the alert rules are checked
and unit-tested. Each of those skips with its reason when its tool is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.kustomize import KUSTOMIZE_CMD, NO_KUSTOMIZE, render

from listener.config import Config, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
STATIONS = sorted(p.stem for p in (ROOT / "config" / "stations").glob("*.yaml"))
ALL_DIRS = [K8S / "base", K8S / "shared", K8S / "monitoring", *OVERLAYS]
GPU_SUFFIX = "-gpu"
STATE_MOUNT = "/var/lib/listener"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]

Obj = dict[str, Any]

pytestmark = pytest.mark.skipif(KUSTOMIZE_CMD is None, reason=NO_KUSTOMIZE)


def _id(path: Path) -> str:
    return path.relative_to(K8S).as_posix()


@pytest.fixture(scope="module")
def rendered() -> dict[Path, list[Obj]]:
    return {d: render(d) for d in ALL_DIRS}


def one(objs: list[Obj], kind: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


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


# --- shared and monitoring ------------------------------------------------------------

def test_shared_namespace_and_models_claim(rendered: dict[Path, list[Obj]]) -> None:
    objs = rendered[K8S / "shared"]
    ns = one(objs, "Namespace")
    assert ns["metadata"]["name"] == "listener"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    models = one(objs, "PersistentVolumeClaim")
    assert models["metadata"]["name"] == "listener-models"


def test_podmonitor_scrapes_the_pods(rendered: dict[Path, list[Obj]]) -> None:
    pm = one(rendered[K8S / "monitoring"], "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    endpoints = pm["spec"]["podMetricsEndpoints"]
    assert [(e["port"], e["path"]) for e in endpoints] == [("metrics", "/metrics")]
    assert "podTargetLabels" not in pm["spec"]  # would clash with the daemon's `station`
    workloads = [one(rendered[o], "Deployment") for o in OVERLAYS]
    workloads += [one(render(K8S / "fleet" / v), "StatefulSet") for v in ("live", "live-gpu")]
    for workload in workloads:
        pod = workload["spec"]["template"]
        assert selects(pm["spec"]["selector"], pod["metadata"]["labels"]), \
            workload["metadata"]["name"]
        ports = [p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
        assert "metrics" in ports, workload["metadata"]["name"]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against pod labels."""
    ops = {"In": lambda k, v: labels.get(k) in v, "NotIn": lambda k, v: labels.get(k) not in v,
           "Exists": lambda k, _: k in labels, "DoesNotExist": lambda k, _: k not in labels}
    return (selector.get("matchLabels", {}).items() <= labels.items()
            and all(ops[e["operator"]](e["key"], e.get("values", []))
                    for e in selector.get("matchExpressions", [])))


def alert_rules(rendered: dict[Path, list[Obj]]) -> list[Obj]:
    rule = one(rendered[K8S / "monitoring"], "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_alert_is_documented(rendered: dict[Path, list[Obj]]) -> None:
    rules = alert_rules(rendered)
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    expected = {"ListenerDown", "ListenerStreamStalled", "ListenerLagHigh",
                "ListenerAudioDropped", "ListenerSinkFailing", "ListenerOutboxGrowing",
                "ListenerRestarting", "ListenerNoPipelineActivity", "ListenerModelNotLoaded"}
    assert expected <= set(names)
    anchors = github_anchors((ROOT / "docs" / "operations.md").read_text(encoding="utf-8"))
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        assert notes["runbook_url"] == f"docs/operations.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, f"no section {rule['alert']} in operations.md"


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


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")


def _rules_file(rendered: dict[Path, list[Obj]], path: Path, annotations: bool) -> Path:
    groups = one(rendered[K8S / "monitoring"], "PrometheusRule")["spec"]["groups"]
    if not annotations:
        # Unit tests below check when alerts fire, not their wording.
        groups = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"}
                                  for r in g["rules"]]} for g in groups]
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path


def test_the_silent_stream_alert_uses_the_consoles_threshold(rendered: dict[Path, list[Obj]],
                                                             ) -> None:
    from listener.audio.level import SILENT_DBFS
    groups = one(rendered[K8S / "monitoring"], "PrometheusRule")["spec"]["groups"]
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == "ListenerAudioSilent")
    assert f"listener_audio_level_dbfs[15m])) < {SILENT_DBFS:g}" in rule["expr"]
    rule = next(r for g in groups for r in g["rules"]
                if r.get("alert") == "ListenerAudioOutsideModelLevels")
    assert f"listener_audio_level_dbfs[30m])) > {SILENT_DBFS:g})" in rule["expr"]


@needs_promtool
def test_promtool_check_rules(rendered: dict[Path, list[Obj]], tmp_path: Path) -> None:
    assert PROMTOOL is not None
    rules = _rules_file(rendered, tmp_path / "rules.yml", annotations=True)
    result = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# Series are per minute; `a+bxN` = N+1 samples from a, step b; `_` = missing.
PROMTOOL_TESTS = [
    # The console refuses connections at the cap: fires on the first refusals, not before.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_web_connections_dropped_total{reason="cap",instance="i"}',
          "values": "0x20 3 7 7x20"}],
     "alert_rule_test": [
         {"eval_time": "15m", "alertname": "ListenerConsoleRefusing", "exp_alerts": []},
         {"eval_time": "23m", "alertname": "ListenerConsoleRefusing",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "instance": "i",
                                         "reason": "cap"}}]},
         {"eval_time": "40m", "alertname": "ListenerConsoleRefusing", "exp_alerts": []}]},
    # A stream that stops: nothing for the first 35 min, then fires after `for: 5m`.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_hls_segments_fetched_total{station="s"}', "values": "0+6x20 120x40"},
         {"series": 'listener_inference_windows_scored_total{station="s"}',
          "values": "0+60x20 1200x40"}],
     "alert_rule_test": [
         {"eval_time": "30m", "alertname": "ListenerStreamStalled", "exp_alerts": []},
         {"eval_time": "45m", "alertname": "ListenerStreamStalled",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s"}}]},
         # Nothing scored, but nothing fetched either: the stream, not the pipeline.
         {"eval_time": "45m", "alertname": "ListenerNoPipelineActivity", "exp_alerts": []}]},
    # Segments arrive but nothing is scored: a wedged pipeline.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_hls_segments_fetched_total{station="s"}', "values": "0+6x60"},
         {"series": 'listener_inference_windows_scored_total{station="s"}',
          "values": "0+60x10 600x50"}],
     "alert_rule_test": [
         {"eval_time": "20m", "alertname": "ListenerNoPipelineActivity", "exp_alerts": []},
         {"eval_time": "40m", "alertname": "ListenerNoPipelineActivity",
          "exp_alerts": [{"exp_labels": {"severity": "critical", "station": "s"}}]},
         {"eval_time": "40m", "alertname": "ListenerStreamStalled", "exp_alerts": []}]},
    # A stream of digital silence: decoded, never above -100 dBFS; a quiet live one never fires.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_audio_level_dbfs{station="dead"}', "values": "-60x10 -120x40"},
         {"series": 'listener_audio_level_dbfs{station="quiet"}', "values": "-80x50"},
         {"series": 'listener_audio_decoded_seconds_total{station="dead"}', "values": "0+60x50"},
         {"series": 'listener_audio_decoded_seconds_total{station="quiet"}',
          "values": "0+60x50"}],
     "alert_rule_test": [
         {"eval_time": "20m", "alertname": "ListenerAudioSilent", "exp_alerts": []},
         {"eval_time": "35m", "alertname": "ListenerAudioSilent",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "dead"}}]}]},
    # A stream quieter than the model trained at (-81 dBFS) for 35 min fires; one back
    # inside does not; silence is ListenerAudioSilent's, not this alert's.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_audio_level_dbfs{station="quiet"}', "values": "-60x10 -90x50"},
         {"series": 'listener_audio_level_dbfs{station="loud"}', "values": "2x30 -20x30"},
         {"series": 'listener_audio_level_dbfs{station="dead"}', "values": "-120x60"},
         *({"series": f'listener_model_trained_level_dbfs{{station="{st}",model="demo",'
                      f'bound="{bound}"}}', "values": f"{value}x60"}
           for st in ("quiet", "loud", "dead") for bound, value in (("low", -81), ("high", -1)))],
     "alert_rule_test": [
         {"eval_time": "30m", "alertname": "ListenerAudioOutsideModelLevels",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "loud",
                                         "model": "demo", "bound": "high"}}]},
         {"eval_time": "48m", "alertname": "ListenerAudioOutsideModelLevels",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "quiet",
                                         "model": "demo", "bound": "low"}}]}]},
    # Lag: high for long enough; growing steadily.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_stream_lag_seconds{station="s"}', "values": "100+10x90"}],
     "alert_rule_test": [
         {"eval_time": "10m", "alertname": "ListenerLagHigh", "exp_alerts": []},
         {"eval_time": "40m", "alertname": "ListenerLagHigh",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s"}}]},
         {"eval_time": "70m", "alertname": "ListenerLagGrowing",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s"}}]}]},
    # Model never loaded; a sink that fails and an outbox that never empties.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_model_loaded{station="s"}', "values": "0x30"},
         {"series": 'listener_model_loaded{station="ok"}', "values": "0 1x30"},
         {"series": 'listener_sink_failures_total{station="s",sink="webhook"}',
          "values": "0+2x60"},
         {"series": 'listener_sink_deliveries_total{station="s",sink="webhook"}',
          "values": "5x60"},
         {"series": 'listener_sink_outbox_depth{station="s",sink="webhook"}',
          "values": "1+1x60"}],
     "alert_rule_test": [
         {"eval_time": "20m", "alertname": "ListenerModelNotLoaded",
          "exp_alerts": [{"exp_labels": {"severity": "critical", "station": "s"}}]},
         {"eval_time": "40m", "alertname": "ListenerSinkFailing",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s",
                                         "sink": "webhook"}}]},
         {"eval_time": "40m", "alertname": "ListenerOutboxGrowing",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s",
                                         "sink": "webhook"}}]}]},
    # Audio dropped for a backlog; gaps upstream.
    {"interval": "1m",
     "input_series": [
         {"series": 'listener_audio_dropped_seconds_total{station="s",reason="backlog"}',
          "values": "0+5x60"},
         {"series": 'listener_audio_dropped_seconds_total{station="s",reason="gap"}',
          "values": "0x60"}],
     "alert_rule_test": [
         {"eval_time": "30m", "alertname": "ListenerAudioDropped",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "station": "s",
                                         "reason": "backlog"}}]}]},
    # Prometheus cannot scrape; kube-state-metrics sees restarts.
    {"interval": "1m",
     "input_series": [
         {"series": 'up{job="listener/listener",instance="10.0.0.1:9108"}', "values": "1x5 0x20"},
         {"series": 'kube_pod_container_status_restarts_total{container="listener",pod="p"}',
          "values": "0 0 1 2 3 4 5x20"}],
     "alert_rule_test": [
         {"eval_time": "15m", "alertname": "ListenerDown",
          "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "listener/listener",
                                         "instance": "10.0.0.1:9108"}}]},
         {"eval_time": "10m", "alertname": "ListenerRestarting",
          "exp_alerts": [{"exp_labels": {"severity": "warning", "container": "listener",
                                         "pod": "p"}}]}]},
]


@needs_promtool
def test_promtool_alert_unit_tests(rendered: dict[Path, list[Obj]], tmp_path: Path) -> None:
    assert PROMTOOL is not None
    rules = _rules_file(rendered, tmp_path / "rules.yml", annotations=False)
    spec = {"rule_files": [rules.name], "evaluation_interval": "1m", "tests": PROMTOOL_TESTS}
    tests = tmp_path / "tests.yml"
    tests.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    result = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True,
                            text=True, timeout=60, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
