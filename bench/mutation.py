"""Mutation testing of the core (issue 19): how many planted bugs the fast unit tests catch.

    python bench/mutation.py [--modules validation preference/losses ...] [--budget-minutes M]
                             [--resume | --recheck | --report-only]

mutmut (configuration: [tool.mutmut] in pyproject.toml) copies prefstudio/ into mutants/,
plants one small change per mutant in the modules of SCOPE (a flipped comparison, a changed
constant, a dropped argument...) and runs, for each mutant, only the fast tests that reach
the function it changed (found by tracing one clean run), fastest first, stopping at the
first failure. One worker (`--max-children 1`): this machine's two cores are shared.

Each module given (default: all of SCOPE, in that order) is run anew; modules not given keep
the results mutants/ holds from earlier runs, so a long scope can be measured a few modules
at a time. `--budget-minutes` stops a module's run after that long (mutmut runs the mutants
with the fastest tests first; the rest stay "not run yet"). `--resume` runs only the
mutants not run yet; `--recheck` reruns only those not killed (after tests were added) and
not explained in docs/mutation.md.
Then this prints, per module, mutants killed / survived / reached by no fast test, and
rewrites the mutation section of docs/benchmarks.md from every result in mutants/ (each run's CPU time, wall time
and load go to bench/results/mutation.json).

A survivor is either killed by a new test or listed in docs/mutation.md as equivalent (no
test can tell it from the original), with its reason; the report counts both.
"""
import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from prefstudio_research.report import machine, write_section

REPO = Path(__file__).resolve().parent.parent

# The store, the profile file, validation, the preference models and guidance. The
# research path (preference/tokens.py, vlm.py, offline_vlm.py, scorers.py,
# pickapic_convert.py) is outside SCOPE: see docs/mutation.md.
SCOPE = [
    "validation",
    "preference/losses",
    "guidance/noise_optimization",
    "guidance/best_of_n",
    "preference/state_schema",
    "store/profile_file",
    "store/profile_access",
    "store/image_files",
    "store/history",
    "preference/pair_data",
    "preference/model",
    "preference/active",
    "preference/user_embedding",
    "preference/models",
]
EQUIVALENTS = REPO / "docs" / "mutation.md"
RECORD = REPO / "bench" / "results" / "mutation.json"
KILLED = {"killed", "timeout"}  # a mutant that makes the tests hang is caught by the time limit


def mutant_prefix(module: str) -> str:
    return "prefstudio." + module.replace("/", ".") + "."


