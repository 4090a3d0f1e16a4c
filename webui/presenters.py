"""How the web shows the core's data: settings values, status colours, the burn queue's words.

The core (:mod:`appliance.site`) answers with plain data; the pages, their live refresh (``/api/jobs``) and the
JSON API show it through these functions, so each choice of wording or colour is made once, here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from appliance.site.admin import Masked, SettingsSection

#: What the settings page shows instead of a secret.
MASK = "••••••"

#: Worklist step statuses shown in green (done) and orange (ended without being done); others are open.
WORKLIST_DONE = ("COMPLETED",)
WORKLIST_ENDED = ("DISCONTINUED", "CANCELED", "CANCELLED", "MISSED")


# -- settings ----------------------------------------------------------------------------------------------


def setting_text(value: Any) -> str:
    """A configuration value as the config file spells it (``true``, ``20`` rather than ``True``, ``20.0``)."""
    if isinstance(value, Masked):
        return MASK
    if isinstance(value, Mapping):
        return ", ".join(f"{k} = {setting_text(v)}" for k, v in value.items()) or "(none)"
    if isinstance(value, list | tuple):
        return ", ".join(setting_text(v) for v in value) or "(none)"
    if isinstance(value, bool):  # as the config file spells it, so it can be copied there
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_sections(sections: Sequence[SettingsSection]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The settings page's tables: (title, [(key, text)]), built-in demo robots and all-default tables named."""
    out = []
    for section in sections:
        title = f"{section.name} (built-in demo)" if section.demo else section.name
        if section.defaults:
            out.append((title, [("(every key)", "the defaults (see docs)")]))
        else:
            out.append((title, [(key, setting_text(value)) for key, value in section.values]))
    return out


# -- worklist ----------------------------------------------------------------------------------------------


def worklist_tone(status: str) -> str:
    """``done`` (COMPLETED), ``ended`` (discontinued, cancelled, missed) or ``open``, for the status colour."""
    status = status.upper()
    return "done" if status in WORKLIST_DONE else "ended" if status in WORKLIST_ENDED else "open"


def worklist_items(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Worklist items with a ``tone`` on each step and on the item (done only when every step is done)."""
    out = []
    for item in items:
        steps = [{**step, "tone": worklist_tone(step["status"])} for step in item["steps"]]
        tones = {s["tone"] for s in steps}
        tone = "done" if tones == {"done"} else "ended" if tones <= {"done", "ended"} else "open"
        out.append({**item, "steps": steps, "tone": tone})
    return out


# -- the burn queue ----------------------------------------------------------------------------------------


def study_label(study: Mapping[str, Any] | None, number: int) -> str:
    """A study as the burn queue names it: its date, then its description or modalities."""
    if study is None:
        return f"study {number}"
    date = study["study_date"]
    shown = f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else date
    what = study["description"] or study["modalities"].replace("\\", "/") or "study"
    return f"{shown} {what}".strip()


def disc_progress(disc: Mapping[str, Any]) -> str:
    """One disc's state at the robot, as the burn queue shows it."""
    reason = disc["reason"]
    return f"disc {disc['number']}: {disc['robot_state'] or 'waiting'}" + (f" – {reason}" if reason else "")


def job_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The burn queue's rows (page and JSON): the core's job rows with ``study_labels`` and ``progress`` texts.

    The core's ``study_info`` (one study record or None per study) and ``robot_discs`` (the discs the robot has
    seen) become ``study_labels`` and ``progress``.
    """
    out = []
    for row in rows:
        shown = {k: v for k, v in row.items() if k not in ("study_info", "robot_discs")}
        shown["study_labels"] = [study_label(info, n) for n, info in enumerate(row["study_info"], 1)]
        shown["progress"] = [disc_progress(d) for d in row["robot_discs"]]
        out.append(shown)
    return out
