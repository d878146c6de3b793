"""The ``nurture`` command: Faust's command line with the engine's own commands.

``nurture worker`` is Faust's worker, preceded by the checks that must pass
before any record is consumed: the rule and journey files, the model and the topics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import structlog

from nurture.agents.ingest import RuntimeHolder
from nurture.agents.pipeline import Runtime
from nurture.agents.journeys.loader import load_journeys
from nurture.agents.rules import load_rules
from nurture.config.errors import NurtureError
from nurture.config.settings import Settings, load_settings
from nurture.streams.logs import configure_logging, set_worker_id, uses_json
from nurture.streams.gc_tuning import tune_gc
from nurture.streams.transactions import reset_local_tables

log = structlog.get_logger("nurture.cli")


def main() -> None:
    """Entry point of the ``nurture`` console script."""
    from faust.cli.faust import cli  # imported late: it pulls in all of Faust

    from nurture.streams.app import build_app

    try:
        settings = load_settings()
        configure_logging(settings.log)
        # Building the app also loads the TLS files of [kafka], so a bad one stops every command here.
        app, holder = build_app(settings)
    except NurtureError as exc:
        print(f"nurture: invalid settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _loaded[:] = [settings]
    _add_commands(cli, app, settings, holder)
    cli.help = (
        "Nurture: real-time lead nurturing on Kafka.\n\n"
        "Start with `nurture topics create`, `nurture train --history FILE` and "
        "`nurture worker`; the README lists every command and setting."
    )
    for name in ("livecheck", "models", "clean-versions", "send"):
        if name in cli.commands:
            cli.commands[name].hidden = True  # Faust commands that do not apply to Nurture
    _reject_unused_options(cli)
    if any(arg in ("-A", "--app") or arg.startswith("--app=") for arg in sys.argv[1:]):
        # Faust reads -A itself and imports that module before any option callback runs.
        print(f"nurture: -A/--app is not used by Nurture: {UNUSED_OPTIONS['app']}", file=sys.stderr)
        raise SystemExit(2)
    app.main()


# Faust's options that the settings replace: the app is built before they are read.
UNUSED_OPTIONS = {"datadir": "set [worker] data_dir or NURTURE_WORKER_DATA_DIR",
                  "app": "Nurture runs its own app; choose settings with NURTURE_CONFIG"}


def _reject_unused_options(cli: click.Group) -> None:
    """Hide Faust's global options that Nurture ignores, and stop with a hint when one is given."""

    def reject(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        source = ctx.get_parameter_source(param.name or "")
        if source in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT):
            flags = "/".join(param.opts)
            raise click.UsageError(f"{flags} is not used by Nurture: {UNUSED_OPTIONS[param.name or '']}")
        return value

    for param in cli.params:
        if param.name in UNUSED_OPTIONS:
            param.hidden = True  # type: ignore[attr-defined]
            param.callback = reject


def _add_commands(cli: click.Group, app: Any, settings: Settings, holder: RuntimeHolder) -> None:
    faust_worker = cli.commands["worker"]

    @click.pass_context
    def worker(ctx: click.Context, **options: Any) -> Any:
        web_address = (options.get("web_bind") or settings.worker.web_host,
                       options.get("web_port") or settings.worker.web_port)
        _prepare_worker(settings, holder, web_address)
        reset_local_tables(app)  # only here, once this process holds the data directory's lock
        if ctx.get_parameter_source("loglevel") == click.core.ParameterSource.DEFAULT:
            # Faust's own default is WARN, at which it also draws a progress spinner on
            # stdout; [log] level is the engine's setting for both.
            options["loglevel"] = FAUST_LOG_LEVELS[settings.log.level]
        if uses_json(settings.log):
            # Faust prints a text banner to stdout unless quiet; JSON logs must stay JSON.
            from faust.cli.base import State

            ctx.ensure_object(State).quiet = True
        return ctx.invoke(faust_worker, **options)

    cli.add_command(click.Command(
        "worker", params=faust_worker.params, callback=worker,
        help="Start a worker: check rules, journeys, model and topics, then consume events.",
    ))
    cli.add_command(topics)
    cli.add_command(model)  # replaces Faust's `model` command, which lists Faust records
    cli.add_command(train)
    cli.add_command(replay)
    cli.add_command(report)
    cli.add_command(journeys)
    from nurture.streams.deliver_cli import deliver
    from nurture.streams.privacy_cli import register

    cli.add_command(deliver)
    register(cli)


_loaded: list[Settings] = []
FAUST_LOG_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "error": "error"}


