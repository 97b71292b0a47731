"""The scenario file (TOML): which machines a scenario has and where they are created.

::

    [scenario]
    name = "shop"
    hub = "https://hub.example.com:8750"      # optional: else --hub / CRC_HUB
    hub_cert_sha256 = "sha256:..."            # optional: pin the hub's certificate (crc hub init-tls prints it)
    sealed = true                             # optional: the hub never reads its commands and output

    [provider]
    kind = "vultr"                            # or "local"; `crc up --provider` overrides it
    region = "ams"                            # defaults for every machine
    plan = "vc2-1c-2gb"
    linux_image = 2136                        # Debian 12 x64 (an os_id); "snapshot:ID" is a snapshot; any other
    windows_image = 501                       # string is an image_id, i.e. a Vultr Marketplace application
    boot = "script"                           # "script" (a Vultr startup script) or "user_data" (cloud-init)
    backups = "disabled"                      # or "enabled" (Vultr bills automatic backups); always sent

    [[machine]]
    name = "mysql"
    os = "linux"
    role = "database"
    plan = "vc2-2c-4gb"                       # any of region, plan, image overrides the provider default
    labels = { tier = "back" }                # for targets like label:tier=back
    hostname = "mysql-1"                      # optional; else derived from the name (Windows: at most 15)

A Windows computer name (NetBIOS) has at most 15 characters: a longer machine name gets a derived hostname
(its first 10 characters, ``-`` and 4 hex digits of a hash of the whole name), and an explicit Windows
``hostname`` longer than 15 characters is refused. Hostnames are unique within a scenario: two given ones that
are equal are refused, and a derived one already taken gets a hash of the name (``web.1`` after ``web_1``).

Unknown keys are errors (a typo must not silently create a default machine); messages name the file and key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
HOSTNAME_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
PROVIDERS = ("vultr", "local")
OPERATING_SYSTEMS = ("linux", "windows")
BOOT_MODES = ("script", "user_data")
DEFAULT_IMAGES: dict[str, int | str] = {"linux": 2136, "windows": 501}
DEFAULT_REGION = "ewr"
DEFAULT_PLAN = "vc2-1c-2gb"
BACKUPS = ("disabled", "enabled")
HOSTNAME_ATTEMPTS = 16  # hashed variants tried for a derived hostname taken by another machine
WINDOWS_HOSTNAME_MAX = 15  # NetBIOS computer names: 15 characters (Microsoft, "Naming conventions in AD")
SNAPSHOT_PREFIX = "snapshot:"


def linux_hostname(name: str) -> str:
    """A host name derived from a machine name (underscores and dots are not valid in one)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", name).strip("-")[:63] or "machine"


def windows_hostname(name: str, attempt: int = 0) -> str:
    """A Windows computer name (at most 15 characters) derived from a machine name; deterministic.

    A name that fits is kept (as :func:`linux_hostname` makes it); a longer one keeps its first 10 characters and
    adds ``-`` and 4 hex digits of its SHA-256, so two long names sharing a start still differ. All digits is not
    a valid computer name, so such a name gets a ``w`` in front. ``attempt`` > 0 always adds a hash (of the name
    and the attempt): the scenario file uses it when the plain form is another machine's hostname.
    """
    base = linux_hostname(name)
    if len(base) > WINDOWS_HOSTNAME_MAX or attempt:
        base = f"{base[:10].rstrip('-')}-{_short_hash(name, attempt)}"
    if base.isdigit():
        base = ("w" + base)[:WINDOWS_HOSTNAME_MAX]
    return base


def derived_hostname(name: str, os_name: str, attempt: int = 0) -> str:
    """The hostname a machine gets when the scenario file gives none (``attempt`` > 0: a hashed variant)."""
    if os_name == "windows":
        return windows_hostname(name, attempt)
    base = linux_hostname(name)
    return f"{base[:58].rstrip('-')}-{_short_hash(name, attempt)}" if attempt else base


def _short_hash(name: str, attempt: int) -> str:
    salted = name if attempt == 0 else f"{name}#{attempt}"
    return hashlib.sha256(salted.encode("utf-8")).hexdigest()[:4]


class ScenarioFileError(ValueError):
    """The scenario file is unreadable or wrong; the message names the file and the offending key."""


@dataclass(frozen=True)
class MachinePlan:
    """One machine to create: its name, os and role in the scenario, and where the provider puts it."""

    name: str
    os: str
    role: str
    region: str
    plan: str
    image: int | str
    labels: dict[str, str] = field(default_factory=dict)
    # The scenario file's ``hostname``, or the derived one it chose to keep hostnames unique in the scenario.
    explicit_hostname: str = ""

    @property
    def hostname(self) -> str:
        """The chosen hostname, else one derived from the machine name (at most 15 characters on Windows)."""
        return self.explicit_hostname or derived_hostname(self.name, self.os)


