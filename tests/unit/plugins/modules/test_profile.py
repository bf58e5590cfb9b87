from __future__ import annotations

import pytest

import calico_lib
from ansible_collections.calico.docker.plugins.modules import profile
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import client, failed, ok

WEB_IN = [{"action": "allow", "protocol": "tcp", "dst_ports": [80, "8000:8080"]},
          {"action": "allow", "src_tag": "web"}]
WEB_OUT = [{"action": "deny", "dst_net": ["169.254.169.254/32"]}, {"action": "allow"}]


@pytest.mark.parametrize("args, field", [
    ({"name": "bad name"}, "name"),
    # Ansible refuses what the rule suboptions do not allow, naming the list and the field
    ({"name": "web", "inbound_rules": [{"action": "maybe"}]},
     "value of action must be one of: allow, deny, log, got: maybe found in inbound_rules"),
    ({"name": "web", "inbound_rules": [{"action": "allow"}, {"dst_ports": [80]}]},
     "inbound_rules[1].dst_ports"),
    ({"name": "web", "outbound_rules": [{"colour": "red"}]},
     "module: outbound_rules.colour. Supported parameters include: action"),
    ({"name": "web", "outbound_rules": ["allow"]}, "outbound_rules"),
    ({"name": "web", "labels": {"tier": "a b"}}, "labels"),
    ({"name": "web", "tags": ["no spaces"]}, "tags"),
    ({"name": "web", "default_rules": True, "inbound_rules": []}, "default_rules"),
    ({"name": "web", "state": "maybe"}, "state"),
])
def test_bad_arguments_name_the_field(url, args, field) -> None:
    msg = failed(profile, dict(args, datastore=url))
    assert field in msg
    with client(url) as c:
        assert c.list_profiles() == []


def test_create_then_no_change(url) -> None:
    args = {"name": "web", "labels": {"tier": "frontend"}, "inbound_rules": WEB_IN,
            "outbound_rules": WEB_OUT, "datastore": url}
    first = ok(profile, args)
    assert first["changed"] is True
    assert first["diff"]["before"] == {}
    after = first["diff"]["after"]
    assert after["tags"] == ["web"]  # a new profile is tagged with its name
    assert after["inbound_rules"][0] == {"action": "allow", "protocol": "tcp",
                                         "dst_ports": [80, "8000:8080"]}
    assert first["profile"] == after
    assert ok(profile, args)["changed"] is False
    with client(url) as c:
        assert c.get_profile("web").to_dict() == after


def test_rules_are_replaced_exactly_and_left_out_lists_stay(url) -> None:
    ok(profile, {"name": "web", "inbound_rules": WEB_IN, "outbound_rules": WEB_OUT,
                 "datastore": url})
    out = ok(profile, {"name": "web", "inbound_rules": [{"action": "allow",
                                                         "protocol": "icmp"}],
                       "datastore": url})
    assert out["changed"] is True
    assert len(out["diff"]["before"]["inbound_rules"]) == 2
    assert out["diff"]["after"]["inbound_rules"] == [{"action": "allow", "protocol": "icmp",
                                                      "ip_version": 4}]
    assert out["diff"]["after"]["outbound_rules"] == out["diff"]["before"]["outbound_rules"]
    out = ok(profile, {"name": "web", "outbound_rules": [], "datastore": url})
    with client(url) as c:
        stored = c.get_profile("web")
        assert stored.outbound_rules == []
        assert len(stored.inbound_rules) == 1


def test_default_rules(url) -> None:
    out = ok(profile, {"name": "frontend", "default_rules": True, "labels": {"a": "b"},
                       "datastore": url})
    assert out["changed"] is True
    assert out["profile"] == {"name": "frontend", "tags": ["frontend"], "labels": {"a": "b"},
                              "inbound_rules": [{"action": "allow", "src_tag": "frontend"}],
                              "outbound_rules": [{"action": "allow"}]}
    again = ok(profile, {"name": "frontend", "default_rules": True, "datastore": url})
    assert again["changed"] is False  # labels left out stay


def test_default_rules_keep_a_network_profile_a_network_profile(url) -> None:
    """Resetting the rules of a Docker network's profile kept its rules but dropped the
    network mark: the plugin would then refuse that network's containers."""
    ok(profile, {"name": "frontend", "docker_network": True, "inbound_rules": [],
                 "datastore": url})
    out = ok(profile, {"name": "frontend", "default_rules": True, "datastore": url})
    assert out["changed"] is True
    with client(url) as c:
        stored = c.get_profile("frontend")
        assert stored.docker_network is True
        assert stored.inbound_rules == calico_lib.Profile.with_default_rules(
            "frontend").inbound_rules


def test_tags_and_labels_replaced_when_given(url) -> None:
    ok(profile, {"name": "db", "tags": ["db", "backend"], "labels": {"x": "1"},
                 "datastore": url})
    out = ok(profile, {"name": "db", "tags": ["db"], "labels": {}, "datastore": url})
    assert out["changed"] is True
    assert (out["profile"]["tags"], out["profile"]["labels"]) == (["db"], {})


