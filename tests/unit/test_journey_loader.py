import re
from pathlib import Path

import pytest

from nurture.agents.journeys._checks import Layout
from nurture.agents.journeys.loader import load_journeys, parse_duration
from nurture.agents.journeys.spec import DAY_MS, MESSAGE_CHANNELS, MINUTE_MS, Cap, Condition
from nurture.config.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[2]
HOUR_MS = 60 * MINUTE_MS

# A valid file. The mistakes below edit one or two of its lines, and the
# constants after it give the line numbers that the expected errors name.
BASE = """\
[policy]
time_zone = "Europe/Warsaw"
max_delay = "3d"
quiet_hours = { start = "21:00", end = "08:00" }

[policy.caps]
email = { max = 3, per = "7d" }

[lifecycle]
marketing_qualified_score = 40

[[journeys]]
name = "welcome"
trigger = { on = "event", kinds = ["form"], where = { conversion = false } }

[[journeys.steps]]
id = "hello"
send = { channel = "email", template = "welcome" }

[[journeys.steps]]
id = "pause"
wait = { duration = "2d" }

[[journeys.steps]]
id = "opened"
branch = { engaged = "opened", step = "hello", within = "2d", then = "sales" }

[[journeys.steps]]
id = "sales"
handoff = {}
"""
# Lines of the table headers.
POLICY, CAPS, LIFECYCLE, JOURNEY, HELLO, PAUSE, OPENED, SALES = 1, 6, 9, 12, 16, 20, 24, 28
# Lines of keys. In each step, the id is on the line after the header and the action on the line after that.
TIME_ZONE, MAX_DELAY, QUIET_HOURS, EMAIL_CAP, QUALIFIED_SCORE, NAME, TRIGGER = 2, 3, 4, 7, 10, 13, 14

