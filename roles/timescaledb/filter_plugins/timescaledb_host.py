"""Readers of what a database host already has: its PostgreSQL clusters (`pg_lsclusters`) and
its apt source entries (one-line `.list` files, deb822 `.sources` files).

Pure Python with no Ansible imports at module level, so the role (through the filters below)
and the unit tests (tests/timescaledb/test_host_facts.py) run the very same code.

- ``timescaledb_lsclusters``: the plain output of ``pg_lsclusters`` (every postgresql-common
  version has it; ``--json`` is newer than Ubuntu 22.04's) -> a list of clusters.
- ``timescaledb_apt_entries``: {path: text} of the host's source files -> a list of entries.
- ``timescaledb_apt_entries_for``: the entries whose URI is a given repository's.
- ``timescaledb_dpkg_installed``: ``dpkg-query --show`` lines of status, package and version
  -> the installed packages as {name, version}.
"""

from __future__ import annotations

import re
from typing import Any

# postgresql-common prints "Ver Cluster Port Status Owner Data directory Log file"; the
# status is "online", "down" or either with ",recovery"/",binaries_missing" appended.
_HEADER = re.compile(r"^\s*Ver\s+Cluster\s+Port\s+Status", re.IGNORECASE)
# Colour codes pg_lsclusters adds on a terminal (never through Ansible, but harmless).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ParseError(ValueError):
    """A line the reader does not understand: the play stops naming it rather than guess."""


def lsclusters(text: str) -> list[dict[str, Any]]:
    """Parse `pg_lsclusters` output into dicts: version (str, "15" or "9.6"), major (int when
    the version is one number), cluster, port (int), status, online (bool), owner, data_dir,
    log_file (None when pg_lsclusters shows none)."""
    clusters = []
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).strip()
        if not line or _HEADER.match(line):
            continue
        fields = line.split()
        if len(fields) < 6 or not fields[2].isdigit() or not re.fullmatch(r"[0-9]+(\.[0-9]+)?", fields[0]):
            raise ParseError(f"unexpected pg_lsclusters line: {raw!r}")
        version, cluster, port, status, owner, data_dir = fields[:6]
        log_file = fields[6] if len(fields) > 6 else None
        clusters.append(
            {
                "version": version,
                "major": int(version) if version.isdigit() else None,
                "cluster": cluster,
                "port": int(port),
                "status": status,
                "online": status.split(",")[0] == "online",
                "owner": owner,
                "data_dir": data_dir,
                "log_file": None if log_file in (None, "<unknown>", "syslog") else log_file,
            }
        )
    return clusters


def _norm_uri(uri: str) -> str:
    return uri.strip().rstrip("/").lower()


