"""The house rules that code review would otherwise have to remember: import direction, no cycles, light CLIs,
modules of a readable size, shipped configs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ondevice", "rfml", "slm")
MAX_MODULE_LINES = 600


def module_files() -> dict[str, Path]:
    """Every library module by dotted name (``rfml.data.base``; a package by its ``__init__``)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, at module level or inside functions (a lazy import is still a use).

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``. The implicit import of
    a module's parent packages is not counted: every package would otherwise depend on its own ``__init__``.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in modules else source)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, …, a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step) :], step]
            elif not state.get(step):
                state[step] = 1
                path.append(step)
                stack.append(iter(sorted(graph[step])))
    return None


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_walker_resolves_relative_and_submodule_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from . import base\nfrom .views import View\nimport rfml.dsp\n\ndef f():\n    from x import y\n")
    modules = {"rfml.data.base": source, "rfml.data.views": source, "rfml.dsp": source, "rfml.data.m": source}
    assert imports_of("rfml.data.m", source, modules) == {"rfml.data.base", "rfml.data.views", "rfml.dsp"}


def test_no_import_cycle_between_library_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_dependencies_point_one_way() -> None:
    """``ondevice`` is the shared core: it imports neither side; ``rfml`` and ``slm`` never import each other."""
    forbidden = {"ondevice": ("rfml", "slm"), "rfml": ("slm",), "slm": ("rfml",)}
    wrong = [
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        for target in targets
        if target.split(".")[0] in forbidden[name.split(".")[0]]
    ]
    assert wrong == []


def test_no_library_module_is_over_600_lines() -> None:
    long = {name: n for name, path in module_files().items() if (n := len(path.read_text().splitlines())) > 600}
    assert long == {}


@pytest.mark.parametrize("module", ["rfml.cli", "slm.cli", "ondevice.cli"])
def test_importing_a_command_loads_neither_torch_nor_lightning(module: str) -> None:
    """``rfml --help`` must print in well under 2 s; the CLI module alone may not pull in torch or Lightning."""
    probe = (
        f"import sys, {module}; heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'lightning'}}); "
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("module", ["rfml.cli", "slm.cli", "ondevice.cli"])
def test_help_and_version_list_the_commands_without_loading_torch(module: str) -> None:
    probe = (
        f"import sys, {module} as cli; code = cli.main(['--help']); "
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, sorted(sys.modules); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--version" in done.stdout
    version = subprocess.run(
        [sys.executable, "-c", f"import {module} as cli; cli.main(['--version'])"], capture_output=True, text=True
    )
    assert version.stdout.split()[0] == module.split(".")[0] and version.stdout.split()[1][0].isdigit()


def test_shipped_configs_are_package_data() -> None:
    """A non-editable install carries the YAML configs; pyproject's package-data must cover every one."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package in ("rfml", "slm"):
        shipped = {p.relative_to(ROOT / package) for p in (ROOT / package / "configs").rglob("*.yaml")}
        globs = [glob for glob in declared[package] if glob != "py.typed"]  # PEP 561's marker, not a config
        covered = {p.relative_to(ROOT / package) for glob in globs for p in (ROOT / package).glob(glob)}
        assert shipped and shipped == covered, package


def test_a_shipped_config_name_resolves_to_its_file() -> None:
    from ondevice.command_line import resolve_config, resolve_configs, shipped_configs

    shipped = shipped_configs("rfml")
    assert {"clst", "skd_kd_cnn", "data/rml2016.10a"} <= set(shipped)
    assert set(shipped_configs("slm")) == {"tiny", "tiny_distill", "tiny_teacher"}
    assert resolve_config("snr_study_ism", "rfml") == str(shipped["snr_study_ism"])
    assert resolve_config("not_shipped.yaml", "rfml") == "not_shipped.yaml"  # left for the reader to report
    args = resolve_configs(["fit", "-c", "clst", "--config=data/rml2016.10a.yaml", "-c", "mine.yaml"], "rfml")
    assert args == ["fit", "-c", str(shipped["clst"]), f"--config={shipped['data/rml2016.10a']}", "-c", "mine.yaml"]
