#!/usr/bin/env bash
# CI: the lower bounds in pyproject.toml are true. In a venv of its own, install every
# runtime dependency and the s3/postgres extras at exactly their declared minimum (pip
# constraints generated from the `>=` bounds; pip resolves everything else as usual),
# build the project with the oldest setuptools [build-system] allows, add the test tools
# of the dev extra (not the linters and mutmut, which no test imports), then run the unit
# tests (the e2e tests start servers and exercise no other dependency version).
# Idempotent; the venv is build/venv-min (ignored by git). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=build/venv-min
mkdir -p build
python3 -m venv --clear "$VENV"
PY="$VENV/bin/python"

# Every bound must be `name[extras]>=version`: a dependency without a lower bound, or with
# another operator, is an error here rather than an untested range.
"$PY" - <<'EOF'
import re
import sys
import tomllib

with open("pyproject.toml", "rb") as file:
    pyproject = tomllib.load(file)
project = pyproject["project"]
requirements = [*pyproject["build-system"]["requires"], *project["dependencies"]]
for extra in ("s3", "postgres"):
    requirements += project["optional-dependencies"][extra]
bound = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*>=\s*([0-9][A-Za-z0-9.]*)")
pins = {}
for requirement in requirements:
    found = bound.fullmatch(requirement.strip())
    if found is None:
        sys.exit(f"min-versions: {requirement!r} is not of the form name>=version")
    name = re.sub(r"[-_.]+", "-", found[1]).lower()
    if pins.setdefault(name, found[3]) != found[3]:
        sys.exit(f"min-versions: {name} has two lower bounds ({pins[name]}, {found[3]})")
with open("build/min-constraints.txt", "w") as out:
    out.writelines(f"{name}=={version}\n" for name, version in sorted(pins.items()))
linters = {"ruff", "mypy", "mutmut", "import-linter"}
tools = [r for r in project["optional-dependencies"]["dev"] if bound.match(r)[1] not in linters]
with open("build/min-test-tools.txt", "w") as out:
    out.writelines(f"{requirement}\n" for requirement in tools)
EOF
echo "min-versions: testing against" $(tr '\n' ' ' < build/min-constraints.txt)

PIP=("$PY" -m pip --quiet --disable-pip-version-check)
"${PIP[@]}" install --upgrade pip
# The oldest setuptools allowed builds the project itself (no build isolation).
"${PIP[@]}" install -c build/min-constraints.txt setuptools
"${PIP[@]}" install --no-build-isolation -c build/min-constraints.txt \
    -e '.[s3,postgres]' -r build/min-test-tools.txt
"${PIP[@]}" check

# pip must have installed the minimum itself, not something newer.
"$PY" - <<'EOF'
import sys
from importlib.metadata import version

from packaging.version import Version

wrong = []
for line in open("build/min-constraints.txt"):
    name, pinned = line.strip().split("==")
    if Version(version(name)) != Version(pinned):
        wrong.append(f"{name} {version(name)} (wanted {pinned})")
if wrong:
    sys.exit("min-versions: not at the declared minimum: " + ", ".join(wrong))
EOF

# The unit tests; -p no:cacheprovider keeps .pytest_cache the main run's. The import rules
# (tests/test_architecture.py) are a lint of our own code: import-linter needs a newer click
# than the app's lowest, and the main run checks them.
"$PY" -m pytest -q -m "not e2e" -p no:cacheprovider -x --ignore=tests/test_architecture.py
