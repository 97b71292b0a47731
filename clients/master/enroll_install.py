"""``crc enroll create --print-install``: the daemon build this master vouches for, and the one-liners that
install it on existing machines (``provisioning.install_command``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from clients.master.sdk import Master
from provisioning.install_command import InstallParams, install_commands
from provisioning.release import publish_release

# Stands for the token while the lines are checked, before the token exists: nothing is issued for lines that
# cannot be made.
_PLACEHOLDER = "crc-enroll-token"


async def prepare(master: Master, *, os_name: str, hub: str, pin: str, token_path: str,
                  wheel: Path | None) -> InstallParams:  # fmt: skip
    """Publish this master's daemon build to the hub (as ``crc up`` does) and check that the lines can be made.

    Raises:
        ReleaseError: no build to vouch for, or the hub lacks its dependencies.
        InstallCommandError: not a line that can be made from these values.
    """
    release = await publish_release(master, wheel)
    params = InstallParams(hub, release, token="" if token_path else _PLACEHOLDER, token_path=token_path, pin=pin)
    install_commands(params, os_name)
    return params


def lines(params: InstallParams, token_text: str, os_name: str) -> dict[str, str]:
    """The one-liner for each OS, holding ``token_text`` unless the token is read from a file on the machine."""
    if not params.token_path:
        params = dataclasses.replace(params, token=token_text)
    return install_commands(params, os_name)
