"""The exactly-once outputs: which transaction a send joins, settling a batch, the guarantee setting."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nurture.config.errors import ConfigError
from nurture.config.settings import load_settings
from nurture.streams.app import build_app, enter_event
from nurture.streams.transactions import CLEAN_STOP_FILE, Outbox, mark_clean_stop, reset_local_tables


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None, timestamp: Any,
                   headers: Any, *, transactional_id: str | None = None) -> asyncio.Future:
        self.sent.append((topic, key, partition, transactional_id))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def transactional_app(producer: Producer) -> Any:
    groups = {"events.click": 1, "nurture-timers": 1}
    return SimpleNamespace(in_transaction=True, producer=producer, conf=SimpleNamespace(id="nurture"),
                           assignor=SimpleNamespace(group_for_topic=groups.__getitem__))


class Record:
    """An input record; Faust keeps the current event as a weak reference, which SimpleNamespace refuses."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition)


def commands_topic() -> Any:
    return SimpleNamespace(get_topic_name=lambda: "nurture.commands")


def test_send_joins_transaction_of_input_partition() -> None:
    producer = Producer()
    outbox = Outbox(transactional_app(producer), ())

    async def run() -> None:
        click = Record("events.click", 3)  # kept alive: the current event is a weak reference
        enter_event(click)
        await outbox.send(commands_topic(), b"lead-1", b"{}")

    asyncio.run(run())

    assert producer.sent == [("nurture.commands", b"lead-1", None, "nurture-1-3")]


def test_send_now_stays_outside_transactions() -> None:
    producer = Producer()
    outbox = Outbox(transactional_app(producer), ())

    asyncio.run(outbox.send_now(commands_topic(), b"lead-1", b"{}", 4))

    assert producer.sent == [("nurture.commands", b"lead-1", 4, None)]


def test_settle_waits_for_outputs_and_changelog_writes() -> None:
    async def run() -> tuple[list[Any], list[Any]]:
        loop = asyncio.get_running_loop()
        write, output = loop.create_future(), loop.create_future()
        batches = [[write]]

        async def send_changelog_batch() -> list[Any]:
            return batches.pop() if batches else []

        table = SimpleNamespace(send_changelog_batch=send_changelog_batch)
        outbox = Outbox(SimpleNamespace(in_transaction=False), [table])
        outbox.pending.append(output)
        settling = asyncio.ensure_future(outbox.settle())
        await asyncio.sleep(0.01)
        assert not settling.done()
        write.set_result(None)
        await asyncio.sleep(0.01)
        assert not settling.done()
        output.set_result(None)
        await settling
        return batches, outbox.pending

    unsent, pending = asyncio.run(run())

    assert unsent == []
    assert pending == []


@pytest.mark.parametrize(("guarantee", "kept"), [("exactly_once", False), ("at_least_once", True)])
def test_local_tables_reset_only_under_exactly_once(tmp_path: Path, guarantee: str, kept: bool) -> None:
    settings = load_settings(environ={"NURTURE_WORKER_DATA_DIR": str(tmp_path),
                                      "NURTURE_WORKER_PROCESSING_GUARANTEE": guarantee})
    app, _ = build_app(settings)
    rows = Path(app.conf.tabledir) / "leads-0.db"
    rows.mkdir(parents=True)

    reset_local_tables(app)

    assert rows.exists() is kept


def _app_with_rows(tmp_path: Path) -> tuple[Any, Path]:
    settings = load_settings(environ={"NURTURE_WORKER_DATA_DIR": str(tmp_path)})
    app, _ = build_app(settings)
    rows = Path(app.conf.tabledir) / "leads-0.db"
    rows.mkdir(parents=True)
    return app, rows


def _next_start(tmp_path: Path) -> Any:
    app, _ = build_app(load_settings(environ={"NURTURE_WORKER_DATA_DIR": str(tmp_path)}))
    reset_local_tables(app)
    return app


def test_clean_stop_keeps_tables_once(tmp_path: Path) -> None:
    app, rows = _app_with_rows(tmp_path)
    reset_local_tables(app)  # the worker's start
    rows.mkdir(parents=True)  # rows written while it ran
    mark_clean_stop(app)

    _next_start(tmp_path)

    assert rows.exists()
    assert not (rows.parent / CLEAN_STOP_FILE).exists()
    _next_start(tmp_path)  # no clean stop in between, as after a crash
    assert not rows.exists()


def test_other_commands_leave_tables_alone(tmp_path: Path) -> None:
    app, rows = _app_with_rows(tmp_path)  # what `nurture report` and the other commands build

    app.on_worker_init.send()
    mark_clean_stop(app)

    assert rows.exists()
    assert not (rows.parent / CLEAN_STOP_FILE).exists()


@pytest.mark.parametrize("fault", ["batch_in_flight", "crashed"])
def test_unclean_stop_leaves_no_mark(tmp_path: Path, fault: str) -> None:
    app, rows = _app_with_rows(tmp_path)
    app.tables_owned = True
    if fault == "batch_in_flight":
        app.batch_in_flight = True
    else:
        app._crash(RuntimeError("commit failed"))

    mark_clean_stop(app)

    assert not (rows.parent / CLEAN_STOP_FILE).exists()


def test_guarantee_setting_defaults_and_choices() -> None:
    assert load_settings(environ={}).worker.processing_guarantee == "exactly_once"
    with pytest.raises(ConfigError, match="'twice' is not one of exactly_once, at_least_once"):
        load_settings(environ={"NURTURE_WORKER_PROCESSING_GUARANTEE": "twice"})


