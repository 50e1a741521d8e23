"""The layers hold: `lint-imports` keeps the contracts in pyproject.toml, and would break
on each of the cycles and short-cuts a review once found; only the composition root reads
the environment; no package calls another's private functions.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["aggregates", "commands", "complaints", "consumers", "projections", "read_api"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=where, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(where)}, timeout=120)


def test_the_contracts_are_kept() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


# Each: a module, an import added to it, the contract that must break. The first ones are
# the cycles and short-cuts the issue found; the others, the rest of the rules.
VIOLATIONS = [
    ("projections/base.py", "import consumers.read_node", "Layers"),  # projections -> consumers (a cycle)
    ("projections/queries.py", "from consumers import rebuild", "Layers"),
    ("projections/models.py", "import commands.desk", "Layers"),  # the read side writing commands
    ("commands/cli.py", "import consumers.cli", "Layers"),  # a bound-less root inside commands
    ("commands/cli.py", "import projections.queries", "Layers"),
    ("commands/desk.py", "import complaints.settings", "Layers"),  # settings read outside the root
    ("consumers/relay.py", "import complaints.store", "Layers"),
    ("aggregates/complaint.py", "import commands.models", "Layers"),  # the domain knows nothing of ours
    ("read_api/figures.py", "import consumers.read_node", "Layers"),
    ("read_api/app.py", "import commands.desk", "never reaches the write side"),
]


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    assert lint_imports(target).returncode == 0  # the copy itself is clean
    return target


@pytest.mark.parametrize(("module", "line", "contract"), VIOLATIONS, ids=[f"{m}:{l}" for m, l, _ in VIOLATIONS])
def test_each_forbidden_import_breaks_a_contract(copy: Path, module: str, line: str, contract: str) -> None:
    path = copy / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{line}  # injected by tests/test_layers.py\n")
        done = lint_imports(copy)
    finally:
        path.write_text(original)
    assert done.returncode != 0, f"{line} in {module} was allowed:\n{done.stdout}"
    broken = [row for row in done.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(contract in row for row in broken), done.stdout


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def environment_reads(tree: ast.AST) -> list[str]:
    """Where a module reads the environment: os.environ, os.getenv, typer's envvar=."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                a.name in ("environ", "getenv") for a in node.names):
            found.append(f"line {node.lineno}: from os import ...")
        elif isinstance(node, ast.keyword) and node.arg in ("envvar", "auto_envvar_prefix"):
            found.append(f"line {node.lineno}: {node.arg}=")
        elif isinstance(node, ast.ImportFrom) and node.module == "pydantic_settings":
            found.append(f"line {node.lineno}: pydantic_settings")
    return found


def test_only_the_composition_root_reads_the_environment() -> None:
    readers = {str(p.relative_to(ROOT)): where for p in modules(*PACKAGES)
               if (where := environment_reads(ast.parse(p.read_text())))}
    assert set(readers) == {"complaints/settings.py"}, readers


def test_the_environment_check_finds_what_it_looks_for() -> None:
    for source in ("import os\nos.environ.get('X')", "import os\nos.getenv('X')", "from os import environ",
                   "import typer\ntyper.Option(envvar='X')", "from pydantic_settings import BaseSettings"):
        assert environment_reads(ast.parse(source)), source


def private_calls(path: Path) -> list[str]:
    """Uses of another package's private names (`queries._x`, `from x.y import _z`)."""
    package = path.relative_to(ROOT).parts[0]
    tree = ast.parse(path.read_text())
    foreign: set[str] = set()  # local names bound to modules of other packages of ours
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES and alias.name.split(".")[0] != package:
                    foreign.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in PACKAGES and top != package:
                for alias in node.names:
                    if alias.name.startswith("_"):
                        found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                    foreign.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in foreign
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_package_calls_another_packages_private_functions() -> None:
    callers = {str(p.relative_to(ROOT)): where for p in modules(*PACKAGES) if (where := private_calls(p))}
    assert callers == {}


def test_the_private_call_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    probe = ROOT / "read_api" / "_probe_private_calls.py"
    try:
        probe.write_text("from projections import queries\nfrom projections.sla import _x\nqueries._sla_attainment(1)\n")
        assert len(private_calls(probe)) == 2
    finally:
        probe.unlink()
