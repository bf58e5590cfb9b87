from __future__ import annotations

import pytest

from ansible_collections.calico.docker.plugins.modules import profile
from tests.unit_modules.helpers import client, failed, ok

WEB_IN = [{"action": "allow", "protocol": "tcp", "dst_ports": [80, "8000:8080"]},
          {"action": "allow", "src_tag": "web"}]
WEB_OUT = [{"action": "deny", "dst_net": ["169.254.169.254/32"]}, {"action": "allow"}]


@pytest.mark.parametrize("args, field", [
    ({"name": "bad name"}, "name"),
    ({"name": "web", "inbound_rules": [{"action": "maybe"}]}, "inbound_rules[0].action"),
    ({"name": "web", "inbound_rules": [{"action": "allow"}, {"dst_ports": [80]}]},
     "inbound_rules[1].dst_ports"),
    ({"name": "web", "outbound_rules": [{"colour": "red"}]}, "outbound_rules[0].colour"),
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
