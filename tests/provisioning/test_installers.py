"""The one-line installers (``provisioning/installers/``) and the lines ``crc enroll create --print-install`` prints
(``provisioning/install_command.py``): static files that pass shellcheck and the PowerShell grammar, lines that hold
the master's own hash of them, and, under Wine, a real cmd.exe handing the Windows line to PowerShell intact.
tests/e2e/test_installer.py runs install.sh for real in a network namespace."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning.install_command import (
    InstallCommandError,
    InstallParams,
    install_commands,
    linux_command,
    windows_command,
    windows_script,
)
from provisioning.installers import LINUX, WINDOWS
from provisioning.release import DaemonRelease
from provisioning.startup import LockRef, WheelRef
from tests.provisioning.test_windows_boot import WinePrefix, wine_prefix  # noqa: F401 - the fixture
from tests.provisioning.test_windows_script import parse, problems, string_values

INSTALLERS = Path(__file__).resolve().parents[2] / "provisioning" / "installers"
RELEASE = DaemonRelease(WheelRef("cloudremotecontrol-0.1.0-0abcdef012345-py3-none-any.whl", "ab" * 32), LockRef.local())
# A token holding every quote sh and PowerShell know: it must arrive as it is.
TOKEN = "crc-enroll-v1.abc'def\"ghi$(touch /tmp/x)`id`\u2019".encode("ascii", "ignore").decode()


def params(**changes: str) -> InstallParams:
    values = {"hub": "http://hub.example.net:8750", "token": TOKEN, **changes}
    return InstallParams(values["hub"], RELEASE, token=values["token"], token_path=values.get("token_path", ""),
                         pin=values.get("pin", ""))  # fmt: skip


def test_the_installers_are_static_ascii_files_with_nothing_left_to_render() -> None:
    for installer in (LINUX, WINDOWS):
        data = installer.data()
        assert data == (INSTALLERS / installer.name).read_bytes()
        assert data.isascii() and b"@@" not in data
        assert installer.sha256() == hashlib.sha256(data).hexdigest()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (scripts/test.sh does)")
def test_install_sh_is_posix_sh_that_passes_shellcheck() -> None:
    done = subprocess.run(["shellcheck", "--shell=sh", "--severity=style", str(INSTALLERS / "install.sh")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout
    assert subprocess.run(["sh", "-n", str(INSTALLERS / "install.sh")], check=False).returncode == 0


def test_install_ps1_parses_with_the_powershell_grammar() -> None:
    text = WINDOWS.data().decode("ascii")
    assert problems(parse(text)) == []
    # Every parameter the one-liner passes is declared.
    for flag in ("-Hub", "-HubFingerprint", "-Wheel", "-WheelHash", "-Lock", "-LockHash", "-Token"):
        assert f"[string]${flag[1:]} = ''" in text


def test_the_linux_line_checks_the_masters_hash_and_passes_the_token_in_the_environment_only() -> None:
    line = linux_command(params())
    assert LINUX.sha256() in line and RELEASE.wheel.sha256 in line and RELEASE.lock.sha256 in line
    assert "\n" not in line and line.startswith("(") and line.endswith(")")
    assert "curl -fsSL http://hub.example.net:8750/v1/install.sh -o" in line and " -k " not in line
    # The check comes before the run, and the token is an assignment in front of sh, never one of its arguments.
    assert line.index(LINUX.sha256()) < line.index('sh "$f"')
    words = line[line.index('sh "$f"') :]
    assert "CRC_ENROLL_TOKEN=" not in words and TOKEN not in words
    for shell in ("sh", "bash"):
        assert subprocess.run([shell, "-n", "-c", line], check=False).returncode == 0


def test_the_linux_line_hands_every_value_over_unchanged(tmp_path: Path) -> None:
    # Run the line's own tail (after the download and check) against a recording stand-in for install.sh.
    line = linux_command(params(pin="sha256:" + "c" * 64, hub="https://hub.example.net:8443"))
    assert " -k " in line  # the pinned hub's self-signed certificate: the hash, not the CA, vouches for the bytes
    tail = line[line.index("CRC_ENROLL_TOKEN=") : -1]
    recorder = tmp_path / "record.sh"
    recorder.write_text('printf "%s\\n" "$CRC_ENROLL_TOKEN" "$@"\n')
    done = subprocess.run(["sh", "-c", f"f={recorder}; {tail}"], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        TOKEN, "--hub", "https://hub.example.net:8443", "--hub-fingerprint", "sha256:" + "c" * 64,
        "--wheel", RELEASE.wheel.name, "--wheel-sha256", RELEASE.wheel.sha256,
        "--lock", RELEASE.lock.name, "--lock-sha256", RELEASE.lock.sha256,
    ]  # fmt: skip


def test_a_line_may_read_the_token_from_a_file_on_the_machine_and_then_holds_no_secret() -> None:
    lines = install_commands(params(token="", token_path="/root/workers.token"), "all")
    assert "--token @/root/workers.token" in lines["linux"] and "CRC_ENROLL_TOKEN" not in lines["linux"]
    script = windows_script(params(token="", token_path="C:\\crc\\workers.token"))
    assert "-Token '@C:\\crc\\workers.token'" in script and "CRC_ENROLL_TOKEN" not in script


def test_the_windows_line_is_an_encoded_script_that_parses_and_checks_the_masters_hash() -> None:
    line = windows_command(params(pin="sha256:" + "d" * 64, hub="wss://hub.example.net:8443/"))
    prefix = "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "
    assert line.startswith(prefix) and len(line) < 8191  # cmd.exe's line limit
    script = base64.b64decode(line[len(prefix) :]).decode("utf-16-le")
    assert script == windows_script(params(pin="sha256:" + "d" * 64, hub="wss://hub.example.net:8443/"))
    assert problems(parse(script)) == []
    literals = string_values(parse(script))
    assert f"'{WINDOWS.sha256()}'" in literals
    assert "'https://hub.example.net:8443/v1/install.ps1'" in literals
    assert script.index(WINDOWS.sha256()) < script.index("WriteAllBytes") < script.index("& $f")
    # The certificate check is off for the download only, and on again before the installer runs.
    assert (
        script.index("{ $true }")
        < script.index("ComputeHash")
        < script.index("Callback = $null")
        < script.index("& $f")
    )
    assert re.search(r"\$env:CRC_ENROLL_TOKEN = '[^\n]*'\n", script)


def test_lines_that_cannot_be_made_are_refused() -> None:
    with pytest.raises(InstallCommandError, match="does not use TLS"):
        linux_command(params(pin="sha256:" + "e" * 64))
    with pytest.raises(InstallCommandError, match="ASCII"):
        windows_script(params(token="t\u00e9"))
    with pytest.raises(InstallCommandError, match="no installer"):
        install_commands(params(), "macos")


def run_install_sh(tmp_path: Path, *args: str, token: str = "t") -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "CRC_ROOT": str(tmp_path / "root"), "CRC_ENROLL_TOKEN": token}
    return subprocess.run(["sh", str(INSTALLERS / "install.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip


GOOD = ["--hub", "http://127.0.0.1:9", "--wheel", RELEASE.wheel.name, "--wheel-sha256", "a" * 64,
        "--lock", RELEASE.lock.name, "--lock-sha256", "b" * 64]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "token", "message"),
    [
        ({"--hub": "hub.example.net"}, "t", "--hub must be the hub's http:// or https:// URL"),
        ({"--wheel-sha256": "A" * 64}, "t", "--wheel-sha256 must be 64 lower-case hex digits"),
        ({"--wheel": "../evil.whl"}, "t", "--wheel must name a wheel"),
        ({"--hub-fingerprint": "sha256:" + "f" * 64}, "t", "does not use TLS"),
        ({}, "", "no enrollment token"),
    ],
)
def test_install_sh_refuses_bad_arguments_in_one_line_with_status_2(
    tmp_path: Path, change: dict[str, str], token: str, message: str
) -> None:
    args = list(GOOD)
    for name, value in change.items():
        if name in args:
            args[args.index(name) + 1] = value
        else:
            args += [name, value]
    done = run_install_sh(tmp_path, *args, token=token)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("crc install: ") and message in done.stderr
    assert not (tmp_path / "root").exists()  # nothing was made


def test_install_sh_says_in_one_line_when_the_hub_cannot_be_reached(tmp_path: Path) -> None:
    done = run_install_sh(tmp_path, *GOOD)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("crc install: cannot download http://127.0.0.1:9/v1/dist/cloudremotecontrol-")
    assert not (tmp_path / "root" / "opt" / "crc" / "venv").exists()


def test_cmd_exe_hands_the_windows_line_to_powershell_intact(wine_prefix: WinePrefix) -> None:  # noqa: F811
    """Wine's cmd.exe runs the printed line as a distribution tool would (``cmd /c LINE``); the PowerShell stand-in
    of test_windows_boot.py records what it was given. Wine has no PowerShell, so that is as far as it goes."""
    records = wine_prefix.drive_c / "standin"
    shutil.rmtree(records, ignore_errors=True)
    records.mkdir()
    line = windows_command(params())
    done = wine_prefix.run("cmd", "/c", line, env={"CRC_STANDIN_RECORD": "C:\\standin", "CRC_STANDIN_EXIT": "7"})
    assert done.returncode == 7  # the installer's exit code reaches the tool
    program, *arguments = (records / "argv.txt").read_text(encoding="utf-8").splitlines()
    assert program.lower().endswith("powershell.exe")
    assert arguments[:-1] == ["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand"]
    script = base64.b64decode(arguments[-1]).decode("utf-16-le")
    assert script == windows_script(params())
    assert problems(parse(script)) == []
    assert f"$env:CRC_ENROLL_TOKEN = '{TOKEN.replace(chr(39), chr(39) * 2)}'" in script
