"""Processing of one valid event: de-duplicate, update, score, decide, build commands.

This is plain code without Faust, so the agent, the tests and offline tools run
the same steps. The caller loads and stores the lead row and publishes commands.
The work is split in two around scoring so that the agent can score a whole batch
of events with one model call. ``prepare`` updates the features and returns the
row to score, and ``decide`` takes the score and returns the commands. Running both
per event, as ``process_event`` does, gives the same result as the batched path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nurture.agents.commands import build_command
from nurture.agents.dispatch import Dispatcher
from nurture.agents.feedback import apply_feedback
from nurture.agents.gate import hold_reason
from nurture.agents.journeys import engine
from nurture.agents.journeys.spec import JourneyBook
from nurture.agents.lifecycle import set_stage, stages_after_event
from nurture.agents.privacy.consent import apply_consent, form_consents
from nurture.agents.privacy.erasure import ErasureMemory
from nurture.agents.rules import Rule, evaluate
from nurture.agents.state import record_activity, record_issued, record_score, record_send, remember_event
from nurture.schemas.records import Event
from nurture.scoring import features
from nurture.scoring.model import LeadModel, ScoredLead

PROFILE_FIELDS = features.PROFILE_FIELDS


@dataclass
class Runtime:
    """The model, rules and journeys the worker loads at start."""

    model: LeadModel
    rules: list[Rule]
    recent_event_ids: int = 64
    shadow: LeadModel | None = None  # a candidate scored beside the live model, never published
    book: JourneyBook = field(default_factory=JourneyBook)
    erasures: ErasureMemory | None = None  # erased addresses need consent given after their erasure


@dataclass(frozen=True)
class Delivery:
    """A delivery outcome; ``latency_ms`` runs from the command's creation, None when unknown."""

    channel: str
    status: str
    at_ms: int
    latency_ms: int | None
    command_id: str = ""


@dataclass
class Outcome:
    duplicate: bool = False
    score: float | None = None
    commands: list[dict[str, Any]] = field(default_factory=list)
    held_back: list[tuple[str, str]] = field(default_factory=list)  # (rule, reason) by the rule gate
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (rule, reason) by the delivery policy
    deferred: list[tuple[str, str, int]] = field(default_factory=list)  # (rule, reason, due)
    blocked: str | None = None  # feedback only: "channel_blocked" when a hard bounce closed a channel
    delivery: "Delivery | None" = None  # feedback only: the outcome, for service levels
    journey_log: list[tuple[str, str, str]] = field(default_factory=list)  # (journey, what, detail)
    # Consent changes for the ledger, each with whether it became the current state.
    consents: list[tuple[Event, bool]] = field(default_factory=list)
    # With a shadow model: the (rule, template) pairs it would have sent.
    shadow_sends: list[tuple[str, str | None]] | None = None

    @property
    def live_sends(self) -> list[tuple[str, str | None]]:
        return [(command["rule"], command["template"]) for command in self.commands]


@dataclass(frozen=True)
class Prepared:
    """The feature row of one event and the time it was read at."""

    row: list[float]
    at_ms: int


def prepare(lead: dict[str, Any], event: Event, recent_event_ids: int) -> Prepared | None:
    """Fold ``event`` into the lead's features; return the row to score, or None for a repeat."""
    if not remember_event(lead, event.event_id, recent_event_ids):
        return None
    features.update(lead["features"], event)
    at_ms = features.scoring_time(lead["features"])

    return Prepared(features.vector(lead["features"], at_ms), at_ms)


