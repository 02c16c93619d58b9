"""Mutation checks where a silent change loses data: do the tests notice when the code is changed a little?

    .venv/bin/python bench/mutation.py                      # every target (sampled ones 1 mutant in 10)
    .venv/bin/python bench/mutation.py retention storage    # some targets
    .venv/bin/python bench/mutation.py qdrant --sample 5    # 1 mutant in 5 of a sampled target
    .venv/bin/python bench/mutation.py lua                  # the job store's Lua scripts

Python targets go through mutmut, configured in pyproject.toml's ``[tool.mutmut]``: which files it mutates and the
fast tests it runs (in-process tests only: code that runs in a worker subprocess is invisible to mutmut's
test-to-function map, so the engine tests would add minutes and no coverage). mutmut runs, for each mutant, only
the tests that call the mutated function, fastest first, stopping at the first failure. Its state stays in
``mutants/`` (``mutmut show NAME`` shows a mutant, ``mutmut browse`` all of them); delete the folder for a fresh run.

mutmut mutates function bodies, not the job store's Lua (module-level strings), so ``lua`` is a small mutator of
our own: each relational operator, ``and``/``or``, ``not`` and integer literal in the scripts is changed one at a
time in a scratch copy of the repository, and tests/test_job_store.py is run against it.

Prints, per target: mutants run, killed, survived, timed out, no tests, and the survivors' names. The figures
and what each survivor means are in bench/RESULTS.md. Needs the Redis of QBM_TEST_REDIS_URL, as the tests do.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTMUT = str(Path(sys.executable).with_name("mutmut"))

#: target -> (mutant name pattern, run whole?)
TARGETS: dict[str, tuple[str, bool]] = {
    "retention": ("shared.domain.retention.*", True),
    "storage": ("shared.adapters.storage.*", True),
    "qdrant": ("shared.adapters.qdrant.*", False),
    "job_store": ("shared.records.job_store.*", False),
    "backup": ("workers.backup.*", False),
    "restore": ("workers.restore.*", False),
}
LUA_TESTS = ["tests/test_job_store.py", "-k", "not ten_thousand"]  # that one takes a minute: listing cost only


def mutmut(*args: str, max_children: int) -> None:
    """Run mutmut; its progress output goes to mutants/mutation-run.log (shown when it fails)."""
    command = [MUTMUT, "run", "--max-children", str(max_children), *args]
    shown = " ".join(command[:4] + list(args[:2])) + (f" ... ({len(args)} names)" if len(args) > 2 else "")
    print("$", shown, flush=True)
    log = REPO / "mutants" / "mutation-run.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO, check=False, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").replace("\r", "\n").splitlines()[-30:]
        print(f"mutmut failed (exit {done.returncode}); the end of {log}:", *tail, sep="\n", flush=True)


def statuses() -> dict[str, str]:
    """Every mutant mutmut knows of and its status ("not checked" until run)."""
    out = subprocess.run([MUTMUT, "results", "--all", "true"], cwd=REPO, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status
    return found


def module_of(name: str) -> str:
    return re.split(r"\.x_|\.xǁ", name, maxsplit=1)[0]


def matches(name: str, pattern: str) -> bool:
    return module_of(name).startswith(pattern.removesuffix(".*"))


def run_python(targets: list[str], sample: int, max_children: int) -> dict[str, Counter]:
    full = [TARGETS[t][0] for t in targets if TARGETS[t][1]] or [TARGETS["retention"][0]]
    mutmut(*full, max_children=max_children)  # also generates every mutant and the test map
    known = statuses()
    chosen: dict[str, list[str]] = {}
    for target in targets:
        pattern, whole = TARGETS[target]
        names = sorted((n for n in known if matches(n, pattern)), key=_natural)
        chosen[target] = names if whole else names[::sample]
    sampled = [name for target in targets if not TARGETS[target][1] for name in chosen[target]]
    if sampled:
        mutmut(*sampled, max_children=max_children)
    known = statuses()
    return {target: Counter(known[name] for name in chosen[target]) for target in targets} | {
        f"{target} survivors": Counter({name: 1 for name in chosen[target] if known[name] == "survived"})
        for target in targets}


def _natural(name: str) -> tuple[str, int]:
    head, _, number = name.rpartition("__mutmut_")
    return head, int(number) if number.isdigit() else 0


# -- the Lua scripts ---------------------------------------------------------------------------------------------

LUA_BLOCK = re.compile(r'^(_[A-Z_]+_LUA) = f?"""\n(.*?)^"""', re.M | re.S)
LUA_MUTATIONS = [  # (pattern, replacement); each occurrence is one mutant
    (r"==", "~="), (r"~=", "=="), (r"(?<![<>~=])>(?!=)", ">="), (r"(?<![<>~=])<(?!=)", "<="), (r">=", ">"),
    (r"<=", "<"), (r"\band\b", "or"), (r"\bor\b", "and"), (r"\bnot ", ""), (r"(?<![\w{}])(\d+)(?![\w{}])", None),
]


def lua_mutants(source: str) -> list[tuple[str, str]]:
    """(description, mutated source) for every mutation site inside the Lua blocks."""
    mutants = []
    for block in LUA_BLOCK.finditer(source):
        name, start = block.group(1), block.start(2)
        body = block.group(2)
        for pattern, replacement in LUA_MUTATIONS:
            for site in re.finditer(pattern, body):
                text = site.group(0)
                new = str(int(text) + 1) if replacement is None else replacement
                line = body[:site.start()].count("\n") + 1
                at = start + site.start()
                mutated = source[:at] + new + source[at + len(text):]
                snippet = body.splitlines()[line - 1].strip()
                column = site.start() - (body.rfind("\n", 0, site.start()) + 1) + 1
                mutants.append((f"{name} line {line} col {column}: {text!r} -> {new!r} in `{snippet}`", mutated))
    return mutants


def run_lua(timeout: float, sample: int) -> dict[str, Counter]:
    target = "shared/records/job_store.py"
    source = (REPO / target).read_text()
    counts: Counter = Counter()
    survivors: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="qbm-lua-mutants-") as scratch:
        files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        for path in files.splitlines():
            if path.startswith(("shared/", "tests/", "qbm/", "api/", "workers/", "scheduler/")) or \
                    path == "pyproject.toml":
                (Path(scratch) / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / path, Path(scratch) / path)
        every = lua_mutants(source)
        mutants = every[::sample]
        print(f"lua: {len(mutants)} of {len(every)} mutants", flush=True)
        for description, mutated in mutants:
            (Path(scratch) / target).write_text(mutated)
            try:
                run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                      *LUA_TESTS], cwd=scratch, capture_output=True, timeout=timeout,
                                     env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
                status = "killed" if run.returncode == 1 else "survived" if run.returncode == 0 else \
                    f"error (pytest exit {run.returncode})"
            except subprocess.TimeoutExpired:
                status = "timeout"
            counts[status] += 1
            if status == "survived":
                survivors[description] = 1
            print(f"  {status}: {description}", flush=True)
    return {"lua": counts, "lua survivors": survivors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"any of {', '.join([*TARGETS, 'lua'])} (default: all)")
    parser.add_argument("--sample", type=int, default=10, help="run 1 mutant in N of the sampled targets")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--lua-timeout", type=float, default=120.0, help="seconds per Lua mutant")
    parser.add_argument("--lua-sample", type=int, default=1, help="run 1 Lua mutant in N (default: all)")
    args = parser.parse_args()
    targets = args.targets or [*TARGETS, "lua"]
    unknown = set(targets) - {*TARGETS, "lua"}
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    results: dict[str, Counter] = {}
    python = [t for t in targets if t != "lua"]
    if python:
        results |= run_python(python, args.sample, args.max_children)
    if "lua" in targets:
        results |= run_lua(args.lua_timeout, args.lua_sample)
    print(f"\n{'target':<12} {'run':>5} {'killed':>7} {'survived':>9} {'timeout':>8} {'no tests':>9}")
    for target in targets:
        c = results[target]
        run = sum(v for k, v in c.items() if k != "not checked")
        print(f"{target:<12} {run:>5} {c['killed']:>7} {c['survived']:>9} {c['timeout']:>8} {c['no tests']:>9}"
              + (f"  other: {dict(c)}" if set(c) - {'killed', 'survived', 'timeout', 'no tests'} else ""))
    for target in targets:
        for name in results.get(f"{target} survivors", {}):
            print(f"survived [{target}] {name}")
    print(f"\n{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
