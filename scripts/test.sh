#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
# Used by the README and by .ci/run, so a developer and CI run exactly the same thing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS="curl dcmtk orthanc orthanc-dicomweb orthanc-gdcm poppler-utils zbar-tools xorriso chromium fonts-dejavu-core fonts-wqy-zenhei libusb-1.0-0 hwdata rabbitmq-server libgdcm-tools"
missing=""
for deb in $DEBS; do
    dpkg -s "$deb" >/dev/null 2>&1 || missing="$missing $deb"
done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

python3 -m pip install -q -e ".[test]"

python3 -m ruff check appliance robots hl7 webui tls labels tests bench
python3 -m ruff format --check .   # one code format (ruff format), checked like the lint rules
python3 -m mypy
# The tests too. Their support modules (dicomdata, orthanc_support...) are imported top-level, as pytest's
# `pythonpath = ["tests"]` allows, so tests/ is a search root and a test's module name comes from its path under it
# (tests/hl7/test_x.py is `hl7.test_x`; `import hl7` still finds the real package, whose __init__.py wins over the
# namespace directory tests/hl7). Test functions may stay unannotated (fixtures come by name); their bodies are checked.
MYPYPATH=tests python3 -m mypy --explicit-package-bases --allow-untyped-defs --check-untyped-defs \
    --cache-dir .mypy_cache/tests tests
lint-imports    # the import rules of the design (pyproject.toml [tool.importlinter])
# Two workers (the machines have 2 cores); each starts its own peers (Orthanc, RabbitMQ) once per session.
python3 -m pytest -n 2 "$@"
