"""The key ring: data keys that wrap each lead's own key, and the key of keyed hashes.

A key ring is text of ``NAME=BASE64`` entries, one per line (commas also
separate them, so that the whole ring fits in one environment variable), with
``#`` comments. Each value is 32 random bytes in standard base64.

* ``current=NAME`` names the data key that wraps new lead keys.
* ``hash=...`` is the key of keyed hashes (erasure memory, ledger subjects). It
  must never change: a new one would no longer recognise erased leads.
* Every other entry is a data key. Old data keys stay in the ring until no
  stored row uses them, because rows are rewrapped with the current key only
  when they are written again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from nurture.config.errors import ConfigError

KEY_BYTES = 32
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
RESERVED = ("current", "hash")


@dataclass(frozen=True)
class KeyRing:
    current: str
    data_keys: dict[str, bytes]
    hash_key: bytes

    def keyed_hash(self, kind: str, value: str) -> str:
        """Return the hex HMAC-SHA256 of ``kind:value``; ``kind`` keeps lead ids and addresses apart."""
        message = f"{kind}:{value}".encode("utf-8")
        return hmac.new(self.hash_key, message, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # keys never reach a log or a traceback
        return f"KeyRing(current={self.current!r}, data_keys={sorted(self.data_keys)!r})"


def parse_keys(text: str, where: str) -> KeyRing:
    """Parse key ring text; ``where`` names its source in error messages."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        for item in line.split("#", 1)[0].split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or not NAME_PATTERN.match(name):
                raise ConfigError(f"{where}, line {number}: expected NAME=BASE64, got an entry "
                                  f"without a valid name; names use letters, digits, '_', '.' and '-'")
            if name in entries:
                raise ConfigError(f"{where}, line {number}: key {name!r} is given twice")
            entries[name] = value.strip()
    return _ring(entries, where)


def _ring(entries: dict[str, str], where: str) -> KeyRing:
    current = entries.get("current")
    if not current:
        raise ConfigError(f"{where}: no current=NAME entry; it names the data key for new rows")
    if "hash" not in entries:
        raise ConfigError(f"{where}: no hash=BASE64 entry; create a key ring with `nurture privacy keygen`")
    keys = {name: _decode(name, value, where) for name, value in entries.items() if name not in RESERVED}
    if current not in keys:
        raise ConfigError(f"{where}: current={current} names no data key; add {current}=BASE64")
    return KeyRing(current, keys, _decode("hash", entries["hash"], where))


def _decode(name: str, value: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: key {name!r} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{where}: key {name!r} has {len(raw)} bytes; every key has {KEY_BYTES}")
    return raw


def load_keys(key_file: str, keys: str) -> KeyRing:
    """Return the ring from ``[privacy] key_file``, else from ``[privacy] keys`` (NURTURE_PRIVACY_KEYS)."""
    if key_file:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"[privacy] key_file: cannot read {path}: {exc.strerror}; "
                              "create it with `nurture privacy keygen FILE`") from None
        return parse_keys(text, str(path))
    if keys:
        return parse_keys(keys, "[privacy] keys (NURTURE_PRIVACY_KEYS)")
    raise ConfigError("no privacy keys: set [privacy] key_file or NURTURE_PRIVACY_KEYS; "
                      "create a key file with `nurture privacy keygen FILE`")


def new_key() -> str:
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def keygen_text(existing: str | None = None, now: datetime | None = None) -> str:
    """Return a new key ring, or ``existing`` with a new data key made current (a rotation)."""
    name = (now or datetime.now(timezone.utc)).strftime("k%Y%m%d%H%M%S")
    if existing is None:
        return ("# Nurture key ring. Keep it secret and backed up: without it no stored row can be read.\n"
                f"current={name}\nhash={new_key()}\n{name}={new_key()}\n")
    lines = [line for line in existing.splitlines() if not line.strip().startswith("current=")]
    taken = {line.split("=", 1)[0].strip() for line in lines}
    base, number = name, 1
    while name in taken:
        number += 1
        name = f"{base}-{number}"
    return "\n".join([*lines, f"{name}={new_key()}", f"current={name}"]) + "\n"
