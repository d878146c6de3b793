from pathlib import Path

import pytest

from factories import DAY_MS, T0, click, form, open_
from nurture.agents.rules import evaluate, load_rules
from nurture.agents.state import new_lead, record_send
from nurture.config.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[2]


def test_default_rules_load() -> None:
    rules = load_rules(PROJECT / "config" / "rules.toml")

    assert [rule.name for rule in rules] == ["welcome", "sales_handoff", "next_content"]
    assert rules[1].once is True
    assert rules[0].cooldown_hours == 72.0


GOOD = '''
[[rules]]
name = "welcome"
on = "event"
kinds = ["form"]
action = "send_email"
template = "welcome"
'''


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[rules]]\nname = "x"\non = "evnt"\naction = "send_email"\n', r":9: rule 2 \('x'\): key 'on': 'evnt' is not one of"),
        ('[[rules]]\nname = "x"\non = "event"\nkinds = ["form"]\naction = "send_mail"\n', r"key 'action': 'send_mail' is not one of"),
        ('[[rules]]\nname = "x"\non = "event"\nkinds = ["tap"]\naction = "handoff_sales"\n', r"key 'kinds': 'tap' is not one of"),
        ('[[rules]]\nname = "x"\non = "event"\nkinds = ["form"]\naction = "send_email"\n', r"key 'template' is required"),
        ('[[rules]]\nname = "x"\non = "score_crossed"\nthreshold = 140\naction = "handoff_sales"\n', r"key 'threshold': expected a score in \(0, 100\]"),
        ('[[rules]]\nname = "x"\non = "engaged_after_send"\nkinds = ["open"]\naction = "send_email"\nsequence = ["a"]\n', r"key 'within_days' is required"),
        ('[[rules]]\nname = "x"\non = "engaged_after_send"\nkinds = ["open"]\nwithin_days = 2\naction = "send_email"\n', r"key 'sequence'"),
        ('[[rules]]\nname = "welcome"\non = "event"\nkinds = ["open"]\naction = "handoff_sales"\n', r"duplicate rule name"),
        ('[[rules]]\nname = "x"\non = "event"\nkinds = ["open"]\naction = "handoff_sales"\ncolour = 1\n', r"unknown key 'colour'"),
        ('[[rules]]\nname = "x"\non = "event"\nkinds = ["open"]\naction = "handoff_sales"\nonce = "yes"\n', r"key 'once': expected true or false"),
        ('[[rules]]\non = "event"\n', r"rule 2: key 'name' is missing"),
        ('[[rules]]\nname = "x"\non = "event"\nkinds = ["open"]\naction = "handoff_sales"\ncooldown_hours = -1\n', r"key 'cooldown_hours': expected a positive number"),
        ('[defaults]\ncooldown = 3\n', r"\[defaults\] cooldown: unknown key"),
        ('[[rules]]\nname = "x"\non = "event"\nkinds = ["form"]\nwhere = { converson = false }\naction = "handoff_sales"\n', r"have no field 'converson'"),
        ('[[rules]\n', r"invalid TOML"),
    ],
)
def test_bad_rule_file_names_file_line_and_problem(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD + "\n" + extra)

    with pytest.raises(ConfigError, match=message) as caught:
        load_rules(path)

    assert str(path) in str(caught.value)


def test_empty_rule_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[defaults]\ncooldown_hours = 1\n")

    with pytest.raises(ConfigError, match="no rules"):
        load_rules(path)


@pytest.fixture()
def rules():
    return load_rules(PROJECT / "config" / "rules.toml")


def _names(decisions):
    return [(decision.rule.name, decision.template) for decision in decisions]


def test_form_fires_welcome_but_conversion_does_not(rules) -> None:
    lead = new_lead("l")

    assert _names(evaluate(rules, lead, form("l", T0), None, 1.0)) == [("welcome", "welcome")]
    assert _names(evaluate(rules, lead, form("l", T0, "order", conversion=True), None, 1.0)) == []


def test_score_crossing_fires_only_upwards(rules) -> None:
    lead = new_lead("l")
    event = click("l", T0)

    assert _names(evaluate(rules, lead, event, 59.0, 61.0)) == [("sales_handoff", None)]
    assert _names(evaluate(rules, lead, event, 61.0, 70.0)) == []
    assert _names(evaluate(rules, lead, event, 70.0, 50.0)) == []


def test_engagement_within_window_picks_next_template(rules) -> None:
    lead = new_lead("l")
    record_send(lead, "welcome", "email", T0, "cmd-1")

    inside = evaluate(rules, lead, open_("l", T0 + 2 * DAY_MS), None, 1.0)
    outside = evaluate(rules, lead, open_("l", T0 + 4 * DAY_MS), None, 1.0)
    record_send(lead, "buying_guide", "email", T0 + DAY_MS, "cmd-2")
    by_command = evaluate(rules, lead, click("l", T0 + 2 * DAY_MS, command_id="cmd-2"), None, 1.0)
    by_template = evaluate(rules, lead, click("l", T0 + 2 * DAY_MS, template="buying_guide"), None, 1.0)

    assert _names(inside) == [("next_content", "buying_guide")]
    assert inside[0].follows_up == "welcome"
    assert _names(outside) == []
    assert _names(by_command) == [("next_content", "customer_stories")]
    assert _names(by_template) == [("next_content", "customer_stories")]


def test_plain_browsing_is_not_engagement(rules) -> None:
    lead = new_lead("l")
    record_send(lead, "welcome", "email", T0, "cmd-1")

    assert _names(evaluate(rules, lead, click("l", T0 + DAY_MS), None, 1.0)) == []


def test_each_email_earns_one_follow_up(rules) -> None:
    lead = new_lead("l")
    record_send(lead, "welcome", "email", T0, "cmd-1")
    lead["sends"]["welcome"]["followed_up"] = True

    assert _names(evaluate(rules, lead, open_("l", T0 + DAY_MS), None, 1.0)) == []


def test_engagement_without_any_send_fires_nothing(rules) -> None:
    assert _names(evaluate(rules, new_lead("l"), open_("l", T0), None, 1.0)) == []
