"""The Windows boot file as uploaded, run the way Vultr runs it: by a real cmd.exe (Wine's), from
``C:\\image\\firstboot.cmd``, with its output in ``C:\\image\\firstboot.log``.

Wine's ``powershell.exe`` does nothing, so the prefix gets a stand-in built here with mingw-w64: it records its
command line, the ``-File`` it is given and its stdin, then exits with a chosen code. What these tests show is what
cmd.exe hands to PowerShell and what it does with the answer; Wine's cmd.exe is not Windows' (the README lists
what a first run on Windows Server 2022 must confirm).

Needs ``wine64`` and ``gcc-mingw-w64-x86-64-win32`` (scripts/test.sh installs them); skipped without them unless
``CRC_REQUIRE_WINE=1`` (scripts/test.sh sets it), which makes their absence a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients.daemon.config import render_config
from protocol.boot import report_key
from provisioning.startup import WINDOWS_BOOT_FILE, WINDOWS_BOOT_LOG, StartupParams, render_windows
from tests.provisioning.test_windows_script import make_params, parse, problems

# Every wait is bounded: Wine's first start in a new prefix (wineboot) is the slow one.
WINEBOOT_TIMEOUT = 300.0
RUN_TIMEOUT = 120.0
STDIN_NOT_FOR_POWERSHELL = b"what the boot file's own stdin holds\r\n"

# Windows PowerShell 5.1 refuses a -File that is missing or not named *.ps1 (PowerShell/PowerShell#15859 brought
# the same check to pwsh 7.2 on Windows), with exit code -196608, the code powershell.exe gives command-line
# errors. The stand-in does the same, so a boot file that handed over its own .cmd name would fail here too.
STANDIN_C = r"""
#include <windows.h>
#include <shellapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>

static FILE *record(const wchar_t *dir, const wchar_t *name) {
    wchar_t path[MAX_PATH];
    _snwprintf(path, MAX_PATH, L"%ls\\%ls", dir, name);
    return _wfopen(path, L"wb");
}

static void put_utf8(FILE *out, const wchar_t *text) {
    char buffer[65536];
    int n = WideCharToMultiByte(CP_UTF8, 0, text, -1, buffer, sizeof buffer, NULL, NULL);
    if (n > 1) fwrite(buffer, 1, (size_t)(n - 1), out);
}

static void copy_stream(FILE *in, FILE *out) {
    char buffer[65536];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, in)) > 0) fwrite(buffer, 1, n, out);
}

