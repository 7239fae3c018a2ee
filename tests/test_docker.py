"""The image, without a Docker engine: hadolint checks the Dockerfile, and its own steps run here.

The build stage's COPY lines fill an empty directory and its pip line builds the wheels there;
the run stage's pip line installs them into a fresh virtual environment; then the image's CMD
starts from a directory without the source tree, with the image's ENV, no system time-zone
database (as in a slim image), and the image's HEALTHCHECK and a client call it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import BASIC
from tests.processes import ROOT, free_port, running

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


@dataclass
class Stage:
    name: str | None
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    copies: list[list[str]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    healthcheck: list[str] | None = None
    cmd: list[str] | None = None
    user: str | None = None


def parse_dockerfile(text: str) -> list[Stage]:
    """The instructions this Dockerfile uses, stage by stage (continuations joined)."""
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines()
                                             if not line.lstrip().startswith("#")))
    stages: list[Stage] = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            stages.append(Stage(words[2] if len(words) > 2 and words[1].upper() == "AS" else None))
            continue
        stage = stages[-1]
        if keyword == "WORKDIR":
            stage.workdir = rest
        elif keyword == "ENV":
            stage.env.update(word.split("=", 1) for word in shlex.split(rest))
        elif keyword == "COPY" and "--from" not in rest:
            stage.copies.append(rest.split())
        elif keyword == "RUN":
            stage.runs.append(re.sub(r"--mount=\S+\s*", "", rest))
        elif keyword == "HEALTHCHECK":
            stage.healthcheck = json.loads(rest.partition("CMD")[2])
        elif keyword == "CMD":
            stage.cmd = json.loads(rest)
        elif keyword == "USER":
            stage.user = rest
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text())
BUILD, RUNTIME = STAGES[0], STAGES[-1]


def _pip_steps(stage: Stage) -> list[str]:
    steps = [run for run in stage.runs if "pip" in run]
    assert len(steps) == 1, f"expected one pip step in stage {stage.name}: {stage.runs}"
    return steps


def _run(step: str, cwd: Path, python_bin: Path, env: dict[str, str]) -> None:
    environment = {**os.environ, **env, "PATH": f"{python_bin}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", step], cwd=cwd, env=environment,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"{step}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The build stage's wheels and the run stage's virtual environment, made by their steps."""
    root = tmp_path_factory.mktemp("image")
    workdir, wheels = root / "src", root / "wheels"
    workdir.mkdir()
    for *sources, target in BUILD.copies:
        for source in sources:
            origin, destination = ROOT / source.rstrip("/"), workdir / target
            if origin.is_dir():
                shutil.copytree(origin, workdir / target.rstrip("/"), symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(origin, destination)
    stage_env = {**BUILD.env, "WHEELS": str(wheels)}
    for step in _pip_steps(BUILD):
        _run(step, workdir, Path(sys.executable).parent, stage_env)
    environment = root / "venv"
    venv.create(environment, with_pip=True)
    for step in _pip_steps(RUNTIME):
        _run(step, root, environment / "bin", {**RUNTIME.env, "WHEELS": str(wheels)})
    return root, wheels, environment


def test_hadolint_passes_the_dockerfile():
    if not HADOLINT.exists():
        pytest.fail(f"hadolint is missing: install the test extras (tests/run): {HADOLINT}")
    done = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_multi_stage_slim_and_runs_as_non_root():
    assert len(STAGES) >= 2 and BUILD.name
    assert RUNTIME.user not in (None, "root", "0")
    assert RUNTIME.cmd == ["python", "-m", "proxy"]
    assert RUNTIME.healthcheck is not None
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM python:3\.11-slim", text, re.M) == ["FROM python:3.11-slim"] * 2
    assert {"SMSLEADS_PROXY_PORT", "SMSLEADS_PROXY_WORKERS"} <= RUNTIME.env.keys()


def test_the_build_context_is_only_what_the_build_stage_copies():
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # .venv, .git, .cache and the rest stay out of the context
    kept = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {source.rstrip("/") for *sources, _ in BUILD.copies for source in sources}
    assert kept == copied


def test_the_wheel_carries_the_tables_and_the_real_spec(image):
    _, wheels, _ = image
    (wheel,) = wheels.glob("smsleads_proxy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        spec = archive.read("proxy/openapi.yaml")
    assert {"proxy/mapping.yaml", "proxy/statuses.yaml", "proxy/py.typed",
            "proxy/sandbox/__init__.py"} <= names
    assert spec == (ROOT / "openapi.yaml").read_bytes()  # the content, not the symlink


def test_the_installed_image_starts_answers_and_passes_its_healthcheck(image, tmp_path):
    root, _, environment = image
    bin_dir = environment / "bin"
    env = {**RUNTIME.env,
           "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "SMSLEADS_PROXY_HOST": "127.0.0.1",  # tests bind the loopback only
           "SMSLEADS_PROXY_PORT": str(free_port()),
           "SMSLEADS_SANDBOX": "true",
           "PYTHONTZPATH": "",  # no system zoneinfo, as in a slim image: the tzdata wheel serves
           "PYTHONPATH": ""}
    where = subprocess.run([str(bin_dir / "python"), "-c", "import proxy; print(proxy.__file__)"],
                           cwd=root, env={**os.environ, **env}, capture_output=True, text=True)
    assert where.stdout.startswith(str(environment)), where.stdout + where.stderr
    command = [str(bin_dir / RUNTIME.cmd[0]), *RUNTIME.cmd[1:]]
    with running(tmp_path, env=env, command=command, cwd=root,
                 port=int(env["SMSLEADS_PROXY_PORT"])) as server:
        check = subprocess.run(RUNTIME.healthcheck, cwd=root, env={**os.environ, **env},
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        response = httpx.get(server.base + "/v1/balance", headers={"Authorization": BASIC})
        assert response.status_code == 200, response.text
        assert response.json() == {"credits": 1000}
        assert httpx.get(server.base + "/readyz").status_code == 200
