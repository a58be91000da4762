"""Mutation testing of the core (issue 19): how many planted bugs the fast unit tests catch.

    python bench/mutation.py [--modules validation preference/losses ...] [--report-only]

mutmut (configuration: [tool.mutmut] in pyproject.toml) copies prefstudio/ into mutants/,
plants one small change per mutant in the modules of SCOPE (a flipped comparison, a changed
constant, a dropped argument...) and runs, for each mutant, only the fast tests that reach
the function it changed (found by tracing one clean run), fastest first, stopping at the
first failure. One worker (`--max-children 1`): this machine's two cores are shared.

Each module given (default: all of SCOPE, in that order) is run anew; modules not given keep
the results mutants/ holds from earlier runs, so a long scope can be measured a few modules
at a time. Then this prints, per module, mutants killed / survived / reached by no fast test,
and rewrites the mutation section of docs/benchmarks.md from every result in mutants/.

A survivor is either killed by a new test or listed in docs/mutation.md as equivalent (no
test can tell it from the original), with its reason; the report counts both.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import machine, write_section  # noqa: E402

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
KILLED = {"killed", "timeout"}  # a mutant that makes the tests hang is caught by the time limit


def mutant_prefix(module: str) -> str:
    return "prefstudio." + module.replace("/", ".") + "."


def run_module(module: str) -> float:
    """One mutmut run over every mutant of `module`; returns its CPU seconds (all processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    mutmut = Path(sys.executable).with_name("mutmut")
    log = REPO / "mutants" / f"run-{module.replace('/', '.')}.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "w") as out:
        code = subprocess.call([str(mutmut), "run", "--max-children", "1", mutant_prefix(module) + "*"],
                               cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        sys.exit(f"mutmut failed on {module} (exit {code}); its output is in {log}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


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


def equivalents() -> dict[str, str]:
    """Mutant name → why it is equivalent, from the table rows of docs/mutation.md."""
    rows = re.findall(r"^\| `(prefstudio\.[^`]+)` \| (.+?) \|$", EQUIVALENTS.read_text(), re.M) \
        if EQUIVALENTS.exists() else []
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", choices=SCOPE, default=None,
                        help="modules to (re)run; default: all of SCOPE")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report what mutants/ holds")
    args = parser.parse_args()

    modules = [] if args.report_only else (args.modules or SCOPE)
    cpu_by_module, wall_by_module, loads = {}, {}, []
    for module in modules:
        start = time.time()
        cpu_by_module[module] = run_module(module)
        wall_by_module[module] = time.time() - start
        loads.append(os.getloadavg()[0])
        print(f"{module}: {cpu_by_module[module]:.0f} s CPU, {wall_by_module[module]:.0f} s wall, "
              f"load {loads[-1]:.1f}", flush=True)

    by_module = results()
    explained = equivalents()
    unknown = sorted(set(explained) - {name for statuses in by_module.values() for name in statuses})
    rows, total = summarise(by_module, explained)
    table = ["| module | mutants | killed | equivalent (docs/mutation.md) | survived | no fast test reaches it "
             "| not killed | not run yet |",
             "|---|---|---|---|---|---|---|---|"]
    for module, count in rows:
        table.append(f"| {module}.py | {count['mutants']} | {count['killed']} | {count['equivalent']} | "
                     f"{count['survived']} | {count['no tests']} | {rate(count)} | {count['not checked']} |")
    table.append(f"| **all measured** | {total['mutants']} | {total['killed']} | {total['equivalent']} | "
                 f"{total['survived']} | {total['no tests']} | **{rate(total)}** | {total['not checked']} |")
    print("\n".join(table))
    survivors = sorted(name for statuses in by_module.values() for name, status in statuses.items()
                       if status not in KILLED | {"not checked"} and name not in explained)
    if survivors:
        print(f"\n{len(survivors)} mutants not killed and not explained, e.g. `mutmut show {survivors[0]}`:")
        print("\n".join(survivors))
    if unknown:
        print(f"\ndocs/mutation.md lists {len(unknown)} mutants mutants/ does not hold: {', '.join(unknown[:5])}")

    measured = [module for module in SCOPE if module in by_module]
    missing = [module for module in SCOPE if module not in by_module]
    this_run = ""
    if modules:
        this_run = (f"This run: {', '.join(modules)} — {sum(cpu_by_module.values()) / 60:.1f} CPU-minutes, "
                    f"{sum(wall_by_module.values()) / 60:.1f} min wall, load average "
                    f"{min(loads):.1f}–{max(loads):.1f} (other jobs shared the 2 cores).\n")
    config = REPO / "pyproject.toml"
    write_section("mutation", f"""
## Mutation testing of the core (issue 19)

Machine: {machine()}.
Command: `python bench/mutation.py --modules {' '.join(measured)}` (mutmut, configuration in
`pyproject.toml` [tool.mutmut]; `python bench/mutation.py --report-only` re-reads the results).
{this_run}
Each mutant is one planted change (comparison, constant, operator, argument, string...) in one
function; it runs only the fast tests that reach that function (traced), fastest first, up to the
first failure. "Not killed" = (survived + reached by no fast test) / mutants; mutants that no test
can tell from the original are listed with their reasons in [mutation.md](mutation.md) and count
as equivalent, not as survivors.

{chr(10).join(table)}

Not measured yet: {', '.join(missing) or 'none'}. Fast tests used: those listed in
`pytest_add_cli_args_test_selection` of {config.name}.
""")


if __name__ == "__main__":
    main()
