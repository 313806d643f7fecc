"""The common role's preflight fails early, with a message naming the problem, on an
unsupported OS or architecture and on a missing or placeholder secret; a wrong vault
password stops a run before it touches a host.

These run the real role with ansible-playbook against the controller itself (connection
local, check mode: the preflight tasks only assert)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRETS = [
    "vault_db_collector_password",
    "vault_db_readonly_password",
    "vault_db_exporter_password",
]


def run_preflight(tmp_path: Path, extra_vars: dict) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(
        "- name: Preflight only\n"
        "  hosts: localhost\n"
        "  connection: local\n"
        "  gather_facts: true\n"
        "  tasks:\n"
        "    - name: Run the common role's preflight\n"
        "      ansible.builtin.include_role:\n"
        "        name: common\n"
        "        tasks_from: preflight\n"
    )
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(extra_vars))
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", f"@{vars_file}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "PATH": f"{BIN}:/usr/bin:/bin",
            "HOME": str(tmp_path),
        },
        check=False,
    )


def good_secrets() -> dict:
    return {name: f"s3cr3t-{i}-for-test" for i, name in enumerate(SECRETS)} | {
        "common_required_secrets": SECRETS
    }


def _facts(tmp_path: Path) -> dict:
    out = subprocess.run(
        [
            str(BIN / "ansible"),
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-m",
            "ansible.builtin.setup",
            "-a",
            "filter=ansible_distribution*,ansible_architecture,ansible_service_mgr",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "0"},
    ).stdout
    return json.loads(out[out.index("{") :])["ansible_facts"]


def test_unsupported_os_fails_naming_it(tmp_path: Path) -> None:
    facts = _facts(tmp_path)
    distro = facts["ansible_distribution"]
    # Support list that excludes this controller's distribution.
    result = run_preflight(tmp_path, good_secrets() | {"common_supported_platforms": {"Plan9": ["4"]}})
    assert result.returncode != 0
    assert f"Unsupported operating system {distro}" in result.stdout
    assert "Plan9 4" in result.stdout


def test_unsupported_version_fails(tmp_path: Path) -> None:
    facts = _facts(tmp_path)
    distro = facts["ansible_distribution"]
    result = run_preflight(tmp_path, good_secrets() | {"common_supported_platforms": {distro: ["1"]}})
    assert result.returncode != 0
    assert f"Unsupported operating system {distro} {facts['ansible_distribution_version']}" in result.stdout


def test_unsupported_architecture_fails_naming_it(tmp_path: Path) -> None:
    arch = _facts(tmp_path)["ansible_architecture"]
    result = run_preflight(tmp_path, good_secrets() | {"common_supported_architectures": ["riscv64"]})
    assert result.returncode != 0
    assert f"Unsupported architecture {arch}" in result.stdout


@pytest.mark.parametrize("value", [None, "", "CHANGE_ME"])
def test_missing_or_placeholder_secret_fails_naming_it(tmp_path: Path, value: str | None) -> None:
    variables = good_secrets()
    if value is None:
        del variables["vault_db_readonly_password"]
    else:
        variables["vault_db_readonly_password"] = value
    result = run_preflight(tmp_path, variables)
    assert result.returncode != 0
    assert "Missing or placeholder secret(s): vault_db_readonly_password." in result.stdout
    # The values of the secrets that are set are never printed.
    assert "s3cr3t-" not in result.stdout


def test_all_secrets_set_passes_secret_check(tmp_path: Path) -> None:
    result = run_preflight(tmp_path, good_secrets())
    assert "Missing or placeholder secret" not in result.stdout
    assert "s3cr3t-" not in result.stdout


def test_wrong_vault_password_stops_before_any_host(tmp_path: Path) -> None:
    vault = ROOT / "inventories" / "demo" / "group_vars" / "all" / "vault.yml"
    if not vault.is_file():
        pytest.fail("demo vault missing: run scripts/demo-vault.sh (make setup does)")
    wrong = tmp_path / "wrong-pass"
    wrong.write_text("not-the-password\n")
    result = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "inventories/demo",
            "site.yml",
            "--vault-password-file",
            str(wrong),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "PATH": f"{BIN}:/usr/bin:/bin",
            "HOME": str(tmp_path),
        },
    )
    assert result.returncode != 0
    assert "Decryption failed" in (result.stdout + result.stderr)
    assert "TASK [" not in result.stdout
