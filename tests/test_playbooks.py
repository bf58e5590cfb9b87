"""The roles and playbooks/site.yml, run for real with ``ansible-playbook``.

* localhost (connection local, an SQLite datastore in tmp_path): the policy role converges,
  runs again with ``changed=0``, and ``--check --diff`` of a policy change shows the change
  and writes nothing;
* two network namespaces as hosts (``ansible_connection: local`` with a wrapper interpreter
  that runs every module inside its namespace): the real site.yml (node, policy, docker and
  dataplane plays, without systemd, packages or the venv install) converges, runs again with
  ``changed=0``; a profile change, ``--check --diff`` before anything is written: the
  profile task's diff previews each host's rule lines (from the datastore) and leaves every
  namespace's iptables and the datastore as they were; once the profile is written, the
  dataplane module's check mode still sees the drift; the real run then changes exactly the
  previewed rules in the kernel, and the next run changes nothing; the daemons' units carry
  each argument as one systemd word (spaces, quotes, %, $, control characters), which
  ``systemd-analyze verify`` accepts;
* site.yml over TLS with a real etcd in a namespace and etcd authentication (the default):
  each host's etcd user writes its own records and is refused another host's and any
  policy, the operator's writes them; a second run and ``--check --diff`` change nothing and
  no run prints a password; ``calico_pki_reissue`` makes a host's password anew, a host added while
  authentication is on gets its user first, a host removed loses it; ``calico_etcd_auth: false``
  leaves etcd's users alone;
* the node role's calico_lib install from a controller-built wheelhouse into a virtualenv
  (needs the package index on the controller, as in production), idempotent, and
  reinstalled exactly when the source changed;
* ``ansible-playbook --syntax-check`` of site.yml with the example inventory, and
  ``ansible-lint`` (production profile) of the roles, playbooks and inventory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import calico_lib
from calico_lib import Endpoint
from calico_lib.dataplane.iptables import parse_save, rule_hash
from calico_lib.preview import chain_changes
from tests import processes
from tests.netns import Lab
from tests.pki import Pki
from tests.playbooks.harness import (
    HERE,
    REPO,
    SITE,
    ansible_command,
    ansible_env,
    netns_host_vars,
    playbook,
    write_inventory,
)

POLICY = ("-e", f"@{HERE / 'policy.yml'}")
POLICY_CHANGED = (*POLICY, "-e", f"@{HERE / 'policy_changed.yml'}")
PASSWORD = "s3cret-bgp"  # a BGP password in policy.yml: never printed

pytestmark = pytest.mark.ansible


def sqlite_url(tmp_path: Path) -> str:
    return "sqlite:///" + str((tmp_path / "calico.db").resolve())


def intent(url: str) -> dict[str, object]:
    """What the policy role manages, as stored."""
    with calico_lib.connect(url) as client:
        return {
            "pools": sorted(p.cidr for p in client.list_pools()),
            "profiles": {p.name: p.to_dict() for p in client.list_profiles()},
            "peers": sorted((p.address, p.as_number, p.node) for p in client.list_bgp_peers()),
        }


def systemd_words(line: str) -> list[str]:
    """The words systemd makes of an ExecStart= value, for what the roles write: words in
    double quotes (or bare), C escapes (\\\\, \\", \\xNN, \\n, ...) inside, then "%%" -> "%"
    (specifiers) and "$$" -> "$" (variables). A bare "%" or "$" would be expanded by
    systemd: refused here."""
    escapes = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
               "v": "\v", "\\": "\\", '"': '"', "'": "'", "s": " "}
    words, i = [], 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        word, quoted = [], line[i] == '"'
        i += quoted
        while i < len(line) and (quoted or line[i] != " "):
            c = line[i]
            if quoted and c == '"':
                i += 1
                break
            if c == "\\":
                nxt = line[i + 1]
                if nxt == "x":
                    word.append(chr(int(line[i + 2:i + 4], 16)))
                    i += 4
                    continue
                word.append(escapes[nxt])
                i += 2
                continue
            word.append(c)
            i += 1
        else:
            assert not quoted, f"unterminated quote in {line!r}"
        text = "".join(word)
        bare = re.sub(r"%%|\$\$", "", text)
        assert "%" not in bare and "$" not in bare, f"systemd would expand {text!r}"
        words.append(re.sub(r"%%|\$\$", lambda m: m.group()[0], text))
    return words


def unit_exec(path: Path) -> list[str]:
    """The argv of a unit file's (only) ExecStart= line, as systemd reads it."""
    # systemd ends a line at \n only (not at \u2028 as str.splitlines does)
    lines = [line for line in path.read_text().split("\n") if line.startswith("ExecStart=")]
    assert len(lines) == 1, lines
    return systemd_words(lines[0][len("ExecStart="):])


#: every kind of character an argument can hold: spaces, quotes, a backslash, systemd's
#: specifier and variable signs, a lone semicolon, control characters, non-ASCII
HOSTILE = ["a value with spaces", 'say "hi"', "it's", "back\\slash\\", "100% %n %%",
           "$HOME ${HOME} $$", ";", "\\;", "line\nbreak\ttab\x01\x7f", "é \u2028", "", " lead"]


# ------------------------------------------------------------------ static checks


def test_site_syntax_check(tmp_path: Path) -> None:
    proc = subprocess.run(
        [ansible_command("ansible-playbook"), "--syntax-check", str(SITE),
         "-i", str(REPO / "inventory" / "example")],
        cwd=REPO, env=ansible_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_example_inventory_documents_every_role_variable(tmp_path: Path) -> None:
    """Every variable of every role's argument_specs appears in inventory/example."""
    import yaml

    text = "".join(p.read_text() for p in (REPO / "inventory" / "example").rglob("*.yml"))
    missing = []
    for spec in sorted((REPO / "roles").glob("*/meta/argument_specs.yml")):
        for entry in yaml.safe_load(spec.read_text())["argument_specs"].values():
            missing += [f"{spec.parts[-3]}: {name}" for name in entry["options"]
                        if name not in text]
    assert not missing, f"not documented in inventory/example: {missing}"


#: other roles' variables a role's defaults may read: those of other inventory hosts, in
#: hostvars (the etcd members' addresses in the node role's datastore URL, the Calico hosts'
#: BGP addresses and AS in the tor role's neighbours), and the shared switch calico_etcd_auth
#: (in the node and policy roles' own argument_specs)
OTHER_HOSTS_VARIABLES = {
    "node": ("calico_etcd_address", "calico_etcd_client_port"),
    "policy": ("calico_etcd_auth",),
    "tor": ("calico_node_as_number", "calico_node_bgp_ipv4", "calico_node_bgp_ipv6"),
}


def test_role_variables_carry_the_calico_role_prefix() -> None:
    """Every role variable is calico_<role>_*: a role's defaults and vars its own role's
    (ansible-lint's var-naming[no-role-prefix] would want the bare role name, see
    .ansible-lint), its argument_specs options any calico.docker role's (the node and policy
    roles read calico_etcd_auth). No role's defaults read another role's variables:
    playbooks/site.yml passes those."""
    import yaml

    roles = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())
    wrong, borrowed = [], []
    for role in roles:
        own = f"calico_{role}_"
        for path in [REPO / "roles" / role / "defaults" / "main.yml",
                     *sorted((REPO / "roles" / role / "vars").glob("*.yml"))]:
            if not path.exists():
                continue
            values = yaml.safe_load(path.read_text()) or {}
            wrong += [f"{role}: {name}" for name in values if not name.startswith(own)]
            if path.parent.name == "defaults":
                # what the defaults read (comments may name other roles' variables)
                code = re.sub(r"(?m)^\s*#.*$", "", path.read_text())
                borrowed += [f"{role}: {name}" for name in
                             re.findall(r"\bcalico_(?:" + "|".join(roles) + r")_\w+", code)
                             if not name.startswith(own)
                             and name not in OTHER_HOSTS_VARIABLES.get(role, ())]
        spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml")
                              .read_text())
        for entry in spec["argument_specs"].values():
            wrong += [f"{role}: {name}" for name in entry.get("options", {})
                      if not name.startswith(tuple(f"calico_{r}_" for r in roles))]
    assert not wrong, f"role variables without their calico_<role>_ prefix: {wrong}"
    assert not borrowed, f"role defaults that read other roles' variables: {borrowed}"