def decide(lead: dict[str, Any], event: Event, prepared: Prepared, scored: ScoredLead,
           runtime: Runtime, now_ms: int | None = None,
           shadow_scored: ScoredLead | None = None) -> Outcome:
    """Apply the score, the rules and the journeys for ``event`` and build the commands it produces."""
    _update_profile(lead, event)
    _raise_consent_floor(lead, event, runtime.erasures)
    record_activity(lead, event.event_time, event.kind, _activity_detail(event))
    outcome = Outcome(score=scored.score)
    # Boxes ticked on this form count before the rules look at it.
    outcome.consents = [(change, apply_consent(lead, change)) for change in form_consents(event)]
    if shadow_scored is not None and runtime.shadow is not None:
        outcome.shadow_sends = _shadow_sends(lead, event, shadow_scored, runtime.rules,
                                             runtime.shadow.version)
    # Contributions cost far more than a score, so only commands pay for them.
    dispatcher = Dispatcher(lead, runtime.book.policy, lambda _: (None, runtime.model.explain(prepared.row)),
                            now_ms)
    # Waits and deferred commands that came due before this event act before it.
    _run_due(lead, event.event_time, runtime, dispatcher, outcome)
    dispatcher.trigger_event_id = event.event_id

    previous = record_score(lead, prepared.at_ms, scored.score, runtime.model.version)
    lead["probability"] = scored.probability
    stages = stages_after_event(lead, event, scored.score, runtime.book.lifecycle)
    stages.extend(_apply_rules(lead, event, previous, scored.score, runtime, dispatcher, outcome))
    context = engine.Context(lead, runtime.book, dispatcher.journey_send)
    engine.on_event(context, event, previous, scored.score, stages)

    return _finish(outcome, dispatcher, context)


def _apply_rules(lead: dict[str, Any], event: Event, previous: float | None, score: float,
                 runtime: Runtime, dispatcher: Dispatcher, outcome: Outcome) -> list[str]:
    """Submit the commands of the rules ``event`` fires; return the stages they set."""
    stages = []
    for decision in evaluate(runtime.rules, lead, event, previous, score):
        rule = decision.rule
        reason = hold_reason(lead, decision, event.event_time)
        if reason is not None:
            outcome.held_back.append((rule.name, reason))
            continue
        if rule.action == "handoff_sales" and set_stage(lead, "sales_qualified", event.event_time,
                                                        f"rule:{rule.name}"):
            stages.append("sales_qualified")
        command = build_command(lead, decision, event, dispatcher.reasons(event.event_time), dispatcher.now_ms)
        record_send(lead, decision.send_key, rule.channel, event.event_time, command["command_id"])
        if decision.follows_up is not None:
            lead["sends"][decision.follows_up]["followed_up"] = True
        if rule.once:
            lead["fired_once"].append(rule.name)
        dispatcher.submit(command, event.event_time, rule.expires_hours)
    return stages


def process_due(lead: dict[str, Any], now_ms: int, runtime: Runtime,
                created_ms: int | None = None) -> Outcome:
    """Fire the journey waits and deferred commands of ``lead`` that are due at ``now_ms``.

    ``created_ms`` is the worker clock's time, which stamps the commands.
    """
    outcome, dispatcher, context = _catch_up(lead, now_ms, runtime, created_ms)
    return _finish(outcome, dispatcher, context)


def _catch_up(lead: dict[str, Any], at_ms: int, runtime: Runtime,
              created_ms: int | None) -> tuple[Outcome, Dispatcher, engine.Context]:
    """Start an outcome without an event to score, and fire what of the lead is due at ``at_ms``."""
    outcome = Outcome(score=lead.get("score"))
    dispatcher = Dispatcher(lead, runtime.book.policy, lambda at: _assess_at(lead, at, runtime), created_ms)
    return outcome, dispatcher, _run_due(lead, at_ms, runtime, dispatcher, outcome)


def process_feedback(lead: dict[str, Any], feedback: Event, runtime: Runtime,
                     created_ms: int | None = None) -> Outcome:
    """Apply a delivery outcome, then let branches waiting for engagement look again."""
    if not remember_event(lead, feedback.event_id, runtime.recent_event_ids):
        return Outcome(duplicate=True)
    outcome, dispatcher, context = _catch_up(lead, feedback.event_time, runtime, created_ms)
    outcome.blocked = apply_feedback(lead, feedback)
    issued = lead["issued"].get(feedback.attrs["command_id"])
    outcome.delivery = Delivery(feedback.attrs["channel"], feedback.attrs["status"], feedback.event_time,
                                feedback.event_time - issued[0] if issued else None,
                                feedback.attrs["command_id"])
    engine.on_engagement(context, feedback.event_time)
    return _finish(outcome, dispatcher, context)


