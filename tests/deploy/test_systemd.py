"""deploy/systemd: the template unit and its GPU drop-in.

Always: the unit is parsed as systemd's INI dialect and the settings the
operations guide relies on are checked. Where ``systemd-analyze`` exists (the
Debian package ``systemd``), the unit is also run through ``systemd-analyze
verify`` (unknown keys, bad values, a missing ExecStart binary) and
``systemd-analyze security --offline=yes`` (the exposure score), each with and
without the drop-in; without it those tests skip with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD_DIR / "listener@.service"
GPU_DROPIN = SYSTEMD_DIR / "gpu.conf"
INSTANCE = "rpi_orcasound_lab"
EXEC = "/opt/listener/bin/listener"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """systemd's unit-file syntax: sections, ``Key=value`` (repeatable), ``#``/``;``
    comments, backslash line continuation. Returns section -> key -> values."""
    out: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], defaultdict(list))
            continue
        assert section is not None, f"setting outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not Key=value: {line!r}"
        section[key.strip()].append(value.strip())
    return out


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def last(unit: Unit, section: str, key: str) -> str | None:
    values = unit.get(section, {}).get(key)
    return values[-1] if values else None


REQUIRED_SERVICE = {
    "Type": "notify",
    "NotifyAccess": "main",
    "ExecStart": f"{EXEC} run --config /etc/listener/%i.yaml",
    "WatchdogSec": "60",
    "Restart": "on-failure",
    "RestartSec": "10",
    "TimeoutStopSec": "60",
    "KillSignal": "SIGTERM",
    "StateDirectory": "listener/%i",
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "EnvironmentFile": "-/etc/listener/%i.env",
}


@pytest.mark.parametrize("key", sorted(REQUIRED_SERVICE))
def test_required_service_setting(unit: Unit, key: str) -> None:
    assert last(unit, "Service", key) == REQUIRED_SERVICE[key], key


def test_sections_and_install(unit: Unit) -> None:
    assert set(unit) == {"Unit", "Service", "Install"}
    assert last(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in (last(unit, "Unit", "After") or "")
    assert "network-online.target" in (last(unit, "Unit", "Wants") or "")


def test_syscall_filter_allows_system_service(unit: Unit) -> None:
    filters = unit["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service"
    # Deny lists (~...) may follow; nothing may widen the allow list.
    assert all(f.startswith("~") for f in filters[1:]), filters


def test_memory_limits_and_wx_memory_left_allowed(unit: Unit) -> None:
    assert re.fullmatch(r"\d+[KMG]", last(unit, "Service", "MemoryMax") or "")
    # PyTorch's JIT/oneDNN needs W+X memory: the unit must not forbid it.
    assert last(unit, "Service", "MemoryDenyWriteExecute") in (None, "no")


def test_webhook_credential_documented_but_optional(unit: Unit) -> None:
    text = UNIT.read_text(encoding="utf-8")
    # Commented out: an active LoadCredential= with a missing file fails the start.
    assert "#LoadCredential=webhook-token:/etc/listener/%i.webhook-token" in text
    assert "LoadCredential" not in unit["Service"]
    assert "CPUQuota" in text  # the guidance comment


def test_gpu_dropin_reopens_only_nvidia_devices() -> None:
    dropin = parse_unit(GPU_DROPIN.read_text(encoding="utf-8"))
    assert set(dropin) == {"Service"}
    service = dropin["Service"]
    assert service["PrivateDevices"] == ["no"]
    assert service["DevicePolicy"] == ["closed"]
    assert service["DeviceAllow"], "no DeviceAllow= lines"
    for allow in service["DeviceAllow"]:
        assert re.fullmatch(r"/dev/nvidia[-\w]* rw", allow), allow


def test_readme_names_the_install_steps() -> None:
    readme = (SYSTEMD_DIR / "README.md").read_text(encoding="utf-8")
    for needle in ("/opt/listener", "systemctl enable --now listener@rpi_orcasound_lab",
                   "listener@.service", "gpu.conf", "LoadCredential"):
        assert needle in readme, needle


# --- systemd-analyze, where installed ---------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze not installed (Debian: apt-get install systemd)")


def _unit_dir(tmp_path: Path, with_gpu: bool) -> Path:
    """A unit search path holding the unit (ExecStart -> an executable stub,
    since verify checks that the binary exists) and, optionally, the drop-in."""
    stub = tmp_path / "listener"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    text = UNIT.read_text(encoding="utf-8").replace(EXEC, str(stub))
    (units / UNIT.name).write_text(text, encoding="utf-8")
    if with_gpu:
        dropins = units / f"{UNIT.name}.d"
        dropins.mkdir()
        shutil.copy(GPU_DROPIN, dropins / GPU_DROPIN.name)
    return units


def _analyze(units: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    # A trailing ':' keeps the built-in search path after ours (for the
    # targets named in [Unit] and [Install]).
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run([SYSTEMD_ANALYZE, *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


@needs_systemd
@pytest.mark.parametrize("with_gpu", [False, True], ids=["cpu", "gpu-dropin"])
def test_systemd_analyze_verify(tmp_path: Path, with_gpu: bool) -> None:
    units = _unit_dir(tmp_path, with_gpu)
    name = f"listener@{INSTANCE}.service"
    result = _analyze(units, "verify", "--man=no", name)
    # verify exits 0 even for unknown keys, so its complaints are read too:
    # any line naming our unit or drop-in is a problem.
    complaints = [ln for ln in (result.stdout + result.stderr).splitlines()
                  if "listener@" in ln or "gpu.conf" in ln]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


@needs_systemd
@pytest.mark.parametrize("with_gpu,ceiling", [(False, 2.0), (True, 2.5)],
                         ids=["cpu", "gpu-dropin"])
def test_systemd_analyze_security(tmp_path: Path, with_gpu: bool, ceiling: float) -> None:
    units = _unit_dir(tmp_path, with_gpu)
    result = _analyze(units, "security", "--offline=yes", "--no-pager",
                      f"listener@{INSTANCE}.service")
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", output)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline unsupported here: {output[-300:]}")
    assert float(match.group(1)) <= ceiling, output
