"""The Windows boot file: it renders to valid PowerShell (behind a cmd.exe prologue that PowerShell reads as a
comment), runs linux.sh's steps and keeps its secrets off every command line. tests/provisioning/test_windows_boot.py
runs it with a real cmd.exe."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clients.daemon.config import DaemonConfig, render_config
from protocol import Identity
from protocol.boot import report_key
from provisioning.startup import WINDOWS_BOOT_FIRST_LINE, RenderError, StartupParams, WheelRef, ps_quote, render
from provisioning.startup import render_windows as render_boot_file

tree_sitter = pytest.importorskip("tree_sitter", reason="tree-sitter is not installed (pip install -e '.[test]')")
tree_sitter_powershell = pytest.importorskip(
    "tree_sitter_powershell", reason="no PowerShell grammar installed (pip install tree-sitter-powershell)"
)

SCRIPTS = Path(__file__).resolve().parents[2] / "provisioning" / "scripts"
LINUX_SCRIPT = (SCRIPTS / "linux.sh").read_text(encoding="utf-8")
TEMPLATE = (SCRIPTS / "windows.ps1").read_text(encoding="utf-8")

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAK'quoted''twice\n-----END CERTIFICATE-----\n"
# Anything that starts a process, or hands a string to one, on a line of the script.
PROCESS_STARTERS = re.compile(
    r"Start-Process|Invoke-CrcNative|Invoke-Expression|\biex\b|(^|[\s(;|])&\s|\bcmd(\.exe)?\b|\bicacls\b"
    r"|\bpowershell(\.exe)?\b|\bpwsh\b|\bpython(\.exe)?\b|\bpip\b|\bsc(\.exe)?\b|\bStart-Job\b|\[Diagnostics\.Process\]",
    re.I,
)


def make_params(hub: str = "wss://hub.example.net:8443/o'hara/v1/ws", hub_ca_pem: str = CA_PEM) -> StartupParams:
    config = DaemonConfig(
        hub=hub,
        scenario="lab",
        machine_name="win-1",
        identity=Identity.generate(secrets.token_bytes),
        master_key=Identity.generate(secrets.token_bytes).public,
    )
    return StartupParams(
        config=config, wheel=WheelRef("cloudremotecontrol-0.1.0-py3-none-any.whl", "ab" * 32), hub_ca_pem=hub_ca_pem
    )


def render_windows(params: StartupParams) -> str:
    """The boot file as uploaded, with LF line endings for the checks on its text (it is CRLF throughout)."""
    uploaded = render_boot_file(params)
    assert "\n" not in uploaded.replace("\r\n", "")
    return uploaded.replace("\r\n", "\n")


def parse(text: str) -> Any:
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    return parser.parse(text.encode("utf-8")).root_node


def problems(node: Any) -> list[str]:
    """Every ERROR or MISSING node, with its position."""
    found = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current.is_error or current.is_missing:
            found.append(f"{current.type} at {current.start_point}: {current.text!r}")
        stack.extend(current.children)
    return found


def string_values(node: Any) -> list[str]:
    """The text of every string literal in a parse tree."""
    found = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type == "string_literal":
            found.append(current.text.decode("utf-8"))
        else:
            stack.extend(current.children)
    return found


def linux_steps() -> list[str]:
    return re.findall(r"^step ([a-z0-9-]+)$", LINUX_SCRIPT, re.M)


def linux_reports() -> list[str]:
    return re.findall(r"^report ([a-z0-9-]+) ok$", LINUX_SCRIPT, re.M)


@pytest.mark.parametrize("hub_ca_pem", [CA_PEM, ""], ids=["self-signed-hub", "public-hub"])
def test_the_rendered_script_parses_cleanly(hub_ca_pem: str) -> None:
    root = parse(render_windows(make_params(hub_ca_pem=hub_ca_pem)))
    assert root.type == "program"
    assert problems(root) == []
    assert not root.has_error


def test_the_grammar_notices_a_value_that_breaks_out_of_its_quotes() -> None:
    script = render_windows(make_params())
    broken = script.replace(ps_quote(CA_PEM.strip()), "'" + CA_PEM.strip() + "'")
    assert broken != script
    assert problems(parse(broken))


def test_values_with_quotes_survive_quoting() -> None:
    params = make_params()
    script = render_windows(params)
    assert "$CrcHubCaPem = " + ps_quote(CA_PEM.strip()) + "\n" in script
    assert "$CrcHubHttp = 'https://hub.example.net:8443/o''hara'\n" in script
    literals = string_values(parse(script))
    assert ps_quote(CA_PEM.strip()) in literals
    assert ps_quote(render_config(params.config)) in literals


def test_the_uploaded_file_is_ascii_with_crlf_line_endings_and_parses_as_is() -> None:
    uploaded = render_boot_file(make_params())
    assert uploaded.isascii()
    assert uploaded.count("\n") == uploaded.count("\r\n") == uploaded.count("\r") > 500
    assert not uploaded.startswith("\ufeff")
    assert problems(parse(uploaded)) == []


@pytest.mark.parametrize("where", ["hub", "ca"])
def test_non_ascii_values_are_refused(where: str) -> None:
    # Windows PowerShell 5.1 reads the BOM-less .ps1 in the ANSI code page: "\u2019" would arrive as three
    # other characters (and some code pages turn such bytes into quotes that end a string).
    params = make_params(hub="wss://h\u00fcb.example.net/v1/ws") if where == "hub" else make_params(hub_ca_pem="\u2019")
    with pytest.raises(RenderError, match="non-ASCII"):
        render_boot_file(params)


def test_a_template_with_non_ascii_text_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("provisioning.startup._template", lambda name: TEMPLATE + "# caf\u00e9\n")
    with pytest.raises(RenderError, match="non-ASCII"):
        render_boot_file(make_params())


def test_the_cmd_prologue_hands_the_file_to_powershell_5_1_and_ends_before_the_installer() -> None:
    prologue, _, installer = TEMPLATE.partition("\n#>\n")
    lines = prologue.splitlines()
    assert lines[0].startswith(WINDOWS_BOOT_FIRST_LINE)
    assert "#>" not in prologue  # the first "#>" ends PowerShell's comment
    run = [line for line in lines if line.startswith('"%CRC_POWERSHELL%"')]
    assert run == [
        '"%CRC_POWERSHELL%" -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "%CRC_BOOT_PS1%" <nul 2>&1'
    ]
    assert 'set "CRC_POWERSHELL=%SystemRoot%\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"' in lines
    cmd_part = lines[: lines.index("exit /b %CRC_EXIT%") + 1]
    assert not any(line.lstrip().startswith(":") or "goto" in line.lower() for line in cmd_part[1:])
    assert "$ErrorActionPreference = 'Stop'" in installer


def test_every_kind_of_single_quote_is_doubled() -> None:
    for quote in ("'", "\u2018", "\u2019", "\u201a", "\u201b"):
        assert ps_quote(f"a{quote}b") == f"'a{quote}{quote}b'"


def test_the_template_has_one_settings_line_and_renders_every_setting() -> None:
    assert len(re.findall(r"^# @@SETTINGS@@$", TEMPLATE, re.M)) == 1
    script = render_windows(make_params())
    assert "@@SETTINGS@@" not in script
    for name in ("CrcHubHttp", "CrcMachineId", "CrcMachineName", "CrcScenario", "CrcReportKey", "CrcWheel",
                 "CrcWheelSha256", "CrcHubCaPem", "CrcConfig"):  # fmt: skip
        assert re.search(rf"^\${name} = '", script, re.M), name
    assert script.startswith(WINDOWS_BOOT_FIRST_LINE)


def test_a_template_without_the_settings_line_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("provisioning.startup._template", lambda name: "Write-Output 'no settings'\n")
    with pytest.raises(RenderError):
        render_windows(make_params())


def test_the_script_runs_the_same_steps_as_linux() -> None:
    steps = linux_steps()
    assert steps == [
        "installing-python",
        "creating-venv",
        "downloading-daemon",
        "installing-daemon",
        "writing-config",
        "starting-daemon",
    ]
    assert re.findall(r"^\s*Start-CrcStep '([a-z0-9-]+)'$", TEMPLATE, re.M) == steps
    assert linux_reports() == ["script-started", "daemon-started"]
    for name in linux_reports():
        assert re.search(rf"^\s*Send-CrcReport '{name}' 'ok'$", TEMPLATE, re.M), name


def test_the_script_has_the_strict_preamble() -> None:
    assert re.search(r"^\$ErrorActionPreference = 'Stop'$", TEMPLATE, re.M)
    assert re.search(r"^Set-StrictMode -Version Latest$", TEMPLATE, re.M)
    assert "[System.Net.SecurityProtocolType]::Tls12" in TEMPLATE
    assert "exit 1" in TEMPLATE


def test_the_script_uses_no_powershell_7_only_syntax() -> None:
    powershell = re.sub(r"@'$.*?^'@$", "", TEMPLATE, flags=re.M | re.S)  # without the C# here-string
    assert "public static class CrcHubTrust" not in powershell
    code = "\n".join(line for line in powershell.splitlines() if not line.lstrip().startswith("#"))
    assert "??" not in code
    assert "&&" not in code
    assert "||" not in code
    assert "-Parallel" not in code and "ConvertFrom-Json -AsHashtable" not in code


def test_the_boot_mac_follows_protocol_boot() -> None:
    assert 'GetBytes("crc-boot-v1`n$CrcMachineId`n$Time`n$Step`n$Status`n")' in TEMPLATE
    assert "System.Security.Cryptography.HMACSHA256" in TEMPLATE
    assert "'hmac-sha256=' + " in TEMPLATE
    assert ".ToString('x2')" in TEMPLATE  # lower-case hex
    for header in ("X-CRC-Machine", "X-CRC-Time", "X-CRC-Step", "X-CRC-Status", "X-CRC-Signature"):
        assert f"'{header}'" in TEMPLATE
    assert "/v1/boot" in TEMPLATE
    assert "8192" in TEMPLATE


def test_the_secrets_appear_once_and_only_in_the_settings_block() -> None:
    params = make_params()
    script = render_windows(params)
    config = render_config(params.config)
    key_hex = report_key(params.config.identity).hex()
    private = params.config.identity.private_text()
    assert script.count(ps_quote(config)) == 1
    assert script.count(private) == 1
    assert script.count(key_hex) == 1
    settings_end = script.index("$CrcConfig = ") + len("$CrcConfig = ") + len(ps_quote(config))
    assert script.index(private) < settings_end
    assert script.index(key_hex) < settings_end
    assert script.index("$CrcReportKey = ") < script.index(key_hex) < script.index("$CrcWheel = ")


def test_no_secret_is_on_a_line_that_starts_a_process() -> None:
    params = make_params()
    script = render_windows(params)
    secret_values = [report_key(params.config.identity).hex(), params.config.identity.private_text()]
    secret_names = re.compile(r"\$(script:)?(CrcConfig|CrcReportKey|ReportKeyBytes|ConfigPart)\b", re.I)
    starters = [line for line in script.splitlines() if PROCESS_STARTERS.search(line)]
    assert any("Start-Process" in line for line in starters)  # the pattern does find such lines
    assert any("& $FilePath @Arguments" in line for line in starters)
    for line in starters:
        assert not secret_names.search(line), line
        assert not any(value in line for value in secret_values), line
    uses = [line.strip() for line in TEMPLATE.splitlines() if re.search(r"\$(CrcConfig|CrcReportKey)\b", line)]
    assert uses == [
        "$ReportKeyBytes = ConvertFrom-CrcHex $CrcReportKey",
        "[System.IO.File]::WriteAllText($ConfigPart, $CrcConfig, $Utf8NoBom)",
    ]


def test_the_config_is_locked_down_before_the_key_is_written() -> None:
    lines = TEMPLATE.splitlines()

    def first(text: str) -> int:
        return next(number for number, line in enumerate(lines) if text in line)

    assert first("New-CrcPrivateDirectory $ConfigDir") < first("Start-CrcStep 'installing-python'")
    assert first("New-CrcPrivateFile $ConfigPart") < first("WriteAllText($ConfigPart, $CrcConfig")
    assert "SetAccessRuleProtection($true, $false)" in TEMPLATE  # inheritance removed
    assert "'S-1-5-18', 'S-1-5-32-544'" in TEMPLATE  # SYSTEM and Administrators only
    assert "System.Text.UTF8Encoding $false" in TEMPLATE  # no BOM
    assert "'service', 'install', '--config', $ConfigFile" in TEMPLATE
    assert "$ConfigDir = Join-Path $ProgramDataDir 'crc'" in TEMPLATE  # where clients/windows/paths.py looks
    assert "$ConfigFile = Join-Path $ConfigDir 'daemon.toml'" in TEMPLATE


def test_python_installers_are_checked() -> None:
    assert "Get-AuthenticodeSignature" in TEMPLATE
    assert "$signature.Status -ne 'Valid'" in TEMPLATE
    assert "$PythonSigner = 'Python Software Foundation'" in TEMPLATE
    assert "/quiet InstallAllUsers=1 PrependPath=1 Include_launcher=1" in TEMPLATE
    assert re.search(r"^\$PythonVersion = '3\.\d+\.\d+'", TEMPLATE, re.M)
    assert "Get-FileHash" in TEMPLATE
    assert "'--no-index'" in TEMPLATE
    assert "@('--require-hashes', '-r', $LockFile)" in TEMPLATE and "@('--no-deps', $WheelFile)" in TEMPLATE
    assert "$actual -ne $CrcLockSha256.ToLowerInvariant()" in TEMPLATE
    assert "package index" not in TEMPLATE.replace("no package index", "")


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="pwsh is not installed")
def test_pwsh_parses_the_rendered_script(tmp_path: Path) -> None:
    path = tmp_path / "startup.ps1"
    path.write_text(render_windows(make_params()), encoding="utf-8")
    check = (
        "$errors = $null; $tokens = $null; "
        f"$null = [System.Management.Automation.Language.Parser]::ParseFile('{path}', [ref]$tokens, [ref]$errors); "
        "if ($errors) { $errors | ForEach-Object { $_.ToString() }; exit 1 }"
    )
    pwsh = shutil.which("pwsh")
    assert pwsh is not None
    result = subprocess.run([pwsh, "-NoProfile", "-NonInteractive", "-Command", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_what_is_uploaded_for_windows_is_the_cmd_boot_file() -> None:
    params = make_params()
    uploaded = render(params, "windows")
    assert uploaded == render_boot_file(params)
    assert uploaded.startswith(WINDOWS_BOOT_FIRST_LINE + ":") and "\r\n@echo off\r\n" in uploaded[:300]