def run_mutmut(module: str, names: list[str], budget_s: float | None) -> tuple[float, bool]:
    """One mutmut run over the mutants `names` of `module`, stopped (as by Ctrl-C, which keeps
    the results so far) after `budget_s` seconds; returns its CPU seconds and whether it ended."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    mutmut = Path(sys.executable).with_name("mutmut")
    log = REPO / "mutants" / f"run-{module.replace('/', '.')}.log"
    log.parent.mkdir(exist_ok=True)
    finished = True
    with open(log, "w") as out:
        # SIGINT back to its default in mutmut: a shell starts background jobs with it ignored.
        process = subprocess.Popen([str(mutmut), "run", "--max-children", "1", *names],
                                   cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            code = process.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            finished = False
            # mutmut forks all the time: a SIGINT that lands in a fork handler is only printed
            # ("Exception ignored"), and mutmut runs on. Ask again until it stops.
            while True:
                process.send_signal(signal.SIGINT)
                try:
                    code = process.wait(timeout=15)
                    break
                except subprocess.TimeoutExpired:
                    continue
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if finished and code != 0 and "nothing matches" in log.read_text():
        print(f"{module}: mutmut planted no mutant in it (it skips decorated functions)", flush=True)
    elif finished and code != 0:
        sys.exit(f"mutmut failed on {module} (exit {code}); its output is in {log}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), finished


def results() -> dict[str, dict[str, str]]:
    """Mutant name → status, per module of SCOPE, from mutants/**/*.meta."""
    from mutmut.stats import status_by_exit_code

    by_module = {}
    for module in SCOPE:
        meta = REPO / "mutants" / "prefstudio" / f"{module}.py.meta"
        if not meta.exists():
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        by_module[module] = {name: status_by_exit_code[code] for name, code in codes.items()}
    return by_module


def equivalents(title: str = "## Equivalent mutants") -> dict[str, str]:
    """Mutant name → why it is equivalent (or, for the other table, why no test here kills it),
    from the table rows of that section of docs/mutation.md."""
    text = EQUIVALENTS.read_text() if EQUIVALENTS.exists() else ""
    section = text.split(title, 1)[-1].split("\n## ", 1)[0] if title in text else ""
    rows = re.findall(r"^\| `(prefstudio\.[^`]+)` \| (.+?) \|$", section, re.M)
    return dict(rows)


def summarise(by_module: dict[str, dict[str, str]], explained: dict[str, str]) -> tuple[list, Counter]:
    rows, total = [], Counter()
    for module, statuses in by_module.items():
        count = Counter()
        for name, status in statuses.items():
            if status == "not checked":
                count["not checked"] += 1
                continue
            count["mutants"] += 1
            if status in KILLED:
                count["killed"] += 1
            elif name in explained:
                count["equivalent"] += 1
            elif status == "no tests":
                count["no tests"] += 1
            else:  # survived, suspicious, segfault...
                count["survived"] += 1
        total += count
        rows.append((module, count))
    return rows, total


def rate(count: Counter) -> str:
    checked = count["mutants"]
    if not checked:
        return "–"
    return f"{100 * (count['survived'] + count['no tests']) / checked:.1f} %"


def adopt_test_selection() -> None:
    """Record the current test selection as the one mutants/ was run with. A test added to it
    can kill more mutants but revive none, so every kill stands; the survivors it may kill are
    found by --recheck (mutmut traces the new tests on its next run)."""
    from mutmut.configuration import config

    os.chdir(REPO)
    stats_path = REPO / "mutants" / "mutmut-stats.json"
    stats = json.loads(stats_path.read_text())
    stats["config_fingerprint"]["test_selection"] = config().config_fingerprint()["test_selection"]
    stats_path.write_text(json.dumps(stats, indent=4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", choices=SCOPE, default=None,
                        help="modules to (re)run; default: all of SCOPE")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report what mutants/ holds")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="stop each module's run after this long, keeping its results so far")
    parser.add_argument("--recheck", action="store_true",
                        help="rerun only the mutants of these modules that were not killed and that "
                             "docs/mutation.md does not explain (after new tests)")
    parser.add_argument("--resume", action="store_true",
                        help="run only the mutants of these modules not run yet (after a budget stop)")
    parser.add_argument("--adopt-test-selection", action="store_true",
                        help="after tests were only added to [tool.mutmut]'s test selection: keep the "
                             "results mutants/ holds (mutmut would forget them all) and trace the new tests")
    args = parser.parse_args()
    if args.adopt_test_selection:
        adopt_test_selection()

    modules = [] if args.report_only else (args.modules or SCOPE)
    earlier = results()
    chosen = {}
    if args.recheck or args.resume:
        # A recheck skips the mutants docs/mutation.md explains (equivalent, or not killable here):
        # rerunning them would only run every test that reaches them again, to the same end.
        explained_before = equivalents() | equivalents("## Not killed on this machine")

        def wanted(name, status):
            if args.resume:
                return status == "not checked"
            return status not in KILLED | {"not checked"} and name not in explained_before
        chosen = {module: sorted(name for name, status in earlier.get(module, {}).items() if wanted(name, status))
                  for module in modules}
        modules = [module for module in modules if chosen[module]]
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    for module in modules:
        start = time.time()
        names = chosen[module] if module in chosen else [mutant_prefix(module) + "*"]
        cpu, finished = run_mutmut(module, names, args.budget_minutes * 60 if args.budget_minutes else None)
        run = {"cpu_s": round(cpu, 1), "wall_s": round(time.time() - start, 1),
               "load": round(os.getloadavg()[0], 1), "commit": commit, "mutants_run": len(names)
               if module in chosen else None, "stopped_at_budget": not finished}
        print(f"{module}: {run['cpu_s']:.0f} s CPU, {run['wall_s']:.0f} s wall, load {run['load']}", flush=True)
        now = results().get(module, {})
        # Stopped at the budget only if mutants of this run are left not run (it may have ended first).
        run["stopped_at_budget"] = not finished and any(now.get(n) == "not checked" for n in (
            names if module in chosen else now))
        _, count = summarise({module: now if module not in chosen else {n: now[n] for n in names}}, {})
        run |= {key: count[key] for key in ("mutants", "killed", "survived", "no tests")}
        entry = record.setdefault(module, {})
        if args.recheck:
            entry.setdefault("rechecks", []).append(run)
        elif args.resume and "full_run" in entry:  # the first run goes on: add this part to it
            first = entry["full_run"]
            for key in ("cpu_s", "wall_s", "mutants", "killed", "survived", "no tests"):
                first[key] = round(first[key] + run[key], 1) if first[key] is not None else None
            first["stopped_at_budget"] = run["stopped_at_budget"] or any(
                status == "not checked" for status in now.values())
            first.setdefault("parts", []).append(run)
        else:
            entry["full_run"], entry["rechecks"] = run, []
        RECORD.write_text(json.dumps(record, indent=1) + "\n")

    by_module = results()
    explained = equivalents()
    unknown = sorted(set(explained) - {name for statuses in by_module.values() for name in statuses})
    rows, _ = summarise(by_module, explained)
    rows = [(module, count) for module, count in rows if count["mutants"]]  # measured, if in part
    total = sum((count for _, count in rows), Counter())
    table = ["| module | mutants | not killed, first run | killed now | equivalent | survived "
             "| no fast test reaches it | **not killed now** | not run yet | CPU-min of the first run (load) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    first = Counter()
    cpu_minutes = 0.0
    for module, count in rows:
        full = record.get(module, {}).get("full_run")
        before = f"{100 * (full['survived'] + full['no tests']) / full['mutants']:.1f} %" if full else "–"
        if full and full.get("stopped_at_budget"):
            before += f" (of the first {full['mutants']})"
        if full:
            first += Counter({k: full[k] for k in ("mutants", "survived", "no tests")})
            cpu_minutes += (full["cpu_s"] or 0) / 60
        cost = "–"
        if full:
            cost = f"{full['cpu_s'] / 60:.1f}" if full["cpu_s"] is not None else f"? ({full['wall_s'] / 60:.0f} min wall)"
            cost += f" ({full['load']})"
        table.append(f"| {module}.py | {count['mutants']} | {before} | {count['killed']} | {count['equivalent']} | "
                     f"{count['survived']} | {count['no tests']} | **{rate(count)}** | {count['not checked']} | {cost} |")
    table.append(f"| **all measured** | {total['mutants']} | {rate(first)} | {total['killed']} | "
                 f"{total['equivalent']} | {total['survived']} | {total['no tests']} | **{rate(total)}** | "
                 f"{total['not checked']} | {cpu_minutes:.1f} |")
    print("\n".join(table))
    survivors = sorted(name for statuses in by_module.values() for name, status in statuses.items()
                       if status not in KILLED | {"not checked"} and name not in explained)
    if survivors:
        print(f"\n{len(survivors)} mutants not killed and not explained, e.g. `mutmut show {survivors[0]}`:")
        print("\n".join(survivors))
    if unknown:
        print(f"\ndocs/mutation.md lists {len(unknown)} mutants mutants/ does not hold: {', '.join(unknown[:5])}")

    measured = [module for module, _ in rows]
    in_scope = {module: len(by_module.get(module, {})) for module in SCOPE}
    total_not_run = {module: sum(1 for status in by_module.get(module, {}).values() if status == "not checked")
                     for module in SCOPE}
    missing = [f"{module}.py ({sum(1 for _ in by_module.get(module, {}))} mutants)"
               for module in SCOPE if module not in measured]
    write_section("mutation", f"""
