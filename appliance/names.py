"""How person names are shown to people: one rule for the web pages, the staff lists, the CLI and the disc README.

The rule, for a DICOM PN ``family^given^middle^prefix^suffix`` (up to three ``=``-separated groups:
alphabetic, ideographic, phonetic):

* only the alphabetic group is shown; the ideographic, then the phonetic group is used only when the
  alphabetic one is empty (a name recorded in kanji alone is still shown);
* components are split at ``^``, trimmed, inner runs of spaces made one, and empty components dropped;
* the result is ``Family, Prefix Given Middle, Suffix``, each part only when it is there
  (``DOE^JOHN`` -> ``DOE, JOHN``; ``Müller^Jürgen`` -> ``Müller, Jürgen``; ``^John`` -> ``John``);
* the case is kept as stored: ``DOE^JOHN`` stays ``DOE, JOHN``, ``Doe^John`` stays ``Doe, John``;
* no name at all is shown as ``(no name)``.

Search is not a display matter: :mod:`appliance.matching` matches names case- and accent-insensitively.
"""

from __future__ import annotations

__all__ = ["NO_NAME", "display_name"]

#: What is shown for an empty name.
NO_NAME = "(no name)"


def _components(group: str) -> list[str]:
    parts = [" ".join(p.split()) for p in group.split("^")]
    return (parts + [""] * 5)[:5]


def display_name(value: object, empty: str = NO_NAME) -> str:
    """A DICOM person name as every page and listing of the appliance shows it.

    Parameters
    ----------
    value : object
        The PN as stored (``DOE^JOHN^A``, ``Yamada^Tarou=山田^太郎``); ``None`` and pydicom's
        ``PersonName`` are accepted (``str()`` of the value is used).
    empty : str
        Shown when the name is empty.

    Returns
    -------
    str
        ``Family, Prefix Given Middle, Suffix`` with empty parts dropped, in the case stored.

    Examples
    --------
    >>> display_name("DOE^JOHN^A")
    'DOE, JOHN A'
    >>> display_name("Doe^John^^Dr.^Jr.")
    'Doe, Dr. John, Jr.'
    >>> display_name("=山田^太郎")
    '山田, 太郎'
    """
    text = "" if value is None else str(value)
    groups = [g for g in text.split("=")[:3] if g.replace("^", "").strip()]
    if not groups:
        return empty
    family, given, middle, prefix, suffix = _components(groups[0])
    first = " ".join(p for p in (prefix, given, middle) if p)
    name = ", ".join(p for p in (family, first) if p)
    return ", ".join(p for p in (name, suffix) if p) or empty
