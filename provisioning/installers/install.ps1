<#
CloudRemoteControl installer for an existing Windows machine (issue 20): installs crc-daemon from the hub as a
Windows service and joins a scenario with an enrollment token. Served as is at HUB/v1/install.ps1;
`crc enroll create --print-install windows` prints the one line (powershell.exe -EncodedCommand ...) that fetches
it, checks its SHA-256 against the master's own copy, and runs it as:

  install.ps1 -Hub URL [-HubFingerprint sha256:HEX] -Wheel NAME -WheelHash HEX -Lock NAME -LockHash HEX
              [-Token TOKEN|@FILE] [-Name NAME] [-NoService] [-Config PATH] [-Force]

This file is the same for every machine and every master: nothing is rendered into it, so a master can hash its
own packaged copy (provisioning/installers/). The daemon wheel and the dependency lock are those the master vouches
for (their SHA-256s are arguments, never read from the hub); pip installs with --no-index --require-hashes from
the hub only. A hub can make this fail, not install anything else. Written for Windows PowerShell 5.1, ASCII only
(5.1 reads a .ps1 without a BOM in the ANSI code page:
https://learn.microsoft.com/powershell/scripting/dev-cross-plat/vscode/understanding-file-encoding).

The token: env CRC_ENROLL_TOKEN (what the one-liner sets) or -Token @FILE; it reaches crc-daemon enroll through
its environment only, never a command line.

Python: as the Windows startup script (provisioning/scripts/windows.ps1) finds it: CRC_PYTHON, the py launcher,
python on PATH, Program Files\Python3*; when there is none, it installs Python 3.12 as windows.ps1 does (the hub's
python-*-amd64.exe, else python.org's, run only when Authenticode-signed by the Python Software Foundation).

Exit code: 0 joined and the service runs; 1 it failed (the hub unreachable, a SHA-256 or the hub's certificate not
the pinned one, pip failed, the hub refused the token); 2 a usage error or this machine has joined already
(crc-daemon enroll's own code is passed on). Every failure says why in one line on stderr.
#>
param(
    # No [Parameter(Mandatory)]: under -NonInteractive a missing one would be a prompt error, not our message.
    [string]$Hub = '',
    [string]$HubFingerprint = '',
    [string]$Wheel = '',
    # SHA-256s, hex. Not -WheelSha256: tree-sitter-powershell, which the tests parse this with, reads a
    # parameter name ending in digits as a redirection (PowerShell itself does not).
    [string]$WheelHash = '',
    [string]$Lock = '',
    [string]$LockHash = '',
    [string]$Token = '',
    [string]$Name = '',
    [string]$Config = '',
    [switch]$NoService,
    [switch]$Force
)

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'  # Invoke-WebRequest's progress bar slows downloads down badly
Set-StrictMode -Version Latest

function Exit-CrcInstall([int]$Code, [string]$Message) {
    [System.Console]::Error.WriteLine("crc install: $Message")
    exit $Code
}

function Write-CrcInstall([string]$Message) {
    [System.Console]::Out.WriteLine("crc install: $Message")
}

function Get-CrcEnv([string[]]$Names, [string]$Default) {
    foreach ($envName in $Names) {
        $value = [Environment]::GetEnvironmentVariable($envName)
        if ($value) { return $value }
    }
    return $Default
}

# --- arguments ------------------------------------------------------------------------------------------------
$Sha256Pattern = '^[0-9a-f]{64}$'
$FileNamePattern = '^[A-Za-z0-9][A-Za-z0-9_.+-]*$'
$Hub = $Hub.TrimEnd('/')
if ($Hub -notmatch '^https?://[^/]') { Exit-CrcInstall 2 "-Hub must be the hub's http:// or https:// URL, not '$Hub'" }
if ($Wheel -notmatch $FileNamePattern -or -not $Wheel.EndsWith('.whl')) { Exit-CrcInstall 2 '-Wheel must name a wheel' }
if ($Lock -notmatch $FileNamePattern) { Exit-CrcInstall 2 '-Lock must name the dependency lock' }
if ($WheelHash -cnotmatch $Sha256Pattern) { Exit-CrcInstall 2 '-WheelHash must be 64 lower-case hex digits' }
if ($LockHash -cnotmatch $Sha256Pattern) { Exit-CrcInstall 2 '-LockHash must be 64 lower-case hex digits' }
if ($HubFingerprint) {
    if ($HubFingerprint -cnotmatch '^sha256:[0-9a-f]{64}$') {
        Exit-CrcInstall 2 '-HubFingerprint must be sha256:<64 lower-case hex digits>'
    }
    if (-not $Hub.StartsWith('https://')) { Exit-CrcInstall 2 "a -HubFingerprint is given but $Hub does not use TLS" }
}
# The token stays out of the environment of everything but crc-daemon enroll (pip, Python).
$EnrollToken = Get-CrcEnv @('CRC_ENROLL_TOKEN') ''
[Environment]::SetEnvironmentVariable('CRC_ENROLL_TOKEN', $null)
if (-not $Token -and -not $EnrollToken) {
    Exit-CrcInstall 2 'no enrollment token: set CRC_ENROLL_TOKEN or pass -Token @FILE (crc enroll create makes one)'
}
if ($Token.StartsWith('@') -and -not (Test-Path -LiteralPath $Token.Substring(1) -PathType Leaf)) {
    Exit-CrcInstall 2 "cannot read the token file $($Token.Substring(1))"
}

$ProgramFilesDir = Get-CrcEnv @('ProgramW6432', 'ProgramFiles') 'C:\Program Files'
$ProgramDataDir = Get-CrcEnv @('ProgramData', 'ALLUSERSPROFILE') 'C:\ProgramData'  # as clients/windows/paths.py
$PrefixDir = Join-Path $ProgramFilesDir 'crc'
$VenvDir = Join-Path $PrefixDir 'venv'
$VenvPython = Join-Path $VenvDir 'Scripts\python.exe'
$CrcDaemonExe = Join-Path $VenvDir 'Scripts\crc-daemon.exe'
$ConfigDir = Join-Path $ProgramDataDir 'crc'
if (-not $Config) { $Config = Join-Path $ConfigDir 'daemon.toml' }
$LogDir = Join-Path $ConfigDir 'logs'
$InstallLog = Join-Path $LogDir 'install.log'
$Utf8NoBom = New-Object System.Text.UTF8Encoding $false
if ((Test-Path -LiteralPath $Config) -and -not $Force) {
    Exit-CrcInstall 2 "$Config exists: this machine has joined already (-Force: join anew)"
}

function Write-CrcLog([string]$Text) {
    try { [System.IO.File]::AppendAllText($script:InstallLog, $Text + "`r`n", $script:Utf8NoBom) } catch { }
}

function Get-CrcLogTail {
    try {
        $last = Get-Content -LiteralPath $script:InstallLog -Tail 1 -ErrorAction Stop
        if ($last) { return ([string]$last).Trim() }
    } catch { }
    return 'see the install log'
}

# SYSTEM and Administrators only, nothing inherited (as windows.ps1 makes its config folder).
function New-CrcPrivateDirectory([string]$Path) {
    $security = New-Object System.Security.AccessControl.DirectorySecurity
    $inherit = [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit'
    $security.SetAccessRuleProtection($true, $false)
    foreach ($sid in @('S-1-5-18', 'S-1-5-32-544')) {  # LocalSystem, BUILTIN\Administrators
        $identity = New-Object System.Security.Principal.SecurityIdentifier $sid
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule(
            $identity, [System.Security.AccessControl.FileSystemRights]::FullControl, $inherit,
            [System.Security.AccessControl.PropagationFlags]::None,
            [System.Security.AccessControl.AccessControlType]::Allow)
        $security.AddAccessRule($rule)
    }
    $null = [System.IO.Directory]::CreateDirectory($Path, $security)
    [System.IO.Directory]::SetAccessControl($Path, $security)
}

# --- HTTP: TLS 1.2, and with a pin only the pinned certificate for the hub -------------------------------------
[System.Net.ServicePointManager]::SecurityProtocol =
    [System.Net.ServicePointManager]::SecurityProtocol -bor [System.Net.SecurityProtocolType]::Tls12

# A C# callback rather than a script block: .NET may call it on a thread with no PowerShell runspace, where a
# script block cannot run (windows.ps1 does the same). The pin is the SHA-256 of the certificate's DER bytes, as
# clients/link.py computes it.
$CrcPinSource = @'
using System;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

public static class CrcHubPin
{
    private static string hubHost = "";
    private static int hubPort = -1;
    private static string pin = "";
    public static byte[] Seen = null;

    public static void Install(string host, int port, string expected)
    {
        hubHost = host;
        hubPort = port;
        pin = expected;
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
        if (!toHub) return errors == SslPolicyErrors.None;
        if (certificate == null) return false;
        byte[] raw = certificate.GetRawCertData();
        string actual;
        using (SHA256 sha = SHA256.Create())
        {
            actual = "sha256:" + BitConverter.ToString(sha.ComputeHash(raw)).Replace("-", "").ToLowerInvariant();
        }
        if (actual != pin) return false;
        Seen = raw;
        return true;
    }
}
'@

function Get-CrcFile([string]$Url, [string]$Path) {
    for ($attempt = 1; ; $attempt++) {
        try {
            Invoke-WebRequest -Uri $Url -OutFile $Path -UseBasicParsing -TimeoutSec 600
            return
        } catch {
            if ($attempt -ge 3) { throw "cannot download ${Url}: $($_.Exception.Message)" }
            Write-CrcLog "download of $Url failed (attempt $attempt): $($_.Exception.Message)"
            Start-Sleep -Seconds (2 * $attempt)
        }
    }
}

function Get-CrcSha256([string]$Path) {
    return (Get-FileHash -LiteralPath $Path -Algorithm SHA256).Hash.ToLowerInvariant()
}

# Get-CrcChecked NAME SHA256: HUB/v1/dist/NAME into the prefix folder, refused unless its SHA-256 is the master's.
function Get-CrcChecked([string]$FileName, [string]$Expected) {
    $path = Join-Path $PrefixDir $FileName
    Get-CrcFile "$Hub/v1/dist/$FileName" "$path.part"
    $actual = Get-CrcSha256 "$path.part"
    if ($actual -ne $Expected) {
        Remove-Item -LiteralPath "$path.part" -Force
        Exit-CrcInstall 1 "SHA-256 mismatch for $FileName from the hub: expected $Expected (the master's), got $actual; nothing was installed"
    }
    if (Test-Path -LiteralPath $path) { Remove-Item -LiteralPath $path -Force }
    Move-Item -LiteralPath "$path.part" -Destination $path
    return $path
}

# Invoke-CrcNative PROGRAM ARGS: its output in the install log; returns its exit code. Never give it a secret.
function Invoke-CrcNative([string]$FilePath, [string[]]$Arguments) {
    Write-CrcLog ("> $FilePath " + ($Arguments -join ' '))
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'  # in Windows PowerShell 5.1 a line on stderr would otherwise be fatal
    try {
        & $FilePath @Arguments 2>&1 | ForEach-Object { Write-CrcLog ([string]$_) }
        return $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $previous
    }
}

# --- Python (windows.ps1's Test-CrcPython and Find-CrcPython) ----------------------------------------------------
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

# --- installing Python when there is none: windows.ps1's installer, from the hub or python.org, Authenticode-checked
$PythonVersion = '3.12.10'
$PythonInstallerName = "python-$PythonVersion-amd64.exe"
$PythonInstallerUrl = "https://www.python.org/ftp/python/$PythonVersion/$PythonInstallerName"
$PythonSigner = 'Python Software Foundation'

function Update-CrcPath {
    $machine = [Environment]::GetEnvironmentVariable('Path', 'Machine')
    if ($machine) { $env:Path = $machine + ';' + $env:Path }
}

# The installer the hub serves (python-*-amd64.exe in its dist index, with its SHA-256), else python.org's.
function Get-CrcPythonInstaller([string]$Path) {
    try {
        $index = Invoke-RestMethod -Uri "$Hub/v1/dist/index.json" -UseBasicParsing -TimeoutSec 30
        $files = @()
        if ($index -and $index.PSObject.Properties['files']) { $files = @($index.files) }
        $offered = @($files | Where-Object { $_.name -like 'python-*-amd64.exe' } |
            Sort-Object -Property name -Descending)
        if ($offered.Length -gt 0) {
            $entry = $offered[0]
            Write-CrcLog "the hub serves $($entry.name)"
            Get-CrcFile "$Hub/v1/dist/$($entry.name)" $Path
            $actual = Get-CrcSha256 $Path
            if ($actual -eq ([string]$entry.sha256).ToLowerInvariant()) { return }
            Write-CrcLog "SHA-256 mismatch for the hub's $($entry.name): expected $($entry.sha256), got $actual"
        } else {
            Write-CrcLog 'the hub serves no Python installer'
        }
    } catch {
        Write-CrcLog "no Python installer from the hub: $($_.Exception.Message)"
    }
    Write-CrcLog "downloading $PythonInstallerUrl"
    Get-CrcFile $PythonInstallerUrl $Path
}

function Install-CrcPython {
    $installer = Join-Path $PrefixDir $PythonInstallerName
    Get-CrcPythonInstaller $installer
    $signature = Get-AuthenticodeSignature -FilePath $installer
    $signer = ''
    if ($signature.SignerCertificate) { $signer = $signature.SignerCertificate.Subject }
    Write-CrcLog "installer signature: $($signature.Status), signer: $signer"
    if ($signature.Status -ne 'Valid' -or $signer -notlike "*$PythonSigner*") {
        throw "the Python installer is not validly signed by the $PythonSigner"
    }
    $installLog = Join-Path $LogDir 'python-install.log'
    $arguments = "/quiet InstallAllUsers=1 PrependPath=1 Include_launcher=1 Include_test=0 /log `"$installLog`""
    $process = Start-Process -FilePath $installer -ArgumentList $arguments -Wait -PassThru
    Write-CrcLog "Python installer exited with code $($process.ExitCode)"
    if ($process.ExitCode -ne 0 -and $process.ExitCode -ne 3010) {  # 3010: success, reboot needed
        if (Test-Path -LiteralPath $installLog) {
            Get-Content -LiteralPath $installLog -Tail 40 | ForEach-Object { Write-CrcLog ([string]$_) }
        }
        throw "the Python installer failed with exit code $($process.ExitCode)"
    }
    Remove-Item -LiteralPath $installer -Force -ErrorAction SilentlyContinue
    Update-CrcPath
}

# --- steps ----------------------------------------------------------------------------------------------------
try {
    New-CrcPrivateDirectory $ConfigDir  # before the config with this machine's private key is written into it
    New-CrcPrivateDirectory $LogDir
    $null = New-Item -ItemType Directory -Force -Path $PrefixDir
    [System.IO.File]::WriteAllText($InstallLog, '', $Utf8NoBom)

    if ($HubFingerprint) {
        Add-Type -TypeDefinition $CrcPinSource -Language CSharp
        $hubUri = [System.Uri]$Hub
        [CrcHubPin]::Install($hubUri.Host, $hubUri.Port, $HubFingerprint)
    }
    $Python = Find-CrcPython
    if (-not $Python) {
        Write-CrcInstall "no Python >= 3.11 found; installing Python $PythonVersion"
        Install-CrcPython
        $Python = Find-CrcPython
        if (-not $Python) { Exit-CrcInstall 1 "Python $PythonVersion was installed but cannot be found" }
    }

    Write-CrcInstall "downloading $Wheel and $Lock from $Hub"
    $WheelFile = Get-CrcChecked $Wheel $WheelHash
    $LockFile = Get-CrcChecked $Lock $LockHash

    Write-CrcInstall "installing crc-daemon into $VenvDir"
    if (-not (Test-Path -LiteralPath $VenvPython -PathType Leaf)) {
        if ((Invoke-CrcNative $Python @('-m', 'venv', $VenvDir)) -ne 0) {
            Exit-CrcInstall 1 "cannot make a virtual environment: $(Get-CrcLogTail)"
        }
    }
    $pipTls = @()
    if ($Hub.StartsWith('http://')) {
        # pip ignores plain-HTTP links unless their host is trusted; every file is hash-checked (the wheel above,
        # the rest by the master's lock), so the transport decides nothing.
        $pipTls = @('--trusted-host', ([System.Uri]$Hub).Host)
    } elseif ($HubFingerprint -and [CrcHubPin]::Seen) {
        # pip's own CA bundle plus the pinned certificate (a CA-signed hub still verifies through the bundle).
        $bundle = & $VenvPython -c 'import pip._vendor.certifi as c; print(c.where())' 2>$null | Select-Object -First 1
        $text = ''
        if ($bundle -and (Test-Path -LiteralPath ([string]$bundle).Trim() -PathType Leaf)) {
            $text = [System.IO.File]::ReadAllText(([string]$bundle).Trim()) + "`n"
        }
        $base64 = [System.Convert]::ToBase64String([CrcHubPin]::Seen, [System.Base64FormattingOptions]::InsertLineBreaks)
        $pem = "-----BEGIN CERTIFICATE-----`n$base64`n-----END CERTIFICATE-----`n"
        $pipCa = Join-Path $ConfigDir 'pip-ca.pem'
        [System.IO.File]::WriteAllText($pipCa, $text + $pem, $Utf8NoBom)
        $pipTls = @('--cert', $pipCa)
    }
    # requests lets these override the CA bundle pip is given with --cert (psf/requests#4650, #4726); pip talks to
    # the hub only (--no-index), so no other CA matters.
    foreach ($variable in @('REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE')) {
        [Environment]::SetEnvironmentVariable($variable, $null)
    }
    $pip = @('-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--timeout', '30') + $pipTls +
        @('--no-index', '--find-links', "$Hub/v1/dist/")
    # Only from the hub, only files whose hashes the master's lock names: no package index, nothing unpinned.
    if ((Invoke-CrcNative $VenvPython ($pip + @('--require-hashes', '-r', $LockFile))) -ne 0) {
        Exit-CrcInstall 1 "pip could not install the locked dependencies from the hub (run ``crc hub dist`` there?): $(Get-CrcLogTail)"
    }
    if ((Invoke-CrcNative $VenvPython ($pip + @('--no-deps', $WheelFile))) -ne 0) {
        Exit-CrcInstall 1 "pip could not install ${Wheel}: $(Get-CrcLogTail)"
    }
    # pywin32's post-install step registers pythonservice.exe and its DLLs, which the service needs.
    $null = Invoke-CrcNative $VenvPython @('-m', 'pywin32_postinstall', '-install', '-silent')

    # crc-daemon enroll makes this machine's key pair (it never leaves the machine), registers it, writes the
    # config (SYSTEM and Administrators only) and installs and starts the service.
    $enroll = @('enroll', '--hub', $Hub, '--config', $Config)
    if ($HubFingerprint) { $enroll += @('--hub-fingerprint', $HubFingerprint) }
    if ($Name) { $enroll += @('--name', $Name) }
    if ($Token) { $enroll += @('--token', $Token) }
    if ($NoService) { $enroll += @('--no-service') }
    if ($Force) { $enroll += @('--force') }
    [Environment]::SetEnvironmentVariable('CRC_ENROLL_TOKEN', $EnrollToken)  # for this one child only
    try {
        $previous = $ErrorActionPreference
        $ErrorActionPreference = 'Continue'
        & $CrcDaemonExe @enroll  # its one line (joined, or why not) goes to the console as it is
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $previous
        [Environment]::SetEnvironmentVariable('CRC_ENROLL_TOKEN', $null)
    }
    exit $code
} catch {
    Exit-CrcInstall 1 "$($_.Exception.Message) (log: $InstallLog)"
}