def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    try:
        lint = ansible_command("ansible-lint")
    except FileNotFoundError:
        pytest.skip("ansible-lint is not installed beside this Python")
    env = ansible_env(tmp_path)
    env["HOME"] = str(tmp_path)  # its caches
    proc = subprocess.run([lint, "--profile", "production", "roles", "playbooks", "inventory"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


# ------------------------------------------------------------------ the units' ExecStart


def test_exec_start_quotes_every_argument_for_systemd(tmp_path: Path) -> None:
    """The roles write each daemon argument as one systemd word, whatever it holds: the
    line parses back to exactly the argv (the rules of systemd.service(5)), and systemd's
    own parser (systemd-analyze verify, where installed) takes the unit without a word."""
    argv = ["/bin/echo", *HOSTILE]
    (tmp_path / "vars.json").write_text(json.dumps({
        "systemd_exec_argv": argv, "systemd_exec_unit": str(tmp_path / "quote.service")}))
    inventory = write_inventory(tmp_path / "inventory.yml", {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}})
    playbook(HERE / "systemd_exec.yml", inventory, "-e", f"@{tmp_path / 'vars.json'}",
             workdir=tmp_path).check()
    unit = tmp_path / "quote.service"
    line = next(x for x in unit.read_text().split("\n") if x.startswith("ExecStart="))
    assert line.startswith('ExecStart="/bin/echo" "a value with spaces" "say \\"hi\\"" '
                           '"it\'s" "back\\\\slash\\\\" "100%% %%n %%%%" '
                           '"$$HOME $${HOME} $$$$" ";" "\\\\;" '
                           '"line\\x0abreak\\x09tab\\x01\\x7f"'), line
    assert unit_exec(unit) == argv
    analyze = shutil.which("systemd-analyze")
    if analyze:
        proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0 and not proc.stderr.strip(), proc


# ------------------------------------------------------------------ localhost: the policy role


def localhost_policy_inventory(tmp_path: Path, url: str) -> Path:
    """An inventory of localhost running the policy role on the datastore ``url``."""
    return write_inventory(tmp_path / "inventory.yml", {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "calico_policy_python": sys.executable,
        "calico_policy_datastore": url,
    }})


