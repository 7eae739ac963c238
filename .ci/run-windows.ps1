# CI on Windows: install and test exactly as README.md says for Windows. The commands are read
# from README's PowerShell blocks marked <!-- ci:setup-windows --> and <!-- ci:test-windows -->
# (by .ci/readme_blocks.py; .ci/run reads the bash ones), so README and CI cannot drift apart.
#   pwsh .ci/run-windows.ps1 setup   # the setup block, up to (not including) `helpers start`
#   pwsh .ci/run-windows.ps1 test    # the test block
# Every command must exit 0 (pytest's "no tests ran", exit 5, fails too).
param(
    [Parameter(Mandatory = $true)]
    [ValidateSet('setup', 'test')]
    [string]$Step
)
$ErrorActionPreference = 'Stop'
Set-Location (Split-Path -Parent $PSScriptRoot)

$commands = @(python .ci/readme_blocks.py "$Step-windows")
if ($LASTEXITCODE -ne 0 -or $commands.Count -eq 0) {
    throw "README.md lacks its ci:$Step-windows block"
}
foreach ($command in $commands) {
    if ($Step -eq 'setup' -and $command -match 'helpers start') {
        break  # the setup ends by starting JupyterLab; CI installs only
    }
    Write-Host "+ $command"
    $global:LASTEXITCODE = 0
    Invoke-Expression $command
    if ($LASTEXITCODE -ne 0) {
        throw "exit code $LASTEXITCODE from: $command"
    }
}
