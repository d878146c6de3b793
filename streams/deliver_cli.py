"""The ``nurture deliver`` command."""

from __future__ import annotations

import click

from nurture.config.errors import NurtureError
from nurture.config.settings import load_settings


@click.command()
@click.option("--once", is_flag=True,
              help="Exit when every assigned partition of the commands topic is caught up, "
                   "instead of waiting for new commands.")
def deliver(once: bool) -> None:
    """Send email commands over SMTP and publish each outcome to the feedback topic.

    Settings are in [deliver]; SIGTERM or SIGINT stops the worker after the command in hand.
    """
    import os
    import socket

    from nurture.streams.deliver import run_delivery  # imported late: kafka-python and Jinja2
    from nurture.streams.logs import set_worker_id

    set_worker_id(f"deliver@{socket.gethostname()}:{os.getpid()}")
    try:
        run_delivery(load_settings(), once=once)
    except NurtureError as exc:
        raise click.ClickException(str(exc)) from exc