def _settings(ctx: click.Context) -> Settings:
    """Return the settings ``main`` loaded, so every command uses the same values."""
    return _loaded[0] if _loaded else load_settings()


_held_locks: list[Any] = []  # open lock files, held until the process exits


def _lock_data_dir(data_dir: str) -> None:
    """Fail before start-up when another worker uses the same data directory.

    RocksDB would refuse the second worker only after it joined the group and
    made every replica rebalance twice, so the worker takes a lock file first.
    """
    import fcntl

    path = Path(data_dir) / "nurture.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise click.ClickException(
            f"data directory {data_dir} is in use by {holder}; give each worker its own "
            "NURTURE_WORKER_DATA_DIR") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"worker pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _held_locks.append(handle)


def _check_web_port(host: str, port: int) -> None:
    """Fail before start-up when the worker's web port is taken, as by a second worker."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"web port {port} on {host} is not free ({exc.strerror}); give each worker its "
                "own port with NURTURE_WORKER_WEB_PORT or --web-port"
            ) from exc


def _prepare_worker(settings: Settings, holder: RuntimeHolder, web_address: tuple[str, int]) -> None:
    from nurture.agents.privacy.consent import Requirement
    from nurture.agents.privacy.keys import load_keys
    from nurture.agents.privacy.vault import Vault
    from nurture.scoring.model import load_model
    from nurture.scoring.rollout import ModelSlot
    from nurture.streams.topics import ensure_topics

    worker = settings.worker
    # The host name distinguishes replicas (a pod name under Kubernetes), and the
    # port distinguishes workers that share a host.
    set_worker_id(f"{socket.gethostname()}:{web_address[1]}")
    try:
        rules = load_rules(worker.rules_file)
        book = load_journeys(worker.journeys_file)
        model = load_model(worker.model_dir)
        ring = load_keys(settings.privacy.key_file, settings.privacy.keys)
        privacy = holder.privacy
        privacy.vault = Vault(ring)
        privacy.erasures.ring = ring
        requirement = Requirement(settings.privacy.purpose, settings.privacy.handoff_channel)
        book = dataclasses.replace(book, policy=dataclasses.replace(book.policy, consent=requirement))
        runtime = Runtime(model=model, rules=rules,
                          recent_event_ids=worker.recent_event_ids, book=book, erasures=privacy.erasures)
        holder.slots = [ModelSlot.open("live", worker.model_dir, lambda m: setattr(runtime, "model", m))]
        if worker.shadow_model_dir:
            holder.slots.append(ModelSlot.open("shadow", worker.shadow_model_dir,
                                               lambda m: setattr(runtime, "shadow", m)))
        _check_web_port(*web_address)
        _lock_data_dir(worker.data_dir)
        ensure_topics(settings)
    except NurtureError as exc:
        raise click.ClickException(str(exc)) from exc
    holder.runtime = runtime
    tune_gc()
    log.info("worker_starting", app_id=worker.app_id, broker=settings.bootstrap_servers, data_dir=worker.data_dir,
             security_protocol=settings.kafka.security_protocol,
             model_version=runtime.model.version,
             shadow_model_version=runtime.shadow.version if runtime.shadow else None,
             rules=[rule.name for rule in rules], journeys=[journey.name for journey in book.journeys],
             partitions=settings.kafka.partitions, stream_buffer_records=worker.stream_buffer_records,
             settings_source=settings.source)
    if worker.clock_file:
        log.warning("worker_clock_from_file", clock_file=worker.clock_file,
                    detail="journey waits follow the time in this file, not the system clock")


@click.group()
def topics() -> None:
    """Manage the engine's Kafka topics."""


