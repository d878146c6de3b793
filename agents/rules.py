"""Nurture rules: loading the rule file and deciding which rules an event fires.

A rule file is TOML with a ``[defaults]`` table and a ``[[rules]]`` array; the
format is documented in the README and in ``config/rules.toml``. Loading checks
every rule and raises ConfigError with the file, the line of the rule, its name
and what is wrong, so a bad file stops the worker before it consumes anything.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nurture.config.errors import ConfigError
from nurture.schemas import load_schema
from nurture.schemas.records import Event

TRIGGERS = ("event", "score_crossed", "engaged_after_send")
ACTIONS = {"send_email": "email", "handoff_sales": "crm"}
EVENT_KINDS = ("click", "open", "form")
_RULE_KEYS = {
    "name", "on", "kinds", "where", "threshold", "within_days", "min_delay_minutes", "after", "sequence",
    "action", "template", "once", "cooldown_hours", "expires_hours",
}
_DEFAULT_KEYS = {"cooldown_hours", "expires_hours"}


@dataclass(frozen=True)
class Rule:
    name: str
    on: str
    action: str
    channel: str
    template: str | None = None
    kinds: tuple[str, ...] = ()
    where: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.0
    within_days: float = 0.0
    min_delay_minutes: float = 30.0
    after: tuple[str, ...] = ()
    sequence: tuple[str, ...] = ()
    once: bool = False
    cooldown_hours: float = 72.0
    expires_hours: float = 48.0


@dataclass(frozen=True)
class Decision:
    """A rule that fired for one event, with the template it chose."""

    rule: Rule
    template: str | None
    follows_up: str | None = None  # template of the email whose engagement this follows up

    @property
    def send_key(self) -> str:
        """Key of the lead's send history (per template, or per action without one)."""
        return self.template or self.rule.action


def load_rules(path: str | Path) -> list[Rule]:
    """Read and check a rule file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read rule file: {exc}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc

    unknown = sorted(set(document) - {"defaults", "rules"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r}; use [defaults] and [[rules]]")
    defaults = _check_defaults(path, document.get("defaults", {}))
    raw_rules = document.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError(f"{path}: no rules; add at least one [[rules]] table")

    lines = _rule_lines(text)
    rules = [
        _build_rule(_Place(path, index, lines), raw, defaults)
        for index, raw in enumerate(raw_rules)
    ]
    _check_unique_names(path, rules, lines)

    return rules


@dataclass(frozen=True)
class _Place:
    path: Path
    index: int
    lines: list[int]

    def error(self, name: str | None, message: str) -> ConfigError:
        line = self.lines[self.index] if self.index < len(self.lines) else None
        where = f"{self.path}:{line}" if line else str(self.path)
        label = f"rule {self.index + 1}" + (f" ({name!r})" if name else "")
        return ConfigError(f"{where}: {label}: {message}")


def _rule_lines(text: str) -> list[int]:
    pattern = re.compile(r"^\s*\[\[\s*rules\s*\]\]")
    return [number for number, line in enumerate(text.splitlines(), start=1) if pattern.match(line)]


def _check_defaults(path: Path, raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [defaults] must be a table")
    for key, value in raw.items():
        if key not in _DEFAULT_KEYS:
            raise ConfigError(f"{path}: [defaults] {key}: unknown key; use {', '.join(sorted(_DEFAULT_KEYS))}")
        if not _is_number(value) or value <= 0:
            raise ConfigError(f"{path}: [defaults] {key}: expected a positive number, got {value!r}")
    return {key: float(value) for key, value in raw.items()}


def _build_rule(place: _Place, raw: Any, defaults: dict[str, float]) -> Rule:
    if not isinstance(raw, dict):
        raise place.error(None, "must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise place.error(None, "key 'name' is missing or empty")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise place.error(name, f"unknown key {unknown[0]!r}; rules take {', '.join(sorted(_RULE_KEYS))}")

    trigger = raw.get("on")
    if trigger not in TRIGGERS:
        raise place.error(name, f"key 'on': {trigger!r} is not one of {', '.join(TRIGGERS)}")
    action = raw.get("action")
    if action not in ACTIONS:
        raise place.error(name, f"key 'action': {action!r} is not one of {', '.join(ACTIONS)}")

    values: dict[str, Any] = {
        "name": name, "on": trigger, "action": action, "channel": ACTIONS[action],
        "once": _flag(place, name, raw, "once", default=(action == "handoff_sales")),
        "cooldown_hours": _positive(place, name, raw, "cooldown_hours", defaults.get("cooldown_hours", 72.0)),
        "expires_hours": _positive(place, name, raw, "expires_hours", defaults.get("expires_hours", 48.0)),
        "template": _text(place, name, raw, "template"),
    }
    values.update(_trigger_fields(place, name, trigger, raw))
    _check_template(place, name, action, trigger, values)

    return Rule(**values)


def _trigger_fields(place: _Place, name: str, trigger: str, raw: dict[str, Any]) -> dict[str, Any]:
    if trigger == "event":
        where = raw.get("where", {})
        if not isinstance(where, dict):
            raise place.error(name, "key 'where' must be a table of field = value")
        kinds = _kinds(place, name, raw)
        _check_where_fields(place, name, kinds, where)
        return {"kinds": kinds, "where": dict(where)}
    if trigger == "score_crossed":
        threshold = raw.get("threshold")
        if not _is_number(threshold) or not 0 < threshold <= 100:
            raise place.error(name, f"key 'threshold': expected a score in (0, 100], got {threshold!r}")
        return {"threshold": float(threshold)}
    within = _positive(place, name, raw, "within_days", None)
    sequence = _text_list(place, name, raw, "sequence")
    if not sequence:
        raise place.error(name, "key 'sequence': list the templates to send in order")
    delay = raw.get("min_delay_minutes", 30.0)
    if not _is_number(delay) or delay < 0:
        raise place.error(name, f"key 'min_delay_minutes': expected 0 or more, got {delay!r}")
    return {"kinds": _kinds(place, name, raw), "within_days": within, "min_delay_minutes": float(delay),
            "after": tuple(_text_list(place, name, raw, "after")), "sequence": tuple(sequence)}


def _check_where_fields(place: _Place, name: str, kinds: tuple[str, ...], where: dict[str, Any]) -> None:
    """Reject a `where` field that no event of the rule's kinds has, such as a typo."""
    fields = {spec["name"] for kind in kinds for spec in load_schema(kind)["fields"]}
    for field_name in where:
        if field_name not in fields:
            raise place.error(
                name, f"key 'where': events of kinds {', '.join(kinds)} have no field {field_name!r}; "
                f"fields: {', '.join(sorted(fields))}"
            )