def test_policy_role_on_localhost(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    inventory = localhost_policy_inventory(tmp_path, url)
    play = HERE / "policy_play.yml"

    first = playbook(play, inventory, *POLICY, workdir=tmp_path).check()
    assert first.recap["localhost"]["changed"] > 0, first.output
    stored = intent(url)
    assert stored["pools"] == ["10.65.0.0/16", "fd00:65::/64"]
    assert stored["peers"] == [("198.18.0.253", 65001, None), ("198.18.0.254", 65000, None)]
    backend = stored["profiles"]["backend"]
    assert backend["inbound_rules"][1] == {
        "action": "allow", "protocol": "tcp", "src_tag": "frontend", "dst_ports": [80]}
    with calico_lib.connect(url) as client:
        assert client.get_bgp_config().as_number == 64512

    again = playbook(play, inventory, *POLICY, workdir=tmp_path).check()
    assert again.recap["localhost"]["changed"] == 0, again.output

    # a policy change (a new port in a rule), previewed: the diff shows it, nothing changes
    preview = playbook(play, inventory, *POLICY_CHANGED, "--check", "--diff",
                       workdir=tmp_path).check()
    assert preview.recap["localhost"]["changed"] == 1, preview.output
    assert "+                8080" in preview.output, preview.output
    assert "changed: [localhost] => (item=backend)" in preview.output
    assert intent(url) == stored

    # edits of every kind reach their modules (the role skips only what is as stored)
    edits = ("-e", f"@{HERE / 'policy_edits.yml'}")
    edited = playbook(play, inventory, *POLICY, *edits, workdir=tmp_path).check()
    assert edited.recap["localhost"]["changed"] > 0, edited.output
    stored = intent(url)
    assert stored["pools"] == ["10.65.0.0/16", "10.66.0.0/16"]
    assert stored["peers"] == [("198.18.0.254", 65010, None)]
    assert sorted(stored["profiles"]) == ["frontend"]
    assert stored["profiles"]["frontend"]["labels"] == {"tier": "web"}
    with calico_lib.connect(url) as client:
        assert client.get_bgp_config().as_number == 64513
        pools = {p.cidr: p for p in client.list_pools()}
        assert not pools["10.65.0.0/16"].nat_outgoing and pools["10.66.0.0/16"].disabled
    for line in ("changed: [localhost] => (item=10.65.0.0/16)",
                 "changed: [localhost] => (item=fd00:65::/64)",
                 "changed: [localhost] => (item=10.66.0.0/16)",
                 "changed: [localhost] => (item=198.18.0.254)",
                 "changed: [localhost] => (item=198.18.0.253)",
                 "changed: [localhost] => (item=frontend)",
                 "changed: [localhost] => (item=backend)"):
        assert line in edited.output, edited.output
    settled = playbook(play, inventory, *POLICY, *edits, workdir=tmp_path).check()
    assert settled.recap["localhost"]["changed"] == 0, settled.output

    for run in (first, again, preview, edited, settled):
        assert PASSWORD not in run.output


# ------------------------------------------------------------------ namespaces: site.yml


def ns_state(lab: Lab, ns: str) -> str:
    """iptables, ip6tables and ipsets of a namespace (without the date comments)."""
    out = []
    for argv in (["iptables-save"], ["ip6tables-save"], ["ipset", "save"]):
        text = lab.exec(ns, *argv).stdout
        out.append("\n".join(line for line in text.splitlines() if not line.startswith("#")))
    return "\n".join(out)


#: one of our kernel rules: (IP version, table, chain, the hash of its cali:<hash> comment)
RuleKey = tuple[int, str, str, str]


def cali_rules(lab: Lab, ns: str) -> dict[tuple[int, str, str], list[str | None]]:
    """Every cali chain of a namespace, per (IP version, table, chain): the hash of each of
    its rules, in order."""
    out = {}
    for version, tool in ((4, "iptables-save"), (6, "ip6tables-save")):
        tables: dict[str, list[str]] = {}
        table = ""
        for line in lab.exec(ns, tool).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif table:
                tables.setdefault(table, []).append(line)
        for table, lines in tables.items():
            for chain, digests in parse_save("\n".join(lines)).chains.items():
                out[(version, table, chain)] = digests
    return out


def rule_changes(before: dict, after: dict) -> tuple[Counter[RuleKey], Counter[RuleKey]]:
    """The rules that came and went from ``before`` to ``after`` (``cali_rules``), chain by
    chain, compared as the preview compares renders."""
    added: Counter[RuleKey] = Counter()
    removed: Counter[RuleKey] = Counter()
    for key in set(before) | set(after):
        came, went = chain_changes(before.get(key, []), after.get(key, []))
        added.update((*key, str(h)) for h in came)
        removed.update((*key, str(h)) for h in went)
    return added, removed


def dataplane_preview(output: str) -> list[str]:
    """The one `dataplane:` block of a --check --diff run: a summary line, then every changed
    host's name and its indented lines (the end of an intent task's diff.prepared, which the
    default callback prints as is)."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("dataplane: ")]
    assert len(starts) == 1, output
    block = [lines[starts[0]]]
    for line in lines[starts[0] + 1:]:
        if not (line.startswith("  ") or re.fullmatch(r"\S+:", line)):
            break
        block.append(line)
    return block


def previewed_rules(block: list[str], host: str) -> tuple[Counter[RuleKey], Counter[RuleKey]]:
    """The iptables/ip6tables lines a preview block adds and removes on ``host``, keyed as
    the kernel's rules are (``rule_hash`` of the spec is the rule's cali:<hash> comment)."""
    added: Counter[RuleKey] = Counter()
    removed: Counter[RuleKey] = Counter()
    current, table = "", None
    for line in block[1:]:
        if not line.startswith(" "):
            current, table = line[:-1], None
        elif not line.startswith("    "):
            found = re.fullmatch(r"  ip(6?)tables (\S+):", line)
            table = (6 if found.group(1) else 4, found.group(2)) if found else None
        elif current == host and table:
            rule = re.fullmatch(r"    ([+-]) -A (\S+) (.*)", line)
            if rule:
                (added if rule.group(1) == "+" else removed)[
                    (*table, rule.group(2), rule_hash(rule.group(3)))] += 1
    return added, removed


def test_policy_role_check_of_a_new_site_with_per_node_peers(tmp_path: Path) -> None:
    """bgp_peer's check mode fails as its real run would on a node not registered yet; in a
    check run of a new site the node role has registered nothing, so the policy role
    reports those peers and goes on (the real run then adds them after the node role)."""
    url = sqlite_url(tmp_path)
    inventory = localhost_policy_inventory(tmp_path, url)
    peers = tmp_path / "peers.yml"
    peers.write_text(json.dumps({"calico_policy_bgp_peers": [
        {"address": "198.18.0.254", "as_number": 65000},
        {"address": "198.18.0.250", "as_number": 65002, "node": "host-x"}]}))
    play = HERE / "policy_play.yml"
    check = playbook(play, inventory, *POLICY, "-e", f"@{peers}", "--check", "--diff",
                     workdir=tmp_path).check()
    assert "198.18.0.250 of node host-x: node host-x: not found" in check.output, check.output
    real = playbook(play, inventory, *POLICY, "-e", f"@{peers}", workdir=tmp_path)
    assert real.returncode != 0 and "add the node first" in real.output, real.output


@pytest.mark.netns
def test_site_on_namespace_hosts(lab: Lab, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    hosts = [lab.host("h1"), lab.host("h2")]
    # a frontend container on h1, a backend container on h2
    with calico_lib.connect(url) as client:
        for host, profile in zip(hosts, ["frontend", "backend"], strict=True):
            address = f"10.65.{host.index}.1"
            ctr = lab.container(host, f"c{host.index}", ipv4=[address])
            client.add_endpoint(Endpoint(id=ctr.id, host=host.name, interface=ctr.interface,
                                         mac=ctr.mac, ipv4_nets=[address], profiles=[profile]))
    host_vars = {h.name: netns_host_vars(h.name, h.ns, tmp_path, url) for h in hosts}
    for host in hosts:
        # each extra argument reaches the daemon as one argument, whatever it holds; the
        # metrics addresses come before them
        host_vars[host.name] |= {"calico_node_agent_extra_args": ["--probe", *HOSTILE],
                                 "calico_docker_plugin_extra_args": ["--probe", *HOSTILE],
                                 "calico_node_agent_metrics_address": "127.0.0.1:9091",
                                 "calico_docker_plugin_metrics_address": "[::1]:9092"}
        # the options line an older version wrote goes; the administrator's line stays
        (tmp_path / host.name / "calico-agent.env").write_text(
            '# Ansible managed\n# Options of calico-agent.service (split at spaces by '
            'systemd).\nCALICO_AGENT_OPTS="--hostname x"\nPYTHONFAULTHANDLER=1\n')
    inventory = write_inventory(tmp_path / "inventory.yml", host_vars)

    def site(*args: str) -> object:
        return playbook(SITE, inventory, *args, workdir=tmp_path).check()

    first = site(*POLICY)
    assert all(first.recap[h.name]["changed"] > 0 for h in hosts), first.output
    # what the node role and the dataplane entry point did, host by host
    with calico_lib.connect(url) as client:
        nodes = {n.name: n.ipv4 for n in client.list_nodes()}
        # the subnet of the interface that holds the address, from the facts
        subnets = {n.name: n.ipv4_subnet for n in client.list_nodes()}
    assert nodes == {"h1": "198.18.0.2", "h2": "198.18.0.3"}
    assert subnets == {"h1": "198.18.0.0/24", "h2": "198.18.0.0/24"}
    for host in hosts:
        root = tmp_path / host.name
        assert (root / "calico.conf").read_text().splitlines()[-1] == f"datastore = {url}"
        assert "net.ipv4.ip_forward=1" in (root / "sysctl.conf").read_text()
        assert lab.sysctl(host.ns, "net.ipv4.ip_forward") == "1"
        bird = (root / "bird.conf").read_text()
        assert f"router id {nodes[host.name]};" in bird
        assert "198.18.0.254" in bird  # the global peer
        assert "  multihop;" not in bird  # everyone on one subnet
        assert PASSWORD not in first.output
        # the units, from calico_lib/data, with this host's arguments in ExecStart, each
        # quoted for systemd (not started: no systemd here)
        agent = (root / "calico-agent.service").read_text()
        assert unit_exec(root / "calico-agent.service") == [
            "/opt/calico/venv/bin/calico-agent", "--hostname", host.name,
            "--bird-config", f"{root}/bird.conf", "--bird-socket", f"{root}/bird.ctl",
            "--lock-file", f"{root}/dataplane.lock", "--datastore", url,
            "--metrics-address", "127.0.0.1:9091", "--probe", *HOSTILE]
        assert f"EnvironmentFile=-{root}/calico-agent.env" in agent
        assert "CapabilityBoundingSet=CAP_NET_ADMIN" in agent  # the rest is the library's
        assert (root / "calico-agent.env").read_text() == "PYTHONFAULTHANDLER=1\n"
        plugin = (root / "calico-docker-plugin.service").read_text()
        assert "Before=docker.service" in plugin
        assert unit_exec(root / "calico-docker-plugin.service") == [
            "/opt/calico/venv/bin/calico-docker-plugin", "--socket-dir", "/run/docker/plugins",
            "--docker-socket", "/var/run/docker.sock", "--lock-file", f"{root}/dataplane.lock",
            "--hostname", host.name, "--metrics-address", "[::1]:9092", "--probe", *HOSTILE]
        assert not (root / "calico-docker-plugin.env").exists()
    h2_rules = lab.exec(hosts[1].ns, "iptables-save").stdout
    assert "--dports 80 " in h2_rules or "--dport 80 " in h2_rules, h2_rules

    again = site(*POLICY)
    assert again.changed() == 0, again.output

    # a profile change (tcp/8080 too), previewed before anything is written: the profile
    # task's diff (on calico_policy_host, h1) ends with every changed host's rule lines, from the
    # datastore; nothing is written, in any kernel or the datastore
    before = {h.name: ns_state(lab, h.ns) for h in hosts}
    rules = {h.name: cali_rules(lab, h.ns) for h in hosts}
    stored = intent(url)
    preview = site(*POLICY_CHANGED, "--check", "--diff")
    assert preview.recap["h1"]["changed"] == 1, preview.output  # the profile task
    assert preview.recap["h2"]["changed"] == 0, preview.output
    block = dataplane_preview(preview.output)
    assert [line[:-1] for line in block[1:] if not line.startswith(" ")] == ["h2"], block
    assert block[0].endswith("; 1 host unaffected"), block  # h1
    added = [line for line in block if line.startswith("    + -A cali-pi-backend ")]
    assert len(added) == 1 and "-m multiport --dports 80,8080 " in added[0], block
    removed = [line for line in block if line.startswith("    - -A cali-pi-backend ")]
    assert len(removed) == 1 and "-m multiport --dports 80 " in removed[0], block
    assert {h.name: ns_state(lab, h.ns) for h in hosts} == before
    assert intent(url) == stored

    # written (the policy play alone), the change is not in the kernel yet: the dataplane
    # module's check mode sees the drift on h2 and applies nothing; the profile task, now
    # as stored, previews nothing more
    changed = site(*POLICY_CHANGED, "--tags", "policy")
    assert changed.changed() == 1, changed.output
    drift = site(*POLICY_CHANGED, "--check", "--diff")
    assert drift.recap["h2"]["changed"] == 1, drift.output
    assert drift.recap["h1"]["changed"] == 0, drift.output
    assert "would be applied" in drift.output
    assert "--dports 80,8080" in drift.output, drift.output
    assert "dataplane: " not in drift.output, drift.output
    assert {h.name: ns_state(lab, h.ns) for h in hosts} == before

    # the real run: h2's kernel gains and loses exactly the previewed rules, h1's none
    applied = site(*POLICY_CHANGED)
    assert applied.recap["h2"]["changed"] == 1, applied.output
    for host in hosts:
        came, went = rule_changes(rules[host.name], cali_rules(lab, host.ns))
        assert (came, went) == previewed_rules(block, host.name), (host.name, block)

    last = site(*POLICY_CHANGED)
    assert last.changed() == 0, last.output


# ------------------------------------------------------------------ the docker role's networks


@pytest.mark.docker
def test_docker_role_networks(tmp_path: Path) -> None:
    """The docker role creates the inventory's Calico networks on a real dockerd with the
    plugin (tests/dockerlab.py; no systemd here, so the lab runs both), then changes nothing.
    """
    from tests import dockerlab

    why = dockerlab.missing_requirements()
    if why:
        pytest.skip(why)
    networks = [{"name": "frontend", "subnet": ["10.65.0.0/16", "fd00:65::/64"], "ipv6": True},
                {"name": "backend"}]
    with dockerlab.DockerLab() as lab:
        inventory = write_inventory(tmp_path / "inventory.yml", {"dockhost": {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "calico_docker_manage_packages": False,
            "calico_docker_manage_services": False,
            "calico_docker_systemd_dir": str(tmp_path),
            "calico_docker_plugin_env_file": str(tmp_path / "calico-docker-plugin.env"),
            "calico_docker_host": f"unix://{lab.docker_socket}",
            "calico_docker_plugin_socket_dir": lab.socket_dir,
            "calico_docker_networks": networks,
        }})
        play = HERE / "docker_play.yml"
        first = playbook(play, inventory, workdir=tmp_path).check()
        # the unit and the two networks (the role writes no options file any more)
        assert first.recap["dockhost"]["changed"] == 2, first.output
        for network in networks:
            info = json.loads(lab.docker("network", "inspect", network["name"]).stdout)[0]
            assert (info["Driver"], info["IPAM"]["Driver"]) == ("calico", "calico-ipam")
            assert info["EnableIPv6"] == network.get("ipv6", False)
        again = playbook(play, inventory, workdir=tmp_path).check()
        assert again.recap["dockhost"]["changed"] == 0, again.output


# ------------------------------------------------------------------ namespaces: the etcd role


def env_file(path: Path) -> dict[str, str]:
    """KEY="value" lines of an environment file (as systemd reads /etc/default/etcd)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def cert_info(path: Path) -> dict[str, object]:
    """A PEM certificate's CN, OU and O (None when absent), subject alternative names,
    extended key usages, serial and issuer."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = sorted(str(n.value) for n in names)
    except x509.ExtensionNotFound:
        sans = []
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = []
    def name(oid: x509.ObjectIdentifier) -> str | None:
        found = cert.subject.get_attributes_for_oid(oid)
        return str(found[0].value) if found else None

    return {"cn": name(NameOID.COMMON_NAME), "ou": name(NameOID.ORGANIZATIONAL_UNIT_NAME),
            "o": name(NameOID.ORGANIZATION_NAME), "sans": sans,
            "usage": sorted(u._name for u in usage), "serial": cert.serial_number,
            "issuer": cert.issuer.rfc4514_string()}


def file_mode(path: Path) -> tuple[str, str]:
    import grp
    import pwd

    st = path.stat()
    return oct(st.st_mode & 0o777), f"{pwd.getpwuid(st.st_uid).pw_name}:" \
        f"{grp.getgrgid(st.st_gid).gr_name}"


class Curl:
    """curl inside a namespace against etcd's JSON gateway: (exit code, output)."""

    def __init__(self, lab: Lab, ns: str) -> None:
        self.lab, self.ns = lab, ns

    def __call__(self, url: str, body: dict[str, str] | None = None,
                 *tls: str) -> tuple[int, str]:
        argv = ["curl", "-sS", "--http1.1", "--max-time", "5", *tls, url]
        if body is not None:
            argv += ["-d", json.dumps(body)]
        proc = self.lab.exec(self.ns, *argv, check=False, timeout=15)
        return proc.returncode, proc.stdout + proc.stderr