@topics.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create missing topics with the configured partition count."""
    from nurture.streams.topics import ensure_topics

    settings = _settings(ctx)
    try:
        statuses = ensure_topics(settings)
    except NurtureError as exc:
        raise click.ClickException(str(exc)) from exc
    width = max(len(status.name) for status in statuses)
    for status in statuses:
        state = "created" if status.created else "exists"
        click.echo(f"{status.name:<{width}}{status.partitions:>5} partitions  {state}")


@topics.command("repartition")
@click.option("--partitions", type=click.IntRange(min=1), required=True,
              help="The new partition count of the event, feedback, timers and changelog topics.")
@click.pass_context
def topics_repartition(ctx: click.Context, partitions: int) -> None:
    """Add partitions with every worker stopped and move lead rows to their new partitions."""
    from nurture.streams.repartition import repartition

    try:
        report = repartition(_settings(ctx), partitions, progress=click.echo)
    except NurtureError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"done: set NURTURE_KAFKA_PARTITIONS={partitions} for every worker before starting them "
               f"({sum(report.moved.values())} rows moved)")


@click.command()
@click.option("--history", "history", type=click.Path(dir_okay=False), required=True,
              help="Event history: clickstream CSV or JSON Lines, optionally .gz.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Directory for model.txt and card.json [default: the worker's model_dir].")
@click.option("--until", "until", default=None,
              help="Use only events before this date (YYYY-MM-DD, UTC).")
@click.option("--horizon-days", default=7.0, show_default=True,
              help="A row is positive when the lead converts within this many days.")
@click.option("--eval-fraction", default=0.2, show_default=True,
              help="Latest share of the time range kept for evaluation.")
@click.option("--calibration-fraction", default=0.05, show_default=True,
              help="Share of the time range, before the evaluation slice, used to calibrate.")
@click.option("--rounds", default=200, show_default=True, help="Boosting rounds.")
@click.option("--points", "points_file", type=click.Path(dir_okay=False), default=None,
              help="Points file of the baseline [default: config/points.toml].")
@click.pass_context
def train(ctx: click.Context, history: str, out_dir: str | None, until: str | None,
          horizon_days: float, eval_fraction: float, calibration_fraction: float, rounds: int,
          points_file: str | None) -> None:
    """Train the lead-scoring model and write it with its model card."""
    from nurture.scoring.report import format_comparison
    from nurture.scoring.train import train as train_model
    from nurture.streams.history import read_events

    settings = _settings(ctx)
    out_dir = out_dir or settings.worker.model_dir
    cutoff = _parse_date(until, "--until") if until else None
    try:
        events = read_events(history)
        if cutoff is not None:
            events = [event for event in events if event.event_time < cutoff]
        card = train_model(events, out_dir, horizon_days=horizon_days, eval_fraction=eval_fraction,
                           calibration_fraction=calibration_fraction, rounds=rounds,
                           points_file=points_file, source_name=Path(history).name,
                           source_sha256=_sha256(history))
    except NurtureError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"model {card['version']} written to {out_dir}")
    click.echo(f"  trained on {card['train']['rows']} rows ({card['train']['from']} to {card['train']['to']})")
    click.echo(f"  evaluated on {card['eval']['rows']} later rows ({card['eval']['from']} to {card['eval']['to']}):")
    click.echo(format_comparison(card))


@click.group()
def model() -> None:
    """Inspect trained scoring models."""


@model.command("report")
@click.option("--model-dir", type=click.Path(file_okay=False), default=None,
              help="Model directory [default: the worker's model_dir].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="PNG to write the calibration and lift plots to [default: MODEL_DIR/report.png].")
@click.pass_context
def model_report(ctx: click.Context, model_dir: str | None, plot_path: str | None) -> None:
    """Print the model card and write calibration and lift plots."""
    from nurture.scoring.model import load_model
    from nurture.scoring.report import format_card, write_plots

    directory = Path(model_dir or _settings(ctx).worker.model_dir)
    try:
        card = load_model(directory).card
    except NurtureError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_card(card))
    written = write_plots(card, plot_path or directory / "report.png")
    click.echo(f"\nplots written to {written}")


@click.command()
@click.argument("history", type=click.Path(dir_okay=False))
@click.option("--since", default=None, help="Replay events from this date (YYYY-MM-DD, UTC).")
@click.option("--until", default=None, help="Replay events before this date (YYYY-MM-DD, UTC).")
@click.option("--speed", default=0.0, show_default=True,
              help="0 sends as fast as possible; N plays N seconds of history per second.")
@click.option("--limit", default=None, type=int, help="Send at most this many events.")
@click.pass_context
def replay(ctx: click.Context, history: str, since: str | None, until: str | None,
           speed: float, limit: int | None) -> None:
    """Produce a clickstream file's events to the event topics."""
    from nurture.streams.history import read_events
    from nurture.streams.replay import replay as replay_events
    from nurture.streams.replay import select

    settings = _settings(ctx)
    if speed < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--speed")
    since_ms = _parse_date(since, "--since") if since else None
    until_ms = _parse_date(until, "--until") if until else None
    try:
        events = select(read_events(history), since_ms, until_ms, limit)
        stats = replay_events(settings, events, speed=speed)
    except NurtureError as exc:
        raise click.ClickException(str(exc)) from exc
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(stats.by_kind.items()))
    click.echo(f"replayed {stats.events} events ({kinds}) in {stats.seconds:.1f} s")


