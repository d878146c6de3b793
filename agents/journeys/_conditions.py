"""Building and checking journey triggers and exit goals. Private to ``loader.py``."""

from __future__ import annotations

from typing import Any

from nurture.config.settings import EVENT_KINDS
from nurture.schemas import load_schema

from ._checks import Table
from .spec import GOALS, STAGES, Condition

_CONDITION_KEYS = {
    "event": ("on", "kinds", "where"),
    "score_crossed": ("on", "threshold", "direction"),
    "stage_changed": ("on", "stage"),
    "score_above": ("on", "threshold"),
    "score_below": ("on", "threshold"),
    "stage_reached": ("on", "stage"),
}
# Python types that a TOML value may have to match an Avro field of this type.
_AVRO_TYPES = {"string": (str,), "boolean": (bool,), "int": (int,), "long": (int,), "float": (int, float),
               "double": (int, float)}


def build_exits(journey: Table) -> tuple[Condition, ...]:
    """Build the exit goals of ``journey``. The `exit` list is optional and may be empty."""
    raw = journey.raw.get("exit", [])
    if not isinstance(raw, list) or not all(isinstance(goal, dict) for goal in raw):
        raise journey.fail("exit", "expected a list of goals such as [{ on = \"stage_reached\", "
                                   f"stage = \"customer\" }}], got {raw!r}")
    goals = []
    for index, goal in enumerate(raw):
        place = journey.place.within(f"exit goal {index + 1}", ("exit", index))
        goals.append(build_condition(Table(place, goal), GOALS))
    return tuple(goals)


def build_condition(table: Table, options: tuple[str, ...]) -> Condition:
    """Build a trigger (``options`` is TRIGGERS) or an exit goal (GOALS)."""
    on = table.choice("on", options)
    table.check_keys(_CONDITION_KEYS[on], f"on = {on!r}")
    if on == "event":
        kinds = table.names("kinds", EVENT_KINDS)
        return Condition(on, kinds=kinds, where=_where(table, kinds))
    if on in ("stage_changed", "stage_reached"):
        return Condition(on, stage=table.choice("stage", STAGES))
    direction = table.choice("direction", ("up", "down"), default="up")
    return Condition(on, threshold=table.score("threshold"), direction=direction)


def _where(table: Table, kinds: tuple[str, ...]) -> dict[str, Any]:
    """Check that each `where` field exists in an event of ``kinds`` and that its value can match it."""
    where = table.table("where", required=False)
    if where is None:
        return {}
    schemas = [{spec["name"]: spec["type"] for spec in load_schema(kind)["fields"]} for kind in kinds]
    for name, expected in where.raw.items():
        types = [fields[name] for fields in schemas if name in fields]
        if not types:
            known = sorted({field for fields in schemas for field in fields})
            raise where.fail(name, f"events of kinds {', '.join(kinds)} have no field {name!r}; "
                                   f"fields: {', '.join(known)}")
        values = expected if isinstance(expected, list) else [expected]
        if not values:
            raise where.fail(name, "an empty list matches no event; list one or more values")
        for value in values:
            if not any(_fits(value, avro_type) for avro_type in types):
                raise where.fail(name, f"{value!r} can never match, because the field is of type "
                                       f"{_type_name(types[0])}")
    return dict(where.raw)


def _fits(value: Any, avro_type: Any) -> bool:
    if isinstance(avro_type, list):  # a union such as ["null", "string"]
        return any(_fits(value, member) for member in avro_type)
    if not isinstance(avro_type, str) or avro_type not in _AVRO_TYPES:
        return False  # maps, records and null: `where` compares plain values only
    if isinstance(value, bool) and avro_type != "boolean":
        return False
    return isinstance(value, _AVRO_TYPES[avro_type])


def _type_name(avro_type: Any) -> str:
    """Name an Avro type for a message: ``["null", "string"]`` is "string", a map is "map"."""
    if isinstance(avro_type, list):
        return " or ".join(_type_name(member) for member in avro_type if member != "null")
    if isinstance(avro_type, dict):
        return str(avro_type.get("type"))
    return str(avro_type)