@dataclass(frozen=True)
class ProviderSettings:
    kind: str = "local"
    region: str = DEFAULT_REGION
    plan: str = DEFAULT_PLAN
    images: dict[str, int | str] = field(default_factory=lambda: dict(DEFAULT_IMAGES))
    boot: str = "script"
    backups: str = "disabled"
    tags: tuple[str, ...] = ()
    netns: bool | None = None  # local provider: None picks network namespaces when it can


@dataclass(frozen=True)
class ScenarioFile:
    name: str
    machines: tuple[MachinePlan, ...]
    provider: ProviderSettings
    hub: str = ""
    hub_pin: str = ""
    source: Path | None = None
    sealed: bool = False  # protocol.sealed_orders: the hub never reads its commands, files or output

    def machine(self, name: str) -> MachinePlan:
        for machine in self.machines:
            if machine.name == name:
                return machine
        raise KeyError(name)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ScenarioFileError:
        return ScenarioFileError(f"{self.source}: {where}: {message}")

    def table(self, data: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(key, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
        return value

    def text(self, data: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
        value = data.get(key, default)
        if value is None:
            raise self.fail(where, f"{key!r} is required")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"{key!r} must be a non-empty string")
        return value.strip()

    def image(self, value: Any, where: str) -> int | str:
        if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
            raise self.fail(where, 'an image is an os_id (integer), "snapshot:ID", or an image_id (string)')
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, str) and value.startswith(SNAPSHOT_PREFIX) and not value[len(SNAPSHOT_PREFIX) :]:
            raise self.fail(where, '"snapshot:" needs the snapshot id after it')
        return value


MACHINE_KEYS = {"name", "os", "role", "region", "plan", "image", "labels", "hostname"}
PROVIDER_KEYS = {"kind", "region", "plan", "linux_image", "windows_image", "boot", "backups", "tags", "netns"}
SCENARIO_KEYS = {"name", "hub", "hub_cert_sha256", "sealed"}


def parse_scenario(text: str, source: str = "<scenario>") -> ScenarioFile:
    """Parse and check a scenario file's text.

    Raises:
        ScenarioFileError: naming ``source`` and the key at fault.
    """
    reader = _Reader(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioFileError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"scenario", "provider", "machine"})
    if unknown:
        raise reader.fail("top level", f"unknown table(s) {', '.join(unknown)} (known: scenario, provider, machine)")
    scenario = reader.table(data, "scenario", SCENARIO_KEYS)
    name = reader.text(scenario, "name", "[scenario]")
    if not NAME.match(name):
        raise reader.fail("[scenario] name", "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    hub_pin = scenario.get("hub_cert_sha256", "")
    if not isinstance(hub_pin, str) or (hub_pin and not re.fullmatch(r"sha256:[0-9a-f]{64}", hub_pin)):
        raise reader.fail("[scenario] hub_cert_sha256", "must look like sha256:<64 hex digits>")
    hub = scenario.get("hub", "")
    if not isinstance(hub, str) or (hub and not re.match(r"^(https?|wss?)://", hub)):
        raise reader.fail("[scenario] hub", "must be an http(s):// or ws(s):// URL")
    sealed = scenario.get("sealed", False)
    if not isinstance(sealed, bool):
        raise reader.fail("[scenario] sealed", "must be true or false")

    raw_provider = reader.table(data, "provider", PROVIDER_KEYS)
    kind = reader.text(raw_provider, "kind", "[provider]", "local")
    if kind not in PROVIDERS:
        raise reader.fail("[provider] kind", f"must be one of {', '.join(PROVIDERS)}, not {kind!r}")
    boot = reader.text(raw_provider, "boot", "[provider]", "script")
    if boot not in BOOT_MODES:
        raise reader.fail("[provider] boot", f"must be one of {', '.join(BOOT_MODES)}")
    backups = reader.text(raw_provider, "backups", "[provider]", "disabled")
    if backups not in BACKUPS:
        raise reader.fail("[provider] backups", f"must be one of {', '.join(BACKUPS)}, not {backups!r}")
    tags = raw_provider.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise reader.fail("[provider] tags", "must be a list of non-empty strings")
    netns = raw_provider.get("netns")
    if netns is not None and not isinstance(netns, bool):
        raise reader.fail("[provider] netns", "must be true or false")
    images = dict(DEFAULT_IMAGES)
    for os_name in OPERATING_SYSTEMS:
        if f"{os_name}_image" in raw_provider:
            images[os_name] = reader.image(raw_provider[f"{os_name}_image"], f"[provider] {os_name}_image")
    provider = ProviderSettings(
        kind=kind,
        region=reader.text(raw_provider, "region", "[provider]", DEFAULT_REGION),
        plan=reader.text(raw_provider, "plan", "[provider]", DEFAULT_PLAN),
        images=images,
        boot=boot,
        backups=backups,
        tags=tuple(tags),
        netns=netns,
    )

    raw_machines = data.get("machine", [])
    if not isinstance(raw_machines, list) or not raw_machines:
        raise reader.fail("[[machine]]", "a scenario needs at least one [[machine]] table")
    machines: list[MachinePlan] = []
    for index, raw in enumerate(raw_machines, 1):
        where = f"machine #{index}"
        if not isinstance(raw, dict):
            raise reader.fail(where, "must be a table")
        unknown = sorted(set(raw) - MACHINE_KEYS)
        if unknown:
            raise reader.fail(where, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(MACHINE_KEYS))})")
        machine_name = reader.text(raw, "name", where)
        where = f"machine {machine_name!r}"
        if not NAME.match(machine_name):
            raise reader.fail(where, "a name is 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        os_name = reader.text(raw, "os", where, "linux")
        if os_name not in OPERATING_SYSTEMS:
            raise reader.fail(where, f"os must be one of {', '.join(OPERATING_SYSTEMS)}, not {os_name!r}")
        if os_name == "windows" and provider.kind == "vultr" and provider.boot == "user_data":
            # Vultr's Windows images show no cloudbase-init: user data would sit there and run nothing, and the
            # machine would never come up. Only a boot startup script (firstboot.cmd, run by cmd.exe) runs.
            raise reader.fail(
                where, 'a Windows machine on Vultr boots from a startup script: use boot = "script" (the default)'
            )
        machines.append(
            MachinePlan(
                name=machine_name,
                os=os_name,
                role=reader.text(raw, "role", where, machine_name),
                region=reader.text(raw, "region", where, provider.region),
                plan=reader.text(raw, "plan", where, provider.plan),
                image=reader.image(raw["image"], where) if "image" in raw else provider.images[os_name],
                labels=_labels(reader, raw.get("labels", {}), where),
                explicit_hostname=_hostname(reader, raw, os_name, where),
            )
        )
    seen: set[str] = set()
    for machine in machines:
        if machine.name in seen:
            raise reader.fail(f"machine {machine.name!r}", "appears twice; machine names must be unique")
        seen.add(machine.name)
    machines = _unique_hostnames(reader, machines)
    return ScenarioFile(name, tuple(machines), provider, hub=hub, hub_pin=hub_pin, sealed=sealed)


def _unique_hostnames(reader: _Reader, machines: list[MachinePlan]) -> list[MachinePlan]:
    """The machines with hostnames unique in the scenario (host and NetBIOS names are case-insensitive).

    Hostnames the file gives are kept, and two equal ones are an error; a derived one that is taken already
    becomes a hashed variant (see :func:`derived_hostname`), the same for the same file every time.
    """
    taken: dict[str, str] = {}
    for machine in machines:
        if machine.explicit_hostname:
            key = machine.explicit_hostname.lower()
            if key in taken:
                raise reader.fail(
                    f"machine {machine.name!r}",
                    f"hostname {machine.explicit_hostname!r} is also machine {taken[key]!r}'s; set a distinct one",
                )
            taken[key] = machine.name
    chosen: list[MachinePlan] = []
    for machine in machines:
        if not machine.explicit_hostname:
            for attempt in range(HOSTNAME_ATTEMPTS):
                hostname = derived_hostname(machine.name, machine.os, attempt)
                if hostname.lower() not in taken:
                    break
            else:
                raise reader.fail(f"machine {machine.name!r}", "no unique hostname derived; set hostname = ...")
            taken[hostname.lower()] = machine.name
            if attempt:
                machine = dataclasses.replace(machine, explicit_hostname=hostname)
        chosen.append(machine)
    return chosen


def _hostname(reader: _Reader, raw: dict[str, Any], os_name: str, where: str) -> str:
    if "hostname" not in raw:
        return ""
    value = raw["hostname"]
    if not isinstance(value, str) or not HOSTNAME_SAFE.match(value) or value.endswith("-"):
        raise reader.fail(where, "hostname is 1-63 letters, digits or '-', starting and ending with a letter or digit")
    if os_name == "windows" and len(value) > WINDOWS_HOSTNAME_MAX:
        raise reader.fail(
            where, f"hostname {value!r} is {len(value)} characters; a Windows computer name has at most 15"
        )
    if os_name == "windows" and value.isdigit():
        raise reader.fail(where, "a Windows computer name cannot be only digits")
    return value


def _labels(reader: _Reader, raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise reader.fail(where, 'labels must be a table of strings, e.g. labels = { tier = "front" }')
    return dict(raw)


def load_scenario(path: str | Path) -> ScenarioFile:
    """Read a scenario file.

    Raises:
        ScenarioFileError: the file is missing, unreadable or wrong.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioFileError(f"no scenario file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioFileError(f"cannot read {path}: {exc}") from None
    parsed = parse_scenario(text, str(path))
    return ScenarioFile(parsed.name, parsed.machines, parsed.provider, parsed.hub, parsed.hub_pin, path, parsed.sealed)
