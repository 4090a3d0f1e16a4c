"""Config tables -> drivers and simulators, with clear errors; every option is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from robots.base import RobotConfigError
from robots.epson import EpsonRobot
from robots.primera import PrimeraRobot
from robots.registry import VENDORS, create_robot, create_simulator, option_names
from robots.simulator import SimulatorConfig

DOCS = Path(__file__).resolve().parents[2] / "docs" / "robots.md"


def test_tables_build_the_right_driver_and_several_robots_of_one_vendor() -> None:
    epson = create_robot("epson", {"hotfolder": "/hot/e"})
    assert isinstance(epson, EpsonRobot) and epson.name == "epson" and epson.vendor == "Epson (TD Bridge)"
    second = create_robot("epson-2", {"kind": "epson", "hotfolder": "/hot/e2", "publisher": "PP-100II 2"})
    assert isinstance(second, EpsonRobot) and second.name == "epson-2"
    assert isinstance(create_robot("primera", {}), PrimeraRobot)  # every key has a default


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hotfoldr": "/x"}, r"\[robots.epson\]: unknown key\(s\) hotfoldr; known keys: name, hotfolder"),
        ({"offline_timeout": "60"}, r"robots.epson.offline_timeout: expected a number, got '60'"),
        ({"simulate": "yes"}, r"robots.epson.simulate: expected true or false"),
        ({"local_root": "/var/app"}, r"\[robots.epson\] local_root and bridge_root go together"),
        ({"formats": {"CD": "UDF260"}}, r"formats.CD = 'UDF260'"),
        ({"encoding": "klingon"}, r"unknown code page"),
        ({"kind": "rimage"}, r"unknown robot kind 'rimage'; use one of epson, primera"),
    ],
)
def test_bad_options_are_reported_with_table_and_key(options: dict, message: str) -> None:
    with pytest.raises(RobotConfigError, match=message):
        create_robot("epson", options)


def test_simulator_options_are_validated_too() -> None:
    with pytest.raises(RobotConfigError, match=r"\[robots.primera.simulator\]: unknown key\(s\) disc_secs"):
        create_simulator("primera", {"simulator": {"disc_secs": 1}})
    sim = create_simulator("epson", {"simulator": {"disc_seconds": 0.2, "stackers": {"1": "BD"}}})
    assert sim.sim.disc_seconds == 0.2 and sim.bins_for("BD") == ("1",)


def test_every_option_is_documented_in_docs_robots_md() -> None:
    text = DOCS.read_text(encoding="utf-8")
    keys = {key for kind in VENDORS for key in option_names(kind)}
    keys |= {f"simulator.{key}" for key in SimulatorConfig.__dataclass_fields__}
    missing = sorted(k for k in keys if not re.search(rf"`{re.escape(k)}`", text))
    assert missing == []