int wmain(void) {
    const wchar_t *dir = _wgetenv(L"CRC_STANDIN_RECORD");
    const wchar_t *code = _wgetenv(L"CRC_STANDIN_EXIT");
    wchar_t *line = GetCommandLineW();
    int argc = 0;
    wchar_t **argv = CommandLineToArgvW(line, &argc);
    const wchar_t *file = NULL;
    FILE *out;
    if (!dir) dir = L"C:\\standin";
    if ((out = record(dir, L"cmdline.txt"))) { put_utf8(out, line); fclose(out); }
    if ((out = record(dir, L"argv.txt"))) {
        for (int i = 0; i < argc; i++) { put_utf8(out, argv[i]); fputc('\n', out); }
        fclose(out);
    }
    for (int i = 1; i + 1 < argc; i++) if (_wcsicmp(argv[i], L"-File") == 0) file = argv[i + 1];
    if ((out = record(dir, L"stdin.bin"))) { copy_stream(stdin, out); fclose(out); }
    if (file) {
        size_t len = wcslen(file);
        FILE *in = _wfopen(file, L"rb");
        if (len < 4 || _wcsicmp(file + len - 4, L".ps1") != 0 || !in) {
            fwprintf(stderr, L"Processing -File '%ls' failed: no such .ps1 file.\n", file);
            if (in) fclose(in);
            return -196608;
        }
        if ((out = record(dir, L"file.bin"))) { copy_stream(in, out); fclose(out); }
        fclose(in);
    }
    printf("stand-in powershell: on stdout\n");
    fflush(stdout);
    fprintf(stderr, "stand-in powershell: on stderr\n");
    return code ? _wtoi(code) : 0;
}
"""


def required() -> bool:
    return os.environ.get("CRC_REQUIRE_WINE") == "1"


def missing(what: str) -> None:
    message = f"{what}: apt-get install wine64 gcc-mingw-w64-x86-64-win32 (scripts/test.sh does)"
    if required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def find_tool(names: list[str], paths: list[str]) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return next((path for path in paths if os.access(path, os.X_OK)), "")


@dataclass(frozen=True)
class WinePrefix:
    """A Wine prefix of the test session's own, with the PowerShell stand-in in place of Wine's stub."""

    root: Path
    wine: str
    wineserver: str
    env: dict[str, str]

    @property
    def drive_c(self) -> Path:
        return self.root / "drive_c"

    def host_path(self, windows_path: str) -> Path:
        assert windows_path[:3].upper() == "C:\\", windows_path
        return self.drive_c.joinpath(*windows_path[3:].split("\\"))

    @property
    def powershell(self) -> Path:
        return self.drive_c / "windows" / "system32" / "WindowsPowerShell" / "v1.0" / "powershell.exe"

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        # Something on stdin: PowerShell must not get it (the boot file gives it NUL), and nothing may wait for
        # more (the pipe is closed after these bytes).
        return subprocess.run(
            [self.wine, *args],
            env={**self.env, **(env or {})},
            cwd=self.drive_c / "windows" / "system32",
            input=STDIN_NOT_FOR_POWERSHELL,
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )


@pytest.fixture(scope="session")
def wine_prefix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WinePrefix]:
    wine = find_tool(["wine64"], ["/usr/lib/wine/wine64", "/usr/lib64/wine/wine64"])
    wineserver = find_tool(["wineserver"], ["/usr/lib/wine/wineserver", "/usr/lib64/wine/wineserver"])
    gcc = find_tool(["x86_64-w64-mingw32-gcc"], [])
    if not wine or not wineserver:
        missing("Wine (wine64) is not installed")
    if not gcc:
        missing("mingw-w64 (x86_64-w64-mingw32-gcc) is not installed")
    base = tmp_path_factory.mktemp("wine")
    root = base / "prefix"
    env = {
        **os.environ,
        "WINEPREFIX": str(root),
        "WINEDEBUG": "-all",
        "WINEARCH": "win64",
        # No Mono or Gecko: wineboot would otherwise offer to download them, and nothing here needs them. No
        # winemenubuilder: it writes menu entries and MIME types into the user's home.
        "WINEDLLOVERRIDES": "mscoree,mshtml=;winemenubuilder.exe=d",
        "DISPLAY": "",
        # Whatever else Wine keeps per user stays with this prefix.
        "HOME": str(base / "home"),
        "XDG_CONFIG_HOME": str(base / "home" / ".config"),
        "XDG_DATA_HOME": str(base / "home" / ".local" / "share"),
        "XDG_CACHE_HOME": str(base / "home" / ".cache"),
    }
    (base / "home").mkdir()
    prefix = WinePrefix(root, wine, wineserver, env)
    try:
        subprocess.run([wine, "wineboot", "--init"], env=env, capture_output=True, timeout=WINEBOOT_TIMEOUT, check=True)
        subprocess.run([wineserver, "-w"], env=env, capture_output=True, timeout=WINEBOOT_TIMEOUT, check=False)
        # The stub is where Windows keeps PowerShell 5.1 (the path the boot file runs): replacing it, not adding a
        # file elsewhere, proves the boot file goes through that path.
        if not prefix.powershell.is_file():
            pytest.fail(f"Wine's powershell.exe stub is not at {prefix.powershell}", pytrace=False)
        source = base / "powershell_standin.c"
        source.write_text(STANDIN_C)
        built = base / "powershell.exe"
        subprocess.run(
            [gcc, "-O2", "-municode", "-o", str(built), str(source), "-lshell32"],
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=True,
        )
        shutil.copyfile(built, prefix.powershell)
        yield prefix
    finally:
        subprocess.run([wineserver, "-k"], env=env, capture_output=True, timeout=60, check=False)


@dataclass(frozen=True)
class BootRun:
    """What one run of the boot file left behind."""

    returncode: int
    uploaded: bytes
    argv: list[str]
    cmdline: str
    file: bytes | None
    stdin: bytes
    log: str
    leftover_ps1: bool


def boot(prefix: WinePrefix, params: StartupParams, exit_code: int = 0) -> BootRun:
    """Save the boot file where Vultr does and run it as Vultr's guest agent does: ``cmd.exe`` with its stdout in
    ``C:\\image\\firstboot.log`` ("Startup Scripts Quickstart Guide"; stderr is not promised there)."""
    uploaded = render_windows(params).encode("ascii")
    boot_file = prefix.host_path(WINDOWS_BOOT_FILE)
    log = prefix.host_path(WINDOWS_BOOT_LOG)
    records = prefix.drive_c / "standin"
    shutil.rmtree(boot_file.parent, ignore_errors=True)
    shutil.rmtree(records, ignore_errors=True)
    boot_file.parent.mkdir(parents=True)
    records.mkdir()
    boot_file.write_bytes(uploaded)
    done = prefix.run(
        "cmd",
        "/c",
        f"{WINDOWS_BOOT_FILE} > {WINDOWS_BOOT_LOG}",
        env={"CRC_STANDIN_RECORD": "C:\\standin", "CRC_STANDIN_EXIT": str(exit_code)},
    )
    assert boot_file.read_bytes() == uploaded  # cmd.exe only reads it
    recorded_file = records / "file.bin"
    return BootRun(
        returncode=done.returncode,
        uploaded=uploaded,
        argv=(records / "argv.txt").read_text(encoding="utf-8").splitlines() if (records / "argv.txt").exists() else [],
        cmdline=(records / "cmdline.txt").read_text(encoding="utf-8") if (records / "cmdline.txt").exists() else "",
        file=recorded_file.read_bytes() if recorded_file.exists() else None,
        stdin=(records / "stdin.bin").read_bytes() if (records / "stdin.bin").exists() else b"",
        log=log.read_text(encoding="ascii", errors="replace") if log.exists() else "",
        leftover_ps1=boot_file.with_suffix(".ps1").exists(),
    )


def secrets_of(params: StartupParams) -> list[str]:
    private = params.config.identity.private_text()
    return [report_key(params.config.identity).hex(), private, private.split(":")[-1], render_config(params.config)]


@pytest.mark.parametrize("exit_code", [0, 3])
def test_cmd_hands_the_whole_installer_to_powershell_5_1_and_passes_its_exit_code_on(
    wine_prefix: WinePrefix, exit_code: int
) -> None:
    params = make_params()
    run = boot(wine_prefix, params, exit_code)
    assert run.returncode == exit_code, run.log
    program, *arguments = run.argv
    assert program.lower().endswith("\\system32\\windowspowershell\\v1.0\\powershell.exe"), program
    assert arguments == [
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-File",
        "C:\\image\\firstboot.ps1",
    ]
    # Byte for byte what was uploaded, which is what windows.ps1 rendered: the cmd.exe lines are a comment to
    # PowerShell, and the whole of it parses with PowerShell's grammar.
    assert run.file == run.uploaded == render_windows(params).encode("ascii")
    assert problems(parse(run.file.decode("ascii"))) == []
    assert run.stdin == b""  # stdin is NUL: PowerShell never waits for input at boot
    for secret in secrets_of(params):
        assert secret not in run.cmdline
    assert "stand-in powershell: on stdout" in run.log
    assert "stand-in powershell: on stderr" in run.log  # 2>&1: its errors reach the log even if stderr does not
    assert f"PowerShell exited with code {exit_code}" in run.log
    assert not run.leftover_ps1  # the copy holds the machine's key: deleted once PowerShell is done


def test_an_installer_far_beyond_cmds_line_limit_arrives_whole(wine_prefix: WinePrefix) -> None:
    # 8,191 characters is cmd.exe's command line limit; a long chain of CA certificates makes the file ~200 KB.
    body = "\n".join("MIIB" + f"{i:06d}" * 10 for i in range(3000))
    params = make_params(hub_ca_pem=f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    run = boot(wine_prefix, params)
    assert len(run.uploaded) > 200_000
    assert run.returncode == 0, run.log
    assert run.file == run.uploaded
    assert len(run.cmdline) < 8191


def test_no_powershell_is_reported_in_the_log_with_cmds_not_found_code(wine_prefix: WinePrefix) -> None:
    standin = wine_prefix.powershell
    aside = standin.with_name("powershell.exe.aside")
    standin.rename(aside)
    try:
        run = boot(wine_prefix, make_params())
    finally:
        aside.rename(standin)
    # A Unix exit status keeps 8 bits of Windows' 32-bit exit code: 9009 arrives as 9009 % 256.
    assert run.returncode == 9009 % 256
    assert "no Windows PowerShell at" in run.log
    assert run.argv == []
    assert not run.leftover_ps1


def test_the_stand_in_refuses_a_file_that_is_not_a_ps1_as_powershell_does(wine_prefix: WinePrefix) -> None:
    # Why the boot file copies itself to a .ps1 instead of handing PowerShell its own .cmd name.
    boot_file = wine_prefix.host_path(WINDOWS_BOOT_FILE)
    boot_file.parent.mkdir(parents=True, exist_ok=True)
    boot_file.write_bytes(b"Write-Output 'x'\r\n")
    records = wine_prefix.drive_c / "standin"
    shutil.rmtree(records, ignore_errors=True)
    records.mkdir()
    powershell = "C:\\windows\\system32\\WindowsPowerShell\\v1.0\\powershell.exe"
    done = wine_prefix.run(powershell, "-File", WINDOWS_BOOT_FILE, env={"CRC_STANDIN_RECORD": "C:\\standin"})
    assert done.returncode != 0
    assert b"Processing -File 'C:\\image\\firstboot.cmd' failed" in done.stderr
    assert not (records / "file.bin").exists()
