"""How sizes are shown to people: one formatter, one unit system (decimal, as disc capacities are given)."""

from __future__ import annotations


def human_size(value: int | float | None) -> str:
    """Bytes as a short size in decimal units: ``812 B``, ``2.6 kB``, ``2.6 MB``, ``4.7 GB`` (``-`` for none).

    Decimal (1 MB = 1 000 000 bytes) because the media are sold that way: a CD holds 700 MB, a DVD 4.7 GB.
    """
    if not value:
        return "-"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