def _list_line(path: str, number: int, line: str) -> dict[str, Any] | None:
    """One `deb [opts] uri suite [components]` line, or None for a comment/blank line."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    kind, _, rest = text.partition(" ")
    if kind not in ("deb", "deb-src"):
        raise ParseError(f"{path}:{number}: unexpected source line: {line.strip()!r}")
    rest = rest.strip()
    options: dict[str, str] = {}
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ParseError(f"{path}:{number}: unclosed option bracket: {line.strip()!r}")
        for option in rest[1:end].split():
            name, _, value = option.partition("=")
            options[name.lower()] = value
        rest = rest[end + 1 :].strip()
    words = rest.split()
    if len(words) < 2:
        raise ParseError(f"{path}:{number}: a source line needs a URI and a suite: {line.strip()!r}")
    return {
        "path": path,
        "format": "list",
        "line": number,
        "types": [kind],
        "uris": [words[0]],
        "suites": [words[1]],
        "components": words[2:],
        "signed_by": options.get("signed-by"),
        "enabled": True,
    }


def _deb822(path: str, text: str) -> list[dict[str, Any]]:
    entries = []
    stanza: dict[str, str] = {}
    key = None
    first_line = 0

    def flush() -> None:
        if not stanza:
            return
        fields = {k.lower(): v for k, v in stanza.items()}
        if "uris" not in fields:
            raise ParseError(f"{path}:{first_line}: a deb822 stanza without URIs")
        entries.append(
            {
                "path": path,
                "format": "deb822",
                "line": first_line,
                "types": fields.get("types", "deb").split(),
                "uris": fields["uris"].split(),
                "suites": fields.get("suites", "").split(),
                "components": fields.get("components", "").split(),
                # Signed-By may be a path or an inline key block; either way it is set.
                "signed_by": fields.get("signed-by", "").strip() or None,
                "enabled": fields.get("enabled", "yes").strip().lower() not in ("no", "false", "0"),
            }
        )

    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            continue
        if not line.strip():
            flush()
            stanza, key = {}, None
            continue
        if line[0] in " \t":
            if key is None:
                raise ParseError(f"{path}:{number}: continuation line outside a field")
            stanza[key] += "\n" + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ParseError(f"{path}:{number}: not a deb822 field: {line.strip()!r}")
        if not stanza:
            first_line = number
        key = name.strip()
        stanza[key] = value.strip()
    flush()
    return entries


def apt_entries(files: dict[str, str]) -> list[dict[str, Any]]:
    """Every source entry in {path: text}: `*.sources` files are deb822, everything else
    one-line style. Disabled deb822 stanzas are returned with enabled false."""
    entries: list[dict[str, Any]] = []
    for path in sorted(files):
        text = files[path]
        if path.endswith(".sources"):
            entries.extend(_deb822(path, text))
        else:
            for number, line in enumerate(text.splitlines(), 1):
                entry = _list_line(path, number, line)
                if entry:
                    entries.append(entry)
    return entries


def apt_entries_for(
    entries: list[dict[str, Any]], uri: str, exclude_path: str | None = None
) -> list[dict[str, Any]]:
    """The enabled `deb` entries for `uri` (trailing slash and case ignored), leaving out the
    file at `exclude_path` (the role's own)."""
    want = _norm_uri(uri)
    return [
        e
        for e in entries
        if e["enabled"]
        and "deb" in e["types"]
        and e["path"] != exclude_path
        and any(_norm_uri(u) == want for u in e["uris"])
    ]


def _name(c: dict[str, Any]) -> str:
    return f"{c['version']}/{c['cluster']} (port {c['port']}, {c['status']}, {c['data_dir']})"


def cluster_decision(
    clusters: list[dict[str, Any]], port: int, version: Any, cluster: str, adopt: bool
) -> dict[str, Any]:
    """Which cluster the role manages, from the host's clusters and the configured port,
    major version and cluster name.

    Returns {"action": "fresh" | "use" | "refuse", "cluster": the cluster used (None when
    fresh/refused), "adopted_other": true when the cluster used is not the configured
    version/name, "others": the clusters left alone, "reason": why a refusal}. Never
    chooses to create a cluster beside an existing one:

    - no cluster at all: "fresh" (the package's postinst creates version/main on the port);
    - a cluster on the port (the online one when there are several): "use" it; when its
      version/name differ from the configured ones, only with adopt (else "refuse");
    - no cluster on the port but the configured version/name exists (stopped): "use" it;
    - otherwise "refuse": installing would put a second cluster beside the existing ones;
    - "refuse" as well when another cluster is online, or shares the port, beside the one used
      (at boot both would start, and the second is what Ubuntu's postinst creates).
    """
    port = int(port)
    version = str(version)
    on_port = [c for c in clusters if c["port"] == port]
    online_on_port = [c for c in on_port if c["online"]]
    configured = [c for c in clusters if c["version"] == version and c["cluster"] == cluster]
    target = None
    if online_on_port:
        target = online_on_port[0]
    elif len(on_port) == 1:
        target = on_port[0]
    elif on_port:
        target = next((c for c in on_port if c in configured), None)
        if target is None:
            return {
                "action": "refuse",
                "cluster": None,
                "adopted_other": False,
                "others": clusters,
                "reason": "several stopped clusters are set to port {}: {}".format(
                    port, ", ".join(_name(c) for c in on_port)
                ),
            }
    elif configured:
        target = configured[0]
    elif clusters:
        return {
            "action": "refuse",
            "cluster": None,
            "adopted_other": False,
            "others": clusters,
            "reason": f"PostgreSQL clusters exist but none on port {port} (gept_db_port): "
            + ", ".join(_name(c) for c in clusters)
            + f". Installing {version}/{cluster} would put a second cluster beside them; set "
            "gept_db_port to the port of the cluster to adopt",
        }
    else:
        return {"action": "fresh", "cluster": None, "adopted_other": False, "others": [], "reason": ""}

    others = [c for c in clusters if c is not target]
    clashing = [c for c in others if c["online"] or c["port"] == target["port"]]
    if clashing:
        return {
            "action": "refuse",
            "cluster": target,
            "adopted_other": False,
            "others": others,
            "reason": "{} is running or set to the same port beside {}: a second cluster (as the "
            "postgresql-NN package's postinst creates on some releases). Move its data into the "
            "cluster in use, or if it holds nothing, remove it (pg_dropcluster --stop {} {}), then "
            "re-run".format(
                ", ".join(_name(c) for c in clashing),
                _name(target),
                clashing[0]["version"],
                clashing[0]["cluster"],
            ),
        }
    differs = target["version"] != version or target["cluster"] != cluster
    if differs and not adopt:
        return {
            "action": "refuse",
            "cluster": target,
            "adopted_other": True,
            "others": others,
            "reason": f"the cluster on port {port} is {_name(target)}, but "
            f"gept_postgresql_version/gept_postgresql_cluster say {version}/{cluster} and "
            "timescaledb_adopt_running_cluster is false. Set timescaledb_adopt_running_cluster: "
            f"true to manage the running cluster, or upgrade it to {version} first (site.yml "
            "never does)",
        }
    return {"action": "use", "cluster": target, "adopted_other": differs, "others": others, "reason": ""}


def dpkg_installed(lines: list[str]) -> list[dict[str, str]]:
    """The packages dpkg lists as installed, from lines "<status> <package> <version>"
    (`${db:Status-Status} ${Package} ${Version}`: none of the three has a space). A
    half-installed or config-files-only package is not installed, so an install of it still
    runs."""
    installed = []
    for line in lines:
        if not line.strip():
            continue
        fields = line.split()
        # A package dpkg only remembers (purged: "not-installed", no version) has fewer fields.
        if fields[0] != "installed":
            continue
        if len(fields) != 3:
            raise ParseError(f"unexpected dpkg-query line: {line!r}")
        installed.append({"name": fields[1], "version": fields[2]})
    return installed


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "timescaledb_lsclusters": lsclusters,
            "timescaledb_apt_entries": apt_entries,
            "timescaledb_apt_entries_for": apt_entries_for,
            "timescaledb_cluster_decision": cluster_decision,
            "timescaledb_dpkg_installed": dpkg_installed,
        }