def test_stream_buffer_setting_reaches_faust(tmp_path: Path) -> None:
    settings = load_settings(environ={"NURTURE_WORKER_DATA_DIR": str(tmp_path),
                                      "NURTURE_WORKER_STREAM_BUFFER_RECORDS": "1000"})
    app, _ = build_app(settings)

    assert app.conf.stream_buffer_maxsize == 1000
    assert load_settings(environ={}).worker.stream_buffer_records == 32768
    with pytest.raises(ConfigError, match="NURTURE_WORKER_STREAM_BUFFER_RECORDS: must be at least 1, got 0"):
        load_settings(environ={"NURTURE_WORKER_STREAM_BUFFER_RECORDS": "0"})


class _Store:
    def __init__(self) -> None:
        self.persisted: dict[Any, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset


def test_commit_persists_changelog_offsets_of_its_partitions(tmp_path: Path) -> None:
    from faust.types import TP

    app, _ = build_app(load_settings(environ={"NURTURE_WORKER_DATA_DIR": str(tmp_path)}))
    store = _Store()
    for partition, offset in ((0, 41), (1, 17)):
        app.tables.persist_offset_on_commit(store, TP("nurture-leads-changelog", partition), offset)

    app.tables.on_commit({TP("events.click", 0): 120, TP("events.form", 0): 9})

    assert store.persisted == {TP("nurture-leads-changelog", 0): 41}


class TransactionalProducer:
    """A stand-in for Faust's producer: its transactional producers by transactional id."""

    def __init__(self, transactional_ids: list[str]) -> None:
        self._transaction_producers = {tid: object() for tid in transactional_ids}
        self.calls: list[tuple[str, str]] = []

    async def stop_transaction(self, tid: str) -> None:
        self.calls.append(("stop", tid))
        self._transaction_producers.pop(tid, None)

    async def maybe_begin_transaction(self, tid: str) -> None:
        self.calls.append(("begin", tid))
        self._transaction_producers[tid] = object()


def test_rebalance_starts_fresh_producers_also_for_kept_partitions() -> None:
    from faust.types import TP

    from nurture.streams.faust_fixes import _TransactionManager

    # The worker held partitions 0 and 1 and keeps 1: its producer of 1 may have been
    # fenced by a worker that held 1 in between, so it is replaced as well.
    producer = TransactionalProducer(["nurture-1-0", "nurture-1-1"])
    app = SimpleNamespace(conf=SimpleNamespace(id="nurture"),
                          assignor=SimpleNamespace(group_for_topic=lambda topic: 1, is_standby=lambda tp: False))
    manager = _TransactionManager(SimpleNamespace(app=app), consumer=None, producer=producer)

    asyncio.run(manager.on_rebalance({TP("events.click", 1), TP("events.click", 2)}, set(), set()))

    assert producer.calls == [("stop", "nurture-1-0"), ("stop", "nurture-1-1"),
                              ("begin", "nurture-1-1"), ("begin", "nurture-1-2")]


class TransactionProducer:
    """One transactional producer whose ``send_offsets_to_transaction`` waits until every producer of the commit has called it."""

    def __init__(self, name: str, calls: list[tuple[str, str]], barrier: list[int], fail: bool = False) -> None:
        self.name, self.calls, self.barrier, self.fail = name, calls, barrier, fail

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.calls.append(("offsets", self.name))
        self.barrier[0] -= 1
        while self.barrier[0] > 0:
            await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError(f"{self.name} fenced")

    async def commit_transaction(self) -> None:
        self.calls.append(("commit", self.name))

    async def begin_transaction(self) -> None:
        self.calls.append(("begin", self.name))


def commit_all(names: list[str], failing: str | None = None) -> tuple[list[tuple[str, str]], Exception | None]:
    """Commit a transaction per name with ``_Producer``, and return the calls and the error raised."""
    from nurture.streams.faust_fixes import _Producer

    calls: list[tuple[str, str]] = []
    barrier = [len(names)]
    producer: Any = object.__new__(_Producer)
    producer._transaction_producers = {name: TransactionProducer(name, calls, barrier, name == failing)
                                       for name in names}
    producer._trn_locks = {name: asyncio.Lock() for name in names}

    async def run() -> Exception | None:
        try:
            await asyncio.wait_for(producer.commit_transactions({name: {} for name in names}, "nurture"), 5)
        except (RuntimeError, TimeoutError) as error:
            return error
        return None

    return calls, asyncio.run(run())


def test_commit_runs_transactions_at_once() -> None:
    names = ["nurture-1-0", "nurture-1-1", "nurture-1-2"]

    calls, error = commit_all(names)

    # Each send of offsets waits until all three have started: one after another would time out.
    assert error is None
    assert [call for call in calls if call[0] == "offsets"] == [("offsets", name) for name in names]
    assert sorted(call for call in calls if call[0] != "offsets") == sorted(
        [("commit", name) for name in names] + [("begin", name) for name in names])


def test_commit_error_raised_after_others_end() -> None:
    names = ["nurture-1-0", "nurture-1-1", "nurture-1-2"]

    calls, error = commit_all(names, failing="nurture-1-1")

    assert isinstance(error, RuntimeError)
    assert str(error) == "nurture-1-1 fenced"
    assert ("commit", "nurture-1-0") in calls
    assert ("commit", "nurture-1-2") in calls
    assert ("commit", "nurture-1-1") not in calls
