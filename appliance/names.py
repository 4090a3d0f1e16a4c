"""How person names are shown to people: one rule for the web pages, the staff lists, the CLI, e-mails, the disc
README/INDEX.HTM and (by default) the printed labels and slips.

The rule, for a DICOM PN ``family^given^middle^prefix^suffix`` (up to three ``=``-separated groups:
alphabetic, ideographic, phonetic):

* ``FAMILY, Prefix Given Middle, Suffix``: the family name in capitals (as its script writes them: Greek
  capitals lose their accents), everything else as stored; each part only when it is there
  (``Müller^Jürgen`` -> ``MÜLLER, Jürgen``; ``DOE^JOHN`` -> ``DOE, JOHN``; ``^John`` -> ``John``). Capitals
  tell the family name from the given name at a glance, as patient-identification guidance asks, and as the
  labels have always printed it;
* components are split at ``^``, trimmed, runs of spaces made one, and empty components dropped;
* only the alphabetic group is shown; the ideographic, then the phonetic group is shown only when the
  alphabetic one is empty, written family name first without comma and without changing case
  (``=山田^太郎`` -> ``山田 太郎``);
* no name at all is shown as ``(no name)``.

The formatting itself is :func:`labels.fields.format_person_name` (``family_comma_given`` style), the one the
label renderer uses, so a label with the default ``[labels] name_style`` prints the very same text; this
module is the entry point for everything else. Search is not a display matter: the staff search matches names
without regard to case, accents or the order of their parts.
"""

from __future__ import annotations

from labels.fields import NAME_GROUPS, format_person_name

__all__ = ["NAME_STYLE", "NO_NAME", "display_name"]

#: What is shown for an empty name.
NO_NAME = "(no name)"
#: The label name style that writes names by this rule (the default of ``[labels] name_style``).
NAME_STYLE = "family_comma_given"


def display_name(value: object, empty: str = NO_NAME) -> str:
    """A DICOM person name as every page and listing of the appliance shows it.

    Parameters
    ----------
    value : object
        The PN as stored (``Doe^John^A``, ``Yamada^Tarou=山田^太郎``); ``None`` and pydicom's
        ``PersonName`` are accepted (``str()`` of the value is used).
    empty : str
        Shown when the name is empty.

    Returns
    -------
    str
        ``FAMILY, Prefix Given Middle, Suffix`` with empty parts dropped (see the module docstring).

    Examples
    --------
    >>> display_name("Doe^John^A")
    'DOE, John A'
    >>> display_name("Doe^John^^Dr.^Jr.")
    'DOE, Dr. John, Jr.'
    >>> display_name("=山田^太郎")
    '山田 太郎'
    """
    text = "" if value is None else str(value)
    shown = format_person_name(text, NAME_STYLE, NAME_GROUPS)
    return shown[0] if shown else empty
