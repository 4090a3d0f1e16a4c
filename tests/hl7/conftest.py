"""Fixtures of the HL7 tests: an appliance with its MLLP listener, and a connected client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hl7support import HL7Node, MLLPClient


@pytest.fixture
def hl7_factory(tmp_path: Path) -> Iterator[Callable[..., HL7Node]]:
    """Start appliances with [hl7]/[worklist]/[dicom] overrides; all stopped at the end."""
    nodes: list[HL7Node] = []

    def start(
        hl7: dict[str, Any] | None = None, worklist: dict[str, Any] | None = None, ssl_context: Any = None, **dicom: Any
    ) -> HL7Node:
        node = HL7Node(tmp_path / f"hl7node{len(nodes)}", hl7, worklist, ssl_context, **dicom)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def hl7_node(hl7_factory: Callable[..., HL7Node]) -> HL7Node:
    """An appliance with the spec's test configuration."""
    return hl7_factory()


@pytest.fixture
def client(hl7_node: HL7Node) -> Iterator[MLLPClient]:
    """An MLLP connection to ``hl7_node``."""
    c = MLLPClient(hl7_node.hl7_port)
    yield c
    c.close()
