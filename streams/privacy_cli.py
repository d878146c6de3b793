"""The ``nurture consent`` and ``nurture privacy`` commands."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from nurture.config.errors import NurtureError
from nurture.config.settings import Settings, load_settings
from nurture.streams import privacy_io


def _settings() -> Settings:
    from nurture.streams.cli import _loaded

    return _loaded[0] if _loaded else load_settings()


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def consent() -> None:
    """Check the consent ledger and show a lead's consent history."""


@consent.command("verify")
def consent_verify() -> None:
    """Check every partition's hash chain; name the first entry changed, removed or reordered."""
    try:
        results = privacy_io.verify_ledger(_settings())
    except NurtureError as exc:
        raise _fail(exc) from exc
    broken = [result for result in results if result.problem is not None]
    for result in results:
        state = "ok" if result.problem is None else "BROKEN"
        click.echo(f"partition {result.partition:>3}  entries {result.entries:>7}  head {result.head}  {state}")
    if broken:
        for result in broken:
            click.echo(f"ledger broken at {result.problem}", err=True)
        sys.exit(1)
    click.echo(f"consent ledger intact: {sum(r.entries for r in results)} entries in {len(results)} partitions")


@consent.command("history")
@click.argument("lead_id")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON lines.")
def consent_history(lead_id: str, as_json: bool) -> None:
    """Print the consent ledger entries of LEAD_ID, oldest first."""
    try:
        entries = privacy_io.lead_history(_settings(), lead_id)
    except NurtureError as exc:
        raise _fail(exc) from exc
    if as_json:
        for entry in entries:
            click.echo(orjson.dumps(entry).decode())
        return
    if not entries:
        click.echo(f"no consent ledger entries for lead {lead_id}")
        return
    for entry in entries:
        change = "grant" if entry["granted"] else "withdrawal"
        applied = "" if entry["applied"] else "  (older than the current state; not applied)"
        click.echo(f"{privacy_io.iso(entry['event_time'])}  {change:<10} {entry['channel']}/{entry['purpose']}  "
                   f"source {entry['source']}  text {entry['text_version']}  "
                   f"entry {entry['partition']}:{entry['seq']}{applied}")


@click.group()
def privacy() -> None:
    """Keys, erasure and export of personal data."""


@privacy.command("keygen")
@click.argument("key_file", type=click.Path(dir_okay=False))
@click.option("--rotate", is_flag=True, help="Add a new data key to an existing file and make it current.")
def privacy_keygen(key_file: str, rotate: bool) -> None:
    """Write a new key ring to KEY_FILE (mode 0600), or rotate its data key."""
    try:
        name = privacy_io.write_keys(Path(key_file), rotate)
    except NurtureError as exc:
        raise _fail(exc) from exc
    click.echo(f"{'rotated' if rotate else 'created'} {key_file}; current data key: {name}")


@privacy.command("erase")
@click.argument("lead_id")
@click.option("--by", "requested_by", default=None, help="Who asks (default: the login name).")
@click.option("--wait", "wait_seconds", default=60.0, show_default=True,
              help="Seconds to wait for the worker's receipt; 0 sends the request and returns.")
def privacy_erase(lead_id: str, requested_by: str | None, wait_seconds: float) -> None:
    """Ask the workers to erase LEAD_ID, and print their receipt."""
    _request("erase", lead_id, requested_by, wait_seconds)


@privacy.command("export")
@click.argument("lead_id")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON to this file (mode 0600) instead of standard output.")
def privacy_export(lead_id: str, out_path: str | None) -> None:
    """Print everything held about LEAD_ID as JSON, read from the changelogs."""
    try:
        document = privacy_io.export_lead(_settings(), lead_id)
    except NurtureError as exc:
        raise _fail(exc) from exc
    if document is None:
        raise click.ClickException(f"no stored data for lead {lead_id}")
    payload = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    if out_path is None:
        click.echo(payload.decode())
    else:
        privacy_io.write_private(Path(out_path), payload)
        click.echo(f"wrote {out_path}", err=True)


def _request(action: str, lead_id: str, requested_by: str | None, wait_seconds: float) -> None:
    by = requested_by or getpass.getuser()
    try:
        request_id, receipt = privacy_io.send_request(_settings(), action, lead_id, by, wait_seconds)
    except NurtureError as exc:
        raise _fail(exc) from exc
    if receipt is None:
        message = f"request {request_id} sent"
        if wait_seconds > 0:
            message += f"; no receipt within {wait_seconds:g} s (is a worker running?)"
        click.echo(message)
        return
    click.echo(orjson.dumps(receipt, option=orjson.OPT_INDENT_2).decode())


def register(cli: Any) -> None:
    cli.add_command(consent)
    cli.add_command(privacy)
