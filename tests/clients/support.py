"""Generated clients, for the tests that use the API as its users do.

Each client is generated once per openapi.yaml and generator version into ``.cache/clients/``
(git-ignored), with the generator's output kept beside it, so a second run reads the cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "openapi.yaml"
CACHE = ROOT / ".cache"
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
NODE_MAJOR = 20  # the runtime the TypeScript scenario is written and typed for (package.json)
# Credits a day, each credential, on the session's proxy (conftest.py; the demo account holds
# 1000): room for a 1050-credit send after the four scenarios' sends and credits given to
# subscribers (about 60 each, whatever their order), and below the scenarios' 2100-credit send,
# which the budget refuses.
BUDGET = 2000

# Generator output that is about the generator, not about our spec, each checked by hand:
NOT_ABOUT_THE_SPEC = (
    # openapi-generator's own maturity notice, printed for every 3.1 document.
    re.compile(r"OpenAPI 3\.1 support is still in beta"),
    # An internal lookup with no reference at all; it appears for a one-schema document too. A
    # real inline-schema problem names its place: "Failed to get the schema name: #/paths/...".
    re.compile(r"Failed to get the schema name: null$"),
    # The python generator renames what collides with a Python keyword: the query parameter
    # `from` (part of the HTTP API, README) becomes the argument `var_from`.
    re.compile(r"From \(reserved word\) cannot be used as model name\. Renamed to ModelFrom$"),
)


@dataclass(frozen=True, slots=True)
class Generator:
    name: str      # the directory under .cache/clients, and the package it makes
    package: str   # the PyPI package that ships it, whose version keys the cache
    argv: tuple[str, ...]  # {spec} and {out} are filled in
    needs_java: bool

    def command(self, spec: Path, out: Path) -> list[str]:
        return [a.format(spec=spec, out=out) for a in self.argv]


_OPENAPI_GENERATOR = str(BIN / "openapi-generator-cli")
# Only the client's code: no generated tests or docs, which nobody runs here.
_CODE_ONLY = "apiTests=false,modelTests=false,apiDocs=false,modelDocs=false"

GENERATORS = {
    "python": Generator(
        "smsleads_openapi", "openapi-generator-cli",
        (_OPENAPI_GENERATOR, "generate", "-i", "{spec}", "-g", "python", "-o", "{out}",
         "--package-name", "smsleads_openapi", "--global-property", _CODE_ONLY),
        needs_java=True),
    "typescript-fetch": Generator(
        "smsleads_ts", "openapi-generator-cli",
        (_OPENAPI_GENERATOR, "generate", "-i", "{spec}", "-g", "typescript-fetch", "-o", "{out}",
         "--global-property", _CODE_ONLY),
        needs_java=True),
    "openapi-python-client": Generator(
        "smsleads_client", "openapi-python-client",
        (str(BIN / "openapi-python-client"), "generate", "--path", "{spec}", "--meta", "none",
         "--output-path", "{out}/smsleads_client",
         "--config", str(HERE / "openapi-python-client.yaml")),
        needs_java=False),
}


@dataclass(frozen=True, slots=True)
class Generated:
    path: Path  # the generator's output directory
    log: str    # what the generator printed

    def about_the_spec(self) -> list[str]:
        return spec_warnings(self.log)


# What the generators say when a document needs their guesswork: openapi-generator's WARN and
# ERROR lines, and its INFO about naming an inline schema itself ("Inline schema created as
# makeThing_request. To have complete control of the model name, set the `title` field...");
# openapi-python-client's "Warning(s) encountered while generating" block, detail lines included.
_OPENAPI_GENERATOR_LINE = re.compile(r"^\[[^\]]*\] (WARN|ERROR) |Inline schema created as ")
_OPC_BLOCK = re.compile(r"^(Warning|Error)\(s\) encountered")


def spec_warnings(log: str) -> list[str]:
    """The generator's warnings and errors that concern the document."""
    lines, in_block = [], False
    for line in log.splitlines():
        in_block = in_block or bool(_OPC_BLOCK.match(line))
        if not (_OPENAPI_GENERATOR_LINE.search(line) or (in_block and line.strip())):
            continue
        if not any(rule.search(line) for rule in NOT_ABOUT_THE_SPEC):
            lines.append(line.strip())
    return lines


def run_generator(kind: str, spec: Path, out: Path) -> tuple[int, str]:
    """(exit code, everything printed) of one generation of ``spec`` into ``out``."""
    generator = GENERATORS[kind]
    if generator.needs_java:
        require_java()
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(generator.command(spec, out), capture_output=True, text=True,
                          cwd=out.parent, timeout=300)
    return done.returncode, done.stdout + done.stderr


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(hashlib.sha256(part).digest())
    return hasher.hexdigest()[:16]


def require_java() -> None:
    if shutil.which("java") is None:
        pytest.fail("java is not on PATH: openapi-generator needs a Java 11+ runtime "
                    "(Debian: openjdk-17-jre-headless, which tests/run installs as root)",
                    pytrace=False)


def require_node() -> tuple[str, str]:
    """(node, npm), or a failure that says what to install."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(f"node and npm are needed (Node.js {NODE_MAJOR}): the TypeScript client "
                    "is compiled with tsc and run on Node", pytrace=False)
    found = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(found.stdout.strip().lstrip("v").split(".")[0])
    if major < NODE_MAJOR:
        pytest.fail(f"Node.js {NODE_MAJOR} or later is needed, found {found.stdout.strip()}",
                    pytrace=False)
    return node, npm


def run_node_scenario(script: Path, proxy: str, validated: str) -> list[str]:
    """A compiled TypeScript scenario run on Node against the session's proxy (``proxy``) and
    Prism in front of it (``validated``); the lines it printed, once it passed."""
    node, _ = require_node()
    run = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PROXY_URL": validated, "DIRECT_URL": proxy,
                              "DAILY_CREDITS": str(BUDGET)})
    assert run.returncode == 0, f"the scenario failed:\n{run.stdout}{run.stderr}"
    return run.stdout.splitlines()


def generate(kind: str, spec: Path = SPEC, cache: Path = CACHE / "clients") -> Generated:
    """The client of ``kind`` for ``spec``, generated now or read from the cache."""
    generator = GENERATORS[kind]
    if generator.needs_java:
        require_java()  # even on a warm cache: the suite needs Java, say so every time
    key = _digest(spec.read_bytes(), version(generator.package).encode(),
                  "\0".join(generator.argv).encode(),
                  (HERE / "openapi-python-client.yaml").read_bytes())
    target = cache / f"{generator.name}-{key}"
    if not (target / "generator.log").exists():
        work = cache / f".{generator.name}-{key}.{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        code, log = run_generator(kind, spec, work / "out")
        if code != 0:
            pytest.fail(f"{kind} generator failed ({code}):\n{log[-4000:]}", pytrace=False)
        (work / "generator.log").write_text(log)
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
        for stale in cache.glob(f"{generator.name}-*"):  # earlier specs' clients
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)
    return Generated(target / "out", (target / "generator.log").read_text())


def npm_install(directory: Path, cache: Path = CACHE / "npm") -> Path:
    """node_modules for ``directory``'s package.json and lock, installed once per lock."""
    _, npm = require_node()
    lock = directory / "package-lock.json"
    key = _digest((directory / "package.json").read_bytes(), lock.read_bytes())
    target = cache / key
    if not (target / "node_modules").is_dir():  # renamed into place once complete
        work = cache / f".{key}.{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(directory / name, work / name)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=work, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"npm ci failed:\n{done.stdout}{done.stderr}", pytrace=False)
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    return target / "node_modules"
