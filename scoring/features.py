"""Engagement features of one lead: the only feature code, for training and the worker.

A lead's feature state is a JSON-serialisable dict of bounded size. ``update``
folds one event into it and ``vector`` reads the features at a time. The worker
calls both per event, and training replays each lead's history through the same
two functions, so offline and online features come from one code path.

The state depends on the set of a lead's events, not on the order they arrive
in: every part is a sum, a minimum, a maximum or a union. Kafka gives no order
across the click, open and form topics, so this keeps the worker's features equal
to a time-ordered offline run (up to floating-point rounding of the sums).
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Callable

from nurture.schemas.records import Event

STATE_VERSION = 2
HALF_LIVES_HOURS = (24, 168)
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 24 * MS_PER_HOUR
SESSION_GAP_MS = 30 * 60 * 1000
SESSION_BITS = 63  # a 63-bit set fits a signed 64-bit JSON integer

CHECKOUT_PAGES = frozenset({"cart", "shipping_details", "payment_details"})
ERROR_PAGES = frozenset({"error_page", "payment_error", "checkout_bug"})
CHECKOUT_FORMS = frozenset({"shipping", "payment"})
INTEREST_PAGES = {
    "browsing": frozenset({"home", "catalog", "search", "filter_results"}),
    "promotions": frozenset({"promo_page"}),
    "research": frozenset({"compare", "review_page"}),
    "wishlist": frozenset({"wishlist_add"}),
    "account": frozenset({"account_page"}),
}
ENGAGEMENT_KINDS = frozenset({"click", "open", "form"})  # the event kinds features learn from
PROFILE_FIELDS = ("email", "first_name", "last_name", "phone", "country", "time_zone")

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


def _interest(pages: frozenset[str]) -> Callable[[Event, str], bool]:
    return lambda event, page: page in pages


# Each signal tests an event and its page ("" for events without one).
SIGNALS: dict[str, Callable[[Event, str], bool]] = {
    "clicks": lambda e, page: e.kind == "click",
    "opens": lambda e, page: e.kind == "open",
    "forms": lambda e, page: e.kind == "form" and not e.is_conversion,
    "product_views": lambda e, page: page == "product_view",
    "cart_adds": lambda e, page: page == "add_to_cart",
    "checkout_steps": lambda e, page: page in CHECKOUT_PAGES
    or (e.kind == "form" and e.attrs.get("form") in CHECKOUT_FORMS),
    "errors": lambda e, page: page in ERROR_PAGES,
    "conversions": lambda e, page: e.is_conversion,
    **{f"interest_{name}": _interest(pages) for name, pages in INTEREST_PAGES.items()},
}
_SIGNAL_TESTS = tuple(SIGNALS.values())
# Signals also counted exactly in whole clock hours (last 24) and days (last 7).
COUNTED_SIGNALS = ("clicks", "opens", "product_views", "cart_adds", "checkout_steps")
_COUNTED_POSITIONS = tuple((signal, list(SIGNALS).index(signal)) for signal in COUNTED_SIGNALS)
HOUR_SLOTS = 24
DAY_SLOTS = 7

DECAYED_FEATURES = tuple(f"{signal}_{hours}h" for signal in SIGNALS for hours in HALF_LIVES_HOURS)
COUNT_FEATURES = tuple(
    f"{signal}_{window}" for signal in COUNTED_SIGNALS for window in ("last_24h", "last_7d")
)
FEATURE_NAMES = (
    *DECAYED_FEATURES,
    *COUNT_FEATURES,
    "hours_since_first_seen",
    "hours_since_conversion",
    "active_hours_24h",
    "active_days_7d",
    "sessions",
    "funnel_depth",
    "events_total",
    "conversions_total",
    "profile_fields",
    "channel",
    "platform",
)
CATEGORICAL_FEATURES = ("channel", "platform")


def new_state() -> dict[str, Any]:
    return {
        "v": STATE_VERSION,
        "t": None,  # latest event time: the time the decayed values refer to
        "first": None,
        "decayed": [0.0] * len(DECAYED_FEATURES),
        "hours": {signal: [[-1, 0] for _ in range(HOUR_SLOTS)] for signal in COUNTED_SIGNALS},
        "days": {signal: [[-1, 0] for _ in range(DAY_SLOTS)] for signal in COUNTED_SIGNALS},
        "active_hours": [-1] * HOUR_SLOTS,
        "active_days": [-1] * DAY_SLOTS,
        "session_bits": 0,
        "funnel": 0,
        "events": 0,
        "conversions": 0,
        "last_conversion": None,
        "first_channel": None,  # [time, event_id, channel] of the earliest event with one
        "last_platform": None,  # [time, event_id, platform] of the latest event with one
        "profile_fields": [],
    }


def update(state: dict[str, Any], event: Event) -> dict[str, Any]:
    """Fold ``event`` into ``state`` in place and return it; consent changes leave it as it is."""
    if event.kind not in ENGAGEMENT_KINDS:
        return state
    at = event.event_time
    page = _page(event)
    hits = [test(event, page) for test in _SIGNAL_TESTS]

    _add_decayed(state, hits, at)
    _add_counts(state, hits, at)
    _mark_slot(state["active_hours"], at // MS_PER_HOUR)
    _mark_slot(state["active_days"], at // MS_PER_DAY)
    state["session_bits"] |= 1 << _session_bit(event)
    state["funnel"] = max(state["funnel"], _funnel_step(event))
    state["events"] += 1
    state["first"] = at if state["first"] is None else min(state["first"], at)
    if event.is_conversion:
        state["conversions"] += 1
        state["last_conversion"] = max(state["last_conversion"] or at, at)
    _keep_touch(state, "first_channel", event, "channel", earliest=True)
    _keep_touch(state, "last_platform", event, "platform", earliest=False)
    if event.kind == "form":
        submitted = event.attrs.get("fields") or {}
        known = set(state["profile_fields"]) | {name for name in PROFILE_FIELDS if submitted.get(name)}
        state["profile_fields"] = sorted(known)

    return state


def scoring_time(state: dict[str, Any]) -> int:
    """Return the time a lead is scored at: its latest event, whatever arrived last."""
    return int(state["t"])


def vector(state: dict[str, Any], at_ms: int) -> list[float]:
    """Return the features of FEATURE_NAMES as seen at ``at_ms`` (epoch ms)."""
    last = state["t"] if state["t"] is not None else at_ms
    elapsed_hours = max(0, at_ms - last) / MS_PER_HOUR
    # One factor per half-life rather than per feature gives the same numbers with far fewer pow calls.
    factors = _decay_factors(elapsed_hours) * len(SIGNALS)
    decayed = [value * factor for value, factor in zip(state["decayed"], factors)]
    hour, day = at_ms // MS_PER_HOUR, at_ms // MS_PER_DAY
    hours, days = state["hours"], state["days"]
    counts = []
    for signal in COUNTED_SIGNALS:
        counts.append(float(_window_sum(hours[signal], hour, HOUR_SLOTS)))
        counts.append(float(_window_sum(days[signal], day, DAY_SLOTS)))
    first = state["first"] if state["first"] is not None else at_ms
    conversion = state["last_conversion"]

    return [
        *decayed,
        *counts,
        max(0, at_ms - first) / MS_PER_HOUR,
        -1.0 if conversion is None else max(0, at_ms - conversion) / MS_PER_HOUR,
        float(_active_slots(state["active_hours"], hour, HOUR_SLOTS)),
        float(_active_slots(state["active_days"], day, DAY_SLOTS)),
        estimated_sessions(state["session_bits"]),
        float(state["funnel"]),
        float(state["events"]),
        float(state["conversions"]),
        float(len(state["profile_fields"])),
        float(_code(CHANNELS, state["first_channel"])),
        float(_code(PLATFORMS, state["last_platform"])),
    ]


def estimated_sessions(bits: int) -> float:
    """Estimate distinct sessions from the bit set by linear counting, to the nearest whole."""
    empty = SESSION_BITS - bin(bits).count("1")
    if empty == 0:
        return float(round(SESSION_BITS * math.log(SESSION_BITS)))
    return float(round(-SESSION_BITS * math.log(empty / SESSION_BITS)))


def _add_decayed(state: dict[str, Any], hits: list[bool], at: int) -> None:
    """Decay the sums to the later of the two times, then add this event at its own age."""
    last = at if state["t"] is None else state["t"]
    decayed = state["decayed"]
    if at > last:
        factors = _decay_factors((at - last) / MS_PER_HOUR) * len(SIGNALS)
        decayed[:] = [value * factor for value, factor in zip(decayed, factors)]
    # An event older than the sums enters decayed by its age, and any other one at full weight.
    ages = _decay_factors((last - at) / MS_PER_HOUR) if last > at else (1.0,) * len(HALF_LIVES_HOURS)
    width = len(ages)
    for position, hit in enumerate(hits):
        if hit:
            start = position * width
            for slot, age in enumerate(ages):
                decayed[start + slot] += age
    state["t"] = max(at, last)


def _add_counts(state: dict[str, Any], hits: list[bool], at: int) -> None:
    for signal, position in _COUNTED_POSITIONS:
        if hits[position]:
            _count_in_slot(state["hours"][signal], at // MS_PER_HOUR)
            _count_in_slot(state["days"][signal], at // MS_PER_DAY)


def _count_in_slot(slots: list[list[int]], period: int) -> None:
    """Count one event in the ring slot of ``period``, keeping the latest period per slot.

    Each slot ends up with the latest period that maps to it and that period's
    count, whatever order the events came in. Older periods are outside every
    window that the slot can still serve, so dropping them loses nothing.
    """
    slot = slots[period % len(slots)]
    if slot[0] == period:
        slot[1] += 1
    elif slot[0] < period:
        slot[0], slot[1] = period, 1


def _mark_slot(slots: list[int], period: int) -> None:
    index = period % len(slots)
    slots[index] = max(slots[index], period)


def _window_sum(slots: list[list[int]], now: int, width: int) -> int:
    oldest = now - width
    total = 0
    for period, count in slots:
        if oldest < period <= now:
            total += count
    return total


def _active_slots(slots: list[int], now: int, width: int) -> int:
    oldest = now - width
    active = 0
    for period in slots:
        if oldest < period <= now:
            active += 1
    return active


def _session_bit(event: Event) -> int:
    session = event.attrs.get("session_id") or f"~{event.event_time // SESSION_GAP_MS}"
    return zlib.crc32(str(session).encode("utf-8")) % SESSION_BITS


def _funnel_step(event: Event) -> int:
    if event.is_conversion:
        return CONVERSION_STEP
    return FUNNEL_STEPS.get(_page(event) or str(event.attrs.get("form") or ""), 0)


def _keep_touch(state: dict[str, Any], key: str, event: Event, attr: str, earliest: bool) -> None:
    value = event.attrs.get(attr)
    if not value:
        return
    candidate = [event.event_time, event.event_id, value]
    current = state[key]
    if current is None or (candidate < current if earliest else candidate > current):
        state[key] = candidate


def _decay(elapsed_hours: float, half_life_hours: int) -> float:
    return math.pow(2.0, -elapsed_hours / half_life_hours)


def _decay_factors(elapsed_hours: float) -> tuple[float, ...]:
    """Return the decay over ``elapsed_hours`` for each of HALF_LIVES_HOURS, in that order."""
    return tuple(_decay(elapsed_hours, hours) for hours in HALF_LIVES_HOURS)


def _code(values: tuple[str, ...], touch: list[Any] | None) -> int:
    value = touch[2] if touch else None
    return values.index(value) if value in values else -1
