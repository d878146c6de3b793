"""Encryption of a lead's personal data with a key of its own.

Each lead gets a random 256-bit data key on its first personal field. The key
is stored in the lead's row wrapped (AES-GCM) with the ring's current data
key, and the personal fields are stored encrypted (AES-GCM) with it. Both
ciphertexts are bound to the lead id, so a sealed profile copied to another
lead's row does not open. Erasing the row destroys the lead's key: old copies
in the changelog cannot be opened once compaction has removed them.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nurture.agents.privacy.keys import KeyRing

SEALED_FIELDS = ("email", "phone", "first_name", "last_name")
NONCE_BYTES = 12
CACHE_SIZE = 50_000  # opened envelopes kept, so that an unchanged profile is not sealed again


class VaultError(Exception):
    """A sealed profile that cannot be opened: a missing key, or data that was changed."""


class Vault:
    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._wrappers = {name: AESGCM(key) for name, key in ring.data_keys.items()}
        # lead id -> (envelope, data key, fields) of the latest open or seal
        self._opened: dict[str, tuple[dict[str, str], bytes, dict[str, Any]]] = {}

    def remember(self, lead_id: str, envelope: dict[str, str], dek: bytes, fields: dict[str, Any]) -> None:
        if len(self._opened) >= CACHE_SIZE:
            self._opened.clear()
        self._opened[lead_id] = (envelope, dek, dict(fields))

    def forget(self, lead_id: str) -> None:
        """Drop the lead's key from memory (the lead was erased)."""
        self._opened.pop(lead_id, None)

    def sealed(self, lead_id: str, fields: dict[str, Any]) -> dict[str, str]:
        """Return the envelope of ``fields``, reusing the stored one when nothing changed."""
        known = self._opened.get(lead_id)
        if known is not None and known[2] == fields and known[0]["kid"] == self.ring.current:
            return known[0]
        envelope, dek = self.seal(lead_id, fields, known[1] if known is not None else None)
        self.remember(lead_id, envelope, dek, fields)
        return envelope

    def seal(self, lead_id: str, fields: dict[str, Any], dek: bytes | None = None) -> tuple[dict[str, str], bytes]:
        """Encrypt ``fields``; return the envelope for the row and the lead's data key."""
        dek = dek or AESGCM.generate_key(bit_length=256)
        aad = lead_id.encode("utf-8")
        wrap_nonce, data_nonce = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
        wrapped = self._wrappers[self.ring.current].encrypt(wrap_nonce, dek, aad)
        data = AESGCM(dek).encrypt(data_nonce, orjson.dumps(fields), aad)
        envelope = {"kid": self.ring.current, "dek": _b64(wrap_nonce + wrapped), "data": _b64(data_nonce + data)}
        return envelope, dek

    def open(self, lead_id: str, envelope: dict[str, str]) -> tuple[dict[str, Any], bytes]:
        """Decrypt an envelope; return the fields and the lead's data key.

        The envelope that this vault sealed or opened last for the lead is not
        decrypted again, because the same ciphertext contains the same fields.
        """
        known = self._opened.get(lead_id)
        if known is not None and known[0] == envelope:
            return dict(known[2]), known[1]
        wrapper = self._wrappers.get(envelope["kid"])
        if wrapper is None:
            raise VaultError(f"lead {lead_id!r} is sealed with data key {envelope['kid']!r}, which the "
                             "key ring lacks; add the old key back to the ring")
        aad = lead_id.encode("utf-8")
        try:
            sealed_key = base64.b64decode(envelope["dek"])
            dek = wrapper.decrypt(sealed_key[:NONCE_BYTES], sealed_key[NONCE_BYTES:], aad)
            data = base64.b64decode(envelope["data"])
            fields = orjson.loads(AESGCM(dek).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], aad))
        except (InvalidTag, ValueError) as exc:
            raise VaultError(f"the sealed profile of lead {lead_id!r} does not open: it was changed, "
                             f"or the data key {envelope['kid']!r} in the ring is not the one that sealed it") from exc
        return fields, dek


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
