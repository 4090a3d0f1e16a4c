"""Every CLI command and every config key is documented."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from appliance import config
from appliance.cli import build_parser

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                children = _commands(sub, full)
                found.extend(children or [full])
    return found


def test_every_command_is_documented_with_help() -> None:
    text = (DOCS / "cli.md").read_text()
    commands = _commands(build_parser())
    assert "serve" in commands and "tls init" in commands
    for command in commands:
        assert f"`appliance {command}" in text, f"docs/cli.md does not document 'appliance {command}'"


def test_every_subcommand_has_help_text() -> None:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            assert all(helps.values()), helps


def test_every_config_key_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    tables = {
        "appliance": config.Config,
        "dicom": config.DicomConfig,
        "dicom.nodes": config.NodeConfig,
        "burn": config.BurnConfig,
        "hl7": config.HL7Config,
        "worklist": config.WorklistConfig,
        "web": config.WebConfig,
        "tls": config.TlsConfig,
        "forwarding": config.ForwardingConfig,
        "dicomweb": config.DicomWebConfig,
        "api": config.ApiConfig,
        "amqp": config.AmqpConfig,
        "[storage]": config.StorageConfig,
        "maintenance": config.MaintenanceConfig,
        "archiving": config.ArchivingConfig,
        "deletion": config.DeletionConfig,
        "email": config.EmailConfig,
        "limits": config.LimitsConfig,
    }
    skip = {
        "dicom",
        "burn",
        "hl7",
        "worklist",
        "web",
        "robots",
        "labels",
        "tls",
        "source",
        "nodes",
        "forwarding",
        "dicomweb",
        "api",
        "amqp",
        "storages",
        "maintenance",
        "archiving",
        "deletion",
        "email",
        "limits",
    }
    for table, cls in tables.items():
        heading = f"\n## `[{table}]`" if table != "dicom.nodes" else "\n### `[[dicom.nodes]]`"
        section = text.split(heading, 1)
        assert len(section) == 2, f"docs/configuration.md has no section for [{table}]"
        body = section[1].split("\n## ", 1)[0]
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            assert f"| `{f.name}` |" in body, f"[{table}] {f.name} is not documented"