def test_check_mode_reports_and_writes_nothing(url) -> None:
    out = ok(profile, {"name": "web", "default_rules": True, "datastore": url}, check=True)
    assert out["changed"] is True and out["diff"]["after"]["name"] == "web"
    with client(url) as c:
        assert c.list_profiles() == []
    ok(profile, {"name": "web", "default_rules": True, "datastore": url})
    out = ok(profile, {"name": "web", "inbound_rules": [], "datastore": url}, check=True)
    assert out["changed"] is True and out["diff"]["after"]["inbound_rules"] == []
    out = ok(profile, {"name": "web", "state": "absent", "datastore": url}, check=True)
    assert out["changed"] is True
    with client(url) as c:
        assert len(c.get_profile("web").inbound_rules) == 1


def test_absent(url) -> None:
    ok(profile, {"name": "web", "default_rules": True, "datastore": url})
    out = ok(profile, {"name": "web", "state": "absent", "datastore": url})
    assert out["changed"] is True
    assert out["diff"]["before"]["name"] == "web" and out["diff"]["after"] == {}
    assert ok(profile, {"name": "web", "state": "absent", "datastore": url})["changed"] is False
    with client(url) as c:
        assert c.list_profiles() == []


# ------------------------------------------------------------- rules as typed suboptions

#: a rule with many of the fields, in the forms a task writes them
FULL_RULE = {"action": "deny", "protocol": "TCP", "src_net": ["10.0.0.0/8"],
             "not_src_net": ["10.1.0.0/16"], "src_tag": "web", "not_dst_tag": "db",
             "dst_ports": [80, "8000:8080", "443"], "not_src_ports": ["1:1023"],
             "ip_version": 4}


def test_an_unknown_rule_field_is_refused_by_ansible_naming_it(url) -> None:
    msg = failed(profile, {"name": "web", "inbound_rules": [{"action": "allow"},
                                                            {"dst_port": [80]}],
                           "datastore": url})
    assert msg.startswith("Unsupported parameters for ")
    assert "inbound_rules.dst_port." in msg and "dst_ports" in msg  # names it and the choices
    with client(url) as c:
        assert c.list_profiles() == []


@pytest.mark.parametrize("rule, words", [
    ({"protocol": "icmp", "icmp_type": "echo"}, ["icmp_type", "inbound_rules", "int"]),
    ({"src_net": {"cidr": "10.0.0.0/8"}}, ["src_net", "inbound_rules", "list"]),
    ({"ip_version": 5}, ["ip_version", "4, 6", "inbound_rules"]),
    ({"action": "Allow"}, ["action", "allow, deny, log"]),
])
def test_a_wrong_type_or_value_is_refused_by_ansible(url, rule, words) -> None:
    msg = failed(profile, {"name": "web", "inbound_rules": [rule], "datastore": url})
    for word in words:
        assert word in msg, msg
    with client(url) as c:
        assert c.list_profiles() == []


def test_suboptions_store_only_the_fields_given_and_rerun_changes_nothing(url) -> None:
    args = {"name": "web", "inbound_rules": [FULL_RULE, {"protocol": 6, "dst_ports": "22"},
                                             {"protocol": "icmp", "icmp_type": "8"}],
            "outbound_rules": [{}], "datastore": url}
    first = ok(profile, args)
    assert first["changed"] is True
    stored = first["profile"]
    assert stored["inbound_rules"] == [
        {"action": "deny", "protocol": "tcp", "src_net": ["10.0.0.0/8"],
         "not_src_net": ["10.1.0.0/16"], "src_tag": "web", "not_src_ports": ["1:1023"],
         "not_dst_tag": "db", "dst_ports": [80, "8000:8080", 443], "ip_version": 4},
        {"action": "allow", "protocol": 6, "dst_ports": [22]},
        {"action": "allow", "protocol": "icmp", "icmp_type": 8, "ip_version": 4},
    ]
    assert stored["outbound_rules"] == [{"action": "allow"}]  # action defaults to allow
    again = ok(profile, args)
    assert again["changed"] is False
    assert again["diff"]["before"] == again["diff"]["after"] == stored
    with client(url) as c:
        assert c.get_profile("web").to_dict() == stored


def test_rules_stored_before_suboptions_are_unchanged(url) -> None:
    """A profile written by the library (calicoctl, an older collection) is what the
    module with suboptions wants: no change, no diff."""
    import calico_lib

    with client(url) as c:
        c.put_profile(calico_lib.Profile.from_dict({
            "name": "web", "tags": ["web"], "inbound_rules": WEB_IN, "outbound_rules": WEB_OUT}))
    out = ok(profile, {"name": "web", "inbound_rules": WEB_IN, "outbound_rules": WEB_OUT,
                       "datastore": url})
    assert out["changed"] is False
