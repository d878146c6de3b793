"""Engagement features of one lead: the only feature code, for training and the worker.

A lead's feature state is a small JSON-serialisable dict of constant size:
exponentially decayed counts of a few signals (one value per half-life), the
session count, the deepest funnel step reached and a few times. ``update``
folds one event into it; ``vector`` reads the features at a scoring time. The
worker calls both per event; training replays each lead's history through the
same two functions, so offline and online features are computed by one code path.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from nurture.schemas.records import Event

STATE_VERSION = 1
HALF_LIVES_HOURS = (24, 168)
SESSION_GAP_MS = 30 * 60 * 1000
MS_PER_HOUR = 3_600_000

CHECKOUT_PAGES = frozenset({"cart", "shipping_details", "payment_details"})
ERROR_PAGES = frozenset({"error_page", "payment_error", "checkout_bug"})
CHECKOUT_FORMS = frozenset({"shipping", "payment"})

# Funnel steps in order; the feature is the deepest step a lead has reached.
FUNNEL_STEPS = {
    "product_view": 1,
    "add_to_cart": 2,
    "cart": 3,
    "shipping": 4,
    "shipping_details": 4,
    "payment": 5,
    "payment_details": 5,
}
CONVERSION_STEP = 6

CHANNELS = ("direct", "email", "organic", "paid_search", "social", "referral")
PLATFORMS = ("desktop", "mobile", "tablet")


def _page(event: Event) -> str:
    return str(event.attrs.get("page") or "")


SIGNALS: dict[str, Callable[[Event], bool]] = {
    "clicks": lambda e: e.kind == "click",
    "opens": lambda e: e.kind == "open",
    "forms": lambda e: e.kind == "form" and not e.is_conversion,
    "product_views": lambda e: _page(e) == "product_view",
    "cart_adds": lambda e: _page(e) == "add_to_cart",
    "checkout_steps": lambda e: _page(e) in CHECKOUT_PAGES
    or (e.kind == "form" and e.attrs.get("form") in CHECKOUT_FORMS),
    "errors": lambda e: _page(e) in ERROR_PAGES,
    "conversions": lambda e: e.is_conversion,
}

DECAYED_FEATURES = tuple(
    f"{signal}_{hours}h" for signal in SIGNALS for hours in HALF_LIVES_HOURS
)
FEATURE_NAMES = (
    *DECAYED_FEATURES,
    "hours_since_first_seen",
    "hours_since_previous_event",
    "hours_since_conversion",
    "sessions",
    "funnel_depth",
    "events_total",
    "channel",
    "platform",
)
CATEGORICAL_FEATURES = ("channel", "platform")


def new_state() -> dict[str, Any]:
    return {
        "v": STATE_VERSION,
        "t": None,
        "first": None,
        "gap_h": -1.0,
        "decayed": [0.0] * len(DECAYED_FEATURES),
        "sessions": 0,
        "session": None,
        "funnel": 0,
        "events": 0,
        "last_conversion": None,
        "channel": None,
        "platform": None,
    }


def update(state: dict[str, Any], event: Event) -> dict[str, Any]:
    """Fold ``event`` into ``state`` in place and return it."""
    at = event.event_time
    last = state["t"]
    if last is None:
        state["first"] = at
        state["t"] = at
        last = at
    state["gap_h"] = max(0, at - last) / MS_PER_HOUR if state["events"] else -1.0

    _add_signals(state, event, last)
    _count_session(state, event, last)
    _reach_funnel(state, event)

    state["events"] += 1
    state["first"] = min(state["first"], at)
    if event.is_conversion:
        state["last_conversion"] = max(state["last_conversion"] or at, at)
    for name in ("channel", "platform"):
        if event.attrs.get(name):
            state[name] = event.attrs[name]

    return state


def vector(state: dict[str, Any], at_ms: int) -> list[float]:
    """Return the features of FEATURE_NAMES as seen at ``at_ms`` (epoch ms)."""
    last = state["t"] if state["t"] is not None else at_ms
    elapsed_hours = max(0, at_ms - last) / MS_PER_HOUR
    decayed = [
        value * _decay(elapsed_hours, hours)
        for value, hours in zip(state["decayed"], _half_life_per_feature())
    ]
    first = state["first"] if state["first"] is not None else at_ms
    conversion = state["last_conversion"]

    return [
        *decayed,
        max(0, at_ms - first) / MS_PER_HOUR,
        state["gap_h"],
        -1.0 if conversion is None else max(0, at_ms - conversion) / MS_PER_HOUR,
        float(state["sessions"]),
        float(state["funnel"]),
        float(state["events"]),
        float(_code(CHANNELS, state["channel"])),
        float(_code(PLATFORMS, state["platform"])),
    ]


def _add_signals(state: dict[str, Any], event: Event, last: int) -> None:
    """Decay the counts to the later of the two times, then add this event."""
    at = event.event_time
    hits = [predicate(event) for predicate in SIGNALS.values()]
    forward_hours = max(0, at - last) / MS_PER_HOUR
    backward_hours = max(0, last - at) / MS_PER_HOUR
    decayed = state["decayed"]
    index = 0
    for hit in hits:
        for hours in HALF_LIVES_HOURS:
            value = decayed[index] * _decay(forward_hours, hours)
            if hit:
                # An event older than the state's time counts with its own age.
                value += _decay(backward_hours, hours)
            decayed[index] = value
            index += 1
    state["t"] = max(at, last)


def _count_session(state: dict[str, Any], event: Event, last: int) -> None:
    session = event.attrs.get("session_id")
    if session is not None:
        if session != state["session"]:
            state["sessions"] += 1
            state["session"] = session
    elif state["events"] == 0 or event.event_time - last > SESSION_GAP_MS:
        state["sessions"] += 1


def _reach_funnel(state: dict[str, Any], event: Event) -> None:
    if event.is_conversion:
        step = CONVERSION_STEP
    else:
        step = FUNNEL_STEPS.get(_page(event) or str(event.attrs.get("form") or ""), 0)
    state["funnel"] = max(state["funnel"], step)


def _decay(elapsed_hours: float, half_life_hours: int) -> float:
    return math.pow(2.0, -elapsed_hours / half_life_hours)


def _half_life_per_feature() -> tuple[int, ...]:
    return HALF_LIVES_HOURS * len(SIGNALS)


def _code(values: tuple[str, ...], value: str | None) -> int:
    return values.index(value) if value in values else -1
