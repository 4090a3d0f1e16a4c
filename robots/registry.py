"""Robots by name: turn a raw ``[robots.<name>]`` TOML table into a driver or a simulator.

The table is validated against the option dataclass of its vendor (:class:`~robots.epson.EpsonConfig`,
:class:`~robots.primera.PrimeraConfig`); unknown keys and wrong types are reported with the table's name.  A
table's vendor is its ``kind`` key, or the table name itself (``[robots.epson]``), so several robots of one
vendor can be configured as ``[robots.epson-2] kind = "epson"``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from robots.base import DiscRobot, RobotConfigError
from robots.epson import EpsonConfig, EpsonRobot
from robots.hotfolder import HotFolderConfig
from robots.primera import PrimeraConfig, PrimeraRobot
from robots.simulator import BridgeSimulator, SimulatorConfig
from robots.simulator_epson import EpsonSimulator
from robots.simulator_primera import PrimeraSimulator

T = TypeVar("T")


@dataclass(frozen=True)
class Vendor:
    """How to build one vendor's driver and simulator from a config table."""

    config: type[HotFolderConfig]
    robot: Callable[[Any], DiscRobot]
    simulator: Callable[[Any, SimulatorConfig], BridgeSimulator]


VENDORS: Mapping[str, Vendor] = {
    "epson": Vendor(EpsonConfig, EpsonRobot, EpsonSimulator),
    "primera": Vendor(PrimeraConfig, PrimeraRobot, PrimeraSimulator),
}


def option_names(kind: str) -> list[str]:
    """Every key a ``[robots.<kind>]`` table may hold (``kind`` included), for docs and error messages."""
    return ["kind", *(f.name for f in dataclasses.fields(_vendor(kind).config))]


def create_robot(kind: str, options: Mapping[str, Any]) -> DiscRobot:
    """Build a driver from a ``[robots.<name>]`` table.

    Parameters
    ----------
    kind : str
        The table name (``"epson"``, ``"primera"``, or any name whose table has a ``kind`` key).
    options : Mapping
        The raw TOML table.

    Returns
    -------
    DiscRobot

    Raises
    ------
    RobotConfigError
        Unknown vendor, unknown key, wrong type or value.
    """
    vendor, config = _config(kind, options)
    return vendor.robot(config)


def create_simulator(kind: str, options: Mapping[str, Any]) -> BridgeSimulator:
    """Build the bridge simulator for the same table (its ``simulator`` sub-table tunes it); call ``start()``.

    Raises
    ------
    RobotConfigError
        As :func:`create_robot`, and for a bad ``simulator`` sub-table.
    """
    vendor, config = _config(kind, options)
    sim = build_config(SimulatorConfig, config.simulator, f"robots.{kind}.simulator")
    return vendor.simulator(config, sim)


def _vendor(kind: str) -> Vendor:
    try:
        return VENDORS[kind]
    except KeyError:
        raise RobotConfigError(f"unknown robot kind {kind!r}; use one of {', '.join(VENDORS)}") from None


def _config(name: str, options: Mapping[str, Any]) -> tuple[Vendor, HotFolderConfig]:
    if not isinstance(options, Mapping):
        raise RobotConfigError(f"[robots.{name}] must be a table")
    table = dict(options)
    kind = table.pop("kind", name)
    vendor = _vendor(kind)
    table.setdefault("name", name)
    table.setdefault("hotfolder", f"var/robots/{name}")
    return vendor, build_config(vendor.config, table, f"robots.{name}")


def build_config(cls: type[T], table: Mapping[str, Any], where: str) -> T:
    """Validate a TOML table against an option dataclass and build it.

    Parameters
    ----------
    cls : type
        A dataclass whose fields are the allowed keys and whose annotations give their types.
    table : Mapping
    where : str
        Dotted table name for messages (``"robots.epson"``).

    Raises
    ------
    RobotConfigError
        With the table and key in the message.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise RobotConfigError(f"[{where}]: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(names)}")
    values = {key: _coerce(hints[key], value, f"{where}.{key}") for key, value in table.items()}
    try:
        return cls(**values)
    except RobotConfigError as exc:
        raise RobotConfigError(f"[{where}] {exc}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise RobotConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RobotConfigError(f"{where}: expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RobotConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RobotConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise RobotConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise RobotConfigError(f"{where}: expected a table, got {value!r}")
        args = typing.get_args(hint)
        if args and args[1] is str and not all(isinstance(v, str) for v in value.values()):
            raise RobotConfigError(f"{where}: every value must be a string")
        return {str(k): v for k, v in value.items()}
    raise RobotConfigError(f"{where}: unsupported option type {hint!r}")  # pragma: no cover
