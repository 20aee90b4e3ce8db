"""The fleet's deploy files: StatefulSet shards, the stations ConfigMap, the
GPU variant, the sharded replay Job and the systemd fleet unit."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.kustomize import KUSTOMIZE_CMD, NO_KUSTOMIZE, render

from listener.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "deploy" / "kubernetes" / "fleet"
OVERLAYS = ROOT / "deploy" / "kubernetes" / "overlays"
needs_kustomize = pytest.mark.skipif(KUSTOMIZE_CMD is None, reason=NO_KUSTOMIZE)


def _one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def test_fleet_configs_are_the_overlays_configs() -> None:
    files = sorted(FLEET.glob("stations/*.yml"))
    stations = sorted(p.name for p in OVERLAYS.iterdir() if not p.name.endswith("-gpu"))
    assert [f.stem for f in files] == stations
    for f in files:
        assert f.read_bytes() == (OVERLAYS / f.stem / "config.yml").read_bytes(), f


def _args(container: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
    return container["args"], env


@needs_kustomize
@pytest.mark.parametrize("variant", ["live", "live-gpu"])
def test_statefulset_replicas_take_their_shard_by_ordinal(variant: str) -> None:
    objs = render(FLEET / variant)
    sts = _one(objs, "StatefulSet")
    cm = _one(objs, "ConfigMap")
    spec = sts["spec"]["template"]["spec"]
    container = spec["containers"][0]
    args, env = _args(container)
    assert args[args.index("--shard") + 1] == "$(SHARD_INDEX)/$(SHARDS)"
    assert int(env["SHARDS"]) == sts["spec"]["replicas"]
    assert env["SHARD_INDEX"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['apps.kubernetes.io/pod-index']"
    volume = next(v for v in spec["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]  # the hashed name
    assert sorted(cm["data"]) == sorted(p.name for p in FLEET.glob("stations/*.yml"))
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["state"]
    assert spec["terminationGracePeriodSeconds"] >= 53
    parsed = build_parser().parse_args(args)
    assert parsed.config == ["/config"] and parsed.quorum == "50%"
    gpu = container["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpu == 1 and parsed.device == "cuda") if variant == "live-gpu" else gpu is None


@needs_kustomize
def test_replay_job_is_indexed_one_shard_per_completion() -> None:
    objs = render(FLEET / "replay")
    job = _one(objs, "Job")
    args, env = _args(job["spec"]["template"]["spec"]["containers"][0])
    assert job["spec"]["completionMode"] == "Indexed"
    assert int(env["SHARDS"]) == job["spec"]["completions"] == job["spec"]["parallelism"]
    parsed = build_parser().parse_args(args)
    assert parsed.shard == "$(JOB_COMPLETION_INDEX)/$(SHARDS)" and parsed.out == "/replay/out"
    assert _one(objs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_systemd_fleet_unit_runs_the_fleet_folder() -> None:
    unit = (ROOT / "deploy" / "systemd" / "listener-fleet.service").read_text()
    start = re.search(r"^ExecStart=(.*)$", unit, re.M)
    assert start is not None and "%i" not in unit
    args = build_parser().parse_args(start[1].split()[1:])
    assert args.config == ["/etc/listener/fleet.d/"] and args.keep_going
    assert int(re.search(r"^TimeoutStopSec=(\d+)", unit, re.M)[1]) >= 53  # type: ignore[index]
    analyze = shutil.which("systemd-analyze")
    if analyze:
        done = subprocess.run([analyze, "verify", "--man=no", str(
            ROOT / "deploy" / "systemd" / "listener-fleet.service")],
            capture_output=True, text=True, timeout=60, check=False)
        assert "Unknown key" not in done.stderr and "Invalid" not in done.stderr, done.stderr