def b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def served_certificate(lab: Lab, ns: str, address: str, port: int, ca: Path, cert: Path,
                       key: Path) -> bytes:
    """The DER certificate a TLS server presents to a new connection (from namespace ns)."""
    code = ("import socket, ssl, sys\n"
            "ctx = ssl.create_default_context(cafile=sys.argv[3])\n"
            "ctx.load_cert_chain(sys.argv[4], sys.argv[5])\n"
            "with socket.create_connection((sys.argv[1], int(sys.argv[2])), 5) as raw:\n"
            "    with ctx.wrap_socket(raw, server_hostname=sys.argv[1]) as tls:\n"
            "        print(tls.getpeercert(binary_form=True).hex())\n")
    out = lab.exec(ns, sys.executable, "-c", code, address, str(port), str(ca), str(cert),
                   str(key)).stdout
    return bytes.fromhex(out.strip())


class EtcdCluster:
    """etcd started in each namespace from the environment file the role wrote (as
    etcd.service would: there is no systemd here); stopped by ``stop``."""

    def __init__(self, lab: Lab, hosts: list, tmp_path: Path) -> None:
        self.procs: list[tuple[subprocess.Popen, object]] = []
        for host in hosts:
            env = env_file(tmp_path / host.name / "etcd.env")
            log = open(tmp_path / f"{host.name}.log", "wb")  # noqa: SIM115 - closed in stop
            self.procs.append((subprocess.Popen(
                ["ip", "netns", "exec", host.ns, "etcd"],
                env={"PATH": os.environ["PATH"], **env},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT), log))

    def stop(self) -> None:
        for proc, log in self.procs:
            processes.stop(proc)
            log.close()


def etcd_inventory(lab: Lab, tmp_path: Path, names: list[str]) -> tuple[list, Path]:
    """Namespace hosts in the etcd group, without packages or systemd, every file of the
    role (configuration, data, TLS files) in tmp_path/NAME; the controller's PKI in the
    default place beside the inventory (tmp_path/calico-pki)."""
    hosts = [lab.host(name) for name in names]
    host_vars = {}
    for host in hosts:
        values = netns_host_vars(host.name, host.ns, tmp_path, "unused")
        root = tmp_path / host.name
        host_vars[host.name] = {
            k: v for k, v in values.items() if k.startswith("ansible_")} | {
            "calico_etcd_manage_packages": False,
            "calico_etcd_manage_services": False,
            "calico_etcd_address": host.ipv4,
            "calico_etcd_config_file": str(root / "etcd.env"),
            "calico_etcd_data_dir": str(root / "data"),
            "calico_etcd_pki_dir": str(root / "etcd-pki"),
            "calico_etcd_health_delay": 1,
        }
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"children": {"etcd": {"hosts": host_vars}}}}))
    return hosts, inventory


