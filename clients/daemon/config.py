"""The daemon's TOML config: which hub, which machine it is (with its private key), and whose orders it obeys."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import CrcError, Identity, ProtocolError, PublicKey


class ConfigError(CrcError):
    """The config file is missing, unreadable or has a bad value; the message names the file and the key."""


@dataclass(frozen=True)
class Ensemble:
    """The role and labels of the enrollment token a machine joined with (no approval needed), as it read them
    from that master-signed token: until its master certifies it, this is what tells it which compositions are
    its own (``protocol.compositions``)."""

    role: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DaemonConfig:
    """Attributes:
    hub: hub URL (http(s):// or ws(s)://).
    scenario: the scenario this machine belongs to.
    machine_name: its name in the scenario.
    identity: the machine's private key (its id is derived from it).
    master_key: the only key whose signed orders this daemon carries out.
    parallel: how many orders run at once (1 keeps them strictly in order).
    hub_pin: ``sha256:<hex>`` of the hub's TLS certificate; when set, no other certificate is accepted.
    ensemble: for a machine that joined with an enrollment token (without approval), that token's role and labels.
    sealed: its scenario is sealed (``protocol.sealed_orders``): plain command and hosts orders, and orders signed
        under an access token's delegation, are refused.
    """

    hub: str
    scenario: str
    machine_name: str
    identity: Identity
    master_key: PublicKey
    parallel: int = 1
    hub_pin: str = ""
    machine: str = ""  # the machine's id when its key was rotated (ids stay; see clients/daemon/keys.py)
    ensemble: Ensemble | None = None
    sealed: bool = False

    @property
    def machine_id(self) -> str:
        return self.machine or self.identity.id


def _get(data: dict[str, Any], key: str, path: Path) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: {key!r} is missing or not a string")
    return value


def load_config(path: str | Path) -> DaemonConfig:
    """Read and check a daemon config.

    Raises:
        ConfigError: with the file and the offending key named.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no daemon config at {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        identity = Identity.from_private_text(_get(data, "private_key", path))
        master_key = PublicKey.from_text(_get(data, "master_public_key", path))
    except ProtocolError as exc:
        raise ConfigError(f"{path}: {exc.message}") from None
    machine_id = data.get("machine_id")
    if machine_id is not None and machine_id != identity.id:
        raise ConfigError(f"{path}: machine_id {machine_id!r} does not match the private key ({identity.id})")
    parallel = data.get("parallel", 1)
    if not isinstance(parallel, int) or parallel < 1:
        raise ConfigError(f"{path}: 'parallel' must be a positive integer")
    hub_pin = data.get("hub_cert_sha256", "")
    if not isinstance(hub_pin, str) or (hub_pin and not hub_pin.startswith("sha256:")):
        raise ConfigError(f"{path}: 'hub_cert_sha256' must look like sha256:<hex>")
    sealed = data.get("sealed", False)
    if not isinstance(sealed, bool):
        raise ConfigError(f"{path}: 'sealed' must be true or false")
    return DaemonConfig(
        sealed=sealed,
        ensemble=_ensemble(data.get("ensemble"), path),
        hub_pin=hub_pin,
        hub=_get(data, "hub", path),
        scenario=_get(data, "scenario", path),
        machine_name=_get(data, "machine_name", path),
        identity=identity,
        master_key=master_key,
        parallel=parallel,
    )


def _ensemble(raw: Any, path: Path) -> Ensemble | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("role"), str):
        raise ConfigError(f"{path}: [ensemble] needs a role (a string)")
    labels = raw.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ConfigError(f"{path}: [ensemble] labels must be a table of strings")
    return Ensemble(raw["role"], dict(labels))


def render_config(config: DaemonConfig) -> str:
    """The TOML text of a config (JSON string quoting is valid TOML for these values)."""
    fields = {
        "hub": config.hub,
        "scenario": config.scenario,
        "machine_name": config.machine_name,
        "machine_id": config.machine_id,
        "private_key": config.identity.private_text(),
        "master_public_key": config.master_key.to_text(),
    }
    lines = ["# crc-daemon config: holds this machine's private key; keep it readable by root only."]
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    if config.hub_pin:
        lines.append(f"hub_cert_sha256 = {json.dumps(config.hub_pin)}")
    lines.append(f"parallel = {config.parallel}")
    if config.sealed:
        lines.append("sealed = true")
    if config.ensemble is not None:
        labels = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(config.ensemble.labels.items()))
        lines += ["", "[ensemble]", f"role = {json.dumps(config.ensemble.role)}", f"labels = {{ {labels} }}"]
    return "\n".join(lines) + "\n"


def write_config(path: str | Path, config: DaemonConfig) -> None:
    """Write a config readable by its owner only (it holds a private key)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(render_config(config))
