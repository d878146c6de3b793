import pytest

from nurture.scoring.explain import describe, top_reasons
from nurture.scoring.features import FEATURE_NAMES


@pytest.mark.parametrize(
    ("feature", "value", "text"),
    [
        ("product_views_last_24h", 5.0, "5 product views in the last 24 hours"),
        ("cart_adds_last_7d", 1.0, "1 item added to the cart in the last 7 days"),
        ("opens_last_24h", 0.0, "no email opens in the last 24 hours"),
        ("forms_168h", 2.2, "form submissions lately, time-weighted count 2.2 (an action a week ago counts half)"),
        ("conversions_24h", 0.01, "no purchases recently"),
        ("hours_since_conversion", -1.0, "has not bought yet"),
        ("hours_since_first_seen", 72.0, "first seen 3 days ago"),
        ("funnel_depth", 4.0, "got as far as shipping details"),
        ("channel", 1.0, "first came through email"),
        ("platform", 9.0, "uses a device of unknown type"),
    ],
)
def test_describe_in_words(feature: str, value: float, text: str) -> None:
    assert describe(feature, value) == text


def test_time_weighted_count_told_as_exact_count() -> None:
    row = {"product_views_24h": 2.7, "product_views_last_24h": 3.0}

    assert describe("product_views_24h", 2.7, row) == "3 product views in the last 24 hours"


def test_time_weighted_count_without_recent_events() -> None:
    row = {"checkout_steps_24h": 0.86, "checkout_steps_last_24h": 0.0}

    assert describe("checkout_steps_24h", 0.86, row) == (
        "checkout steps shortly before the last 24 hours (time-weighted count 0.9)"
    )


def test_absences_come_after_activity() -> None:
    values = [0.0] * len(FEATURE_NAMES)
    contributions = [0.0] * len(FEATURE_NAMES)
    for name, value, contribution in (("conversions_24h", 0.0, 0.9), ("cart_adds_last_7d", 1.0, 0.2),
                                      ("hours_since_conversion", -1.0, 0.8), ("sessions", 3.0, 0.1)):
        values[FEATURE_NAMES.index(name)] = value
        contributions[FEATURE_NAMES.index(name)] = contribution
    reasons = top_reasons(values, contributions)

    assert [reason["feature"] for reason in reasons] == ["cart_adds_last_7d", "sessions", "conversions_24h"]


def test_top_reasons_pick_largest_contributions() -> None:
    values = [0.0] * len(FEATURE_NAMES)
    contributions = [0.0] * len(FEATURE_NAMES)
    for name, value, contribution in (("cart_adds_last_24h", 2.0, 0.9), ("sessions", 4.0, 0.5),
                                      ("events_total", 30.0, 0.7), ("errors_24h", 1.0, -2.0)):
        values[FEATURE_NAMES.index(name)] = value
        contributions[FEATURE_NAMES.index(name)] = contribution
    reasons = top_reasons(values, contributions)

    assert [reason["feature"] for reason in reasons] == ["cart_adds_last_24h", "events_total", "sessions"]
    assert reasons[0]["text"] == "2 items added to the cart in the last 24 hours"
    assert reasons[0]["contribution"] == 0.9


def test_one_reason_per_signal() -> None:
    values = [0.0] * len(FEATURE_NAMES)
    contributions = [0.0] * len(FEATURE_NAMES)
    for name, value, contribution in (("forms_24h", 2.0, 0.9), ("forms_168h", 2.0, 0.8),
                                      ("sessions", 3.0, 0.3), ("cart_adds_last_7d", 1.0, 0.2)):
        values[FEATURE_NAMES.index(name)] = value
        contributions[FEATURE_NAMES.index(name)] = contribution
    reasons = top_reasons(values, contributions)

    assert [reason["feature"] for reason in reasons] == ["forms_24h", "sessions", "cart_adds_last_7d"]
