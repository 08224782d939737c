"""Declared dependencies are true: every import is declared, bounded, and locked.

``.ci/min-versions.sh`` proves the lower bounds by testing against them; these checks keep
the declarations it reads complete: a module imported by ``app/`` or ``jobs/`` whose
distribution is not declared (httpcore was) installs only by accident.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
#: What a deployment installs: the dependencies and the extras that select a backend.
RUNTIME = [
    Requirement(text)
    for text in [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["s3"]]
    + PROJECT["optional-dependencies"]["postgres"]
]
LOCAL = {"app", "jobs"}


class Imports(ast.NodeVisitor):
    """Collect the top-level modules a file imports at run time (not under TYPE_CHECKING)."""

    def __init__(self) -> None:
        self.modules: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.modules.update(alias.name.partition(".")[0] for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.modules.add(node.module.partition(".")[0])


def imported_modules() -> dict[str, Path]:
    """Return each top-level module imported by app/ and jobs/ with one file importing it."""
    found: dict[str, Path] = {}
    for path in sorted([*ROOT.glob("app/**/*.py"), *ROOT.glob("jobs/**/*.py")]):
        imports = Imports()
        imports.visit(ast.parse(path.read_text(), str(path)))
        for module in sorted(imports.modules):
            found.setdefault(module, path)
    return found


def test_every_imported_distribution_is_declared() -> None:
    """A third-party module imported by app/ or jobs/ comes from a declared distribution."""
    declared = {canonicalize_name(requirement.name) for requirement in RUNTIME}
    providers = packages_distributions()
    missing = []
    for module, path in imported_modules().items():
        if module in LOCAL or module in sys.stdlib_module_names or module == "__future__":
            continue
        distributions = {canonicalize_name(name) for name in providers.get(module, [module])}
        if not distributions & declared:
            missing.append(f"{module} ({', '.join(sorted(distributions))}; {path.name})")
    assert missing == [], f"imported but not declared in pyproject.toml: {missing}"


@pytest.mark.parametrize("requirement", RUNTIME, ids=str)
def test_every_dependency_has_a_lower_bound_that_ci_tests(requirement: Requirement) -> None:
    """Each runtime dependency is `name>=version` (what .ci/min-versions.sh installs exactly)."""
    [specifier] = requirement.specifier
    assert specifier.operator == ">=", f"{requirement}: the minimum job needs a >= bound"


def test_build_backend_can_build_the_license_expression() -> None:
    """license = "MIT" (an SPDX expression) needs setuptools 77 (PEP 639); 69 fails to build."""
    [setuptools] = [Requirement(text) for text in PYPROJECT["build-system"]["requires"]]
    [specifier] = setuptools.specifier
    assert isinstance(PROJECT["license"], str)
    assert specifier.operator == ">=" and Version(specifier.version) >= Version("77")


def locked() -> dict[str, tuple[Version, list[str]]]:
    """Return requirements.lock's pins: name → (version, hashes)."""
    text = (ROOT / "requirements.lock").read_text()
    pins: dict[str, tuple[Version, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        found = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        if found:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            pins[canonicalize_name(found[1])] = (Version(found[2]), hashes)
    return pins


def test_lock_pins_every_runtime_dependency_within_its_bounds() -> None:
    """requirements.lock pins each dependency and extra at a version pyproject allows."""
    pins = locked()
    for requirement in RUNTIME:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is declared but not in requirements.lock (re-lock)"
        assert requirement.specifier.contains(pins[name][0]), f"{name}=={pins[name][0]}"


def test_lock_has_hashes_for_every_pin() -> None:
    """Every pin carries sha256 hashes, so `pip install --require-hashes` can check them."""
    pins = locked()
    assert len(pins) > len(RUNTIME)  # the transitive dependencies are pinned too
    assert [name for name, (_, hashes) in pins.items() if not hashes] == []