# (case id, [(old text, new text), ...], line of the error, text the error must contain)
MISTAKES = [
    ("duration_unit", [('max_delay = "3d"', 'max_delay = "90s"')], MAX_DELAY,
     "key 'policy.max_delay': invalid duration '90s'"),
    ("policy_unknown_key", [('max_delay = "3d"', 'max_dely = "3d"')], MAX_DELAY,
     "key 'policy.max_dely': unknown key; use time_zone, quiet_hours, max_delay, stale_after, caps"),
    ("stale_after_too_short", [('max_delay = "3d"', 'max_delay = "3d"\nstale_after = "0m"')], MAX_DELAY + 1,
     "key 'policy.stale_after': '0m' is out of range; use a duration of at least 1m"),
    ("stale_after_not_text", [('max_delay = "3d"', 'max_delay = "3d"\nstale_after = 6')], MAX_DELAY + 1,
     "key 'policy.stale_after': expected a duration such as '2d', got 6"),
    ("time_zone", [('"Europe/Warsaw"', '"Europe/Warsw"')], TIME_ZONE,
     "key 'policy.time_zone': unknown time zone 'Europe/Warsw'"),
    ("quiet_hours_empty", [('end = "08:00"', 'end = "21:00"')], QUIET_HOURS,
     "key 'policy.quiet_hours.end': '21:00' equals 'start'"),
    ("quiet_hours_time", [('start = "21:00"', 'start = "9pm"')], QUIET_HOURS,
     "key 'policy.quiet_hours.start': invalid time '9pm'"),
    ("quiet_hours_channel", [('end = "08:00" }', 'end = "08:00", channels = ["mail"] }')], QUIET_HOURS,
     "key 'policy.quiet_hours.channels': 'mail' is not one of email, sms, push"),
    ("cap_type", [("max = 3", 'max = "3"')], EMAIL_CAP,
     "key 'policy.caps.email.max': expected a whole number of at least 1, got '3'"),
    ("cap_above_kept_sends", [("max = 3", "max = 51")], EMAIL_CAP,
     "key 'policy.caps.email.max': 51 is more than the 50 sends per channel"),
    ("cap_channel", [("email = {", "fax = {")], EMAIL_CAP,
     "key 'policy.caps.fax': 'fax' is not a message channel"),
    ("cap_window", [('per = "7d"', 'per = "7 days"')], EMAIL_CAP,
     "key 'policy.caps.email.per': invalid duration '7 days'"),
    ("cap_on_later_line", [('email = { max = 3, per = "7d" }',
                            'email = { max = 3, per = "7d" }\nsms = { max = 0, per = "1d" }')], EMAIL_CAP + 1,
     "key 'policy.caps.sms.max': expected a whole number of at least 1, got 0"),
    ("lifecycle_score", [("= 40", "= 140")], QUALIFIED_SCORE,
     "key 'lifecycle.marketing_qualified_score': expected a score in (0, 100], or false to turn it off, got 140"),
    ("lifecycle_flag", [("marketing_qualified_score = 40", 'lead_on_form = "yes"')], QUALIFIED_SCORE,
     "key 'lifecycle.lead_on_form': expected true or false, got 'yes'"),
    ("lifecycle_on_later_line",
     [("marketing_qualified_score = 40", 'marketing_qualified_score = 40\ncustomer_on_conversion = "no"')],
     QUALIFIED_SCORE + 1,
     "key 'lifecycle.customer_on_conversion': expected true or false, got 'no'"),
    ("top_level_key", [("[lifecycle]", "[rules]")], LIFECYCLE,
     "unknown top-level key 'rules'; use policy, lifecycle, journeys"),
    ("journey_unknown_key", [('name = "welcome"', 'name = "welcome"\nrentry = "never"')], NAME + 1,
     "journey 1 ('welcome'): key 'rentry': unknown key; use name, trigger, exit, reentry, reentry_after, steps"),
    ("journey_name_missing", [('name = "welcome"', 'title = "welcome"')], JOURNEY,
     "journey 1: key 'name' is missing"),
    ("trigger_on", [('on = "event"', 'on = "evnt"')], TRIGGER,
     "journey 1 ('welcome'): key 'trigger.on': 'evnt' is not one of event, score_crossed, stage_changed"),
    ("trigger_kind", [('kinds = ["form"]', 'kinds = ["forms"]')], TRIGGER,
     "key 'trigger.kinds': 'forms' is not one of click, open, form"),
    ("where_field", [("conversion = false", "converson = false")], TRIGGER,
     "key 'trigger.where.converson': events of kinds form have no field 'converson'"),
    ("where_type", [("conversion = false", 'conversion = "no"')], TRIGGER,
     "key 'trigger.where.conversion': 'no' can never match, because the field is of type boolean"),
    ("trigger_key_of_other_on", [('{ on = "event", kinds = ["form"], where = { conversion = false } }',
                                  '{ on = "score_crossed", threshold = 60, stage = "lead" }')], TRIGGER,
     "key 'trigger.stage': unknown key for on = 'score_crossed'; use on, threshold, direction"),
    ("trigger_threshold", [('{ on = "event", kinds = ["form"], where = { conversion = false } }',
                            '{ on = "score_crossed", threshold = 0 }')], TRIGGER,
     "key 'trigger.threshold': expected a score in (0, 100], got 0"),
    ("exit_goal_stage", [('name = "welcome"',
                          'name = "welcome"\nexit = [{ on = "stage_reached", stage = "client" }]')], NAME + 1,
     "journey 1 ('welcome'): exit goal 1: key 'stage': 'client' is not one of subscriber, lead"),
    ("reentry_after_without_after_exit", [('name = "welcome"', 'name = "welcome"\nreentry_after = "30d"')], NAME + 1,
     "key 'reentry_after': applies only with reentry = 'after_exit'"),
    ("reentry_value", [('name = "welcome"', 'name = "welcome"\nreentry = "always"')], NAME + 1,
     "key 'reentry': 'always' is not one of never, after_exit"),
    ("step_two_actions", [("handoff = {}", 'handoff = {}\nstage = "customer"')], SALES,
     "step 4 ('sales'): keys 'handoff' and 'stage' are both set"),
    ("step_no_action", [('id = "sales"\nhandoff = {}', 'id = "sales"')], SALES,
     "step 4 ('sales'): a step needs one of the keys send, wait, branch, handoff, stage"),
    ("step_unknown_key", [("send = {", "sned = {")], HELLO + 2,
     "step 1 ('hello'): key 'sned': unknown key; use id, next, send, wait, branch, handoff, stage"),
    ("send_channel", [('channel = "email"', 'channel = "fax"')], HELLO + 2,
     "step 1 ('hello'): key 'send.channel': 'fax' is not one of email, sms, push"),
    ("send_key_misspelt", [('template = "welcome"', 'tempalte = "welcome"')], HELLO + 2,
     "step 1 ('hello'): key 'send.tempalte': unknown key; use channel, template, expires"),
    ("send_template_missing", [(', template = "welcome"', "")], HELLO + 2,
     "step 1 ('hello'): key 'send.template' is missing"),
    ("next_unknown_step", [('id = "pause"', 'id = "pause"\nnext = "pasue"')], PAUSE + 2,
     "step 2 ('pause'): key 'next': no step 'pasue' in this journey; use one of hello, pause, opened, sales or 'end'"),
    ("step_id_duplicate", [('id = "pause"', 'id = "hello"')], PAUSE + 1,
     "step 2 ('hello'): key 'id': duplicate step id 'hello'; step 1 already uses it"),
    ("step_id_reserved", [('id = "pause"', 'id = "end"')], PAUSE + 1,
     "step 2 ('end'): key 'id': 'end' is reserved"),
    ("wait_too_long", [('duration = "2d"', 'duration = "61d"')], PAUSE + 2,
     "key 'wait.duration': '61d' is out of range; use a duration from 1m to 60d"),
    ("wait_weekday", [('duration = "2d"', 'until = "tusday 10:00"')], PAUSE + 2,
     "key 'wait.until': 'tusday' in 'tusday 10:00' is not a weekday"),
    ("wait_both_kinds", [('duration = "2d"', 'duration = "2d", until = "10:00"')], PAUSE + 2,
     "key 'wait': set exactly one of 'duration'"),
    ("branch_on_wait_step", [('step = "hello"', 'step = "pause"')], OPENED + 2,
     "step 3 ('opened'): key 'branch.step': 'pause' is a wait step; name a send step"),
    ("branch_on_later_send", [('step = "hello"', 'step = "sales"'),
                              ("handoff = {}", 'send = { channel = "sms", template = "nudge" }')], OPENED + 2,
     "key 'branch.step': no path leads from step 'sales' to this branch"),
    ("branch_engagement", [('engaged = "opened"', 'engaged = "read"')], OPENED + 2,
     "key 'branch.engaged': 'read' is not one of opened, clicked, engaged"),
    ("branch_else_unknown", [('then = "sales"', 'then = "sales", else = "nowhere"')], OPENED + 2,
     "key 'branch.else': no step 'nowhere' in this journey"),
    ("branch_window_type", [('within = "2d"', "within = 2")], OPENED + 2,
     "key 'branch.within': expected a duration such as '2d', got 2"),
    ("branch_with_next", [('then = "sales" }', 'then = "sales" }\nnext = "end"')], OPENED + 3,
     "step 3 ('opened'): key 'next': a branch goes on to 'then' or 'else'"),
    ("loop_without_wait", [('id = "hello"', 'id = "hello"\nnext = "sales"'),
                           ("handoff = {}", 'handoff = {}\nnext = "hello"')], HELLO,
     "step 1 ('hello'): the loop 'hello' -> 'sales' -> 'hello' has no wait or branch step"),
    ("step_unreachable", [('then = "sales"', 'then = "end", else = "end"')], SALES,
     "step 4 ('sales'): no step leads to this one from the first step 'hello', so it never runs"),
    ("exit_not_list", [('name = "welcome"', 'name = "welcome"\nexit = { on = "score_above", threshold = 80 }')],
     NAME + 1, "key 'exit': expected a list of goals"),
]


