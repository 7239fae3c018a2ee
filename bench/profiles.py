"""Where a server's CPU goes under load: py-spy samples, summed three ways.

Only samples of a thread holding the GIL are taken (``--gil``): py-spy counted threads that
waited (the event loop in epoll, the store's thread on its queue) as busy, up to half of
each profile. Those of the main thread, the event loop's, are summed:

- by function, inclusive: every sample a function is on the stack of (async frames count
  while they run, not while they wait);
- by module, self: the sample's innermost Python frame (time in C, lxml or json say, falls on
  the Python function that called it), site-packages named by their package;
- by project module, inclusive: every sample with a frame in ``proxy/<module>.py``, which is
  what each of the proxy's features costs.

Other threads (the SQLite store's) are counted apart; their CPU is in the table's figures.
The raw stacks stay in .cache/bench/profile-*.txt (flamegraph.pl reads them).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.servers import CACHE, PYTHON

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SITE = re.compile(r"(?:site|dist)-packages/([^/]+)")
_STDLIB = re.compile(r"/python3\.\d+/(.+?)(?:/__init__)?\.py$|^<frozen (\w+)")
_PROJECT = re.compile(r"(?:^|/)(proxy|bench)/(.+?)\.py$")
_THREAD = re.compile(r"^thread \(\d+\): (.*)$")
MAIN_THREAD = "MainThread"


@dataclass(frozen=True)
class Profile:
    name: str
    samples: int
    functions: Counter[str]       # inclusive
    modules: Counter[str]         # self
    project: Counter[str]         # inclusive, proxy/ and bench/ modules
    path: Path
    threads: Counter[str]         # samples holding the GIL, by thread name (all threads)

    def share(self, count: int) -> float:
        return count / self.samples if self.samples else 0.0


def module_of(file: str) -> str:
    """proxy.logs, starlette, stdlib json, … for a frame's file."""
    if found := _SITE.search(file):
        return found[1].removesuffix(".py")
    if found := _PROJECT.search(file):
        return f"{found[1]}.{found[2].replace('/', '.')}"
    if found := _STDLIB.search(file):
        return "stdlib " + (found[1] or found[2]).replace("/", ".")
    return file or "?"


def _frame(raw: str) -> tuple[str, str]:
    found = _FRAME.match(raw)
    return (found["function"], found["file"]) if found else (raw, "")


def summarise(name: str, path: Path) -> Profile:
    """The main thread's samples summed (a file without thread frames: all of them)."""
    functions: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    project: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        raw = stack.split(";")
        thread = _THREAD.match(raw[0])
        threads[thread[1] if thread else MAIN_THREAD] += samples
        if thread:
            if thread[1] != MAIN_THREAD:
                continue
            raw = raw[1:]
        total += samples
        frames = [_frame(each) for each in raw]
        for function, file in {(f, re.sub(r":\d+$", "", p)) for f, p in frames}:
            if "runpy" not in file and function != "<module>":
                functions[f"{function} ({module_of(file)})"] += samples
        modules[module_of(frames[-1][1])] += samples
        for module in {module_of(file) for _, file in frames}:
            if module.startswith(("proxy.", "bench.")) and not module.endswith("__main__"):
                project[module] += samples
    return Profile(name, total, functions, modules, project, path, threads)


def record(pid: int, name: str, seconds: float) -> Profile:
    """Samples of a running process for ``seconds`` (250 a second)."""
    out = CACHE / f"profile-{name}.txt"
    subprocess.run([str(Path(PYTHON).parent / "py-spy"), "record", "-p", str(pid),
                    "--full-filenames", "--gil", "--threads",
                    "-d", str(max(1, int(seconds))), "-r", "250", "-f", "raw", "-o", str(out)],
                   check=True, capture_output=True)
    return summarise(name, out)


def report(profile: Profile, cpu_us: float | None, top: int = 25) -> str:
    """The three sums as Markdown; with the main thread's CPU per request, each share in µs
    too."""
    def row(label: str, count: int) -> str:
        share = profile.share(count)
        cost = f" | {share * cpu_us:.0f} µs" if cpu_us else " | —"
        return f"| {100 * share:5.1f} %{cost} | {label} |"

    head = "| share | per request | {} |\n| --- | --- | --- |"
    threads = ", ".join(f"{name} {count}" for name, count in profile.threads.most_common())
    parts = [f"{profile.name}: {profile.samples} samples of the main thread holding the GIL "
             f"(all threads: {threads}; {profile.path})"]
    parts.append("\nBy module, self:\n\n" + head.format("module") + "\n" + "\n".join(
        row(module, count) for module, count in profile.modules.most_common(top)))
    if profile.project:
        parts.append("\nBy project module, inclusive:\n\n" + head.format("module") + "\n"
                     + "\n".join(row(m, c) for m, c in profile.project.most_common()))
    parts.append("\nBy function, inclusive:\n\n" + head.format("function") + "\n" + "\n".join(
        row(function, count) for function, count in profile.functions.most_common(top)))
    return "\n".join(parts)


def main() -> None:
    """``python -m bench.profiles FILE [µs per request]``: a raw py-spy file summed."""
    path = Path(sys.argv[1])
    cpu_us = float(sys.argv[2]) if len(sys.argv) > 2 else None
    print(report(summarise(path.stem, path), cpu_us))


if __name__ == "__main__":
    main()
