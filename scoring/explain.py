"""Top reasons for a score, from LightGBM's per-feature contributions, in words."""

from __future__ import annotations

from typing import Any, Sequence

from nurture.scoring.features import CHANNELS, FEATURE_NAMES, PLATFORMS

_SIGNAL_WORDS = {
    "clicks": ("page view or click", "page views and clicks"),
    "opens": ("email open", "email opens"),
    "forms": ("form submission", "form submissions"),
    "product_views": ("product view", "product views"),
    "cart_adds": ("item added to the cart", "items added to the cart"),
    "checkout_steps": ("checkout step", "checkout steps"),
    "errors": ("error page", "error pages"),
    "conversions": ("purchase", "purchases"),
    "interest_browsing": ("catalogue or search visit", "catalogue and search visits"),
    "interest_promotions": ("promotion page visit", "promotion page visits"),
    "interest_research": ("comparison or review visit", "comparison and review visits"),
    "interest_wishlist": ("wishlist addition", "wishlist additions"),
    "interest_account": ("account page visit", "account page visits"),
}
_WINDOW_WORDS = {"last_24h": "in the last 24 hours", "last_7d": "in the last 7 days"}
_HALF_LIFE_WORDS = {"24h": "in the last day", "168h": "in the last week"}
_HALF_LIFE_WINDOWS = {"24h": "the last 24 hours", "168h": "the last 7 days"}
_HALF_LIFE_AGO = {"24h": "a day ago", "168h": "a week ago"}
_EXACT_WINDOW = {"24h": "last_24h", "168h": "last_7d"}


def describe(feature: str, value: float, row: dict[str, float] | None = None) -> str:
    """Say what a feature value means, for a salesperson or a marketer.

    A time-weighted count is written as the exact count of the same signal over
    the matching window when the row has one, because a person reads "3 product
    views in the last 24 hours" more easily than a decayed sum.
    """
    for suffix, words in _WINDOW_WORDS.items():
        signal = feature.removesuffix(f"_{suffix}")
        if signal != feature and signal in _SIGNAL_WORDS:
            return f"{_count(value, *_SIGNAL_WORDS[signal])} {words}"
    signal, _, half_life = feature.rpartition("_")
    if signal in _SIGNAL_WORDS and half_life in _HALF_LIFE_WORDS:
        exact = f"{signal}_{_EXACT_WINDOW[half_life]}"
        if row is not None and exact in row:
            if row[exact] >= 1:
                return describe(exact, row[exact])
            if value >= 0.05:
                # Only events before the window weigh in, so the text must not claim none.
                return (f"{_SIGNAL_WORDS[signal][1]} shortly before {_HALF_LIFE_WINDOWS[half_life]} "
                        f"(time-weighted count {value:.1f})")
        return _recent_activity(_SIGNAL_WORDS[signal], half_life, value)
    return _describe_other(feature, value)


def _describe_other(feature: str, value: float) -> str:
    if feature == "hours_since_first_seen":
        return f"first seen {_duration(value)} ago"
    if feature == "hours_since_conversion":
        return "has not bought yet" if value < 0 else f"last purchase {_duration(value)} ago"
    if feature == "active_hours_24h":
        return f"active in {value:.0f} of the last 24 hours"
    if feature == "active_days_7d":
        return f"active on {value:.0f} of the last 7 days"
    if feature == "sessions":
        return f"about {value:.0f} visits so far"
    if feature == "funnel_depth":
        return f"got as far as {_FUNNEL_WORDS[min(int(value), len(_FUNNEL_WORDS) - 1)]}"
    if feature == "events_total":
        return f"{value:.0f} tracked actions in total"
    if feature == "conversions_total":
        return _count(value, "purchase", "purchases") + " so far"
    if feature == "profile_fields":
        return _count(value, "profile field", "profile fields") + " given in forms"
    if feature == "channel":
        return f"first came through {_category(CHANNELS, value, 'an unknown channel')}"
    if feature == "platform":
        return f"uses a {_category(PLATFORMS, value, 'device of unknown type')}"
    return f"{feature} = {value:g}"


_FUNNEL_WORDS = (
    "browsing", "a product page", "adding to the cart", "the cart", "shipping details",
    "payment details", "a purchase",
)


def top_reasons(values: Sequence[float], contributions: Sequence[float],
                count: int = 3) -> list[dict[str, Any]]:
    """Pick the ``count`` features that raised the score most (largest contribution first).

    Features that describe something the lead did come before those that describe an
    absence ("no purchases"), because a salesperson cannot act on an absence. Absences
    fill in only when fewer than ``count`` present features raised the score.
    """
    row = {name: float(value) for name, value in zip(FEATURE_NAMES, values)}
    raised = [index for index in range(len(FEATURE_NAMES)) if contributions[index] > 0]
    present = [index for index in raised if _is_present(FEATURE_NAMES[index], row)]
    others = [index for index in range(len(FEATURE_NAMES)) if index not in present]
    by_contribution = lambda index: (-contributions[index], index)  # noqa: E731
    ranked: list[int] = []
    signals: set[str] = set()
    for index in sorted(present, key=by_contribution) + sorted(others, key=by_contribution):
        signal = _signal_of(FEATURE_NAMES[index])
        if signal not in signals:  # one reason per signal: its day and week counts repeat it
            signals.add(signal)
            ranked.append(index)
        if len(ranked) == count:
            break

    return [
        {
            "feature": FEATURE_NAMES[index],
            "text": describe(FEATURE_NAMES[index], float(values[index]), row),
            "contribution": round(float(contributions[index]), 6),
        }
        for index in ranked
    ]


def _signal_of(feature: str) -> str:
    for suffix in ("_last_24h", "_last_7d", "_24h", "_168h"):
        if feature.endswith(suffix) and feature.removesuffix(suffix) in _SIGNAL_WORDS:
            return feature.removesuffix(suffix)
    return feature


def _is_present(feature: str, row: dict[str, float]) -> bool:
    """Tell whether a feature value records activity rather than its absence."""
    value = row[feature]
    if feature in ("channel", "platform"):
        return value >= 0
    if feature == "hours_since_conversion":
        return value >= 0
    return value >= 0.5


def _count(value: float, singular: str, plural: str) -> str:
    number = int(round(value))
    if number == 0:
        return f"no {plural}"
    return f"{number} {singular if number == 1 else plural}"


def _recent_activity(words: tuple[str, str], half_life: str, value: float) -> str:
    if value < 0.05:
        return f"no {words[1]} recently"
    return (f"{words[1]} lately, time-weighted count {value:.1f} "
            f"(an action {_HALF_LIFE_AGO[half_life]} counts half)")


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} minutes"
    if hours < 48:
        return f"{hours:.0f} hours"
    return f"{hours / 24:.0f} days"


def _category(values: tuple[str, ...], code: float, unknown: str) -> str:
    index = int(code)
    return values[index].replace("_", " ") if 0 <= index < len(values) else unknown
