"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from nurture.agents.pipeline import Runtime
from nurture.agents.rules import load_rules
from nurture.schemas.records import Event
from nurture.scoring.model import LeadModel, load_model
from nurture.scoring.train import train
from nurture.streams.history import read_events

PROJECT = Path(__file__).resolve().parent.parent
CLICKSTREAM = PROJECT / "data" / "ecom-clickstream" / "ecom.csv.gz"
DEFAULT_RULES = PROJECT / "config" / "rules.toml"


@pytest.fixture(scope="session")
def history() -> list[Event]:
    return read_events(CLICKSTREAM)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, history: list[Event]) -> Path:
    """A model trained on the project's copy of the clickstream (fewer rounds, for speed)."""
    directory = tmp_path_factory.mktemp("model")
    train(history, directory, rounds=60, source_name=CLICKSTREAM.name)
    return directory


@pytest.fixture(scope="session")
def model(model_dir: Path) -> LeadModel:
    return load_model(model_dir)


@pytest.fixture()
def runtime(model: LeadModel) -> Runtime:
    return Runtime(model=model, rules=load_rules(DEFAULT_RULES), recent_event_ids=16)
