"""Fixtures of the messaging tests: one RabbitMQ node per test session, an appliance wired to it per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from amqpsupport import Broker, BrokerUnavailable, Running

from appliance.config import Config


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A RabbitMQ node of this session (skips the messaging tests with the reason when it cannot start)."""
    try:
        node = Broker(tmp_path_factory.mktemp("rabbitmq"))
        node.start()
    except BrokerUnavailable as exc:
        pytest.skip(f"RabbitMQ cannot start here: {exc}")
    yield node
    node.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start appliances with AMQP; all are stopped at the end of the test."""
    started: list[Running] = []

    def start(cfg: Config, declare: bool = True) -> Running:
        r = Running(cfg, declare)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
