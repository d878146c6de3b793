"""Top reasons for a score, from LightGBM's per-feature contributions, in words."""

from __future__ import annotations

from typing import Any, Sequence

from nurture.scoring.features import CHANNELS, FEATURE_NAMES, PLATFORMS

_SIGNAL_WORDS = {
    "clicks": "page views and clicks",
    "opens": "email opens",
    "forms": "form submissions",
    "product_views": "product views",
    "cart_adds": "items added to the cart",
    "checkout_steps": "checkout steps",
    "errors": "error pages seen",
    "conversions": "purchases",
}
_WINDOW_WORDS = {"24h": "the last day", "168h": "the last week"}


def describe(feature: str, value: float) -> str:
    """Say what a feature value means, for a salesperson or a marketer."""
    signal, _, window = feature.rpartition("_")
    if signal in _SIGNAL_WORDS and window in _WINDOW_WORDS:
        if value < 0.05:
            return f"no {_SIGNAL_WORDS[signal]} in {_WINDOW_WORDS[window]}"
        return f"about {value:.1f} {_SIGNAL_WORDS[signal]} in {_WINDOW_WORDS[window]} (recent ones weigh more)"
    if feature == "hours_since_first_seen":
        return f"first seen {_duration(value)} ago"
    if feature == "hours_since_previous_event":
        return "first visit" if value < 0 else f"came back after {_duration(value)}"
    if feature == "hours_since_conversion":
        return "has not bought yet" if value < 0 else f"last purchase {_duration(value)} ago"
    if feature == "sessions":
        return f"{value:.0f} visits so far"
    if feature == "funnel_depth":
        return f"reached funnel step {value:.0f} of 6 (product, cart, checkout, payment, purchase)"
    if feature == "events_total":
        return f"{value:.0f} tracked actions in total"
    if feature == "channel":
        return f"came through {_category(CHANNELS, value, 'an unknown channel')}"
    if feature == "platform":
        return f"uses {_category(PLATFORMS, value, 'an unknown device')}"
    return f"{feature} = {value:g}"


def top_reasons(values: Sequence[float], contributions: Sequence[float],
                count: int = 3) -> list[dict[str, Any]]:
    """Pick the ``count`` features that raised the score most (largest contribution first)."""
    ranked = sorted(
        range(len(FEATURE_NAMES)), key=lambda index: (-contributions[index], index)
    )[:count]

    return [
        {
            "feature": FEATURE_NAMES[index],
            "text": describe(FEATURE_NAMES[index], float(values[index])),
            "contribution": round(float(contributions[index]), 6),
        }
        for index in ranked
    ]


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} minutes"
    if hours < 48:
        return f"{hours:.0f} hours"
    return f"{hours / 24:.0f} days"


def _category(values: tuple[str, ...], code: float, unknown: str) -> str:
    index = int(code)
    return values[index].replace("_", " ") if 0 <= index < len(values) else unknown
