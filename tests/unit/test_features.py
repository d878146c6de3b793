import math
import random

import pytest

from factories import DAY_MS, HOUR_MS, T0, click, consent, form, open_
from nurture.scoring import features


def _state_after(events):
    state = features.new_state()
    for event in events:
        features.update(state, event)
    return state


def _vector_after(events, at):
    return features.vector(_state_after(events), at)


def _named(vector):
    return dict(zip(features.FEATURE_NAMES, vector))


HISTORY = [
    click("l", T0, "home", session_id="s1", channel="organic", platform="desktop"),
    click("l", T0 + HOUR_MS, "product_view", session_id="s1", channel="organic", platform="desktop"),
    open_("l", T0 + DAY_MS, platform="mobile"),
    click("l", T0 + DAY_MS + 60_000, "promo_page", session_id="s2", channel="email", platform="mobile"),
    click("l", T0 + 2 * DAY_MS, "add_to_cart", session_id="s3", channel="email", platform="tablet"),
    form("l", T0 + 2 * DAY_MS + 1000, "shipping", fields={"email": "l@example.com", "first_name": "Ola"}),
    form("l", T0 + 3 * DAY_MS, "order", conversion=True),
]


def test_vector_length_matches_names() -> None:
    assert len(_vector_after([click("l", T0)], T0)) == len(features.FEATURE_NAMES)


def test_decayed_count_halves_after_half_life() -> None:
    named = _named(_vector_after([click("l", T0)], T0 + 24 * HOUR_MS))

    assert named["clicks_24h"] == pytest.approx(0.5)
    assert named["clicks_168h"] == pytest.approx(math.pow(2, -24 / 168))


def test_features_ignore_events_after_scoring_time() -> None:
    """A row built while walking the full history equals one built from the prefix alone."""
    state = features.new_state()
    for cut, event in enumerate(HISTORY, start=1):
        features.update(state, event)
        walked = features.vector(state, event.event_time)

        assert walked == _vector_after(HISTORY[:cut], event.event_time)
    before_purchase = _named(_vector_after(HISTORY[:-1], HISTORY[-2].event_time))
    assert before_purchase["conversions_24h"] == 0.0
    assert before_purchase["conversions_total"] == 0.0
    assert before_purchase["hours_since_conversion"] == -1.0
    assert before_purchase["funnel_depth"] == 4.0


def test_state_does_not_depend_on_arrival_order() -> None:
    expected = _vector_after(HISTORY, HISTORY[-1].event_time)
    shuffled = list(HISTORY)
    for seed in range(20):
        random.Random(seed).shuffle(shuffled)
        got = _vector_after(shuffled, HISTORY[-1].event_time)

        assert got == pytest.approx(expected, rel=1e-12)


def test_exact_counts_in_windows() -> None:
    views = [click("l", T0 + n * HOUR_MS, "product_view") for n in range(30)]
    named = _named(_vector_after(views, T0 + 29 * HOUR_MS))

    assert named["product_views_last_24h"] == 24.0
    assert named["product_views_last_7d"] == 30.0
    assert named["active_hours_24h"] == 24.0
    assert named["active_days_7d"] == 2.0


def test_window_counts_drop_old_events() -> None:
    named = _named(_vector_after([click("l", T0, "add_to_cart")], T0 + 8 * DAY_MS))

    assert named["cart_adds_last_24h"] == 0.0
    assert named["cart_adds_last_7d"] == 0.0


def test_sessions_by_id_and_by_gap() -> None:
    by_id = _named(_vector_after([click("l", T0, session_id="a"), click("l", T0 + 1, session_id="a"),
                                  click("l", T0 + 2, session_id="b")], T0 + 2))
    by_gap = _named(_vector_after([click("l", T0), click("l", T0 + 10 * 60_000),
                                   click("l", T0 + 2 * HOUR_MS)], T0 + 2 * HOUR_MS))

    assert by_id["sessions"] == 2.0
    assert by_gap["sessions"] == 2.0


def test_first_touch_channel_and_latest_device() -> None:
    named = _named(_vector_after(list(reversed(HISTORY)), HISTORY[-1].event_time))

    assert named["channel"] == float(features.CHANNELS.index("organic"))
    assert named["platform"] == float(features.PLATFORMS.index("tablet"))
    assert named["profile_fields"] == 2.0
    assert named["interest_promotions_168h"] > 0.0


def test_state_has_bounded_size() -> None:
    small = len(str(_state_after([click("l", T0)])))
    state = features.new_state()
    for number in range(3000):
        features.update(state, click("l", T0 + number * 600_000, "product_view", session_id=f"s{number}"))

    assert len(str(state)) < small * 1.3


def test_consent_change_leaves_features_alone():
    state = features.new_state()
    features.update(state, consent("l", T0))
    assert state == features.new_state()