@pytest.mark.netns
@pytest.mark.etcd
def test_etcd_role_three_members_over_tls(lab: Lab, tmp_path: Path) -> None:
    """The etcd role makes a CA on the controller, issues every member's certificates,
    and configures three members that form one healthy cluster over TLS only.

    No systemd here: the first run (without its health check) writes each member's
    files, the test starts etcd with its environment file in each namespace (as
    etcd.service would), then the whole role runs again: healthy everywhere over TLS with
    a client certificate, nothing to change. Then, from a member's namespace: a request
    with a client certificate of the CA reads and writes; one without a client certificate,
    one over plain HTTP and one with a certificate of another CA get no data; a client
    certificate cannot join the peer port. Certificates about to expire are reissued (the
    CA never is) and etcd serves the new one at once, without a restart.
    """
    if shutil.which("etcd") is None or shutil.which("curl") is None:
        pytest.skip("etcd and curl are needed")
    hosts, inventory = etcd_inventory(lab, tmp_path, ["e1", "e2", "e3"])
    play = HERE / "etcd_play.yml"
    pki = tmp_path / "calico-pki"

    first = playbook(play, inventory, "--skip-tags", "etcd_health", workdir=tmp_path).check()
    assert all(first.recap[h.name]["changed"] >= 5 for h in hosts), first.output
    # the controller's PKI: one CA, made once; the administrator's certificate once
    assert file_mode(pki)[0] == "0o700"
    assert (pki / ".gitignore").read_text().splitlines()[-1] == "*"
    ca = cert_info(pki / "ca.crt")
    assert ca["cn"] == "Calico etcd CA"
    assert cert_info(pki / "root.crt")["cn"] == "root"
    assert file_mode(pki / "ca.key")[0] == file_mode(pki / "root.key")[0] == "0o600"
    members = ("e1=https://198.18.0.2:2380,e2=https://198.18.0.3:2380,"
               "e3=https://198.18.0.4:2380")
    for host in hosts:
        root = tmp_path / host.name
        files = root / "etcd-pki"
        env = env_file(root / "etcd.env")
        assert env["ETCD_INITIAL_CLUSTER"] == members
        assert env["ETCD_LISTEN_CLIENT_URLS"] == (
            f"https://{host.ipv4}:2379,https://127.0.0.1:2379")
        assert env["ETCD_ADVERTISE_CLIENT_URLS"] == f"https://{host.ipv4}:2379"
        assert env["ETCD_LISTEN_PEER_URLS"] == f"https://{host.ipv4}:2380"
        assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
        assert env["ETCD_PEER_CERT_ALLOWED_CN"] == "etcd-peer"
        assert env["ETCD_TRUSTED_CA_FILE"] == env["ETCD_PEER_TRUSTED_CA_FILE"] == \
            str(files / "ca.crt")
        assert (env["ETCD_CERT_FILE"], env["ETCD_KEY_FILE"]) == (
            str(files / "server.crt"), str(files / "server.key"))
        assert (env["ETCD_PEER_CERT_FILE"], env["ETCD_PEER_KEY_FILE"]) == (
            str(files / "peer.crt"), str(files / "peer.key"))
        assert not any("http://" in v for v in env.values()), env
        # the member's files: keys 0600, etcd's own owned by etcd
        assert file_mode(files) == ("0o750", "root:etcd")
        assert file_mode(files / "server.key") == ("0o600", "etcd:etcd")
        assert file_mode(files / "peer.key") == ("0o600", "etcd:etcd")
        assert file_mode(files / "root.key") == ("0o600", "root:root")
        assert (files / "ca.crt").read_bytes() == (pki / "ca.crt").read_bytes()
        server, peer = cert_info(files / "server.crt"), cert_info(files / "peer.crt")
        names = sorted([host.ipv4, host.name, "127.0.0.1", "localhost"])
        assert server == server | {"cn": f"etcd-member.{host.name}", "sans": names,
                                   "usage": ["clientAuth", "serverAuth"],
                                   "issuer": ca["issuer"]}
        assert peer == peer | {"cn": "etcd-peer", "sans": names,
                               "usage": ["clientAuth", "serverAuth"]}

    cluster = EtcdCluster(lab, hosts, tmp_path)
    try:
        again = playbook(play, inventory, workdir=tmp_path).check()
        assert again.changed() == 0, again.output
        assert again.output.count(
            "TASK [calico.docker.etcd : Wait until the member is healthy]") == 1

        curl = Curl(lab, hosts[0].ns)
        e1 = tmp_path / "e1" / "etcd-pki"
        tls = ("--cacert", str(e1 / "ca.crt"))
        admin = (*tls, "--cert", str(e1 / "root.crt"), "--key", str(e1 / "root.key"))
        code, out = curl("https://198.18.0.2:2379/v3/kv/put",
                         {"key": b64("/calico/test"), "value": b64("tls")}, *admin)
        assert code == 0 and '"revision"' in out, out
        for host in hosts:
            base = f"{host.ipv4}:2379"
            query = {"key": b64("/calico/test")}
            # a client certificate of the CA: one cluster, what one member stored
            code, out = curl(f"https://{base}/v3/kv/range", query, *admin)
            assert code == 0 and b64("tls") in out, out
            # no client certificate: the TLS handshake fails, nothing is read or written
            for path, body in (("range", query),
                               ("put", {"key": b64("/calico/x"), "value": b64("x")})):
                code, out = curl(f"https://{base}/v3/kv/{path}", body, *tls)
                assert code != 0 and "kvs" not in out and "revision" not in out, out
            # plain HTTP: no listener answers it with data
            code, out = curl(f"http://{base}/v3/kv/range", query)
            assert "kvs" not in out and "revision" not in out, out
            # a certificate of another CA: refused
            other = Pki(tmp_path / "other-ca").issue("root")
            code, out = curl(f"https://{base}/v3/kv/range", query, *tls, "--cert", other.cert,
                             "--key", other.key)
            assert code != 0 and "kvs" not in out, out
            # the peer port takes the peer certificate only, not a client certificate
            peer_port = f"https://{host.ipv4}:2380/members"
            code, out = curl(peer_port, None, *admin)
            assert code != 0 and "peerURLs" not in out, out
            code, out = curl(peer_port, None, *tls, "--cert", str(e1 / "peer.crt"),
                             "--key", str(e1 / "peer.key"))
            assert code == 0 and "peerURLs" in out, out

        # the library over TLS: the node role's default URL for this group, and the CA's
        # administrator certificate
        url = "etcds://198.18.0.2:2379,198.18.0.3:2379,198.18.0.4:2379"
        code = ("import sys, calico_lib\n"
                "tls = dict(etcd_ca=sys.argv[2], etcd_cert=sys.argv[3], etcd_key=sys.argv[4])\n"
                "with calico_lib.connect(sys.argv[1], **tls) as c:\n"
                "    c.add_pool(calico_lib.IPPool('10.77.0.0/16'))\n"
                "with calico_lib.connect('etcds://198.18.0.4:2379', **tls) as c:\n"
                "    print([p.cidr for p in c.list_pools()])\n")
        out = lab.exec(hosts[0].ns, sys.executable, "-c", code, url, str(e1 / "ca.crt"),
                       str(e1 / "root.crt"), str(e1 / "root.key"), timeout=60).stdout
        assert out.strip() == "['10.77.0.0/16']"

        # renewal: every certificate within calico_pki_renew_days of its end is reissued (here:
        # all of them); the CA is not; etcd serves the new certificate to the next
        # connection without a restart
        ca_before = (pki / "ca.crt").read_bytes()
        serials = {h.name: cert_info(tmp_path / h.name / "etcd-pki" / "server.crt")["serial"]
                   for h in hosts}
        renewed = playbook(play, inventory, "-e", "calico_pki_renew_days=400",
                           workdir=tmp_path).check()
        assert "RUNNING HANDLER [calico.docker.etcd : Restart etcd]" not in renewed.output
        assert (pki / "ca.crt").read_bytes() == ca_before
        for host in hosts:
            files = tmp_path / host.name / "etcd-pki"
            assert cert_info(files / "server.crt")["serial"] != serials[host.name]
            served = served_certificate(lab, hosts[0].ns, host.ipv4, 2379, e1 / "ca.crt",
                                        e1 / "root.crt", e1 / "root.key")
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import Encoding

            current = x509.load_pem_x509_certificate((files / "server.crt").read_bytes())
            assert served == current.public_bytes(Encoding.DER), host.name
        assert all(p.poll() is None for p, _ in cluster.procs), "etcd restarted or died"

        settled = playbook(play, inventory, workdir=tmp_path).check()
        assert settled.changed() == 0, settled.output
    finally:
        cluster.stop()


