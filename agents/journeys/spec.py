"""The parsed form of a journey file: policy, lifecycle settings and journeys.

``agents/journeys/loader.py`` builds these from TOML and checks them, so the
engine can trust every field: step ids resolve, durations are in range and
time zones exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nurture.agents.privacy.consent import Requirement

STAGES = ("subscriber", "lead", "marketing_qualified", "sales_qualified", "customer")
# Channels that reach the lead; quiet hours and caps apply to these.
MESSAGE_CHANNELS = ("email", "sms", "push")
SEND_ACTIONS = {"email": "send_email", "sms": "send_sms", "push": "send_push"}
ENGAGEMENTS = ("opened", "clicked", "engaged")  # engaged: opened or clicked
STEP_TYPES = ("send", "wait", "branch", "handoff", "stage")
TRIGGERS = ("event", "score_crossed", "stage_changed")
GOALS = ("event", "score_above", "score_below", "stage_reached")
REENTRY = ("never", "after_exit")

MINUTE_MS = 60_000
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Condition:
    """A journey trigger or exit goal.

    ``on`` is one of TRIGGERS for a trigger and one of GOALS for an exit goal.
    """

    on: str
    kinds: tuple[str, ...] = ()  # event: the event kinds that match
    where: dict[str, Any] = field(default_factory=dict)  # event: field = value (a list: any of)
    threshold: float = 0.0  # score_crossed, score_above, score_below: 0-100
    direction: str = "up"  # score_crossed: "up" or "down"
    stage: str | None = None  # stage_changed, stage_reached: one of STAGES


@dataclass(frozen=True)
class Step:
    """One step of a journey. ``type`` selects which of the typed fields apply."""

    id: str
    type: str  # one of STEP_TYPES
    next: str | None  # the step after this one; None ends the journey
    line: int | None = None  # line of the step's table in the file
    # send: a message on a channel. handoff: a sales hand-off (channel crm).
    channel: str | None = None
    template: str | None = None
    expires_hours: float = 48.0
    # wait: either a duration, or until the next weekday and time in the lead's zone.
    duration_ms: int | None = None
    weekday: int | None = None  # 0 is Monday; None with an hour: the next day at that time
    hour: int | None = None
    minute: int = 0
    # branch: engagement with an earlier send step within a window from that send.
    engaged: str | None = None  # one of ENGAGEMENTS
    step: str | None = None  # id of the send step it looks at
    within_ms: int | None = None
    then: str | None = None  # None ends the journey
    otherwise: str | None = None  # the file's key is `else`; None ends the journey
    # stage: the lifecycle stage to set (handoff sets sales_qualified).
    stage: str | None = None


@dataclass(frozen=True)
class Journey:
    name: str
    trigger: Condition
    steps: tuple[Step, ...]
    exits: tuple[Condition, ...] = ()
    reentry: str = "never"  # one of REENTRY
    reentry_after_ms: int = 0  # after_exit: minimum time between the end of one run and the next entry
    line: int | None = None

    def step_by_id(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(f"journey {self.name!r} has no step {step_id!r}")


@dataclass(frozen=True)
class Cap:
    """At most ``limit`` messages on ``channel`` within ``window_ms``, over all rules and journeys."""

    channel: str
    limit: int
    window_ms: int


@dataclass(frozen=True)
class QuietHours:
    """Local time of day, in minutes after midnight, when no message goes out.

    ``start_minute`` may be later than ``end_minute``: 21:00 to 08:00 spans midnight.
    """

    start_minute: int
    end_minute: int
    channels: tuple[str, ...] = MESSAGE_CHANNELS


@dataclass(frozen=True)
class Lifecycle:
    """When a lead moves up a stage without a journey step saying so."""

    lead_on_form: bool = True  # a form with an email address makes a subscriber a lead
    marketing_qualified_score: float | None = 40.0  # None: only journey steps set it
    customer_on_conversion: bool = True


@dataclass(frozen=True)
class Policy:
    time_zone: str = "UTC"  # IANA zone for leads whose profile names none
    quiet_hours: QuietHours | None = None
    caps: dict[str, Cap] = field(default_factory=dict)  # by channel
    max_delay_ms: int = 3 * DAY_MS  # a command deferred longer than this is dropped
    # A message whose time lies more than this before the worker clock is dropped as stale
    # (a live backfill of old events); None sends it, as a replay of history wants.
    stale_after_ms: int | None = None
    consent: Requirement = field(default_factory=Requirement)  # set from the [privacy] settings


@dataclass(frozen=True)
class JourneyBook:
    """Everything a journey file declares."""

    policy: Policy = field(default_factory=Policy)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    journeys: tuple[Journey, ...] = ()
    source: str = "defaults"