def _edit(replacements: list[tuple[str, str]]) -> str:
    text = BASE
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} must occur once in BASE"
        text = text.replace(old, new)
    return text


def test_base_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text(BASE)

    book = load_journeys(path)

    assert [step.id for step in book.journeys[0].steps] == ["hello", "pause", "opened", "sales"]


@pytest.mark.parametrize(("replacements", "line", "fragment"), [case[1:] for case in MISTAKES],
                         ids=[case[0] for case in MISTAKES])
def test_mistake_names_file_line_and_key(tmp_path: Path, replacements, line: int, fragment: str) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text(_edit(replacements))

    with pytest.raises(ConfigError) as caught:
        load_journeys(path)

    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message


STAGE_TRIGGER = 'trigger = { on = "stage_changed", stage = "lead" }\n'
CUSTOMER_STEP = '[[journeys.steps]]\nid = "a"\nstage = "customer"\n'

# Whole files, for mistakes that BASE cannot contain: (case id, text, line, fragment)
WHOLE_FILES = [
    ("invalid_toml", "[policy]\ntime_zone = Europe/Warsaw\n", 2, "invalid TOML"),
    ("journeys_empty_list", "journeys = []\n\n[lifecycle]\nlead_on_form = true\n", 1,
     "key 'journeys': expected [[journeys]] tables, got []; leave the key out to declare no journeys"),
    ("journeys_not_tables", "journeys = [1]\n", 1, "journey 1: expected a [[journeys]] table, got 1"),
    ("journeys_single_table", '[lifecycle]\n\n[journeys.welcome]\nname = "x"\n', 3,
     "key 'journeys': expected [[journeys]] tables, got {'welcome': {'name': 'x'}}"),
    ("steps_missing", f'[lifecycle]\n\n[[journeys]]\nname = "x"\n{STAGE_TRIGGER}', 3,
     "journey 1 ('x'): key 'steps' is missing"),
    ("steps_empty", f'[[journeys]]\nname = "x"\n{STAGE_TRIGGER}steps = []\n', 4,
     "journey 1 ('x'): key 'steps': expected one or more [[journeys.steps]] tables, got []"),
    ("journey_name_duplicate",
     f'[[journeys]]\nname = "x"\n{STAGE_TRIGGER}{CUSTOMER_STEP}\n[[journeys]]\nname = "x"\n{STAGE_TRIGGER}{CUSTOMER_STEP}', 9,
     "journey 2 ('x'): duplicate journey name; journey 1 already uses it"),
    ("policy_caps_header_only", '[policy.caps]\nemail = { max = 3, per = "7d" }\nsms = { max = 0, per = "1d" }\n', 3,
     "key 'policy.caps.sms.max': expected a whole number of at least 1, got 0"),
    ("policy_dotted_at_top_level",
     '# The policy as dotted keys, without a [policy] header.\n'
     'policy.max_delay = "3d"\npolicy.time_zone = "Mars/Base"\n', 3,
     "key 'policy.time_zone': unknown time zone 'Mars/Base'"),
    ("caps_dotted_in_policy",
     '[policy]\ncaps.email = { max = 3, per = "7d" }\ncaps.sms.per = "1d"\ncaps.sms.max = 0\n', 4,
     "key 'policy.caps.sms.max': expected a whole number of at least 1, got 0"),
    ("quiet_hours_header", '[policy]\ntime_zone = "UTC"\n\n[policy.quiet_hours]\nstart = "21:00"\nend = "21:00"\n', 6,
     "key 'policy.quiet_hours.end': '21:00' equals 'start'"),
    ("quoted_key", '[lifecycle]\nlead_on_form = true\n"customer_on_conversion" = "no"\n', 3,
     "key 'lifecycle.customer_on_conversion': expected true or false, got 'no'"),
    ("exit_goal_in_multiline_array",
     f'[[journeys]]\nname = "x"\n{STAGE_TRIGGER}exit = [\n    {{ on = "score_above", threshold = 80 }},\n'
     f'    {{ on = "stage_reached", stage = "client" }},\n]\n{CUSTOMER_STEP}', 4,
     "journey 1 ('x'): exit goal 2: key 'stage': 'client' is not one of"),
    ("inline_steps_in_multiline_array",
     f'[[journeys]]\nname = "x"\n{STAGE_TRIGGER}steps = [\n    {{ id = "a", stage = "lead" }},\n'
     '    { id = "b", stage = "leed" },\n]\n', 4,
     "journey 1 ('x'): step 2 ('b'): key 'stage': 'leed' is not one of"),
    # Strings and a comment contain text that looks like headers, keys and quotes, which must not count as such.
    ("header_text_inside_strings",
     '[[journeys]]\nname = """x \\""" [[journeys.steps]]\nid = "fake" """""\n'
     'trigger = { on = "stage_changed", stage = "lead" }  # a comment with a quote "\n'
     "[[journeys.steps]]\nid = '''a\n[lifecycle]\nstage = \"lead\"'''\nstage = \"leed\"\n", 9,
     "key 'stage': 'leed' is not one of"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), [case[1:] for case in WHOLE_FILES],
                         ids=[case[0] for case in WHOLE_FILES])
