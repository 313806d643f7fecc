"""The public URL (Prometheus/Alertmanager external URL, Grafana root_url, nginx server name)
names a host people can reach: the address Ansible connects to or the operator's DNS name,
never the production inventory's alias `gept-ampere`, which resolves nowhere."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = str(Path(sys.executable).parent / "ansible")


def public_url(gept_host: str, *extra_args: str) -> str:
    """gept_public_url as the production inventory resolves it for GEPT_HOST."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "GEPT_HOST": gept_host}
    out = subprocess.run(
        [ANSIBLE, "gept-ampere", "-o", "-m", "debug", "-a", "var=gept_public_url", *extra_args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    line = next(line for line in out.stdout.splitlines() if line.startswith("gept-ampere | SUCCESS => "))
    return json.loads(line.split("=> ", 1)[1])["gept_public_url"]


def test_public_url_is_the_connection_address() -> None:
    assert public_url("203.0.113.10") == "https://203.0.113.10"


def test_public_url_takes_the_operators_dns_name() -> None:
    url = public_url("203.0.113.10", "-e", "gept_public_host=gept.example.org")
    assert url == "https://gept.example.org"
