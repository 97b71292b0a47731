<# : crc boot file for Windows: cmd.exe runs the lines below up to "exit /b"; PowerShell reads them as a comment
@echo off
setlocal EnableExtensions DisableDelayedExpansion
set "CRC_BOOT_FILE=%~f0"
set "CRC_BOOT_PS1=%~dpn0.ps1"
set "CRC_POWERSHELL=%SystemRoot%\System32\WindowsPowerShell\v1.0\powershell.exe"
if exist "%SystemRoot%\Sysnative\WindowsPowerShell\v1.0\powershell.exe" set "CRC_POWERSHELL=%SystemRoot%\Sysnative\WindowsPowerShell\v1.0\powershell.exe"
echo crc boot: %DATE% %TIME% %CRC_BOOT_FILE% hands itself to %CRC_POWERSHELL%
if not exist "%CRC_POWERSHELL%" (echo crc boot: no Windows PowerShell at %CRC_POWERSHELL% & exit /b 9009)
copy /b /y "%CRC_BOOT_FILE%" "%CRC_BOOT_PS1%" 2>&1 >nul
if errorlevel 1 (echo crc boot: cannot copy this file to %CRC_BOOT_PS1% & exit /b 1)
"%CRC_POWERSHELL%" -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "%CRC_BOOT_PS1%" <nul 2>&1
set "CRC_EXIT=%ERRORLEVEL%"
del /f /q "%CRC_BOOT_PS1%" >nul 2>&1
echo crc boot: %DATE% %TIME% PowerShell exited with code %CRC_EXIT%
exit /b %CRC_EXIT%

cmd.exe never reads past the line above; PowerShell sees all of this, up to the closing mark, as one block comment
(about_Comments: a block comment ends at the first closing mark, so none may appear above).

