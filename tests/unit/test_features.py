import math

import pytest

from factories import DAY_MS, HOUR_MS, T0, click, form, open_
from nurture.scoring import features


def _vector_after(events, at):
    state = features.new_state()
    for event in events:
        features.update(state, event)
    return features.vector(state, at)


def _named(vector):
    return dict(zip(features.FEATURE_NAMES, vector))


def test_vector_length_matches_names() -> None:
    assert len(_vector_after([click("l", T0)], T0)) == len(features.FEATURE_NAMES)


def test_decayed_count_halves_after_half_life() -> None:
    named = _named(_vector_after([click("l", T0)], T0 + 24 * HOUR_MS))

    assert named["clicks_24h"] == pytest.approx(0.5)
    assert named["clicks_168h"] == pytest.approx(math.pow(2, -24 / 168))


def test_features_ignore_events_after_scoring_time() -> None:
    """A row built from the events up to t must not change when later events exist."""
    history = [
        click("l", T0, "home", session_id="s1"),
        click("l", T0 + HOUR_MS, "product_view", session_id="s1"),
        open_("l", T0 + DAY_MS),
        click("l", T0 + 2 * DAY_MS, "add_to_cart", session_id="s2"),
        form("l", T0 + 3 * DAY_MS, "order", conversion=True),
    ]
    for cut in range(1, len(history) + 1):
        at = history[cut - 1].event_time
        prefix_only = _vector_after(history[:cut], at)
        # The training builder walks the full history and reads the vector at
        # each event, so it must equal the prefix-only vector at that time.
        state = features.new_state()
        for event in history:
            features.update(state, event)
            if event is history[cut - 1]:
                walked = features.vector(state, at)
                break
        assert walked == prefix_only
    before_purchase = _named(_vector_after(history[:4], history[3].event_time))
    assert before_purchase["conversions_24h"] == 0.0
    assert before_purchase["hours_since_conversion"] == -1.0
    assert before_purchase["funnel_depth"] == 2.0


def test_out_of_order_event_counts_with_its_age() -> None:
    in_order = _vector_after([click("l", T0), click("l", T0 + DAY_MS)], T0 + DAY_MS)
    late = _vector_after([click("l", T0 + DAY_MS), click("l", T0)], T0 + DAY_MS)

    assert _named(late)["clicks_24h"] == pytest.approx(_named(in_order)["clicks_24h"])


def test_sessions_by_id_and_by_gap() -> None:
    by_id = _named(_vector_after([click("l", T0, session_id="a"), click("l", T0 + 1, session_id="a"),
                                  click("l", T0 + 2, session_id="b")], T0 + 2))
    by_gap = _named(_vector_after([click("l", T0), click("l", T0 + 10 * 60_000),
                                   click("l", T0 + 2 * HOUR_MS)], T0 + 2 * HOUR_MS))

    assert by_id["sessions"] == 2.0
    assert by_gap["sessions"] == 2.0


def test_funnel_and_categories() -> None:
    named = _named(_vector_after([click("l", T0, "cart", channel="email", platform="mobile"),
                                  form("l", T0 + 1, "payment")], T0 + 1))

    assert named["funnel_depth"] == 5.0
    assert named["channel"] == float(features.CHANNELS.index("email"))
    assert named["platform"] == float(features.PLATFORMS.index("mobile"))
    assert named["forms_24h"] == pytest.approx(1.0)
    assert named["checkout_steps_24h"] == pytest.approx(2.0, rel=1e-6)


def test_state_has_constant_size() -> None:
    state = features.new_state()
    for number in range(2000):
        features.update(state, click("l", T0 + number * 60_000, session_id=f"s{number // 10}"))

    assert len(state["decayed"]) == len(features.DECAYED_FEATURES)
    assert len(str(state)) < 1500
