"""Erasure memory: which leads and addresses were erased, and when, without personal data.

Every worker keeps the whole memory, read from the compacted erasures topic, so
that an event of an erased lead replayed from the earliest offset, on any
partition, does not bring the lead back, and a new lead with an erased address
needs consent given after the erasure. Keys are keyed hashes
(``KeyRing.keyed_hash``) of ``lead:<id>``, ``email:<address>`` and ``phone:<number>``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

from nurture.agents.privacy.keys import KeyRing

ADDRESS_FIELDS = ("email", "phone")


def normalise(kind: str, value: str) -> str:
    """Addresses compare case-insensitively; phone numbers by their digits and a leading '+'."""
    value = value.strip()
    if kind == "email":
        return value.lower()
    if kind == "phone":
        return ("+" if value.startswith("+") else "") + "".join(ch for ch in value if ch.isdigit())
    return value


class ErasureMemory:
    def __init__(self, ring: KeyRing | None = None) -> None:
        self.ring = ring
        self._erased: dict[str, int] = {}  # keyed hash -> erased at, epoch ms
        self.loaded = asyncio.Event()  # set once the erasures topic was read to its end at start

    def key(self, kind: str, value: str) -> str:
        if self.ring is None:
            raise RuntimeError("the erasure memory has no key ring yet; the worker loads it at start")
        return self.ring.keyed_hash(kind, normalise(kind, value))

    def add(self, key: str, erased_at: int) -> None:
        self._erased[key] = max(erased_at, self._erased.get(key, erased_at))

    def lead_erased_at(self, lead_id: str) -> int | None:
        return self._erased.get(self.key("lead", lead_id)) if self._erased else None

    def address_erased_at(self, profile: dict[str, Any]) -> int | None:
        """Return the latest erasure of any address in ``profile``, or None."""
        if not self._erased:
            return None
        times = [self._erased.get(self.key(kind, str(profile[kind])))
                 for kind in ADDRESS_FIELDS if profile.get(kind)]
        return max((at for at in times if at is not None), default=None)

    def keys_of(self, lead_id: str, profile: dict[str, Any]) -> list[str]:
        """Return the memory keys that an erasure of this lead records."""
        return [self.key("lead", lead_id),
                *(self.key(kind, str(profile[kind])) for kind in ADDRESS_FIELDS if profile.get(kind))]

    def load(self, records: Iterable[tuple[bytes, bytes | None]]) -> None:
        for key, value in records:
            if value is not None:
                self.add(key.decode("ascii"), int(value))

    def __len__(self) -> int:
        return len(self._erased)
