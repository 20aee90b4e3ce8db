"""The Dockerfile and .dockerignore, checked without a Docker engine.

No engine runs here and hadolint is not installable, so the Dockerfile is
parsed into instructions (continuations, comments and parser directives as
BuildKit reads them) and its structure is checked: the stages, what the
final stage contains, who it runs as, its entry point and health check. The
HEALTHCHECK command itself is run against a local HTTP server.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, else None."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Instructions (with continuations joined) and the stages they form."""
    instructions: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue  # blank, comment or parser directive (# syntax=...)
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        joined = " ".join(p for p in buf if p)
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        buf = []
    assert not buf, "the Dockerfile ends inside a line continuation"
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            words = [w for w in words if not w.startswith("--")]  # --platform=...
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(ins)
        else:
            assert ins.keyword == "ARG", f"line {ins.line}: {ins.keyword} before FROM"
    return instructions, stages


@pytest.fixture(scope="module")
def parsed() -> tuple[list[Instruction], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def stages(parsed: tuple[list[Instruction], list[Stage]]) -> list[Stage]:
    return parsed[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    out: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        name, _, default = ins.args.partition("=")
        out[name] = default
    return out


def test_known_instructions_only(parsed: tuple[list[Instruction], list[Stage]]) -> None:
    known = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "USER", "EXPOSE",
             "VOLUME", "LABEL", "HEALTHCHECK", "ENTRYPOINT", "CMD", "STOPSIGNAL", "SHELL",
             "ONBUILD"}
    for ins in parsed[0]:
        assert ins.keyword in known, f"line {ins.line}: unknown instruction {ins.keyword}"


def test_multi_stage_builder_then_slim_runtime(
        parsed: tuple[list[Instruction], list[Stage]], stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["builder", "runtime"]
    images = global_args(parsed[0])
    for stage in stages:
        base = re.sub(r"\$\{(\w+)\}", lambda m: images[m.group(1)], stage.base)
        # Both stages on the same image: the venv's interpreter symlinks point
        # at /usr/local/bin/python3.11, which must exist in the final stage.
        assert base == "python:3.11-slim", (stage.name, base)


def test_builder_builds_the_venv(stages: list[Stage]) -> None:
    builder = stages[0]
    runs = " ".join(i.args for i in builder.all("RUN"))
    assert "python -m venv /opt/listener" in runs
    assert "pip install -c constraints.txt ." in runs


def test_torch_variant_arg_and_cpu_index(stages: list[Stage]) -> None:
    builder = stages[0]
    assert any(i.args == "TORCH_VARIANT=cpu" for i in builder.all("ARG"))
    assert any(i.args == "TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu"
               for i in builder.all("ARG"))
    torch_run = next(i.args for i in builder.all("RUN") if "TORCH_VARIANT" in i.args)
    assert re.search(r'cpu\)\s+pip install -c constraints.txt --index-url "\$TORCH_CPU_INDEX" '
                     r"torch", torch_run)
    assert re.search(r"cuda\)\s+pip install -c constraints.txt torch", torch_run)
    assert "exit 1" in torch_run  # any other value is refused


def test_final_stage_copies_only_the_venv_from_the_builder(final: Stage) -> None:
    copies = final.all("COPY")
    assert [c.args for c in copies] == ["--from=builder /opt/listener /opt/listener"]


def test_final_stage_has_no_compilers(final: Stage) -> None:
    forbidden = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|"
                           r"python3?-dev|libc6-dev)\b")
    for ins in final.instructions:
        if ins.keyword == "RUN":
            assert not forbidden.search(ins.args), f"line {ins.line}: {ins.args}"


def test_final_stage_runs_as_non_root(final: Stage) -> None:
    users = final.all("USER")
    assert users, "no USER in the final stage"
    user = users[-1].args
    name = user.split(":")[0]
    assert name not in ("root", "0"), user
    assert name.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot verify it"
    # Nothing after USER needs root.
    after = final.instructions[final.instructions.index(users[-1]) + 1:]
    assert not [i for i in after if i.keyword == "RUN"]
    runs = " ".join(i.args for i in final.all("RUN"))
    assert f"--uid {name}" in runs and f"-o {name}" in runs


def test_entrypoint_cmd_volume_expose(final: Stage) -> None:
    assert final.all("ENTRYPOINT")[-1].exec_form() == ["listener"]
    assert final.all("CMD")[-1].exec_form() == ["run", "--config", "/config/config.yml"]
    assert "9108" in final.all("EXPOSE")[-1].args.split()
    assert final.all("VOLUME")[-1].exec_form() == ["/var/lib/listener"]
    envs = " ".join(i.args for i in final.all("ENV"))
    assert "PATH=/opt/listener/bin:$PATH" in envs


def test_ffmpeg_choice_is_explicit(final: Stage) -> None:
    assert any(i.args == "FFMPEG=wheel" for i in final.all("ARG"))
    run = next(i.args for i in final.all("RUN") if "FFMPEG" in i.args)
    assert "apt-get install -y --no-install-recommends ffmpeg" in run
    assert "rm -rf /var/lib/apt/lists/*" in run


def healthcheck_command(final: Stage) -> list[str]:
    hc = final.all("HEALTHCHECK")
    assert hc, "no HEALTHCHECK"
    args = hc[-1].args
    options, _, command = args.partition("CMD ")
    assert re.search(r"--start-period=\d+s", options), "model loading needs a start period"
    assert re.search(r"--timeout=\d+s", options)
    form = Instruction(hc[-1].line, "CMD", command).exec_form()
    assert form is not None, "use the exec form (no shell needed)"
    return form


def test_healthcheck_uses_python_on_healthz(final: Stage) -> None:
    command = healthcheck_command(final)
    assert command[0] == "python"
    assert "curl" not in " ".join(command) and "wget" not in " ".join(command)
    env = " ".join(i.args for i in final.all("ENV"))
    assert "LISTENER_HEALTHCHECK_URL=http://127.0.0.1:9108/healthz" in env


class _Probe(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = 200 if self.path == "/healthz" and type(self).status == 200 else 503
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok" if code == 200 else b"unhealthy")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[tuple[str, type[_Probe]]]:
    handler = type("Probe", (_Probe,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/healthz", handler
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_command_exit_status(final: Stage,
                                         probe_server: tuple[str, type[_Probe]]) -> None:
    url, handler = probe_server
    command = [sys.executable, *healthcheck_command(final)[1:]]

    def run(target: str) -> int:
        env = {"LISTENER_HEALTHCHECK_URL": target, "PATH": "/usr/bin:/bin"}
        return subprocess.run(command, env=env, capture_output=True, timeout=30,
                              check=False).returncode

    assert run(url) == 0
    handler.status = 503
    assert run(url) != 0
    assert run("http://127.0.0.1:9/healthz") != 0  # nothing listening


# --- .dockerignore ------------------------------------------------------------

def ignore_rules() -> list[tuple[bool, str]]:
    """(is_exception, pattern) in file order, as Docker reads .dockerignore."""
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, line.lstrip("!").strip("/")))
    return rules


def _matches(pattern: str, path: str) -> bool:
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
    regex = regex.replace(r"\?", "[^/]")
    regex = re.sub(r"\\\[(.*?)\\\]", r"[\1]", regex)
    # A pattern naming a folder covers everything below it.
    return re.fullmatch(regex + "(/.*)?", path) is not None


def in_context(path: str, rules: list[tuple[bool, str]]) -> bool:
    """Whether ``path`` (relative, '/'-separated) reaches the build context:
    the last matching rule wins, as in Docker."""
    included = True
    for negate, pattern in rules:
        if _matches(pattern, path):
            included = negate
    return included


def _copy_sources(stages: list[Stage]) -> list[str]:
    sources = []
    for stage in stages:
        for ins in stage.all("COPY"):
            words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
            if any(w.startswith("--from") for w in shlex.split(ins.args)):
                continue
            sources.extend(words[:-1])
    return sources


def test_every_copy_source_is_in_the_context(stages: list[Stage]) -> None:
    rules = ignore_rules()
    sources = _copy_sources(stages)
    assert "listener" in sources and "pyproject.toml" in sources
    for source in sources:
        matches = [p.relative_to(ROOT).as_posix() for p in ROOT.glob(source)]
        if not matches:
            # Only a wildcard may match nothing (README.m[d] before a README exists).
            assert any(c in source for c in "*?["), f"COPY {source}: no such file"
            continue
        for rel in matches:
            assert in_context(rel, rules), f"COPY {source}: {rel} is excluded by .dockerignore"


def test_context_leaves_out_weights_venvs_and_state() -> None:
    rules = ignore_rules()
    for rel in (".git/config", ".venv/bin/python", "tests/data/frontend_golden.npz",
                "models/orcahello-srkw.safetensors", "listener/__pycache__/cli.cpython-311.pyc",
                "var/state/rpi_orcasound_lab.json", "deploy/systemd/listener@.service",
                "listener/data/weights.pt", "listener.egg-info/PKG-INFO"):
        assert not in_context(rel, rules), rel
    for rel in ("listener/cli/main.py", "listener/events/sinks/webhook.py", "pyproject.toml",
                "constraints.txt"):
        assert in_context(rel, rules), rel


def test_ignore_matcher_agrees_with_fnmatch_on_simple_patterns() -> None:
    # Guard the tiny matcher above against regressions on the plain cases.
    for pattern, path in (("*", "Dockerfile"), ("listener", "listener/cli/main.py"),
                          ("**/__pycache__", "listener/events/sinks/__pycache__/x.pyc")):
        assert _matches(pattern, path)
    assert fnmatch.fnmatch("x.pyc", "*.py[cod]") and _matches("**/*.py[cod]", "a/x.pyc")
