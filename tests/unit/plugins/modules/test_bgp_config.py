from __future__ import annotations

import pytest

from ansible_collections.calico.docker.plugins.modules import bgp_config
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import client, failed, ok
from calico_lib import keys


@pytest.mark.parametrize("args, field", [
    ({"as_number": 0}, "as_number"),
    ({"as_number": "many"}, "as_number"),
    ({"node_to_node_mesh": "sometimes"}, "node_to_node_mesh"),
    ({"route_reflector": True}, "route_reflector"),
])
def test_bad_arguments_name_the_field(url, args, field) -> None:
    msg = failed(bgp_config, dict(args, datastore=url))
    assert field in msg


def test_defaults_are_no_change(url) -> None:
    out = ok(bgp_config, {"as_number": 64512, "node_to_node_mesh": True, "datastore": url})
    assert out["changed"] is False
    assert out["bgp_config"] == {"as_number": 64512, "node_to_node_mesh": True}


def test_set_then_no_change_and_left_out_settings_stay(url) -> None:
    first = ok(bgp_config, {"as_number": 65100, "datastore": url})
    assert first["changed"] is True
    assert first["diff"] == {"before": {"as_number": 64512, "node_to_node_mesh": True},
                             "after": {"as_number": 65100, "node_to_node_mesh": True}}
    assert ok(bgp_config, {"as_number": 65100, "datastore": url})["changed"] is False
    out = ok(bgp_config, {"node_to_node_mesh": False, "datastore": url})
    assert out["bgp_config"] == {"as_number": 65100, "node_to_node_mesh": False}
    with client(url) as c:
        assert c.get_bgp_config().to_dict() == {"as_number": 65100, "node_to_node_mesh": False}


def test_check_mode_reports_and_writes_nothing(url) -> None:
    out = ok(bgp_config, {"node_to_node_mesh": False, "datastore": url}, check=True)
    assert out["changed"] is True
    assert out["diff"]["after"]["node_to_node_mesh"] is False
    with client(url) as c:
        assert c.get_bgp_config().node_to_node_mesh is True
        assert c.store.get(keys.BGP_CONFIG) is None  # nothing was written
