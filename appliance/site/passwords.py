"""Password hashes of staff accounts: salted scrypt, in the format Werkzeug writes, with the standard library.

A hash is ``method$salt$hex``: ``scrypt:N:r:p$salt$hex`` (what we write, and Werkzeug's default) or
``pbkdf2:HASH:ITERATIONS$salt$hex`` (Werkzeug's other method). Hashes that earlier versions made with Werkzeug's
``generate_password_hash`` keep verifying, and ours verify with Werkzeug's ``check_password_hash``. The salt is
used as its text's bytes, as Werkzeug does.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

#: scrypt cost: 2**15 blocks of 8 x 128 bytes (32 MiB, about 0.1 s), one lane; Werkzeug's default too.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SALT_LENGTH = 16
_SALT_CHARS = string.ascii_letters + string.digits
#: pbkdf2 iterations when a stored hash names none (Werkzeug 3.1's default).
_PBKDF2_ITERATIONS = 1_000_000


def _derive(method: str, salt: str, password: str) -> str:
    """The hex digest of ``password`` by ``method`` (``scrypt:N:r:p`` or ``pbkdf2[:HASH[:ITERATIONS]]``).

    Raises
    ------
    ValueError
        An unknown method or bad parameters.
    """
    name, *args = method.split(":")
    if name == "scrypt":
        if len(args) not in (0, 3):
            raise ValueError("scrypt takes 3 parameters")
        n, r, p = map(int, args) if args else (SCRYPT_N, SCRYPT_R, SCRYPT_P)
        # scrypt needs 128 * n * r * p bytes; a little more, as Werkzeug allows, for the library's overhead.
        digest = hashlib.scrypt(password.encode(), salt=salt.encode(), n=n, r=r, p=p, maxmem=132 * n * r * p)
        return digest.hex()
    if name == "pbkdf2":
        if len(args) > 2:
            raise ValueError("pbkdf2 takes 2 parameters")
        hash_name = args[0] if args else "sha256"
        iterations = int(args[1]) if len(args) == 2 else _PBKDF2_ITERATIONS
        return hashlib.pbkdf2_hmac(hash_name, password.encode(), salt.encode(), iterations).hex()
    raise ValueError(f"unknown password hash method {name!r}")


def hash_password(password: str) -> str:
    """A new salted scrypt hash of ``password`` (``scrypt:32768:8:1$salt$hex``)."""
    salt = "".join(secrets.choice(_SALT_CHARS) for _ in range(SALT_LENGTH))
    method = f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}"
    return f"{method}${salt}${_derive(method, salt, password)}"


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches a stored hash (ours or Werkzeug's); False for a hash we cannot read."""
    try:
        method, salt, expected = stored.split("$", 2)
        actual = _derive(method, salt, password)
    except (ValueError, UnicodeError):
        return False
    return hmac.compare_digest(actual, expected)
