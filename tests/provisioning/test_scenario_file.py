"""The scenario file: a valid file with its defaults, and every error naming the file and the key at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.scenario_file import (
    DEFAULT_IMAGES,
    DEFAULT_PLAN,
    DEFAULT_REGION,
    MachinePlan,
    ProviderSettings,
    ScenarioFile,
    ScenarioFileError,
    load_scenario,
    parse_scenario,
)

SOURCE = "scenarios/shop.toml"
PIN = "sha256:" + "0123456789abcdef" * 4

FULL = f"""
[scenario]
name = "shop"
hub = "https://hub.example.com:8750"
hub_cert_sha256 = "{PIN}"

[provider]
kind = "vultr"
region = "ams"
plan = "vc2-1c-2gb"
linux_image = 2284
windows_image = "win-custom-image"
boot = "script"
tags = ["team-a", "demo"]
netns = false

[[machine]]
name = "mysql"
os = "linux"
role = "database"
plan = "vc2-2c-4gb"

[[machine]]
name = "web_front.1"

[[machine]]
name = "win"
os = "windows"
region = "fra"

[[machine]]
name = "custom"
image = "d6a6b6c8-aaaa-bbbb-cccc-0123456789ab"

[[machine]]
name = "numeric"
image = "1743"

[[machine]]
name = "by-id"
image = 477
"""

MINIMAL_MACHINE = '\n[[machine]]\nname = "m1"\n'


def fails(text: str, *words: str) -> ScenarioFileError:
    """Parse ``text``; it must fail with a message naming the file and every one of ``words``."""
    with pytest.raises(ScenarioFileError) as caught:
        parse_scenario(text, SOURCE)
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: "), message
    for word in words:
        assert word in message, (word, message)
    return caught.value


def scenario(body: str = "", *, machines: str = MINIMAL_MACHINE, name: str = "shop") -> str:
    return f'[scenario]\nname = "{name}"\n{body}\n{machines}'


def provider(body: str, *, machines: str = MINIMAL_MACHINE) -> str:
    return f'[scenario]\nname = "shop"\n\n[provider]\n{body}\n{machines}'


def machine(body: str) -> str:
    return f'[scenario]\nname = "shop"\n\n[[machine]]\n{body}\n'


# ------------------------------------------------------------------------------------------------ valid files


def test_a_full_file_parses_with_overrides_and_provider_defaults() -> None:
    parsed = parse_scenario(FULL, SOURCE)

    assert parsed.name == "shop"
    assert parsed.hub == "https://hub.example.com:8750"
    assert parsed.hub_pin == PIN
    assert parsed.source is None
    assert parsed.provider == ProviderSettings(
        kind="vultr",
        region="ams",
        plan="vc2-1c-2gb",
        images={"linux": 2284, "windows": "win-custom-image"},
        boot="script",
        tags=("team-a", "demo"),
        netns=False,
    )
    assert [m.name for m in parsed.machines] == ["mysql", "web_front.1", "win", "custom", "numeric", "by-id"]
    assert parsed.machine("mysql") == MachinePlan("mysql", "linux", "database", "ams", "vc2-2c-4gb", 2284)
    assert parsed.machine("web_front.1") == MachinePlan(
        "web_front.1", "linux", "web_front.1", "ams", "vc2-1c-2gb", 2284
    )
    assert parsed.machine("win") == MachinePlan("win", "windows", "win", "fra", "vc2-1c-2gb", "win-custom-image")
    assert parsed.machine("custom").image == "d6a6b6c8-aaaa-bbbb-cccc-0123456789ab"
    assert parsed.machine("numeric").image == 1743  # a numeric string is an os_id
    assert parsed.machine("by-id").image == 477


def test_a_minimal_file_takes_every_default() -> None:
    parsed = parse_scenario(scenario())

    assert parsed.hub == "" and parsed.hub_pin == ""
    assert parsed.provider == ProviderSettings()
    assert parsed.provider.kind == "local" and parsed.provider.boot == "script" and parsed.provider.netns is None
    assert parsed.machines == (MachinePlan("m1", "linux", "m1", DEFAULT_REGION, DEFAULT_PLAN, DEFAULT_IMAGES["linux"]),)


def test_windows_machines_take_the_windows_default_image() -> None:
    parsed = parse_scenario(machine('name = "w"\nos = "windows"'))
    assert parsed.machine("w").image == DEFAULT_IMAGES["windows"]


def test_provider_images_accept_numeric_strings_and_text_is_stripped() -> None:
    parsed = parse_scenario(provider('linux_image = "2136"\nregion = "  sjc  "\nkind = " vultr "'))
    assert parsed.provider.images["linux"] == 2136
    assert parsed.provider.region == "sjc" and parsed.provider.kind == "vultr"


def test_netns_true_is_kept() -> None:
    assert parse_scenario(provider("netns = true")).provider.netns is True


def test_the_default_images_are_not_shared_between_parses() -> None:
    first = parse_scenario(provider('linux_image = "custom"'))
    second = parse_scenario(scenario())
    assert first.provider.images["linux"] == "custom"
    assert second.provider.images["linux"] == DEFAULT_IMAGES["linux"] == 2136


@pytest.mark.parametrize(
    ("name", "hostname"),
    [
        ("web", "web"),
        ("web_front", "web-front"),
        ("db.primary", "db-primary"),
        ("a_b.c-d", "a-b-c-d"),
        ("x_", "x"),
        ("9lives", "9lives"),
        ("_.", "machine"),
        ("n" * 70, "n" * 63),
    ],
)
def test_hostnames_are_derived_from_machine_names(name: str, hostname: str) -> None:
    assert MachinePlan(name, "linux", "r", "ewr", "p", 1).hostname == hostname


def test_machine_lookup_raises_key_error_for_an_unknown_name() -> None:
    parsed = parse_scenario(scenario())
    assert parsed.machine("m1").name == "m1"
    with pytest.raises(KeyError, match="nope"):
        parsed.machine("nope")


# ------------------------------------------------------------------------------------------------ errors


def test_invalid_toml() -> None:
    error = fails('[scenario\nname = "x"', "not valid TOML")
    assert error.__cause__ is None and error.__suppress_context__


def test_an_unknown_top_level_table() -> None:
    fails(scenario() + "\n[machines]\nx = 1\n", "top level", "machines")


def test_an_unknown_top_level_key() -> None:
    fails('name = "shop"\n' + scenario(), "top level", "name")


@pytest.mark.parametrize(
    ("text", "where", "key"),
    [
        (scenario('nmae = "x"'), "scenario", "nmae"),
        (provider('regoin = "ams"'), "provider", "regoin"),
        (machine('name = "a"\nplna = "big"'), "machine #1", "plna"),
    ],
)
def test_unknown_keys(text: str, where: str, key: str) -> None:
    error = fails(text, where, key, "unknown key")
    assert "known:" in str(error)


def test_a_typo_in_the_second_machine_names_its_index() -> None:
    fails(machine('name = "a"\n\n[[machine]]\nname = "b"\nroel = "x"'), "machine #2", "roel")


def test_tables_that_are_not_tables() -> None:
    fails('scenario = "shop"\n' + MINIMAL_MACHINE, "scenario", "must be a table")
    fails('provider = 3\n[scenario]\nname = "shop"\n' + MINIMAL_MACHINE, "provider", "must be a table")
    fails('machine = ["a"]\n[scenario]\nname = "shop"\n', "machine #1", "must be a table")


def test_a_missing_scenario_name() -> None:
    fails(MINIMAL_MACHINE, "[scenario]", "'name' is required")
    fails('[scenario]\nhub = "https://h"\n' + MINIMAL_MACHINE, "[scenario]", "'name' is required")


@pytest.mark.parametrize("value", ['""', '"   "', "3", "true"])
def test_a_scenario_name_that_is_not_a_non_empty_string(value: str) -> None:
    fails(f"[scenario]\nname = {value}\n" + MINIMAL_MACHINE, "[scenario]", "'name'", "non-empty string")


@pytest.mark.parametrize("name", ["-shop", ".shop", "shop/2", "sh op", "shöp", "s" * 64, "a:b"])
def test_bad_scenario_names(name: str) -> None:
    fails(scenario(name=name), "[scenario] name")


@pytest.mark.parametrize("name", ["_m", "m/1", "m 1", "m" * 64, "ü"])
def test_bad_machine_names(name: str) -> None:
    fails(machine(f'name = "{name}"'), f"machine {name!r}", "name")


def test_a_machine_without_a_name() -> None:
    fails(machine('os = "linux"'), "machine #1", "'name' is required")


def test_bad_os() -> None:
    fails(machine('name = "a"\nos = "bsd"'), "machine 'a'", "os", "'bsd'")
    fails(machine('name = "a"\nos = 1'), "machine 'a'", "'os'")


@pytest.mark.parametrize("key", ["role", "region", "plan"])
def test_bad_machine_text_values(key: str) -> None:
    fails(machine(f'name = "a"\n{key} = ""'), "machine 'a'", repr(key))


def test_bad_provider_kind() -> None:
    fails(provider('kind = "aws"'), "[provider] kind", "'aws'", "vultr")
    fails(provider("kind = 1"), "[provider]", "'kind'")


def test_user_data_boots_linux_machines_but_a_windows_machine_on_vultr_is_refused() -> None:
    linux_only = parse_scenario(provider('kind = "vultr"\nboot = "user_data"'), SOURCE)
    assert linux_only.provider.boot == "user_data"
    windows = '[[machine]]\nname = "dev"\nos = "windows"\n'
    fails(provider('kind = "vultr"\nboot = "user_data"', machines=windows), "machine 'dev'", 'boot = "script"')


def test_bad_boot_mode() -> None:
    fails(provider('boot = "cloud-init"'), "[provider] boot", "script", "user_data")


@pytest.mark.parametrize("value", ['"crc"', '[""]', "[1]", '["ok", 2]', "{a = 1}"])
def test_bad_tags(value: str) -> None:
    fails(provider(f"tags = {value}"), "[provider] tags")


@pytest.mark.parametrize("value", ['"yes"', "1", "0"])
def test_bad_netns(value: str) -> None:
    fails(provider(f"netns = {value}"), "[provider] netns")


@pytest.mark.parametrize("value", ['"hub.example.com:8750"', '"ftp://hub"', "8750", '"//hub"'])
def test_bad_hub_urls(value: str) -> None:
    fails(scenario(f"hub = {value}"), "[scenario] hub")


@pytest.mark.parametrize("url", ["http://h:1", "https://h", "ws://h", "wss://h/x"])
def test_good_hub_urls(url: str) -> None:
    assert parse_scenario(scenario(f'hub = "{url}"')).hub == url


@pytest.mark.parametrize(
    "value",
    [
        '"0123"',
        '"sha256:abc"',
        '"sha256:' + "A" * 64 + '"',
        '"sha1:' + "a" * 64 + '"',
        '"sha256:' + "a" * 65 + '"',
        '"' + "a" * 64 + '"',
        "64",
    ],
)
def test_bad_pins(value: str) -> None:
    fails(scenario(f"hub_cert_sha256 = {value}"), "[scenario] hub_cert_sha256")


def test_no_machines() -> None:
    fails('[scenario]\nname = "shop"\n', "[[machine]]", "at least one")
    fails('machine = []\n[scenario]\nname = "shop"\n', "[[machine]]")
    fails('machine = {name = "a"}\n[scenario]\nname = "shop"\n', "[[machine]]")


def test_duplicate_machine_names() -> None:
    fails(machine('name = "a"\n\n[[machine]]\nname = "b"\n\n[[machine]]\nname = "a"'), "machine 'a'", "twice")


@pytest.mark.parametrize("value", ["true", "false", '""', "1.5", "[1]"])
def test_bad_machine_images(value: str) -> None:
    fails(machine(f'name = "a"\nimage = {value}'), "machine 'a'", "image")


@pytest.mark.parametrize("os_name", ["linux", "windows"])
def test_bad_provider_images(os_name: str) -> None:
    fails(provider(f"{os_name}_image = true"), f"[provider] {os_name}_image")
    fails(provider(f'{os_name}_image = ""'), f"[provider] {os_name}_image")


def test_the_default_source_name() -> None:
    with pytest.raises(ScenarioFileError, match=r"^<scenario>: "):
        parse_scenario("[scenario]\n")


# ------------------------------------------------------------------------------------------------ load_scenario


def test_load_scenario_reads_a_file_and_records_its_path(tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(FULL, encoding="utf-8")

    loaded = load_scenario(path)

    assert isinstance(loaded, ScenarioFile)
    assert loaded.source == path
    assert loaded.name == "shop" and loaded.hub_pin == PIN and len(loaded.machines) == 6
    assert loaded.provider.kind == "vultr"
    assert load_scenario(str(path)).source == path


def test_load_scenario_names_the_file_in_parse_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(provider('boot = "pxe"'), encoding="utf-8")
    with pytest.raises(ScenarioFileError, match=r"bad\.toml: \[provider\] boot"):
        load_scenario(path)


def test_load_scenario_on_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ScenarioFileError, match="no scenario file at") as caught:
        load_scenario(path)
    assert str(path) in str(caught.value)


def test_load_scenario_on_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[scenario]\nname = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ScenarioFileError, match="cannot read") as caught:
        load_scenario(path)
    assert str(path) in str(caught.value)


def test_load_scenario_on_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ScenarioFileError, match="cannot read"):
        load_scenario(tmp_path)


def test_machines_carry_labels_for_targeting() -> None:
    from provisioning.scenario_file import ScenarioFileError, parse_scenario

    spec = parse_scenario(
        '[scenario]\nname = "s"\n[[machine]]\nname = "web"\nlabels = { tier = "front", zone = "b" }\n'
        '[[machine]]\nname = "db"\n'
    )
    assert spec.machine("web").labels == {"tier": "front", "zone": "b"} and spec.machine("db").labels == {}
    with pytest.raises(ScenarioFileError, match="labels must be a table of strings"):
        parse_scenario('[scenario]\nname = "s"\n[[machine]]\nname = "web"\nlabels = { tier = 3 }\n')