def _check_template(place: _Place, name: str, action: str, trigger: str, values: dict[str, Any]) -> None:
    if action == "send_email" and trigger != "engaged_after_send" and not values["template"]:
        raise place.error(name, "key 'template' is required for action send_email")
    if trigger == "engaged_after_send" and values["template"]:
        raise place.error(name, "use 'sequence' instead of 'template' with on = engaged_after_send")


def _kinds(place: _Place, name: str, raw: dict[str, Any]) -> tuple[str, ...]:
    kinds = _text_list(place, name, raw, "kinds")
    if not kinds:
        raise place.error(name, f"key 'kinds': list one or more of {', '.join(EVENT_KINDS)}")
    for kind in kinds:
        if kind not in EVENT_KINDS:
            raise place.error(name, f"key 'kinds': {kind!r} is not one of {', '.join(EVENT_KINDS)}")
    return tuple(kinds)


def _text(place: _Place, name: str, raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise place.error(name, f"key {key!r}: expected non-empty text, got {value!r}")
    return value


def _text_list(place: _Place, name: str, raw: dict[str, Any], key: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise place.error(name, f"key {key!r}: expected a list of names, got {value!r}")
    return value


def _positive(place: _Place, name: str, raw: dict[str, Any], key: str, default: float | None) -> float:
    value = raw.get(key, default)
    if value is None:
        raise place.error(name, f"key {key!r} is required")
    if not _is_number(value) or value <= 0:
        raise place.error(name, f"key {key!r}: expected a positive number, got {value!r}")
    return float(value)


def _flag(place: _Place, name: str, raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise place.error(name, f"key {key!r}: expected true or false, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_unique_names(path: Path, rules: list[Rule], lines: list[int]) -> None:
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.name in seen:
            raise _Place(path, index, lines).error(rule.name, "duplicate rule name; names must be unique")
        seen.add(rule.name)


def evaluate(rules: list[Rule], lead: dict[str, Any], event: Event,
             previous_score: float | None, score: float) -> list[Decision]:
    """Return the rules that ``event`` fires for ``lead``, before any send gate."""
    decisions = []
    for rule in rules:
        if rule.on == "event" and _matches_event(rule, event):
            decisions.append(Decision(rule, rule.template))
        elif rule.on == "score_crossed" and (previous_score or 0.0) < rule.threshold <= score:
            decisions.append(Decision(rule, rule.template))
        elif rule.on == "engaged_after_send":
            follow_up = _next_in_sequence(rule, lead, event)
            if follow_up is not None:
                decisions.append(Decision(rule, *follow_up))

    return decisions


def _matches_event(rule: Rule, event: Event) -> bool:
    return event.kind in rule.kinds and matches_where(rule.where, event)


def matches_where(where: dict[str, Any], event: Event) -> bool:
    """Return True when every ``where`` field equals the event's (a list: is one of)."""
    for key, expected in where.items():
        actual = event.attrs.get(key)
        if isinstance(expected, list):
            if actual not in expected:
                return False
        elif actual != expected:
            return False
    return True


def _next_in_sequence(rule: Rule, lead: dict[str, Any], event: Event) -> tuple[str, str] | None:
    """Return (next unsent template, engaged template) when the event engages with an email.

    An open counts as engagement with the email it names, else with the latest
    one sent at least ``min_delay_minutes`` earlier (a sooner open is more likely
    a re-open of an older message); a click counts only when it names the email
    (command_id or template), because ordinary browsing says nothing about a
    message. Each email earns at most one follow-up.
    """
    if event.kind not in rule.kinds:
        return None
    engaged = _engaged_send(rule, lead, event)
    if engaged is None:
        return None
    template, record = engaged
    if record.get("followed_up") or event.event_time - record["at"] > rule.within_days * 86_400_000:
        return None

    for candidate in rule.sequence:
        if candidate not in lead["sends"]:
            return candidate, template
    return None


def _engaged_send(rule: Rule, lead: dict[str, Any], event: Event) -> tuple[str, dict[str, Any]] | None:
    emails = {
        template: record for template, record in lead["sends"].items()
        if record.get("channel") == "email" and record["at"] <= event.event_time
        and (not rule.after or template in rule.after)
    }
    command = event.attrs.get("command_id")
    named = event.attrs.get("template")
    for template, record in emails.items():
        if (command and record.get("command_id") == command) or (named and template == named):
            return template, record
    earliest_ms = event.event_time - int(rule.min_delay_minutes * 60_000)
    settled = {template: record for template, record in emails.items() if record["at"] <= earliest_ms}
    if event.kind != "open" or not settled:
        return None
    template = max(settled, key=lambda name: settled[name]["at"])
    return template, settled[template]