#: run in a host's namespace with that host's etcd files: what each write does ("ok" or
#: the library's one-line error). Own records (an endpoint, an address from the shared IPAM
#: blocks) are written and removed again; the others must be refused.
PROBE = """\
import json, sys, calico_lib
from calico_lib import Endpoint, IPPool, Node
from calico_lib.errors import CalicoError
url, options, me, other = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
only = sys.argv[5].split(",") if len(sys.argv) > 5 else None
out = {}
def attempt(name, write):
    if only is not None and name not in only:
        return
    try:
        write()
        out[name] = "ok"
    except CalicoError as exc:
        out[name] = str(exc)
with calico_lib.connect(url, **options) as c:
    out["nodes"] = sorted(n.name for n in c.list_nodes())
    def own():
        c.add_endpoint(Endpoint("probe-" + me, me, "caliprobe" + me))
        c.remove_endpoint(me, "probe-" + me)
    attempt("own endpoint", own)
    def ipam():
        c.ipam.auto_assign(me, "probe-" + me, num_ipv4=1)
        c.ipam.release_handle("probe-" + me)
    attempt("own address", ipam)
    def others():
        c.add_endpoint(Endpoint("probe-" + me, other, "caliprobe" + me))
        c.remove_endpoint(other, "probe-" + me)
    attempt("other host's endpoint", others)
    attempt("other host's node", lambda: c.put_node(Node(other, ipv4="198.18.0.200")))
    def profile():
        c.add_profile("probe-" + me)
        c.remove_profile("probe-" + me)
    attempt("profile", profile)
    def pool():
        c.add_pool(IPPool("10.99.0.0/16"))
        c.remove_pool("10.99.0.0/16")
    attempt("pool", pool)
print(json.dumps(out))
"""

#: etcd's users, listed as etcd's root (its password file on the policy host)
USERS = """\
import sys
from calico_lib.datastore import open_datastore
store = open_datastore(sys.argv[1], etcd_ca=sys.argv[2], etcd_cert=sys.argv[3],
                       etcd_key=sys.argv[4], etcd_user="root", etcd_password_file=sys.argv[5])
print(" ".join(sorted(store._post("/auth/user/list", {}).get("users", []))))
"""

OWN_ONLY = {"own endpoint": "ok", "own address": "ok"}
REFUSED = ("other host's endpoint", "other host's node", "profile", "pool")


