"""ISO 9660 + Joliet disc images of a staged folder (pycdlib).

The DICOM part already has PS3.12 names (8 characters ``A-Z 0-9 _``, no extension), which are ISO 9660 Level 1
names as they are. Other content (README.TXT, INDEX.HTM, a viewer with long mixed-case names) keeps its real
names in the Joliet tree, which Windows and macOS read, and gets unique 8.3 names in the ISO 9660 tree. The
File-set ID is the volume identifier (PS3.12 F.1.2.2).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from appliance.errors import AuthoringError

#: ISO 9660 allows 8 directory levels, the root counting as the first (ECMA-119 6.8.2.1).
MAX_DEPTH = 8
_JOLIET_MAX = 64
_NOT_D_CHAR = re.compile(r"[^A-Z0-9_]")
_JOLIET_BAD = re.compile(r"[*/:;?\\\x00-\x1f]")


def volume_id(text: str) -> str:
    """A File-set ID / volume identifier: at most 16 characters of ``A-Z 0-9 _`` (a CS value and d-characters)."""
    clean = _NOT_D_CHAR.sub("_", text.upper()).strip("_")[:16]
    return clean or "DICOM"


def _iso_name(name: str, is_dir: bool, used: set[str]) -> str:
    """An 8.3 (file) or 8-character (folder) Level 1 name, unique in its folder."""
    if is_dir or "." not in name.lstrip("."):
        stem, ext = name, ""
    else:
        stem, _, ext = name.rpartition(".")
    stem = _NOT_D_CHAR.sub("_", stem.upper())[:8] or "_"
    ext = _NOT_D_CHAR.sub("_", ext.upper())[:3]

    def full(base: str) -> str:
        return f"{base}.{ext}" if ext else base

    candidate, n = stem, 1
    while full(candidate) in used:
        suffix = f"_{n}"
        candidate = stem[: 8 - len(suffix)] + suffix
        n += 1
    used.add(full(candidate))
    return full(candidate)


def _joliet_name(name: str) -> str:
    clean = _JOLIET_BAD.sub("_", name)
    if len(clean) > _JOLIET_MAX:
        stem, dot, ext = clean.rpartition(".")
        keep = _JOLIET_MAX - len(dot + ext) if dot and len(ext) < 10 else _JOLIET_MAX
        clean = (stem[:keep] + dot + ext) if dot and len(ext) < 10 else clean[:_JOLIET_MAX]
    return clean


def build_iso(root: Path, out: Path, vol_ident: str, publisher: str = "", application: str = "") -> int:
    """Write an ISO 9660 (Level 1) + Joliet image of everything under ``root``.

    Parameters
    ----------
    root : Path
        The staged disc content.
    out : Path
        The image file; written under a temporary name and renamed when complete.
    vol_ident : str
        Volume identifier: the File-set ID (see :func:`volume_id`).
    publisher, application : str
        Publisher (the institution) and application identifiers of the volume descriptor.

    Returns
    -------
    int
        Size of the image in bytes.

    Raises
    ------
    AuthoringError
        The tree is deeper than ISO 9660 allows, or pycdlib refuses a name.
    OSError
        The image cannot be written (a full disk is reported by the caller).
    """
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=1,
        vol_ident=vol_ident,
        sys_ident="",
        pub_ident_str=publisher[:128],
        app_ident_str=application[:128],
        joliet=3,
    )
    tmp = out.with_name(f".{out.name}.part")
    try:
        _add_tree(iso, root, "", "", 1)
        iso.write(str(tmp), blocksize=1 << 20)
        iso.close()
        os.replace(tmp, out)
    except PyCdlibException as exc:
        raise AuthoringError(f"cannot build the disc image of {root}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return out.stat().st_size


def _add_tree(iso: pycdlib.PyCdlib, folder: Path, iso_dir: str, joliet_dir: str, depth: int) -> None:
    used: set[str] = set()
    entries = sorted(os.scandir(folder), key=lambda e: (not e.is_dir(), e.name))
    for entry in entries:
        is_dir = entry.is_dir()
        iso_name = _iso_name(entry.name, is_dir, used)
        joliet_name = _joliet_name(entry.name)
        iso_path = f"{iso_dir}/{iso_name}"
        joliet_path = f"{joliet_dir}/{joliet_name}"
        if is_dir:
            if depth + 1 > MAX_DEPTH:
                raise AuthoringError(
                    f"{entry.path} is more than {MAX_DEPTH} folder levels deep; ISO 9660 cannot "
                    "hold it (flatten the viewer folder)"
                )
            iso.add_directory(iso_path, joliet_path=joliet_path)
            _add_tree(iso, Path(entry.path), iso_path, joliet_path, depth + 1)
        elif entry.is_file():
            iso.add_file(
                entry.path, iso_path=f"{iso_path};1" if "." in iso_name else f"{iso_path}.;1", joliet_path=joliet_path
            )