def test_bad_file_names_file_line_and_key(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text(text)

    with pytest.raises(ConfigError) as caught:
        load_journeys(path)

    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message


def test_inline_journey_error_names_journeys_key_line(tmp_path: Path) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text('# Journeys as inline tables, without [[journeys]] headers.\n'
                    'journeys = [{ name = "x", trigger = { on = "stage_changed", stage = "lead" }, '
                    'steps = [{ id = "a", stage = "leed" }] }]\n')

    with pytest.raises(ConfigError) as caught:
        load_journeys(path)

    assert str(caught.value).startswith(f"{path}:2: journey 1 ('x'): step 1 ('a'): key 'stage': 'leed' is not one of")


def test_header_lines_skip_multiline_strings(tmp_path: Path) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text(f'[[journeys]]\nname = """x\n[[journeys.steps]]\nid = "fake"\n"""\n{STAGE_TRIGGER}'
                    f'\n[[journeys.steps]]\nid = "a"\nstage = "lead"\n\n[[journeys]]\nname = "y"\n{STAGE_TRIGGER}'
                    '\n[[journeys.steps]]\nid = "b"\nstage = "lead"\n')

    first, second = load_journeys(path).journeys

    assert (first.line, first.steps[0].line) == (1, 8)
    assert (second.line, second.steps[0].line) == (12, 16)


def test_layout_stops_at_unreadable_text() -> None:
    # load_journeys passes only text that tomllib accepts, so this unterminated string checks the stop directly.
    layout = Layout('[lifecycle]\nlead_on_form = true\nname = "unterminated\n[policy]\ntime_zone = "UTC"\n')

    assert layout.unread_line == 3
    assert layout.line(("lifecycle", "lead_on_form")) == 2
    assert layout.line(("lifecycle", "name")) == 3
    assert layout.line(("policy", "time_zone")) is None


def test_inline_journey_lines_are_none(tmp_path: Path) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text('journeys = [{ name = "x", trigger = { on = "stage_changed", stage = "lead" }, '
                    'steps = [{ id = "a", stage = "lead" }] }]\n')

    (journey,) = load_journeys(path).journeys

    assert journey.line is None
    assert journey.steps[0].line is None


def test_unreadable_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"

    with pytest.raises(ConfigError, match="cannot read journey file") as caught:
        load_journeys(path)

    assert str(caught.value).startswith(f"{path}: ")


def test_file_without_journeys_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text('[policy]\ntime_zone = "UTC"\n')

    book = load_journeys(path)

    assert book.journeys == ()
    assert book.source == str(path)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text("")

    book = load_journeys(path)

    assert book.policy.time_zone == "UTC"
    assert book.policy.quiet_hours is None
    assert book.policy.caps == {}
    assert book.policy.max_delay_ms == 3 * DAY_MS
    assert book.policy.stale_after_ms is None
    assert book.lifecycle.marketing_qualified_score == 40.0
    assert book.journeys == ()


def test_policy_stale_after_parses(tmp_path: Path) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text('[policy]\nstale_after = "6h"\n')

    policy = load_journeys(path).policy

    assert policy.stale_after_ms == 6 * HOUR_MS
    assert policy.max_delay_ms == 3 * DAY_MS


@pytest.mark.parametrize(("text", "milliseconds"), [
    ("1m", MINUTE_MS), ("90m", 90 * MINUTE_MS), ("36h", 36 * HOUR_MS), ("2d", 2 * DAY_MS), ("1w", 7 * DAY_MS),
    ("0m", 0),
])
def test_parse_duration_units(text: str, milliseconds: int) -> None:
    assert parse_duration(text) == milliseconds


@pytest.mark.parametrize("text", ["90s", "1.5h", "2 d", "2D", "d", "", "-1d", "1d2h", "3"])
def test_parse_duration_rejects_other_formats(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid duration {text!r}; write a whole number followed by")):
        parse_duration(text)


def test_shipped_journey_file_loads() -> None:
    path = PROJECT / "config" / "journeys.toml"

    book = load_journeys(path)

    assert book.source == str(path)
    assert book.policy.time_zone == "Europe/Warsaw"
    assert book.policy.quiet_hours is not None
    assert book.policy.quiet_hours.start_minute == 21 * 60
    assert book.policy.quiet_hours.end_minute == 8 * 60
    assert book.policy.quiet_hours.channels == MESSAGE_CHANNELS
    assert book.policy.max_delay_ms == 3 * DAY_MS
    assert book.policy.stale_after_ms is None
    assert book.policy.caps == {"email": Cap("email", 3, 7 * DAY_MS), "sms": Cap("sms", 1, DAY_MS)}
    assert book.lifecycle.lead_on_form is True
    assert book.lifecycle.marketing_qualified_score == 40.0
    assert book.lifecycle.customer_on_conversion is True

    (journey,) = book.journeys
    assert journey.name == "qualified_nurture"
    assert journey.trigger == Condition("stage_changed", stage="marketing_qualified")
    assert journey.exits == (
        Condition("event", kinds=("form",), where={"conversion": True}),
        Condition("stage_reached", stage="sales_qualified"),
    )
    assert journey.reentry == "after_exit"
    assert journey.reentry_after_ms == 30 * DAY_MS


def test_shipped_journey_steps() -> None:
    journey = load_journeys(PROJECT / "config" / "journeys.toml").journeys[0]

    assert [(step.id, step.type) for step in journey.steps] == [
        ("case_study", "send"), ("opened_case_study", "branch"), ("reminder", "send"), ("demo_invite", "send"),
        ("tuesday_morning", "wait"), ("top_picks", "send"), ("pause", "wait"), ("to_sales", "handoff"),
    ]
    assert journey.step_by_id("case_study").template == "case_study"
    branch = journey.step_by_id("opened_case_study")
    assert (branch.engaged, branch.step, branch.within_ms) == ("opened", "case_study", 2 * DAY_MS)
    assert (branch.then, branch.otherwise) == ("demo_invite", "reminder")
    reminder = journey.step_by_id("reminder")
    assert (reminder.template, reminder.next) == ("case_study_reminder", "tuesday_morning")
    assert journey.step_by_id("demo_invite").next == "tuesday_morning"
    tuesday = journey.step_by_id("tuesday_morning")
    assert (tuesday.weekday, tuesday.hour, tuesday.minute) == (1, 10, 0)
    assert journey.step_by_id("pause").duration_ms == 3 * DAY_MS
    handoff = journey.step_by_id("to_sales")
    assert (handoff.channel, handoff.template, handoff.next) == ("crm", "qualified_nurture_brief", None)


FULL = """\
[policy]
time_zone = "America/New_York"
quiet_hours = { start = "22:30", end = "07:15", channels = ["sms"] }
max_delay = "1w"

[policy.caps]
sms = { max = 2, per = "36h" }

[lifecycle]
lead_on_form = false
marketing_qualified_score = false
customer_on_conversion = false

[[journeys]]
name = "welcome"
trigger = { on = "event", kinds = ["form", "click"], where = { channel = ["email", "organic"] } }
exit = [
    { on = "score_above", threshold = 80 },
    { on = "score_below", threshold = 5.5 },
    { on = "event", kinds = ["form"], where = { conversion = true } },
]
reentry = "after_exit"
reentry_after = "1w"

[[journeys.steps]]
id = "hello"
send = { channel = "email", template = "welcome", expires = "90m" }

[[journeys.steps]]
id = "clicked?"
branch = { engaged = "clicked", step = "hello", within = "1w", then = "brief" }

[[journeys.steps]]
id = "monday"
wait = { until = "MON 09:05" }

[[journeys.steps]]
id = "nudge"
send = { channel = "sms", template = "nudge" }
next = "hello"

[[journeys.steps]]
id = "brief"
handoff = {}

[[journeys.steps]]
id = "cool_off"
wait = { duration = "36h" }

[[journeys.steps]]
id = "nightly"
wait = { until = "23:59" }

[[journeys.steps]]
id = "won"
stage = "customer"
next = "end"

[[journeys]]
name = "cooling"
trigger = { on = "score_crossed", threshold = 30, direction = "down" }

[[journeys.steps]]
id = "back_to_lead"
stage = "lead"
"""


@pytest.fixture()
def full_book(tmp_path: Path):
    path = tmp_path / "full.toml"
    path.write_text(FULL)
    return load_journeys(path)


def test_full_example_policy_and_lifecycle(full_book) -> None:
    policy = full_book.policy
    assert policy.time_zone == "America/New_York"
    assert (policy.quiet_hours.start_minute, policy.quiet_hours.end_minute) == (22 * 60 + 30, 7 * 60 + 15)
    assert policy.quiet_hours.channels == ("sms",)
    assert policy.max_delay_ms == 7 * DAY_MS
    assert policy.caps == {"sms": Cap("sms", 2, 36 * HOUR_MS)}
    assert full_book.lifecycle.lead_on_form is False
    assert full_book.lifecycle.marketing_qualified_score is None
    assert full_book.lifecycle.customer_on_conversion is False


def test_full_example_journey_fields(full_book) -> None:
    welcome, cooling = full_book.journeys

    assert (welcome.name, welcome.line, cooling.line) == ("welcome", 14, 59)
    assert welcome.trigger == Condition("event", kinds=("form", "click"), where={"channel": ["email", "organic"]})
    assert welcome.exits == (
        Condition("score_above", threshold=80.0),
        Condition("score_below", threshold=5.5),
        Condition("event", kinds=("form",), where={"conversion": True}),
    )
    assert (welcome.reentry, welcome.reentry_after_ms) == ("after_exit", 7 * DAY_MS)
    assert cooling.trigger == Condition("score_crossed", threshold=30.0, direction="down")
    assert (cooling.reentry, cooling.reentry_after_ms) == ("never", 0)


def test_full_example_steps(full_book) -> None:
    steps = {step.id: step for step in full_book.journeys[0].steps}

    assert [step.line for step in steps.values()] == [25, 29, 33, 37, 42, 46, 50, 54]
    hello = steps["hello"]
    assert (hello.type, hello.channel, hello.template, hello.expires_hours) == ("send", "email", "welcome", 1.5)
    assert hello.next == "clicked?"
    branch = steps["clicked?"]
    assert (branch.type, branch.engaged, branch.step, branch.within_ms) == ("branch", "clicked", "hello", 7 * DAY_MS)
    assert (branch.then, branch.otherwise, branch.next) == ("brief", "monday", None)
    monday = steps["monday"]
    assert (monday.weekday, monday.hour, monday.minute, monday.duration_ms) == (0, 9, 5, None)
    assert monday.next == "nudge"
    nudge = steps["nudge"]
    assert (nudge.channel, nudge.expires_hours, nudge.next) == ("sms", 48.0, "hello")
    brief = steps["brief"]
    assert (brief.type, brief.channel, brief.template, brief.next) == ("handoff", "crm", None, "cool_off")
    assert steps["cool_off"].duration_ms == 36 * HOUR_MS
    nightly = steps["nightly"]
    assert (nightly.weekday, nightly.hour, nightly.minute, nightly.next) == (None, 23, 59, "won")
    won = steps["won"]
    assert (won.type, won.stage, won.next) == ("stage", "customer", None)

    (back,) = full_book.journeys[1].steps
    assert (back.stage, back.next, back.line) == ("lead", None, 63)


def test_branch_targets_default_to_next_step(tmp_path: Path) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text(_edit([(', then = "sales" }', " }")]))

    opened = load_journeys(path).journeys[0].step_by_id("opened")

    assert opened.then == "sales"
    assert opened.otherwise == "sales"


def test_last_branch_targets_default_to_end(tmp_path: Path) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text(
        f'[[journeys]]\nname = "x"\n{STAGE_TRIGGER}'
        '[[journeys.steps]]\nid = "hello"\nsend = { channel = "email", template = "hello" }\n'
        '[[journeys.steps]]\nid = "opened"\nbranch = { engaged = "opened", step = "hello", within = "1d" }\n'
    )

    opened = load_journeys(path).journeys[0].step_by_id("opened")

    assert opened.then is None
    assert opened.otherwise is None