## Mutation testing of the core (issue 19)

Machine: {machine()}.
Command: `python bench/mutation.py --modules {' '.join(measured)}` (modules stopped part-way:
`--budget-minutes`, continued with `--resume`), then, after new tests, `--recheck` (mutmut
{mutmut_version()}, configuration in `pyproject.toml` [tool.mutmut]; `--report-only` re-reads
the results). Every run's CPU time, wall time and load: `bench/results/mutation.json`.

Each mutant is one planted change (comparison, constant, operator, argument, string...) in one
function; it runs only the fast tests that reach that function (traced once), fastest first, up
to the first failure, one mutant at a time. "Not killed" = (survived + reached by no fast test)
/ mutants. "Not killed, first run" is before the tests written for the survivors; mutants no
test can tell from the original are listed with their reasons in [mutation.md](mutation.md) and
count as equivalent, not as survivors.

{chr(10).join(table)}

Issue 19's target is at most 10 % not killed: {rate(total)} of the {total['mutants']:,} mutants
measured; {sum(total_not_run.values()):,} of the {sum(in_scope.values()):,} in SCOPE are not measured
yet (the "not run yet" column and the modules below).

Not measured yet: {', '.join(missing) or 'none'}. Fast tests used: those listed in
`pytest_add_cli_args_test_selection` of pyproject.toml.
""", REPO / "docs" / "benchmarks.md")  # this checkout's docs, wherever prefstudio_research is installed from


def mutmut_version() -> str:
    from importlib.metadata import version
    return version("mutmut")


if __name__ == "__main__":
    main()
