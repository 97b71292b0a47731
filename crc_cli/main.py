"""``crc``: the master's commands (``clients/master/cli.py``) and the hub's (``crc hub``, ``server/cli.py``) in one
command. Joining them here keeps ``server`` and ``clients`` apart: ``crc hub --dev`` enrols the master's own key,
which only the master's side knows how to find, so that part is handed to the hub's parser from here."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence

from clients.master import cli as master_cli
from clients.master.keys import load_or_create_master_key
from server.cli import add_hub_parser


def dev_master_key(path: str | None) -> tuple[str, str]:
    """The master key ``crc hub --dev`` enrols (made if missing): its public key text, and how to name it."""
    identity, file = load_or_create_master_key(path)
    return identity.public.to_text(), f"{file} ({identity.id})"


COMMANDS: tuple[master_cli.AddCommands, ...] = (functools.partial(add_hub_parser, dev_master_key=dev_master_key),)


def build_parser() -> argparse.ArgumentParser:
    return master_cli.build_parser(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    return master_cli.main(argv, commands=COMMANDS)