@pytest.mark.slow
@pytest.mark.netns
@pytest.mark.etcd
def test_site_over_tls_with_a_user_per_host(lab: Lab, tmp_path: Path) -> None:
    """site.yml (without the docker play) over TLS with etcd authentication, the default:
    on namespace hosts, e1 also the etcd member and the policy host.

    Every Calico host gets the CA, its own client certificate (no CN, OU calico-host.NODE)
    and its etcd password (0600, made once on the controller in calico-pki/.passwords/),
    and calico.conf names them; e1 also gets the operator's certificate and password and
    etcd root's password. After the first run etcd's authentication is on: each host's
    user writes its own records (an endpoint, addresses from the shared IPAM blocks) and is
    refused another host's endpoint and node record, a profile and a pool; the operator
    (calicoctl's credentials on e1) writes them; without credentials nothing is read. No
    password is ever printed, --check --diff included. A second run changes nothing.

    ``calico_pki_reissue=h2`` makes h2's client certificate and etcd password anew: etcd takes
    the password before h2 registers with it, only h2's daemons restart. A host added to
    the inventory while authentication is on gets its user before it registers; a host
    removed from the inventory loses its user on the next run.
    """
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed")
    e1, h2, h3 = lab.host("e1"), lab.host("h2"), lab.host("h3")
    url = "etcds://198.18.0.2:2379"
    host_vars = {}
    for host in (e1, h2, h3):
        values = netns_host_vars(host.name, host.ns, tmp_path, "unused")
        root = tmp_path / host.name
        # the node role's default datastore (etcds:// on the etcd group) and certificates
        values.pop("calico_node_datastore")
        values |= {"calico_node_pki_dir": str(root / "pki"), "calico_policy_datastore": url}
        host_vars[host.name] = values
    host_vars["e1"] |= {
        "calico_etcd_address": e1.ipv4,
        "calico_etcd_manage_packages": False,
        "calico_etcd_manage_services": False,
        "calico_etcd_config_file": str(tmp_path / "e1" / "etcd.env"),
        "calico_etcd_data_dir": str(tmp_path / "e1" / "data"),
        "calico_etcd_pki_dir": str(tmp_path / "e1" / "etcd-pki"),
        "calico_etcd_health_delay": 1,
    }
    inventory = tmp_path / "inventory.yml"

    def write_inventory(*names: str) -> None:
        """e1 (the etcd member, a Calico host too) and the Calico hosts ``names``."""
        inventory.write_text(json.dumps({"all": {"children": {
            "calico_nodes": {"hosts": {name: host_vars[name] for name in ("e1", *names)}},
            "etcd": {"hosts": {"e1": host_vars["e1"]}}}}}))

    write_inventory("h2")
    pki = tmp_path / "calico-pki"
    runs = []

    def site(*args: str) -> object:
        run = playbook(SITE, inventory, *POLICY, "--skip-tags", "docker", *args,
                       workdir=tmp_path).check()
        runs.append(run)
        return run

    def files(name: str) -> Path:
        return tmp_path / name / "pki"

    def credentials(name: str, user: str, password: str, cert: str = "client") -> str:
        return json.dumps({"etcd_ca": str(files(name) / "ca.crt"),
                           "etcd_cert": str(files(name) / f"{cert}.crt"),
                           "etcd_key": str(files(name) / f"{cert}.key"),
                           "etcd_user": user,
                           "etcd_password_file": str(files(name) / password)})

    def probe(host: object, other: str, options: str | None = None,
              only: tuple[str, ...] = ()) -> dict[str, object]:
        options = options or credentials(host.name, f"calico-host.{host.name}",
                                         "etcd-password")
        out = lab.exec(host.ns, sys.executable, "-c", PROBE, url, options, host.name, other,
                       *([",".join(only)] if only else []), timeout=60)
        return json.loads(out.stdout)

    def intent_of(host: object) -> list[calico_lib.IPPool]:
        code = ("import json, sys, calico_lib\n"
                "with calico_lib.connect(sys.argv[1], **json.loads(sys.argv[2])) as c:\n"
                "    print(json.dumps([p.to_dict() for p in c.list_pools()]))\n")
        out = lab.exec(host.ns, sys.executable, "-c", code, url,
                       credentials(host.name, f"calico-host.{host.name}", "etcd-password"),
                       timeout=60)
        return sorted((calico_lib.IPPool.from_dict(p) for p in json.loads(out.stdout)),
                      key=lambda p: p.cidr)

    def users() -> list[str]:
        out = lab.exec(e1.ns, sys.executable, "-c", USERS, url,
                       str(files("e1") / "ca.crt"), str(files("e1") / "operator.crt"),
                       str(files("e1") / "operator.key"),
                       str(files("e1") / "root-password"), timeout=60)
        return out.stdout.split()

    site("--tags", "etcd", "--skip-tags", "etcd_health")
    cluster = EtcdCluster(lab, [e1], tmp_path)
    try:
        first = site()
        assert first.recap["e1"]["changed"] > 0 and first.recap["h2"]["changed"] > 0
        # the controller's passwords: one file per user, 0600, 32 letters and digits
        passwords = pki / ".passwords"
        assert file_mode(passwords)[0] == "0o700"
        assert sorted(p.name for p in passwords.iterdir()) == [
            "calico-host.e1", "calico-host.h2", "calico-operator", "root"]
        for path in passwords.iterdir():
            assert file_mode(path)[0] == "0o600", path
            assert re.fullmatch(r"[A-Za-z0-9]{32}\n", path.read_text()), path
        # the PKI folder in an inventory folder (the default beside inventory/NAME/): Ansible
        # reads every file there as inventory but hidden ones; no password becomes a host
        folder = tmp_path / "inventory-folder"
        folder.mkdir()
        (folder / "hosts.yml").write_text(inventory.read_text())
        (folder / "calico-pki").symlink_to(pki)
        listed = subprocess.run([ansible_command("ansible-inventory"), "-i", str(folder),
                                 "--list"], cwd=REPO, env=ansible_env(tmp_path),
                                capture_output=True, text=True, timeout=120, check=True)
        data = json.loads(listed.stdout)
        assert sorted({h for group in data.values() for h in group.get("hosts", [])}
                      | set(data["_meta"]["hostvars"])) == ["e1", "h2"], data
        assert not any(p.read_text().strip() in listed.stdout + listed.stderr
                       for p in passwords.iterdir())
        for host in (e1, h2):
            root = tmp_path / host.name
            conf = (root / "calico.conf").read_text()
            assert f"datastore = {url}" in conf
            for key, value in (("etcd_ca", files(host.name) / "ca.crt"),
                               ("etcd_cert", files(host.name) / "client.crt"),
                               ("etcd_key", files(host.name) / "client.key"),
                               ("etcd_user", f"calico-host.{host.name}"),
                               ("etcd_password_file", files(host.name) / "etcd-password")):
                assert f"{key} = {value}" in conf, conf
            assert (files(host.name) / "ca.crt").read_bytes() == (pki / "ca.crt").read_bytes()
            client = cert_info(files(host.name) / "client.crt")
            # no CN (etcd's gateway refuses one once auth is on): the user's name is the OU
            assert (client["cn"], client["ou"], client["o"]) == (
                None, f"calico-host.{host.name}", "calico")
            assert client["usage"] == ["clientAuth"] and client["sans"] == []
            assert file_mode(files(host.name) / "client.key") == ("0o600", "root:root")
            assert file_mode(files(host.name) / "etcd-password") == ("0o600", "root:root")
            assert (files(host.name) / "etcd-password").read_text() == (
                passwords / f"calico-host.{host.name}").read_text()
            # the agent's unit: its arguments (conf elsewhere: the etcd files and user too)
            agent = unit_exec(root / "calico-agent.service")
            assert agent[agent.index("--datastore"):] == [
                "--datastore", url, "--etcd-ca", str(files(host.name) / "ca.crt"),
                "--etcd-cert", str(files(host.name) / "client.crt"),
                "--etcd-key", str(files(host.name) / "client.key"),
                "--etcd-user", f"calico-host.{host.name}",
                "--etcd-password-file", str(files(host.name) / "etcd-password")]
        # the operator's certificate and password, and etcd root's, on the policy host only
        op = cert_info(files("e1") / "operator.crt")
        assert (op["cn"], op["ou"]) == (None, "calico-operator")
        for name in ("operator.key", "operator-password", "root-password"):
            assert file_mode(files("e1") / name) == ("0o600", "root:root"), name
            assert not (files("h2") / name).exists()
        assert (files("e1") / "root-password").read_text() == (passwords / "root").read_text()
        # what the access step did, shown without a password
        assert '"users added: root, calico-host.e1, calico-host.h2, calico-operator"' \
            in first.output, first.output
        assert '"authentication turned on: yes"' in first.output

        # a second run changes nothing; a preview neither, and shows no password
        again = site()
        assert again.changed() == 0, again.output
        preview = site("--check", "--diff")
        assert preview.changed() == 0, preview.output

        # authentication is on: etcd's users are Calico's; each host writes its own records
        assert users() == ["calico-host.e1", "calico-host.h2", "calico-operator", "root"]
        for host, other in ((h2, "e1"), (e1, "h2")):
            result = probe(host, other)
            assert result["nodes"] == ["e1", "h2"], result  # registered as their own users
            assert result | OWN_ONLY == result, result
            for what in REFUSED:
                assert result[what].startswith(
                    f"etcd 198.18.0.2:2379: permission denied: user calico-host.{host.name} "), \
                    (what, result)
        # the operator (calicoctl's credentials on the policy host) writes another host's
        # endpoint and a profile; the pools are the policy role's, written as the operator
        operator = probe(e1, "h2", credentials("e1", "calico-operator", "operator-password",
                                               cert="operator"),
                         only=("other host's endpoint", "profile"))
        assert operator == {"nodes": ["e1", "h2"], "other host's endpoint": "ok",
                            "profile": "ok"}, operator
        assert [p.cidr for p in intent_of(h2)] == ["10.65.0.0/16", "fd00:65::/64"]
        # no credentials: nothing is read
        anonymous = json.dumps({"etcd_ca": str(files("h2") / "ca.crt"),
                                "etcd_cert": str(files("h2") / "client.crt"),
                                "etcd_key": str(files("h2") / "client.key")})
        code = ("import json, sys, calico_lib\n"
                "with calico_lib.connect(sys.argv[1], **json.loads(sys.argv[2])) as c:\n"
                "    c.list_pools()\n")
        out = lab.exec(h2.ns, sys.executable, "-c", code, url, anonymous, check=False,
                       timeout=60)
        assert out.returncode != 0 and "authentication is on" in out.stderr, out

        # rotation of h2's client certificate and etcd password
        ca = (pki / "ca.crt").read_bytes()
        secrets = {h: [(files(h) / n).read_bytes() for n in
                       ("client.crt", "client.key", "etcd-password")] for h in ("e1", "h2")}
        rotated = site("-e", "calico_pki_reissue=h2")
        assert rotated.recap["e1"]["changed"] > 0, rotated.output  # etcd took the password
        assert rotated.recap["h2"]["changed"] > 0, rotated.output
        after = {h: [(files(h) / n).read_bytes() for n in
                     ("client.crt", "client.key", "etcd-password")] for h in ("e1", "h2")}
        assert after["e1"] == secrets["e1"]
        assert all(a != b for a, b in zip(after["h2"], secrets["h2"], strict=True))
        assert after["h2"][2] == (passwords / "calico-host.h2").read_bytes()
        assert (pki / "ca.crt").read_bytes() == ca
        assert '"passwords set: calico-host.h2"' in rotated.output, rotated.output
        # ... before h2 registered with it
        access_at = rotated.output.index('"passwords set: calico-host.h2"')
        assert access_at < rotated.output.index("TASK [calico.docker.node : Register this host")
        # only h2's daemons are restarted (skipped here: no systemd, but notified)
        handler = rotated.output.split("RUNNING HANDLER [calico.docker.node : Restart the "
                                       "calico-agent]", 1)
        assert len(handler) == 2, rotated.output
        section = handler[1].split("RUNNING HANDLER", 1)[0].split("TASK [", 1)[0]
        assert "[h2]" in section and "[e1]" not in section, section
        result = probe(h2, "e1")  # the new password works; still h2's records only
        assert result | OWN_ONLY == result and "permission denied" in result["profile"], result

        # a host added while authentication is on: its user exists before it registers
        write_inventory("h2", "h3")
        added = site()
        assert added.recap["h3"]["changed"] > 0, added.output
        assert '"users added: calico-host.h3"' in added.output, added.output
        result = probe(h3, "h2")
        assert result["nodes"] == ["e1", "h2", "h3"], result
        assert result | OWN_ONLY == result and "permission denied" in result["profile"], result
        assert "calico-host.h3" in users()

        # a host removed from the inventory loses its etcd user
        write_inventory("h2")
        removed = site()
        assert '"users removed: calico-host.h3"' in removed.output, removed.output
        assert users() == ["calico-host.e1", "calico-host.h2", "calico-operator", "root"]
        result = lab.exec(h3.ns, sys.executable, "-c", PROBE, url,
                          credentials("h3", "calico-host.h3", "etcd-password"), "h3", "h2",
                          check=False, timeout=60)
        assert result.returncode != 0 and "authentication failed" in result.stderr, result

        # no run printed a password
        secrets = [p.read_text().strip() for p in passwords.iterdir()]
        for run in runs:
            for secret in secrets:
                assert secret not in run.output
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.netns
@pytest.mark.etcd
def test_site_over_tls_with_etcd_auth_off(lab: Lab, tmp_path: Path) -> None:
    """``calico_etcd_auth: false`` (etcd's users managed otherwise): no password is made or
    installed, calico.conf names no etcd user, etcd's authentication stays off (a client
    certificate of the CA alone reads), and a second run changes nothing."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed")
    e1 = lab.host("e1")
    url = "etcds://198.18.0.2:2379"
    root = tmp_path / "e1"
    values = netns_host_vars("e1", e1.ns, tmp_path, "unused")
    values.pop("calico_node_datastore")
    values |= {"calico_node_pki_dir": str(root / "pki"), "calico_policy_datastore": url,
               "calico_etcd_address": e1.ipv4, "calico_etcd_manage_packages": False,
               "calico_etcd_manage_services": False,
               "calico_etcd_config_file": str(root / "etcd.env"),
               "calico_etcd_data_dir": str(root / "data"),
               "calico_etcd_pki_dir": str(root / "etcd-pki"),
               "calico_etcd_health_delay": 1}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"vars": {"calico_etcd_auth": False}, "children": {
        "etcd": {"hosts": {"e1": values}}, "calico_nodes": {"hosts": {"e1": values}}}}}))

    def site(*args: str) -> object:
        return playbook(SITE, inventory, *POLICY, "--skip-tags", "docker", *args,
                        workdir=tmp_path).check()

    site("--tags", "etcd", "--skip-tags", "etcd_health")
    cluster = EtcdCluster(lab, [e1], tmp_path)
    try:
        first = site()
        assert first.recap["e1"]["changed"] > 0
        assert not (tmp_path / "calico-pki" / ".passwords").exists()
        assert not any((root / "pki").glob("*password*"))
        conf = (root / "calico.conf").read_text()
        assert "etcd_user" not in conf and "etcd_password_file" not in conf, conf
        for task in ("TASK [Give every Calico host its etcd user (calico.docker.datastore_access)]",
                     "TASK [calico.docker.policy : Make etcd's users and roles Calico's "
                     "(calico.docker.datastore_access)]"):
            assert first.output.split(task, 1)[1].split("\n\n", 1)[0].split("\n")[1:] == \
                ["skipping: [e1]"], first.output
        assert "--etcd-user" not in unit_exec(root / "calico-agent.service")
        # authentication is off: the host's certificate alone reads what the policy wrote
        code = ("import sys, calico_lib\n"
                "with calico_lib.connect(sys.argv[1], etcd_ca=sys.argv[2], "
                "etcd_cert=sys.argv[3], etcd_key=sys.argv[4]) as c:\n"
                "    print(sorted(p.cidr for p in c.list_pools()))\n")
        out = lab.exec(e1.ns, sys.executable, "-c", code, url, str(root / "pki" / "ca.crt"),
                       str(root / "pki" / "client.crt"), str(root / "pki" / "client.key"),
                       timeout=60)
        assert out.stdout.strip() == "['10.65.0.0/16', 'fd00:65::/64']"
        again = site()
        assert again.changed() == 0, again.output
    finally:
        cluster.stop()


# ------------------------------------------------------------------ calico_lib from a wheelhouse


def copy_source(dest: Path) -> Path:
    dest.mkdir()
    for name in ("pyproject.toml", "LICENSE", "README.md"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "calico_lib", dest / "calico_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def venv_python(venv: Path, code: str) -> str:
    """Run ``code`` with the virtualenv's Python, away from this checkout; its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=venv, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc
    return proc.stdout.strip()


