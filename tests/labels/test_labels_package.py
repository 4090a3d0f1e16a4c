"""The package's boundaries: what it imports, and what it offers."""

from __future__ import annotations

import ast
from pathlib import Path

import labels

PACKAGE = Path(labels.__file__).parent
FORBIDDEN = {"appliance", "robots", "hl7", "webui", "tls", "hl7apy", "flask", "pynetdicom", "pydicom"}


def test_labels_imports_nothing_of_the_appliance() -> None:
    for module in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{module.name} imports {name}"


def test_public_names_exist() -> None:
    for name in labels.__all__:
        assert getattr(labels, name) is not None