Why the file is built this way:
- Vultr saves a Windows boot script as C:\image\firstboot.cmd and runs it once, at first boot, with cmd.exe as
  Administrator; the output is saved to C:\image\firstboot.log (Vultr, "Startup Scripts Quickstart Guide",
  https://www.vultr.com/docs/vultr-startup-scripts-quickstart-guide). cmd.exe runs no PowerShell, so this file is
  both: to cmd.exe the first line is a label (the classic "<# :" batch/PowerShell hybrid: a line whose command is
  a ":" label is never executed, so its "<#" redirection is never opened), to PowerShell it opens a comment.
- powershell.exe -File insists on a .ps1 name, hence the copy of this very file beside it; cmd's 8,191-character
  command line limit rules out handing the installer over as -EncodedCommand. The copy holds the machine's key,
  like this file: it is deleted when PowerShell is done, and the installer restricts both to SYSTEM and
  Administrators at once. No secret is on any command line: PowerShell reads them from the file.
- %SystemRoot%\Sysnative is what a 32-bit cmd.exe must use to reach the 64-bit PowerShell (WOW64 file system
  redirector, https://learn.microsoft.com/windows/win32/winprog64/file-system-redirector); a 64-bit cmd.exe sees
  no Sysnative and System32 is already the 64-bit one.
- stdin from NUL: PowerShell must never wait for input at boot; 2>&1: errors reach firstboot.log too, whatever
  Vultr does with stderr ("2>&1 >nul" on copy: its errors to the log, its "1 file(s) copied" nowhere; cmd.exe
  applies redirections left to right). PowerShell's exit code (the installer's "exit N"; 1 for an uncaught error) is cmd's.
- No labels or goto: cmd.exe finds labels by scanning the file, which goes wrong with LF-only line endings; the
  renderer writes CRLF throughout anyway, and ASCII only: Windows PowerShell 5.1 reads a .ps1 without a BOM in
  the ANSI code page (https://learn.microsoft.com/powershell/scripting/dev-cross-plat/vscode/understanding-file-encoding),
  and a BOM would break cmd's first line.
#>
# CloudRemoteControl startup script (Windows): installs crc-daemon as a Windows service and connects this machine
# to its hub. Written for Windows PowerShell 5.1 (what Windows Server has), run by the cmd.exe part above. Rendered
# by crc for one machine: it holds that machine's private key, so it must be kept as secret as the key itself
# (`crc down` deletes it from the provider).
#
# Each step is reported to the hub (POST /v1/boot, HMAC-SHA256 with the machine's report key, see
# protocol/boot.py) so `crc watch` shows it live; a failing step reports its output and stops the script with
# exit code 1. Progress also goes to the console, which is C:\image\firstboot.log on Vultr. The private key and
# the report key never appear on the command line of a child process: the config is written with .NET file APIs
# and the MAC is computed in memory with HMACSHA256.
#
# Environment overrides (for tests): CRC_ROOT (prefix for every path, default none), CRC_PYTHON (interpreter).

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'  # Invoke-WebRequest's progress bar slows downloads down badly
Set-StrictMode -Version Latest

# @@SETTINGS@@

$PythonVersion = '3.12.10'  # installed from python.org (or the hub) when no Python >= 3.11 is found
$PythonInstallerName = "python-$PythonVersion-amd64.exe"
$PythonInstallerUrl = "https://www.python.org/ftp/python/$PythonVersion/$PythonInstallerName"
$PythonSigner = 'Python Software Foundation'
$ServiceName = 'crc-daemon'

function Get-CrcEnv([string[]]$Names, [string]$Default) {
    foreach ($name in $Names) {
        $value = [Environment]::GetEnvironmentVariable($name)
        if ($value) { return $value }
    }
    return $Default
}

$CrcRoot = Get-CrcEnv @('CRC_ROOT') ''
$ProgramFilesDir = Get-CrcEnv @('ProgramW6432', 'ProgramFiles') 'C:\Program Files'
$ProgramDataDir = Get-CrcEnv @('ProgramData', 'ALLUSERSPROFILE') 'C:\ProgramData'  # as clients/windows/paths.py
if ($CrcRoot) {
    $ProgramFilesDir = Join-Path $CrcRoot 'Program Files'
    $ProgramDataDir = Join-Path $CrcRoot 'ProgramData'
}
$PrefixDir = Join-Path $ProgramFilesDir 'crc'
$VenvDir = Join-Path $PrefixDir 'venv'
$VenvPython = Join-Path $VenvDir 'Scripts\python.exe'
$CrcDaemonExe = Join-Path $VenvDir 'Scripts\crc-daemon.exe'
$ConfigDir = Join-Path $ProgramDataDir 'crc'          # %ProgramData%\crc: the daemon's base dir
$ConfigFile = Join-Path $ConfigDir 'daemon.toml'
$StateDir = Join-Path $ConfigDir 'state'
$LogDir = Join-Path $ConfigDir 'logs'
$HubCaFile = Join-Path $ConfigDir 'hub-ca.pem'
$BootLog = Join-Path $LogDir 'boot.log'
$StepLog = Join-Path $LogDir 'step.log'
$Utf8NoBom = New-Object System.Text.UTF8Encoding $false
$CurrentStep = 'script'
$Python = ''

# --- logs ----------------------------------------------------------------------------------------------------
# The boot log is also written to the console: on Vultr that is C:\image\firstboot.log, which can be read before
# anyone can reach the daemon. The step logs go there too (Copy-CrcStepLogToBootLog): they hold no secret, as they
# are sent to the hub in the reports anyway.
function Write-CrcBootLog([string]$Text) {
    try { [System.Console]::Out.WriteLine($Text) } catch { }
    try { [System.IO.File]::AppendAllText($script:BootLog, $Text + "`r`n", $script:Utf8NoBom) } catch { }
}

function Write-CrcStepLog([string]$Text) {
    try { [System.IO.File]::AppendAllText($script:StepLog, $Text + "`r`n", $script:Utf8NoBom) } catch { }
}

function Copy-CrcStepLogToBootLog {
    try {
        if (Test-Path -LiteralPath $script:StepLog) {
            $text = [System.IO.File]::ReadAllText($script:StepLog, $script:Utf8NoBom)
            try { [System.Console]::Out.Write($text) } catch { }
            [System.IO.File]::AppendAllText($script:BootLog, $text, $script:Utf8NoBom)
        }
    } catch { }
}

# --- access control: SYSTEM and Administrators only, nothing inherited ----------------------------------------
function New-CrcAdminOnlySecurity([bool]$Directory) {
    if ($Directory) {
        $security = New-Object System.Security.AccessControl.DirectorySecurity
        $inherit = [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit'
    } else {
        $security = New-Object System.Security.AccessControl.FileSecurity
        $inherit = [System.Security.AccessControl.InheritanceFlags]::None
    }
    $security.SetAccessRuleProtection($true, $false)
    foreach ($sid in @('S-1-5-18', 'S-1-5-32-544')) {  # LocalSystem, BUILTIN\Administrators
        $identity = New-Object System.Security.Principal.SecurityIdentifier $sid
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule(
            $identity, [System.Security.AccessControl.FileSystemRights]::FullControl, $inherit,
            [System.Security.AccessControl.PropagationFlags]::None,
            [System.Security.AccessControl.AccessControlType]::Allow)
        $security.AddAccessRule($rule)
    }
    return $security
}

function New-CrcPrivateDirectory([string]$Path) {
    $security = New-CrcAdminOnlySecurity $true
    $null = [System.IO.Directory]::CreateDirectory($Path, $security)  # a new directory gets it at creation
    [System.IO.Directory]::SetAccessControl($Path, $security)         # an existing one gets it now
}

function Set-CrcPrivateFile([string]$Path) {
    [System.IO.File]::SetAccessControl($Path, (New-CrcAdminOnlySecurity $false))
}

# The boot file Vultr saved (C:\image\firstboot.cmd) and the .ps1 copy cmd.exe made of it hold this machine's
# private key; C:\image is not private. cmd.exe deletes the copy when PowerShell is done; the boot file stays.
function Protect-CrcBootFiles {
    foreach ($path in @((Get-CrcEnv @('CRC_BOOT_FILE') ''), (Get-CrcEnv @('CRC_BOOT_PS1') ''))) {
        if (-not $path -or -not (Test-Path -LiteralPath $path -PathType Leaf)) { continue }
        try {
            Set-CrcPrivateFile $path
            Write-CrcBootLog "restricted $path to SYSTEM and Administrators"
        } catch {
            Write-CrcBootLog "could not restrict ${path}: $($_.Exception.Message)"
        }
    }
}

function New-CrcPrivateFile([string]$Path) {
    # An empty file with the restricted ACL; whatever secret it is to hold is written into it afterwards.
    if (Test-Path -LiteralPath $Path) { Remove-Item -LiteralPath $Path -Force }
    [System.IO.File]::WriteAllBytes($Path, [byte[]]@())
    Set-CrcPrivateFile $Path
}

# --- HTTP: TLS 1.2, and the hub's self-signed certificate pinned by its exact bytes ---------------------------
[System.Net.ServicePointManager]::SecurityProtocol =
    [System.Net.ServicePointManager]::SecurityProtocol -bor [System.Net.SecurityProtocolType]::Tls12
[System.Net.ServicePointManager]::Expect100Continue = $false  # POST the report at once, no 100-continue round trip

$CrcTrustSource = @'
using System;
using System.Collections.Generic;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

public static class CrcHubTrust
{
    private static readonly List<byte[]> Pinned = new List<byte[]>();
    private static string hubHost = "";
    private static int hubPort = -1;

    // Requests to the hub accept only a pinned certificate; every other request is validated as usual.
    public static void Install(string host, int port, byte[][] certificates)
    {
        hubHost = host;
        hubPort = port;
        Pinned.Clear();
        Pinned.AddRange(certificates);
        ServicePointManager.ServerCertificateValidationCallback = Check;
    }

    public static bool Check(object sender, X509Certificate certificate, X509Chain chain, SslPolicyErrors errors)
    {
        bool toHub = false;
        WebRequest request = sender as WebRequest;
        if (request != null)
        {
            Uri uri = request.RequestUri;
            toHub = string.Equals(uri.Host, hubHost, StringComparison.OrdinalIgnoreCase) && uri.Port == hubPort;
        }
        if (certificate != null)
        {
            byte[] raw = certificate.GetRawCertData();
            foreach (byte[] expected in Pinned)
            {
                if (Same(raw, expected)) return true;
            }
        }
        return !toHub && errors == SslPolicyErrors.None;
    }

    private static bool Same(byte[] a, byte[] b)
    {
        if (a == null || b == null || a.Length != b.Length) return false;
        int diff = 0;
        for (int i = 0; i < a.Length; i++) diff |= a[i] ^ b[i];
        return diff == 0;
    }
}
'@

function Get-CrcPemCertificates([string]$Pem) {
    $found = New-Object System.Collections.Generic.List[byte[]]
    $pattern = '-----BEGIN CERTIFICATE-----(?<body>[A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----'
    foreach ($match in [regex]::Matches($Pem, $pattern)) {
        $base64 = $match.Groups['body'].Value -replace '\s', ''
        $found.Add([System.Convert]::FromBase64String($base64))
    }
    return , $found.ToArray()
}

function Install-CrcHubTrust {
    if (-not $CrcHubCaPem) { return }
    $certificates = Get-CrcPemCertificates $CrcHubCaPem
    if ($certificates.Length -eq 0) { throw 'the hub CA PEM holds no certificate' }
    Add-Type -TypeDefinition $CrcTrustSource -Language CSharp
    $hub = [System.Uri]$CrcHubHttp
    [CrcHubTrust]::Install($hub.Host, $hub.Port, $certificates)
}

function Get-CrcFile([string]$Url, [string]$Path) {
    for ($attempt = 1; ; $attempt++) {
        try {
            Invoke-WebRequest -Uri $Url -OutFile $Path -UseBasicParsing -TimeoutSec 600
            return
        } catch {
            if ($attempt -ge 5) { throw }
            Write-CrcStepLog "download of $Url failed (attempt $attempt): $($_.Exception.Message)"
            Start-Sleep -Seconds (2 * $attempt)
        }
    }
}

function Get-CrcSha256([string]$Path) {
    return (Get-FileHash -LiteralPath $Path -Algorithm SHA256).Hash.ToLowerInvariant()
}

# --- boot reports (protocol/boot.py) --------------------------------------------------------------------------
function ConvertFrom-CrcHex([string]$Hex) {
    $bytes = New-Object byte[] ($Hex.Length / 2)
    for ($i = 0; $i -lt $bytes.Length; $i++) { $bytes[$i] = [System.Convert]::ToByte($Hex.Substring(2 * $i, 2), 16) }
    return , $bytes
}

$ReportKeyBytes = ConvertFrom-CrcHex $CrcReportKey

function Get-CrcUnixTime {
    $epoch = New-Object System.DateTime 1970, 1, 1, 0, 0, 0, ([System.DateTimeKind]::Utc)
    return [long][System.Math]::Floor(([System.DateTime]::UtcNow - $epoch).TotalSeconds)
}

function Get-CrcBootSignature([string]$Step, [string]$Status, [long]$Time, [byte[]]$Body) {
    # MAC input: "crc-boot-v1\n{machine}\n{time}\n{step}\n{status}\n" followed by the body bytes.
    $head = [System.Text.Encoding]::ASCII.GetBytes("crc-boot-v1`n$CrcMachineId`n$Time`n$Step`n$Status`n")
    $message = New-Object byte[] ($head.Length + $Body.Length)
    [System.Array]::Copy($head, 0, $message, 0, $head.Length)
    [System.Array]::Copy($Body, 0, $message, $head.Length, $Body.Length)
    $hmac = New-Object System.Security.Cryptography.HMACSHA256 (, $script:ReportKeyBytes)
    try { $digest = $hmac.ComputeHash($message) } finally { $hmac.Dispose() }
    return 'hmac-sha256=' + (($digest | ForEach-Object { $_.ToString('x2') }) -join '')
}

function Get-CrcLogTail([string]$Path) {
    if (-not $Path -or -not (Test-Path -LiteralPath $Path)) { return , (New-Object byte[] 0) }
    $all = [System.IO.File]::ReadAllBytes($Path)
    $take = [System.Math]::Min($all.Length, 8192)
    $tail = New-Object byte[] $take
    [System.Array]::Copy($all, $all.Length - $take, $tail, 0, $take)
    return , $tail
}

# Send-CrcReport STEP STATUS [FILE]: best effort; a hub that cannot be reached must not stop the installation.
function Send-CrcReport([string]$Step, [string]$Status, [string]$DetailFile = '') {
    try {
        $body = Get-CrcLogTail $DetailFile
        for ($attempt = 1; $attempt -le 4; $attempt++) {
            $now = Get-CrcUnixTime
            $headers = @{
                'X-CRC-Machine'   = $CrcMachineId
                'X-CRC-Time'      = [string]$now
                'X-CRC-Step'      = $Step
                'X-CRC-Status'    = $Status
                'X-CRC-Signature' = (Get-CrcBootSignature $Step $Status $now $body)
            }
            try {
                $null = Invoke-WebRequest -Uri "$CrcHubHttp/v1/boot" -Method Post -Body $body -Headers $headers `
                    -ContentType 'application/octet-stream' -UseBasicParsing -TimeoutSec 15
                return
            } catch {
                $exception = $_.Exception
                $httpCode = 0
                if ($exception -is [System.Net.WebException] -and $exception.Response) {
                    $httpCode = [int]$exception.Response.StatusCode
                }
                Write-CrcBootLog "boot report $Step/$Status, attempt ${attempt}: $($exception.Message)"
                # The hub refused this report (bad MAC, unknown machine, replay): sending it again will not help.
                if ($httpCode -ge 400 -and $httpCode -lt 500 -and $httpCode -ne 429) { break }
                if ($attempt -lt 4) { Start-Sleep -Seconds $attempt }
            }
        }
        Write-CrcBootLog "boot report $Step/$Status not delivered"
    } catch {
        Write-CrcBootLog "boot report $Step/$Status not sent: $($_.Exception.Message)"
    }
}

# Start-CrcStep NAME: the step now running; its output goes to the step log, which a failure report carries.
function Start-CrcStep([string]$Name) {
    $script:CurrentStep = $Name
    Write-CrcBootLog ("== $Name (" + [System.DateTime]::UtcNow.ToString('HH:mm:ss') + ')')
    [System.IO.File]::WriteAllText($script:StepLog, '', $script:Utf8NoBom)
    Send-CrcReport $Name 'running'
}

function Complete-CrcStep {
    Copy-CrcStepLogToBootLog
    Send-CrcReport $script:CurrentStep 'ok' $script:StepLog
}

# Invoke-CrcNative PROGRAM ARGS: runs a program with its output (stdout and stderr) in the step log; a non-zero
# exit code is an error unless -AllowFailure. Returns the exit code. Never give it a secret as an argument.
function Invoke-CrcNative {
    param([Parameter(Mandatory = $true)][string]$FilePath, [string[]]$Arguments = @(), [switch]$AllowFailure)
    if (-not (Get-Command $FilePath -ErrorAction SilentlyContinue)) { throw "no program $FilePath" }
    Write-CrcStepLog ("> $FilePath " + ($Arguments -join ' '))
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'  # in Windows PowerShell 5.1 a line on stderr would otherwise be fatal
    try {
        & $FilePath @Arguments 2>&1 | ForEach-Object { Write-CrcStepLog ([string]$_) }
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $previous
    }
    if ($code -ne 0 -and -not $AllowFailure) { throw "$FilePath exited with code $code" }
    return $code
}

# --- Python ---------------------------------------------------------------------------------------------------
# Test-CrcPython PROGRAM [PREFIX ARGS]: the full path of that interpreter when it is Python >= 3.11, else ''.
function Test-CrcPython([string]$Candidate, [string[]]$Prefix = @()) {
    $command = Get-Command $Candidate -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    if (-not $command -or $command.Path -like '*\WindowsApps\*') { return '' }  # the Store's python.exe stub
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $code = 'import sys; print(sys.executable if sys.version_info >= (3, 11) else str())'
        $found = & $command.Path @Prefix -c $code 2>$null | Select-Object -First 1
    } catch {
        $found = ''
    } finally {
        $ErrorActionPreference = $previous
    }
    if ($found) { $found = ([string]$found).Trim() }
    if ($found -and (Test-Path -LiteralPath $found -PathType Leaf)) { return $found }
    return ''
}

function Find-CrcPython {
    $candidates = New-Object System.Collections.Generic.List[object]
    $override = Get-CrcEnv @('CRC_PYTHON') ''
    if ($override) { $candidates.Add(@($override)) }
    $candidates.Add(@('py', '-3'))
    $candidates.Add(@('python'))
    $candidates.Add(@('python3'))
    foreach ($base in @($ProgramFilesDir, (Get-CrcEnv @('ProgramFiles') ''), 'C:\')) {
        if (-not $base -or -not (Test-Path -LiteralPath $base)) { continue }
        $installed = @(Get-ChildItem -Path (Join-Path $base 'Python3*\python.exe') -ErrorAction SilentlyContinue |
            Sort-Object -Property FullName -Descending)
        foreach ($exe in $installed) { $candidates.Add(@($exe.FullName)) }
    }
    foreach ($candidate in $candidates) {
        $prefix = @()
        if ($candidate.Length -gt 1) { $prefix = @($candidate[1..($candidate.Length - 1)]) }
        $found = Test-CrcPython $candidate[0] $prefix
        if ($found) { return $found }
    }
    return ''
}

function Update-CrcPath {
    $machine = [Environment]::GetEnvironmentVariable('Path', 'Machine')
    if ($machine) { $env:Path = $machine + ';' + $env:Path }
}

# The installer the hub serves (python-*-amd64.exe in its dist index, with its SHA-256), else python.org's.
function Get-CrcPythonInstaller([string]$Path) {
    try {
        $index = Invoke-RestMethod -Uri "$CrcHubHttp/v1/dist/index.json" -UseBasicParsing -TimeoutSec 30
        $files = @()
        if ($index -and $index.PSObject.Properties['files']) { $files = @($index.files) }
        $offered = @($files | Where-Object { $_.name -like 'python-*-amd64.exe' } |
            Sort-Object -Property name -Descending)
        if ($offered.Length -gt 0) {
            $entry = $offered[0]
            Write-CrcStepLog "the hub serves $($entry.name)"
            Get-CrcFile "$CrcHubHttp/v1/dist/$($entry.name)" $Path
            $actual = Get-CrcSha256 $Path
            if ($actual -eq ([string]$entry.sha256).ToLowerInvariant()) { return }
            Write-CrcStepLog "SHA-256 mismatch for the hub's $($entry.name): expected $($entry.sha256), got $actual"
        } else {
            Write-CrcStepLog 'the hub serves no Python installer'
        }
    } catch {
        Write-CrcStepLog "no Python installer from the hub: $($_.Exception.Message)"
    }
    Write-CrcStepLog "downloading $PythonInstallerUrl"
    Get-CrcFile $PythonInstallerUrl $Path
}

function Install-CrcPython {
    $installer = Join-Path $PrefixDir $PythonInstallerName
    Get-CrcPythonInstaller $installer
    $signature = Get-AuthenticodeSignature -FilePath $installer
    $signer = ''
    if ($signature.SignerCertificate) { $signer = $signature.SignerCertificate.Subject }
    Write-CrcStepLog "installer signature: $($signature.Status), signer: $signer"
    if ($signature.Status -ne 'Valid' -or $signer -notlike "*$PythonSigner*") {
        throw "the Python installer is not validly signed by the $PythonSigner"
    }
    $installLog = Join-Path $LogDir 'python-install.log'
    $arguments = "/quiet InstallAllUsers=1 PrependPath=1 Include_launcher=1 Include_test=0 /log `"$installLog`""
    $process = Start-Process -FilePath $installer -ArgumentList $arguments -Wait -PassThru
    Write-CrcStepLog "Python installer exited with code $($process.ExitCode)"
    if ($process.ExitCode -ne 0 -and $process.ExitCode -ne 3010) {  # 3010: success, reboot needed
        if (Test-Path -LiteralPath $installLog) {
            Get-Content -LiteralPath $installLog -Tail 40 | ForEach-Object { Write-CrcStepLog ([string]$_) }
        }
        throw "the Python installer failed with exit code $($process.ExitCode)"
    }
    Remove-Item -LiteralPath $installer -Force -ErrorAction SilentlyContinue
    Update-CrcPath
}

# --- pip's trust: the CA bundle pip ships plus the hub's certificate --------------------------------------------
function Write-CrcPipCaBundle([string]$Path) {
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $bundle = & $VenvPython -c 'import pip._vendor.certifi as c; print(c.where())' 2>$null | Select-Object -First 1
    } catch {
        $bundle = ''
    } finally {
        $ErrorActionPreference = $previous
    }
    $text = ''
    $bundlePath = ''
    if ($bundle) { $bundlePath = ([string]$bundle).Trim() }
    if ($bundlePath -and (Test-Path -LiteralPath $bundlePath -PathType Leaf)) {
        $text = [System.IO.File]::ReadAllText($bundlePath) + "`n"
    }
    [System.IO.File]::WriteAllText($Path, $text + $CrcHubCaPem + "`n", $script:Utf8NoBom)
}

# --- steps ----------------------------------------------------------------------------------------------------
try {
    New-CrcPrivateDirectory $ConfigDir  # before anything secret is written into it
    New-CrcPrivateDirectory $LogDir
    New-CrcPrivateDirectory $StateDir
    $null = New-Item -ItemType Directory -Force -Path $PrefixDir
    [System.IO.File]::WriteAllText($BootLog, '', $Utf8NoBom)
    Write-CrcBootLog "crc startup script for machine $CrcMachineName ($CrcMachineId) of scenario $CrcScenario"
    Protect-CrcBootFiles
    if ($CrcHubCaPem) {
        New-CrcPrivateFile $HubCaFile
        [System.IO.File]::WriteAllText($HubCaFile, $CrcHubCaPem + "`n", $Utf8NoBom)
    }
    Install-CrcHubTrust
    Send-CrcReport 'script-started' 'ok'

    Start-CrcStep 'installing-python'
    $Python = Find-CrcPython
    if (-not $Python) {
        Write-CrcStepLog 'no Python >= 3.11 found; installing one'
        Install-CrcPython
        $Python = Find-CrcPython
        if (-not $Python) { throw "Python $PythonVersion was installed but cannot be found" }
    }
    Write-CrcStepLog "using $Python"
    $null = Invoke-CrcNative $Python @('--version')
    Complete-CrcStep

    Start-CrcStep 'creating-venv'
    if (-not (Test-Path -LiteralPath $VenvPython -PathType Leaf)) {
        $null = Invoke-CrcNative $Python @('-m', 'venv', $VenvDir)
    }
    Complete-CrcStep

    Start-CrcStep 'downloading-daemon'
    $WheelFile = Join-Path $PrefixDir $CrcWheel
    $WheelPart = "$WheelFile.part"
    Get-CrcFile "$CrcHubHttp/v1/dist/$CrcWheel" $WheelPart
    $actual = Get-CrcSha256 $WheelPart
    if ($actual -ne $CrcWheelSha256.ToLowerInvariant()) {
        throw "SHA-256 mismatch for ${CrcWheel}: expected $CrcWheelSha256, got $actual"
    }
    if (Test-Path -LiteralPath $WheelFile) { Remove-Item -LiteralPath $WheelFile -Force }
    Move-Item -LiteralPath $WheelPart -Destination $WheelFile
    Write-CrcStepLog "$CrcWheel ($actual)"
    # The dependencies' versions and hashes: the lock the master signed (by its SHA-256) into this script.
    $LockFile = Join-Path $PrefixDir $CrcLock
    Get-CrcFile "$CrcHubHttp/v1/dist/$CrcLock" "$LockFile.part"
    $actual = Get-CrcSha256 "$LockFile.part"
    if ($actual -ne $CrcLockSha256.ToLowerInvariant()) {
        throw "SHA-256 mismatch for ${CrcLock}: expected $CrcLockSha256, got $actual"
    }
    if (Test-Path -LiteralPath $LockFile) { Remove-Item -LiteralPath $LockFile -Force }
    Move-Item -LiteralPath "$LockFile.part" -Destination $LockFile
    Complete-CrcStep

    Start-CrcStep 'installing-daemon'
    $pipTls = @()
    if ($CrcHubCaPem) {
        $pipCaFile = Join-Path $ConfigDir 'pip-ca.pem'
        Write-CrcPipCaBundle $pipCaFile
        $pipTls = @('--cert', $pipCaFile)
    }
    if ($CrcHubHttp.StartsWith('http://')) {
        # pip ignores plain-HTTP links unless their host is trusted; every file is hash-checked (the wheel above,
        # the rest by the master's lock), so the transport decides nothing.
        $pipTls = @('--trusted-host', ([Uri]$CrcHubHttp).Host)
    }
    $pipArguments = @('-m', 'pip', 'install', '--quiet', '--disable-pip-version-check') + $pipTls +
        @('--no-index', '--find-links', "$CrcHubHttp/v1/dist/")
    # Only from the hub, only files whose hashes the master's lock names: no package index, nothing unpinned.
    $null = Invoke-CrcNative $VenvPython ($pipArguments + @('--require-hashes', '-r', $LockFile))
    $null = Invoke-CrcNative $VenvPython ($pipArguments + @('--no-deps', $WheelFile))
    # pywin32's post-install step registers pythonservice.exe and its DLLs, which the service needs.
    $null = Invoke-CrcNative $VenvPython @('-m', 'pywin32_postinstall', '-install', '-silent') -AllowFailure
    $null = Invoke-CrcNative $CrcDaemonExe @('--version')
    Complete-CrcStep

    Start-CrcStep 'writing-config'
    $ConfigPart = "$ConfigFile.part"
    New-CrcPrivateFile $ConfigPart  # the restricted ACL is on the file before the private key is in it
    [System.IO.File]::WriteAllText($ConfigPart, $CrcConfig, $Utf8NoBom)
    if (Test-Path -LiteralPath $ConfigFile) { Remove-Item -LiteralPath $ConfigFile -Force }
    Move-Item -LiteralPath $ConfigPart -Destination $ConfigFile
    Set-CrcPrivateFile $ConfigFile
    Write-CrcStepLog "wrote $ConfigFile (SYSTEM and Administrators only)"
    Complete-CrcStep

    Start-CrcStep 'starting-daemon'
    if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
        Write-CrcStepLog "service $ServiceName exists already; reinstalling it"
        $null = Invoke-CrcNative $CrcDaemonExe @('service', 'uninstall') -AllowFailure
        for ($i = 0; $i -lt 30 -and (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue); $i++) {
            Start-Sleep -Seconds 1
        }
    }
    $null = Invoke-CrcNative $CrcDaemonExe @('service', 'install', '--config', $ConfigFile)
    $null = Invoke-CrcNative $CrcDaemonExe @('service', 'start')
    $status = ''
    for ($i = 0; $i -lt 30; $i++) {
        $status = [string](Get-Service -Name $ServiceName).Status
        if ($status -eq 'Running') { break }
        Start-Sleep -Seconds 1
    }
    Write-CrcStepLog "service $ServiceName is $status"
    if ($status -ne 'Running') { throw "service $ServiceName did not reach Running (it is $status)" }
    Complete-CrcStep
    Send-CrcReport 'daemon-started' 'ok'
} catch {
    $failure = $_
    try {
        $line = $failure.InvocationInfo.ScriptLineNumber
        Write-CrcStepLog "error at line ${line}: $($failure.Exception.Message)"
        Write-CrcStepLog ([string]$failure.ScriptStackTrace)
    } catch {
        Write-CrcStepLog "error: $failure"
    }
    Copy-CrcStepLogToBootLog
    Send-CrcReport $CurrentStep 'failed' $StepLog
    exit 1
}
exit 0