def venv_version(venv: Path) -> str:
    return venv_python(venv, "import importlib.metadata as m; print(m.version('calico-docker'))")


@pytest.mark.slow
def test_calico_lib_virtualenv_from_wheelhouse(tmp_path: Path) -> None:
    python3 = "/usr/bin/python3"
    if subprocess.run([python3, "-m", "ensurepip", "--version"], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("python3-venv is not installed")
    source = copy_source(tmp_path / "source")
    venv = tmp_path / "venv"
    inventory = write_inventory(tmp_path / "inventory.yml", {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        "calico_node_manage_services": False,
        "calico_node_venv": str(venv),
        "calico_node_venv_python3": python3,
        "calico_node_wheelhouse_dir": str(tmp_path / "wheelhouse"),
        "calico_node_wheelhouse_cache": str(tmp_path / "cache"),
        "calico_node_wheelhouse_source": str(source),
    }})
    play = HERE / "calico_lib_play.yml"

    first = playbook(play, inventory, workdir=tmp_path).check()
    assert first.recap["localhost"]["changed"] >= 3, first.output
    version = venv_version(venv)
    assert version.startswith("0.1.0+g"), version
    where = venv_python(venv, "import calico_lib, netaddr, jinja2, pyroute2, etcd3gw; "
                              "print(calico_lib.__file__)")
    assert where.startswith(str(venv)), where
    for script in ("calicoctl", "calico-agent", "calico-docker-plugin"):
        assert (venv / "bin" / script).exists(), script

    again = playbook(play, inventory, workdir=tmp_path).check()
    assert again.recap["localhost"]["changed"] == 0, again.output
    assert len(list((tmp_path / "cache").glob("*.tar"))) == 1

    # the collection's calico_lib changed: a new build, installed in place of the old
    (source / "calico_lib" / "__init__.py").write_text(
        (source / "calico_lib" / "__init__.py").read_text() + "\nWHEELHOUSE_TEST = 1\n")
    changed = playbook(play, inventory, workdir=tmp_path).check()
    assert changed.recap["localhost"]["changed"] > 0, changed.output
    assert venv_version(venv) != version
    assert venv_python(venv, "import calico_lib; print(calico_lib.WHEELHOUSE_TEST)") == "1"

    last = playbook(play, inventory, workdir=tmp_path).check()
    assert last.recap["localhost"]["changed"] == 0, last.output
