"""The roles and playbooks/site.yml, run for real with ``ansible-playbook``.

* localhost (connection local, an SQLite datastore in tmp_path): the policy role converges,
  runs again with ``changed=0``, and ``--check --diff`` of a policy change shows the change
  and writes nothing;
* two network namespaces as hosts (``ansible_connection: local`` with a wrapper interpreter
  that runs every module inside its namespace): the real site.yml (node, policy, docker and
  dataplane plays, without systemd, packages or the venv install) converges, runs again with
  ``changed=0``; after a profile change, ``--check --diff`` shows the iptables rule diff and
  leaves every namespace's iptables as they were; the real run applies it, and the next run
  changes nothing;
* the node role's calico_lib install from a controller-built wheelhouse into a virtualenv
  (needs the package index on the controller, as in production), idempotent, and
  reinstalled exactly when the source changed;
* ``ansible-playbook --syntax-check`` of site.yml with the example inventory, and
  ``ansible-lint`` (production profile) of the roles, playbooks and inventory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import calico_lib
from calico_lib import Endpoint
from tests.netns import Lab, missing_requirements
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


# ------------------------------------------------------------------ localhost: the policy role


def test_policy_role_on_localhost(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    inventory = write_inventory(tmp_path / "inventory.yml", {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "policy_python": sys.executable,
        "policy_datastore": url,
    }})
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


@pytest.fixture
def lab():
    why = missing_requirements()
    if why:
        pytest.skip(why)
    with Lab() as lab:
        yield lab


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
    inventory = write_inventory(tmp_path / "inventory.yml", {
        h.name: netns_host_vars(h.name, h.ns, tmp_path, url) for h in hosts})

    def site(*args: str) -> object:
        return playbook(SITE, inventory, *args, workdir=tmp_path).check()

    first = site(*POLICY)
    assert all(first.recap[h.name]["changed"] > 0 for h in hosts), first.output
    # what the node role and the dataplane entry point did, host by host
    with calico_lib.connect(url) as client:
        nodes = {n.name: n.ipv4 for n in client.list_nodes()}
    assert nodes == {"h1": "198.18.0.2", "h2": "198.18.0.3"}
    for host in hosts:
        root = tmp_path / host.name
        assert (root / "calico.conf").read_text().splitlines()[-1] == f"datastore = {url}"
        assert "net.ipv4.ip_forward=1" in (root / "sysctl.conf").read_text()
        assert lab.sysctl(host.ns, "net.ipv4.ip_forward") == "1"
        bird = (root / "bird.conf").read_text()
        assert f"router id {nodes[host.name]};" in bird
        assert "198.18.0.254" in bird  # the global peer
        assert PASSWORD not in first.output
        # the units, from calico_lib/data, with this host's options (not started: no systemd)
        agent = (root / "calico-agent.service").read_text()
        assert "ExecStart=/opt/calico/venv/bin/calico-agent $CALICO_AGENT_OPTS" in agent
        assert f"EnvironmentFile=-{root}/calico-agent.env" in agent
        assert (root / "calico-agent.env").read_text().splitlines()[-1] == (
            f'CALICO_AGENT_OPTS="--hostname {host.name} --bird-config {root}/bird.conf '
            f'--bird-socket {root}/bird.ctl --lock-file {root}/dataplane.lock '
            f'--datastore {url}"')
        plugin = (root / "calico-docker-plugin.service").read_text()
        assert "Before=docker.service" in plugin
        assert "ExecStart=/opt/calico/venv/bin/calico-docker-plugin $CALICO_PLUGIN_OPTS" in plugin
        assert f"--hostname {host.name}" in (root / "calico-docker-plugin.env").read_text()
    h2_rules = lab.exec(hosts[1].ns, "iptables-save").stdout
    assert "--dports 80 " in h2_rules or "--dport 80 " in h2_rules, h2_rules

    again = site(*POLICY)
    assert again.changed() == 0, again.output

    # the profile change reaches the datastore (the policy play alone) ...
    changed = site(*POLICY_CHANGED, "--tags", "policy")
    assert changed.changed() == 1, changed.output
    before = {h.name: ns_state(lab, h.ns) for h in hosts}
    stored = intent(url)

    # ... and is previewed on every host: the rule diff, nothing applied
    preview = site(*POLICY_CHANGED, "--check", "--diff")
    assert preview.recap["h2"]["changed"] == 1, preview.output
    assert preview.recap["h1"]["changed"] == 0, preview.output
    assert "would be applied" in preview.output
    assert "--dports 80,8080" in preview.output, preview.output
    assert {h.name: ns_state(lab, h.ns) for h in hosts} == before
    assert intent(url) == stored

    applied = site(*POLICY_CHANGED)
    assert applied.recap["h2"]["changed"] == 1, applied.output
    assert "--dports 80,8080" in lab.exec(hosts[1].ns, "iptables-save").stdout

    last = site(*POLICY_CHANGED)
    assert last.changed() == 0, last.output


# ------------------------------------------------------------------ the docker role's networks


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
            "docker_manage_packages": False,
            "docker_manage_services": False,
            "docker_systemd_dir": str(tmp_path),
            "docker_plugin_env_file": str(tmp_path / "calico-docker-plugin.env"),
            "docker_host": f"unix://{lab.docker_socket}",
            "docker_plugin_socket_dir": lab.socket_dir,
            "docker_calico_networks": networks,
        }})
        play = HERE / "docker_play.yml"
        first = playbook(play, inventory, workdir=tmp_path).check()
        assert first.recap["dockhost"]["changed"] == 3, first.output
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


def test_etcd_role_three_members(lab: Lab, tmp_path: Path) -> None:
    """The etcd role's configuration of three members forms one healthy cluster.

    No systemd here: the first run (without its health check) writes each member's
    environment file, the test starts etcd with it in each namespace (as etcd.service would),
    then the whole role runs again: healthy everywhere, nothing to change.
    """
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed")
    hosts = [lab.host(f"e{i}") for i in (1, 2, 3)]
    host_vars = {}
    for host in hosts:
        values = netns_host_vars(host.name, host.ns, tmp_path, "unused")
        root = tmp_path / host.name
        host_vars[host.name] = {
            k: v for k, v in values.items()
            if k.startswith("ansible_")} | {
            "etcd_manage_packages": False,
            "etcd_manage_services": False,
            "etcd_config_file": str(root / "etcd.env"),
            "etcd_data_dir": str(root / "data"),
            "etcd_health_delay": 1,
        }
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"children": {"etcd": {"hosts": host_vars}}}}))
    play = HERE / "etcd_play.yml"

    first = playbook(play, inventory, "--skip-tags", "etcd_health", workdir=tmp_path).check()
    assert all(first.recap[h.name]["changed"] == 2 for h in hosts), first.output
    members = "e1=http://198.18.0.2:2380,e2=http://198.18.0.3:2380,e3=http://198.18.0.4:2380"
    procs = []
    try:
        for host in hosts:
            env = env_file(tmp_path / host.name / "etcd.env")
            assert env["ETCD_INITIAL_CLUSTER"] == members
            assert env["ETCD_LISTEN_CLIENT_URLS"] == (
                f"http://{host.ipv4}:2379,http://127.0.0.1:2379")
            log = open(tmp_path / f"{host.name}.log", "wb")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen(
                ["ip", "netns", "exec", host.ns, "etcd"], env={"PATH": os.environ["PATH"], **env},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT), log))

        again = playbook(play, inventory, workdir=tmp_path).check()
        assert again.changed() == 0, again.output
        assert again.output.count("Wait until the member is healthy") == 1

        # one cluster: what one member stores, another serves (from inside e1, the node
        # role's default datastore URL for this etcd group)
        url = "etcd://198.18.0.2:2379,198.18.0.3:2379,198.18.0.4:2379"
        code = ("import sys, calico_lib\n"
                "with calico_lib.connect(sys.argv[1]) as c:\n"
                "    c.add_pool(calico_lib.IPPool('10.77.0.0/16'))\n"
                "with calico_lib.connect('etcd://198.18.0.4:2379') as c:\n"
                "    print([p.cidr for p in c.list_pools()])\n")
        out = lab.exec(hosts[0].ns, sys.executable, "-c", code, url, timeout=60).stdout
        assert out.strip() == "['10.77.0.0/16']"
    finally:
        for proc, log in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


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
        "node_manage_services": False,
        "node_venv": str(venv),
        "node_venv_python3": python3,
        "node_wheelhouse_dir": str(tmp_path / "wheelhouse"),
        "node_wheelhouse_cache": str(tmp_path / "cache"),
        "node_wheelhouse_source": str(source),
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
