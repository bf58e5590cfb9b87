"""``ansible-doc calico.docker.<module>`` works from the checkout for every module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ansible

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "modules"))
                 if f.endswith(".py") and not f.startswith("_"))
ANSIBLE_DOC = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
if not os.path.exists(ANSIBLE_DOC):
    ANSIBLE_DOC = shutil.which("ansible-doc") or ANSIBLE_DOC


def ansible_doc(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=REPO, ANSIBLE_NOCOLOR="1")
    return subprocess.run([ANSIBLE_DOC, *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120, check=False)


def test_every_module_is_there() -> None:
    assert MODULES == ["bgp_config", "bgp_peer", "bird_config", "calico_info", "dataplane",
                       "datastore_access", "docker_network", "ip_pool", "node", "profile"]


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc(module: str) -> None:
    proc = ansible_doc(f"calico.docker.{module}")
    assert proc.returncode == 0, proc.stderr
    assert f"calico.docker.{module}" in proc.stdout
    assert "WARNING" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr


def test_docs_are_complete() -> None:
    proc = ansible_doc("--json", *[f"calico.docker.{m}" for m in MODULES])
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)
    assert sorted(docs) == [f"calico.docker.{m}" for m in MODULES]
    for name, doc in docs.items():
        assert doc["doc"]["short_description"], name
        assert doc["doc"]["description"], name
        assert doc["examples"].strip(), name
        assert doc["return"], name
        assert doc["doc"]["attributes"]["check_mode"]["support"] == "full", name
        for option, spec in doc["doc"]["options"].items():
            assert spec.get("description"), f"{name} {option}"
            assert spec.get("type"), f"{name} {option}"


class Captured(Exception):
    pass


def argument_spec(module_name: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The argument_spec a module's main() builds its AnsibleModule with."""
    import importlib

    from ansible.module_utils import basic

    def capture(self, argument_spec, **kwargs):
        raise Captured(argument_spec, kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "__init__", capture)
    module = importlib.import_module(f"ansible_collections.calico.docker.plugins.modules."
                                     f"{module_name}")
    with pytest.raises(Captured) as info:
        module.main()
    spec, kwargs = info.value.args
    assert kwargs.get("supports_check_mode") is True, module_name
    return spec


def test_argument_specs_match_the_documentation(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ansible-test's validate-modules checks first: every option documented as coded."""
    proc = ansible_doc("--json", *[f"calico.docker.{m}" for m in MODULES])
    docs = json.loads(proc.stdout)
    for module in MODULES:
        spec = argument_spec(module, monkeypatch)
        documented = docs[f"calico.docker.{module}"]["doc"]["options"]
        compare_options(module, spec, documented)


def compare_options(where: str, spec: dict, documented: dict) -> None:
    """Every option of ``spec`` documented as coded, suboptions included."""
    assert sorted(spec) == sorted(documented), where
    for name, coded in spec.items():
        doc = documented[name]
        here = f"{where}.{name}"
        assert doc.get("description"), here
        assert doc.get("type", "str") == coded.get("type", "str"), here
        assert doc.get("default") == coded.get("default"), here
        assert doc.get("choices") == coded.get("choices"), here
        assert bool(doc.get("required")) == bool(coded.get("required")), here
        assert doc.get("elements") == coded.get("elements"), here
        assert doc.get("aliases", []) == coded.get("aliases", []), here
        if "password" in name:  # a secret is never logged; a path to one says so
            wanted = coded.get("type") != "path"
            assert coded.get("no_log") is wanted, here
        assert ("options" in coded) == ("suboptions" in doc), here
        if "options" in coded:
            compare_options(here, coded["options"], doc["suboptions"])


def test_profile_rule_suboptions_are_the_fields_of_a_rule(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """A rule field added to calico_lib.model.Rule is typed in the profile module too."""
    from dataclasses import fields

    from calico_lib.model import Rule

    spec = argument_spec("profile", monkeypatch)
    for key in ("inbound_rules", "outbound_rules"):
        assert sorted(spec[key]["options"]) == sorted(f.name for f in fields(Rule)), key
