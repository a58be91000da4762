"""The product/research split: prefstudio (what the app, the CLI and the library import) never
imports prefstudio_research or bench/; no module imports itself back through others; tests
and bench scripts reach the harness through the installed research package; the wheel lists
every package and carries the files the app reads at run time."""
import ast
import fnmatch
import tomllib
from pathlib import Path

from prefstudio import shipped
from prefstudio.generators.prompt_style import LEXICON_PATH
from prefstudio.preference.models import DEFAULT_TOKEN_CHECKPOINT
from prefstudio.preference.token_checkpoint import CHECKPOINT_BANK, CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS
from prefstudio.studio import DEFAULT_ADAPTER, DEFAULT_BANK
from prefstudio.taste_summary import PROMPTS_FILE

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("prefstudio", "prefstudio_research")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (a lazy import still
    ties the two modules together); `from a import b` counts as `a` and as `a.b`."""
    names = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: {m for m in imported_names(path) if m in modules and m != name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first repeated at the end), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_product_package_never_imports_research_or_bench_code():
    offenders = {
        name: sorted(m for m in imported_names(path) if m.split(".")[0] in ("prefstudio_research", "bench", "tests"))
        for name, path in package_modules().items() if name.split(".")[0] == "prefstudio"
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_no_module_imports_itself_back_through_others():
    assert find_cycle(import_graph()) is None


def test_the_cycle_check_finds_a_cycle_when_there_is_one():
    graph = import_graph()
    graph["prefstudio.preference.token_checkpoint"] = graph["prefstudio.preference.token_checkpoint"] | {
        "prefstudio.preference.vlm"}
    cycle = find_cycle(graph)
    assert cycle and cycle[0] == cycle[-1] and "prefstudio.preference.vlm" in cycle


def test_tests_and_bench_scripts_import_installed_packages_only():
    """No `bench.…` package and no sibling-module imports: the harness is prefstudio_research."""
    local = {p.stem for p in (REPO / "bench").glob("*.py")} | {"bench"}
    for folder in ("tests", "bench"):
        for path in sorted((REPO / folder).glob("*.py")):
            bad = sorted(m for m in imported_names(path) if m.split(".")[0] in local)
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = {p for p in config["packages"] if p not in config["package-dir"]}
    folders = {module_name(p.parent / "__init__.py") for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    assert listed == folders


def test_the_wheel_carries_every_file_the_app_reads_at_run_time():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {REPO / folder: package for package, folder in config["package-dir"].items()}
    needed = [PROMPTS_FILE, LEXICON_PATH, DEFAULT_BANK] + [
        DEFAULT_TOKEN_CHECKPOINT / name for name in (CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS, CHECKPOINT_BANK)] + [
        path for path in DEFAULT_ADAPTER.iterdir() if path.suffix in (".json", ".safetensors")]
    for path in needed:
        assert path.is_file(), path
        assert path.is_relative_to(shipped.ASSETS) or path.is_relative_to(shipped.CHECKPOINTS), path
        folder = next(f for f in mapped if path.is_relative_to(f))
        patterns = config["package-data"][mapped[folder]]
        relative = path.relative_to(folder).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), (relative, patterns)