@click.group(invoke_without_command=True)
@click.option("--wait-idle", default=0.0, show_default=True,
              help="First wait up to this many seconds for the worker to catch up.")
@click.option("--top", default=5, show_default=True, help="How many top leads to show.")
@click.pass_context
def report(ctx: click.Context, wait_idle: float, top: int) -> None:
    """Summarise the commands and dead letters on the topics.

    `nurture report campaigns` exports campaign figures to a CSV or Parquet file instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    from nurture.streams.report import format_report, read_report, wait_until_idle

    settings = _settings(ctx)
    try:
        result = wait_until_idle(settings, wait_idle) if wait_idle > 0 else None
        click.echo(format_report(read_report(settings), top=top))
    except NurtureError as exc:
        raise click.ClickException(str(exc)) from exc
    if result is not None and not result.idle:
        raise click.ClickException(f"the report above is incomplete: {result.reason}")


@report.command("campaigns", short_help="Export campaign figures to a CSV or Parquet file.")
@click.option("--since", default=None,
              help="Count commands from this date on (YYYY-MM-DD, UTC, or an ISO date and time).")
@click.option("--until", default=None,
              help="Count commands before this date (YYYY-MM-DD, UTC, or an ISO date and time).")
@click.option("--format", "file_format", type=click.Choice(["csv", "parquet"]), required=True,
              help="File format of --out.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="File to write; an existing file is replaced.")
@click.option("--conversion-days", default=7.0, show_default=True,
              help="A command counts as converted when its lead converts within this many days after it.")
@click.option("--time-field", type=click.Choice(["created_at", "event_time"]), default="created_at",
              show_default=True,
              help="Command time for the range and the conversion window; event_time suits a replayed history.")
@click.pass_context
def report_campaigns(ctx: click.Context, since: str | None, until: str | None, file_format: str,
                     out_path: str, conversion_days: float, time_field: str) -> None:
    """Export commands, sent, delivered, bounced, failed, opened, clicked, converted and unsubscribed per step, rule and template.

    docs/reporting.md defines each column.
    """
    from nurture.streams.campaign_export import export_campaigns, format_summary
    from nurture.streams.campaigns import ReportWindow

    since_ms = _parse_date(since, "--since") if since else None
    until_ms = _parse_date(until, "--until") if until else None
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise click.BadParameter(f"{until!r} is not after --since {since!r}", param_hint="--until")
    if conversion_days <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--conversion-days")
    window = ReportWindow(since_ms, until_ms, conversion_days, time_field)
    try:
        result = export_campaigns(_settings(ctx), window, out_path, file_format)
    except NurtureError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_summary(result, out_path))


@click.group()
def journeys() -> None:
    """Inspect journeys and where leads are in them."""


@journeys.command("show")
@click.argument("lead_id")
@click.option("--json", "as_json", is_flag=True, help="Print the stored lead row as JSON instead.")
@click.pass_context
def journeys_show(ctx: click.Context, lead_id: str, as_json: bool) -> None:
    """Print a lead's stage, each journey's step, what it waits for and when it moves next.

    Reads the lead's latest row from the lead table's changelog, so it works
    with or without a running worker.
    """
    import orjson

    from nurture.streams.clock import make_clock
    from nurture.agents.journeys.progress import describe_lead
    from nurture.streams.kafka_clients import BrokerConnectionError
    from nurture.streams.leads import read_lead

    from kafka.errors import KafkaError

    settings = _settings(ctx)
    try:
        book = load_journeys(settings.worker.journeys_file)
        lead = read_lead(settings, lead_id)
    except BrokerConnectionError as exc:
        raise click.ClickException(f"cannot read the lead table: {exc}") from exc
    except NurtureError as exc:
        raise click.ClickException(str(exc)) from exc
    except KafkaError as exc:
        raise click.ClickException(
            f"cannot read the lead table from the Kafka broker at {settings.bootstrap_servers}: {exc!r}; "
            "start it with `make kafka` or set NURTURE_BROKER") from exc
    if lead is None:
        raise click.ClickException(
            f"lead {lead_id!r} not found in the {settings.worker.app_id} lead table; "
            "check the id and NURTURE_WORKER_APP_ID")
    if as_json:
        click.echo(orjson.dumps(lead, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(describe_lead(lead, book, make_clock(settings.worker.clock_file).now_ms()))


def _parse_date(text: str, option: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date like 2024-05-01", param_hint=option) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
