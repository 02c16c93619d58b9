"""Encryption at rest for the secrets QBM keeps in Redis (today: the S3 secret keys of storage backends).

Anyone who can read Redis -- a replica, an RDB/AOF backup, a ``MONITOR`` session, a shared Redis -- would
otherwise read every S3 secret key in plain text. They are stored as Fernet tokens (AES-128-CBC plus
HMAC-SHA256, from the ``cryptography`` package) under a key the operator gives in ``QBM_SECRET_KEY``.

Rotation: ``QBM_SECRET_KEY`` is a comma-separated list. The first key encrypts, every key decrypts
(:class:`cryptography.fernet.MultiFernet`), so a new key is put first, the old one kept after it, every
process restarted, ``qbm rotate-secrets`` run (it re-encrypts every stored secret with the first key), and
then the old key dropped.

Stored values carry a ``fernet:`` prefix. A value without it was written before encryption existed; it is
still read (so an upgrade does not break running deployments) and ``qbm rotate-secrets`` encrypts it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

ENCRYPTED_PREFIX = "fernet:"
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}=")
KEY_VARIABLE = "QBM_SECRET_KEY"
GENERATE_HINT = (
    'generate one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


class SecretKeyError(RuntimeError):
    """A secret cannot be stored or read with this process's QBM_SECRET_KEY; the message says what to do."""


class SecretKeyMissing(SecretKeyError):
    """QBM_SECRET_KEY is not set, so a secret cannot be encrypted (or an encrypted one read)."""


class SecretUndecryptable(SecretKeyError):
    """A stored secret was encrypted with a key that is not (any more) in QBM_SECRET_KEY, or was altered."""


def is_fernet_key(value: str) -> bool:
    """True for a Fernet key as ``Fernet.generate_key()`` writes it: 32 bytes in URL-safe base64, 44
    characters ending in one ``=`` (strict, so a key with a typo or trailing junk is not silently accepted)."""
    if not _KEY_RE.fullmatch(value):
        return False
    try:
        return len(base64.urlsafe_b64decode(value.encode("ascii"))) == 32
    except (binascii.Error, ValueError):
        return False


def is_encrypted(stored: str) -> bool:
    return stored.startswith(ENCRYPTED_PREFIX)


class SecretBox:
    """Encrypts with the first of ``keys`` and decrypts with any of them.

    Built with no keys it refuses to encrypt (:class:`SecretKeyMissing`) rather than store a secret in the
    clear: a deployment without QBM_SECRET_KEY can use local storage only.
    """

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self._keys = tuple(keys)
        self._fernet = None
        if self._keys:
            from cryptography.fernet import Fernet, MultiFernet

            self._fernet = MultiFernet([Fernet(key.encode("ascii")) for key in self._keys])

    def __repr__(self) -> str:  # never show the keys
        return f"SecretBox({len(self._keys)} key(s))"

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def encrypt(self, plain: str, *, what: str = "secret") -> str:
        if self._fernet is None:
            raise SecretKeyMissing(
                f"{KEY_VARIABLE} is not set, so the {what} cannot be stored encrypted and is refused; the operator "
                f"must set {KEY_VARIABLE} on every QBM process ({GENERATE_HINT})"
            )
        return ENCRYPTED_PREFIX + self._fernet.encrypt(plain.encode()).decode("ascii")

    def decrypt(self, stored: str, *, what: str = "secret") -> str:
        if not is_encrypted(stored):
            return stored  # written before encryption at rest existed; `qbm rotate-secrets` encrypts it
        if self._fernet is None:
            raise SecretKeyMissing(
                f"the {what} is stored encrypted but {KEY_VARIABLE} is not set in this process; set it to the key "
                "it was encrypted with"
            )
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(stored.removeprefix(ENCRYPTED_PREFIX).encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretUndecryptable(
                f"the {what} cannot be decrypted with any key in {KEY_VARIABLE}; after a key change, keep the old "
                f"key in the list (new key first, then the old one) until `qbm rotate-secrets` has run"
            ) from None

    def rotate(self, stored: str, *, what: str = "secret") -> str:
        """``stored`` re-encrypted with the first key (plain-text legacy values are encrypted)."""
        return self.encrypt(self.decrypt(stored, what=what), what=what)

    def is_current(self, stored: str) -> bool:
        """True when ``stored`` is encrypted with the first key (nothing for rotation to do)."""
        if self._fernet is None or not is_encrypted(stored):
            return False
        from cryptography.fernet import Fernet, InvalidToken

        try:
            Fernet(self._keys[0].encode("ascii")).decrypt(stored.removeprefix(ENCRYPTED_PREFIX).encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True


__all__ = [
    "ENCRYPTED_PREFIX",
    "KEY_VARIABLE",
    "SecretBox",
    "SecretKeyError",
    "SecretKeyMissing",
    "SecretUndecryptable",
    "is_encrypted",
    "is_fernet_key",
]
