"""No plaintext secret in the repository.

Every file git tracks (or would track: untracked files that .gitignore does not exclude) is
scanned for known secret formats (private keys, cloud and chat tokens, webhook URLs,
credentials inside URLs) and for secret-named settings holding a literal value
(`password: hunter2`, `PGPASSWORD=...`, `admin_password = ...`) rather than a vault reference
or a template. Findings print as path:line and kind, never the value.

Allowed: Ansible Vault encrypted files (checked to really be encrypted), the CHANGE_ME / ""
placeholders of group_vars/vault.example.yml, values that say they are fake ("dummy",
"not-a-real-...", "...-test-password"), URLs to loopback or reserved test domains (an inert
webhook target in a test), and a line carrying a reviewed-exception marker: `pragma: allowlist
secret` (the detect-secrets convention) or, in Python, ruff's `noqa: S105`/`S106` - e.g. the
throwaway password of a test server that only lives on 127.0.0.1.
The scanner's own rules are tested below against samples assembled at run time, so this file
holds no secret-shaped literal itself.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VAULT_EXAMPLE = "group_vars/vault.example.yml"
ALLOW_MARKER = "pragma: allowlist secret"
ALLOW_MARKERS = (ALLOW_MARKER, "noqa: S105", "noqa: S106")
MAX_BYTES = 2_000_000

# Known secret formats: any match is a finding.
PATTERNS: dict[str, re.Pattern[str]] = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"(?i)aws.{0,20}secret.{0,20}[:=]\s*['\"]?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
    ),
    "Slack webhook URL": re.compile(
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{20,}"
    ),
    "Discord webhook URL": re.compile(
        r"https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/api/webhooks/[0-9]{5,}/[A-Za-z0-9_-]{20,}"
    ),
    "Slack token": re.compile(r"\bxox[abposr]-[0-9A-Za-z-]{10,}"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    "GitLab token": re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "Stripe secret key": re.compile(r"\b[rs]k_live_[0-9A-Za-z]{16,}"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}

# user:password@ inside a URL; the password part is judged like any literal below.
URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:(?P<value>[^/\s@'\"]+)@")

# A secret-named key with an assigned value: YAML/JSON `key: value`, INI/env/shell
# `key = value` / `KEY=value`, Python `key="value"`. The key must END in the secret word,
# so `password_file:` or `token_url:` are not secrets.
SENSITIVE_NAMES = (
    r"password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|secret[_-]?key|webhook[_-]?url|cipher[_-]?pass|key[_-]?secret|client[_-]?secret"
)
ASSIGNMENT = re.compile(
    rf"(?i)(?<![A-Za-z0-9_])[\"']?(?P<key>[A-Za-z0-9_.-]*(?:{SENSITIVE_NAMES}))[\"']?"
    r"\s*(?::=|=|:(?=\s|$))\s*(?P<value>.*)$"
)

# Values that are not literal secrets.
TEMPLATE_MARKERS = ("{{", "{%", "${", "$(", "%(", "lookup(", "!vault", "$ANSIBLE_VAULT", "<%")
PLACEHOLDERS = {
    "",
    "change_me",
    "changeme",
    "redacted",
    "xxx",
    "***",
    "...",
    "none",
    "null",
    "~",
    "true",
    "false",
    "yes",
    "no",
}
# A value that says it is not real: "test-admin-password", "not-a-real-password", "dummy".
FAKE_VALUE = re.compile(r"(?i)(^|[-_.])test([-_.]|$)|not-a-real|dummy|fake|placeholder|insecure")
INERT_URL = re.compile(
    r"(?i)^[a-z][a-z0-9+.-]*://(127\.[0-9.]+|localhost|\[::1\]|([^/:@]*\.)?(invalid|test|example|example\.(com|net|org)))(:[0-9]+)?(/|$)"
)
SHELL_VARIABLE = re.compile(r"\$[A-Za-z_{(]")
BLOCK_SCALAR = re.compile(r"^[|>][+-]?[0-9]?$")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}"


def _unquote(value: str) -> str:
    value = value.strip().rstrip(",;").strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _strip_comment(value: str) -> str:
    """Drop a trailing ` # comment` (YAML, shell, INI) outside quotes."""
    quote = ""
    for i, ch in enumerate(value):
        if ch in "'\"" and not quote:
            quote = ch
        elif ch == quote:
            quote = ""
        elif ch in "#;" and not quote and i > 0 and value[i - 1].isspace():
            return value[:i]
    return value


def is_literal_secret(raw: str, python: bool = False) -> bool:
    """True when `raw` (what follows `key:`/`key=`) is a literal value, not a reference."""
    raw = _strip_comment(raw).strip()
    if python:
        # In code only a string literal is a literal; names, calls and f-strings are not.
        if not re.match(r"^[rbu]?['\"]", raw, re.IGNORECASE):
            return False
        raw = re.sub(r"^[rbu]", "", raw, flags=re.IGNORECASE)
        match = re.match(r"^(['\"])(.*?)\1", raw)
        raw = match.group(0) if match else raw
    if any(marker in raw for marker in TEMPLATE_MARKERS) or SHELL_VARIABLE.search(raw):
        return False
    if BLOCK_SCALAR.match(raw) or raw.startswith(("[", "{", "&", "*")):
        return False
    value = _unquote(raw)
    if value.lower() in PLACEHOLDERS or re.fullmatch(r"<[^<>]+>", value):
        return False
    if FAKE_VALUE.search(value) or INERT_URL.match(value):
        return False
    # Prose ("password: the one in the vault"), numbers and one- or two-character stand-ins
    # ("x") are not secrets.
    return not (any(ch.isspace() for ch in value) or re.fullmatch(r"[0-9.]+", value) or len(value) <= 2)


def scan_text(path: str, text: str) -> list[Finding]:
    findings: list[Finding] = []
    python = path.endswith(".py")
    placeholders_only = path == VAULT_EXAMPLE
    for number, line in enumerate(text.splitlines(), start=1):
        if any(marker in line for marker in ALLOW_MARKERS):
            continue
        for kind, pattern in PATTERNS.items():
            if pattern.search(line):
                findings.append(Finding(path, number, kind))
        for match in URL_CREDENTIALS.finditer(line):
            if is_literal_secret(match.group("value")):
                findings.append(Finding(path, number, "credentials in a URL"))
        assignment = ASSIGNMENT.search(line)
        if assignment and is_literal_secret(assignment.group("value"), python=python):
            findings.append(Finding(path, number, f"literal value for {assignment.group('key')}"))
        elif placeholders_only and re.match(r"^vault_[a-z0-9_]+:", line):
            value = _unquote(_strip_comment(line.split(":", 1)[1]))
            if value not in ("CHANGE_ME", ""):
                findings.append(Finding(path, number, 'vault.example.yml value other than CHANGE_ME or ""'))
    return findings


def repository_files() -> list[str]:
    """Tracked files plus untracked ones .gitignore does not exclude (about to be committed)."""
    result = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    names = sorted({name for name in result.stdout.decode().split("\0") if name})
    return [name for name in names if (ROOT / name).is_file() and not (ROOT / name).is_symlink()]


def read_text(name: str) -> str | None:
    data = (ROOT / name).read_bytes()[:MAX_BYTES]
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def is_vault_encrypted(text: str) -> bool:
    return text.startswith("$ANSIBLE_VAULT;")


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    texts = {name: read_text(name) for name in repository_files()}
    return {name: text for name, text in texts.items() if text is not None}


def test_the_scan_sees_the_repository(files: dict[str, str]) -> None:
    # Guards against a scan that passes because it read nothing.
    for expected in ("site.yml", VAULT_EXAMPLE, "tests/security/test_secrets.py"):
        assert expected in files, f"{expected} is not among the scanned files"
    print(f"\nscanned {len(files)} files")


def test_no_plaintext_secrets(files: dict[str, str]) -> None:
    findings = [
        finding
        for name, text in files.items()
        if not is_vault_encrypted(text)
        for finding in scan_text(name, text)
    ]
    report = "\n".join(str(f) for f in findings)
    assert not findings, (
        f"{len(findings)} plaintext secret(s) in the repository; move them to the vault "
        f"(group_vars/vault.example.yml names every secret), or mark a deliberate fake value "
        f"on its line with `{ALLOW_MARKER}`:\n{report}"
    )


def test_vault_files_are_encrypted(files: dict[str, str]) -> None:
    vault_like = [
        name for name in files if re.search(r"(^|/)vault[^/]*\.ya?ml$", name) and name != VAULT_EXAMPLE
    ]
    plain = [name for name in vault_like if not is_vault_encrypted(files[name])]
    assert not plain, f"vault file(s) committed unencrypted (ansible-vault encrypt them): {plain}"


def test_secret_material_is_not_tracked(files: dict[str, str]) -> None:
    suspicious = re.compile(
        r"(^|/)(\.secrets/|[^/]*vault[-_]pass[^/]*$|id_(rsa|ed25519|ecdsa)$|[^/]*\.(pem|key|p12|pfx)$)"
    )
    tracked = [name for name in files if suspicious.search(name)]
    assert not tracked, f"key or vault-password file(s) in the repository: {tracked}"


def test_vault_example_names_every_vault_variable(files: dict[str, str]) -> None:
    example = files[VAULT_EXAMPLE]
    declared = set(re.findall(r"^(vault_[a-z0-9_]+):", example, re.MULTILINE))
    used: dict[str, str] = {}
    for name, text in files.items():
        if name == VAULT_EXAMPLE or not re.search(r"\.(ya?ml|j2)$", name) or is_vault_encrypted(text):
            continue
        for variable in re.findall(r"(?<![A-Za-z0-9_./-])(vault_[a-z0-9_]+)", text):
            used.setdefault(variable, name)
    missing = {variable: where for variable, where in used.items() if variable not in declared}
    assert not missing, f"vault variables used but not named in {VAULT_EXAMPLE}: {missing}"


# --- The scanner's own rules: each sample must (or must not) be found. ----------------------
# Samples are assembled from pieces so that this file itself contains no secret-shaped text.
_K = "KEY"
_FILLER = "Zq7" * 12


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("a.pem", f"-----BEGIN RSA PRIVATE {_K}-----"),
        ("a.txt", f"-----BEGIN OPENSSH PRIVATE {_K}-----"),
        ("a.yml", "aws_access_key_id: " + "AKIA" + "ABCDEFGHIJKLMNOP"),
        ("a.cfg", "aws_secret_access_key = " + "abcd" * 10),
        ("a.yml", "url: https://hooks.slack.com/services/" + "T000/B000/" + "x" * 24),
        ("a.yml", "url: https://discord.com/api/webhooks/" + "123456789/" + _FILLER),
        ("a.sh", "TOKEN=xox" + "b-" + "1234567890-abcdef"),
        ("a.py", "TOKEN = '" + "ghp_" + "a" * 36 + "'"),
        ("a.yml", "db_url: postgresql://gept:" + "s3cretpw" + "@127.0.0.1/gept"),
        ("a.yml", "vault_db_collector_password: " + "hunter2hunter2"),
        ("a.yml", "    login_password: " + "postgres"),
        ("a.ini", "admin_password = " + "admin"),
        ("a.yml", "password: " + "contest-winner"),
        ("a.yml", "webhook_url: https://alerts.gept-ops.net/hook/" + "abc123"),
        ("a.ini", "admin_password = " + "Tr0ub4dor"),
        ("a.env", "PGPASSWORD=" + "abc123xyz"),
        ("a.json", '  "api_key": "' + "q1w2e3r4t5" + '",'),
        ("a.py", 'connect(password="' + "pl41ntext" + '")'),
        (VAULT_EXAMPLE, "vault_grafana_admin_password: " + "notaplaceholder"),
    ],
)
def test_scanner_finds(path: str, line: str) -> None:
    assert scan_text(path, line), f"not detected: {line!r}"


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("a.yml", 'collector_password: "{{ vault_db_collector_password }}"'),
        ("a.yml", "vault_password_file: .secrets/demo-vault-pass"),
        ("a.yml", "password: !vault |"),
        ("a.yml", "token: >-"),
        ("a.j2", "password = {{ gept_db_password }}"),
        ("a.sh", 'PGPASSWORD="$DB_PASSWORD" psql'),
        ("a.py", 'password = os.environ["GEPT_DB_PASSWORD"]'),
        ("a.py", "def connect(password: str) -> None:"),
        ("a.py", 'env = f"PGPASSWORD={password}"'),
        ("a.md", "The password: the one in the vault, never in git."),
        ("a.yml", 'vault_alertmanager_slack_webhook_url: ""'),
        (VAULT_EXAMPLE, "vault_db_readonly_password: CHANGE_ME"),
        ("a.yml", "no_log: true"),
        ("a.py", "x = 'p@ss'  # " + ALLOW_MARKER + " (throwaway test server)"),
        ("a.yml", "url: https://discord.com/api/webhooks/{{ id }}/{{ token }}"),
        ("a.yml", "dsn: postgresql://{{ user }}:{{ password }}@127.0.0.1/gept"),
        ("a.yml", 'alertmanager_webhook_url: "http://127.0.0.1:9099/alerts"'),
        ("a.yml", "alertmanager_watchdog_url: https://hc-ping.example.invalid/uuid"),
        ("a.yml", "webhook_url: https://example.com/hook"),
        ("a.yml", 'alertmanager_smtp_password: "not-a-real-password"'),
        ("a.py", 'PASSWORD = "x9"  # noqa: S105  (throwaway cluster)'),
        ("a.yml", "grafana_admin_password: test-admin-password"),
        ("a.py", 'config.load({"GEPT_DB_PASSWORD": "x"})'),
    ],
)
def test_scanner_accepts(path: str, line: str) -> None:
    assert not scan_text(path, line), f"wrongly flagged: {line!r}"