def process_consent(lead: dict[str, Any], change: Event, runtime: Runtime,
                    created_ms: int | None = None) -> Outcome:
    """Apply a consent change; what is due before it acts first, under the consent it replaces."""
    if not remember_event(lead, change.event_id, runtime.recent_event_ids):
        return Outcome(duplicate=True)
    outcome, dispatcher, context = _catch_up(lead, change.event_time, runtime, created_ms)
    outcome.consents.append((change, apply_consent(lead, change)))
    return _finish(outcome, dispatcher, context)


def _raise_consent_floor(lead: dict[str, Any], event: Event, erasures: ErasureMemory | None) -> None:
    """Raise the lead's consent floor to the erasure time of its address, whatever lead it comes back as."""
    if erasures is None or event.kind != "form":
        return
    erased_at = erasures.address_erased_at(lead["profile"])
    if erased_at is not None and erased_at > (lead.get("consent_floor") or 0):
        lead["consent_floor"] = erased_at


def _run_due(lead: dict[str, Any], now_ms: int, runtime: Runtime, dispatcher: Dispatcher,
             outcome: Outcome) -> engine.Context:
    """Work through the lead's due items in time order, since one may schedule the next."""
    context = engine.Context(lead, runtime.book, dispatcher.journey_send)
    for _ in range(100):
        due = engine.next_due(lead)
        if due is None or due > now_ms:
            break
        dispatcher.trigger_event_id = ""
        dispatcher.release(due)
        engine.on_due(context, due)
    outcome.journey_log.extend(context.log)
    context.log = []
    return context


def _finish(outcome: Outcome, dispatcher: Dispatcher, context: engine.Context) -> Outcome:
    for command in dispatcher.commands:
        record_issued(context.lead, command)
    outcome.commands.extend(dispatcher.commands)
    outcome.dropped.extend(dispatcher.dropped)
    outcome.deferred.extend(dispatcher.deferred)
    outcome.journey_log.extend(context.log)
    return outcome


def _assess_at(lead: dict[str, Any], at_ms: int, runtime: Runtime) -> tuple[float, list[dict[str, Any]]]:
    """Score the lead and give its reasons as of ``at_ms``, which may lie after its latest event.

    A wait that fires days after the lead's last event should not report
    "2 opens in the last 24 hours" about opens three days old.
    """
    at_ms = max(at_ms, features.scoring_time(lead["features"]))
    row = features.vector(lead["features"], at_ms)
    return runtime.model.score([row])[0].score, runtime.model.explain(row)


def _activity_detail(event: Event) -> str:
    if event.kind == "click":
        return str(event.attrs.get("page") or "")
    if event.kind == "open":
        return str(event.attrs.get("template") or event.attrs.get("channel") or "")
    form = str(event.attrs.get("form") or "")
    return f"{form} (conversion)" if event.is_conversion else form


def process_event(lead: dict[str, Any], event: Event, runtime: Runtime,
                  now_ms: int | None = None) -> Outcome:
    """Apply ``event`` to ``lead`` in place and return the commands it produces."""
    prepared = prepare(lead, event, runtime.recent_event_ids)
    if prepared is None:
        return Outcome(duplicate=True)
    scored = runtime.model.score([prepared.row])[0]
    shadow = runtime.shadow.score([prepared.row])[0] if runtime.shadow is not None else None

    return decide(lead, event, prepared, scored, runtime, now_ms, shadow)


def _shadow_sends(lead: dict[str, Any], event: Event, scored: ScoredLead, rules: list[Rule],
                  version: str) -> list[tuple[str, str | None]]:
    """Return what the shadow model's score would send; nothing is built or recorded."""
    previous = lead.get("shadow", {}).get("score")
    lead["shadow"] = {"score": scored.score, "model_version": version}
    return [
        (decision.rule.name, decision.template)
        for decision in evaluate(rules, lead, event, previous, scored.score)
        if hold_reason(lead, decision, event.event_time) is None
    ]


def _update_profile(lead: dict[str, Any], event: Event) -> None:
    """Keep the latest value of each profile field by event time, in any arrival order."""
    if event.kind != "form":
        return
    submitted = event.attrs.get("fields") or {}
    times = lead.setdefault("profile_times", {})
    for name in PROFILE_FIELDS:
        value = submitted.get(name)
        if value and event.event_time >= times.get(name, -1):
            lead["profile"][name] = value
            times[name] = event.event_time
