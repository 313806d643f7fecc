"""The firewall on a host that is already live (scenario `security`, whose prepare.yml builds the
before-state for real): Oracle Cloud's iptables rules loaded by netfilter-persistent, a compose
bridge (br-<id>) with a client namespace reaching a listener on PostgreSQL's port at the host's
bridge address, and an "outside" link (gept-wan0) with its own namespace.

Connections are made from the namespaces with /usr/local/bin/security-test-connect, which says
how an attempt ended: open, refused, unreachable (iptables' REJECT icmp-host-prohibited) or
timeout (a DROP). The rollback (firewall switched off) is proved by side_effect.yml.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from conftest import wait_for

STATE = "/srv/security-test"
RULES_FILE = "/etc/iptables/rules.v4"
COMMENT = "gept-security: "
BRIDGE_HOST, WAN_HOST = "172.31.250.1", "172.31.251.1"
BLOCKED = {"unreachable", "timeout"}


def connect(host, netns: str, address: str, port: int) -> str:
    return host.check_output(f"ip netns exec {netns} security-test-connect {address} {port}")


@pytest.fixture(scope="module")
def before(host) -> dict[str, str]:
    if not host.file(f"{STATE}/iptables-before.txt").exists:
        pytest.fail(f"{STATE} holds no before-state: prepare.yml did not run")
    return {
        "sha256": host.file(f"{STATE}/rules.v4.sha256").content_string.strip(),
        "iptables": host.file(f"{STATE}/iptables-before.txt").content_string,
    }


def test_https_answers_from_outside(host):
    """Both hooks accept it: nftables' published ports and the project's rule before Oracle's REJECT."""
    assert connect(host, "gept-wan", WAN_HOST, 443) == "open"
    out = host.run(
        f"ip netns exec gept-wan curl -sk -o /dev/null -w '%{{http_code}}' --max-time 5 https://{WAN_HOST}/"
    )
    assert out.stdout == "401", f"nginx did not answer over the outside link: {out.stdout} {out.stderr}"


def test_unpublished_ports_stay_closed_from_outside(host):
    # The database port at the bridge address is local to the host, so the outside link reaches
    # it without forwarding: it must be refused there while the compose client gets through.
    assert connect(host, "gept-wan", BRIDGE_HOST, 5432) in BLOCKED


def test_compose_client_still_reaches_the_database_port(host):
    assert connect(host, "gept-compose", BRIDGE_HOST, 5432) == "open"


def test_nftables_admits_the_container_bridges(host):
    table = host.check_output("nft list table inet gept_filter")
    print(f"\n{table}")
    chains = dict(re.findall(r"chain (\w+) \{(.*?)\n\t\}", table, re.S))
    assert 'iifname "br-*" accept' in chains["input"]
    assert 'iifname "br-*" accept' in chains["forward"] and 'oifname "br-*" accept' in chains["forward"]
    assert "policy drop;" in chains["input"], "inbound default must stay drop"


def test_live_iptables_keeps_every_rule_of_the_host_in_order(host, before):
    now = host.check_output("iptables -S").splitlines()
    ours = [rule for rule in now if COMMENT in rule]
    theirs = [rule for rule in now if COMMENT not in rule]
    print("\n" + "\n".join(ours))
    assert theirs == before["iptables"].splitlines(), "a rule the host had was changed, moved or removed"
    assert sorted(re.findall(r"--dport (\d+)", " ".join(ours))) == ["443", "80"]
    inputs = [rule for rule in now if rule.startswith("-A INPUT ")]
    reject = inputs.index("-A INPUT -j REJECT --reject-with icmp-host-prohibited")
    assert all(inputs.index(rule) < reject for rule in ours), "an accept rule sits after the REJECT"
    # SSH keeps the host's own rule (the project adds none for it).
    assert "-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT" in inputs[:reject]
    assert not any("--dport 22 " in rule for rule in ours)


def test_rules_file_holds_the_marked_block_and_nothing_else_changed(host, before):
    text = host.file(RULES_FILE).content_string
    lines = text.splitlines(keepends=True)
    begin = next(i for i, line in enumerate(lines) if line.startswith("# BEGIN gept-security"))
    end = next(i for i, line in enumerate(lines) if line.startswith("# END gept-security"))
    block = lines[begin + 1 : end]
    assert block and all(COMMENT in line for line in block), block
    assert lines[end + 1].startswith("-A INPUT -j REJECT"), "the block is not right before the REJECT"
    without = "".join(lines[:begin] + lines[end + 1 :])
    assert hashlib.sha256(without.encode()).hexdigest() == before["sha256"], (
        "outside the marked block the file differs from the host's"
    )
    assert host.run(f"iptables-restore --test {RULES_FILE}").rc == 0


def test_rules_file_alone_opens_https_after_a_reboot(host):
    """netfilter-persistent reloads the file as at boot: the project's rules come from the file
    alone, and HTTPS still answers from outside (this host has no container runtime whose chains a
    reload would flush)."""
    assert host.run("systemctl restart netfilter-persistent").rc == 0
    assert (
        wait_for(
            host, f"ip netns exec gept-wan security-test-connect {WAN_HOST} 443 | grep -qx open", 10, 0.5
        ).rc
        == 0
    )
    assert connect(host, "gept-compose", BRIDGE_HOST, 5432) == "open"
