"""Discovery rules without a network: config validation, names, TXT records from peers."""

from __future__ import annotations

import pytest

from synapse_core.transport import SERVICE_TYPE, MdnsConfig
from synapse_core.transport.discovery import check_entity_id, instance_label, peer_from_txt

GOOD_TXT: dict[bytes, bytes | None] = {
    b"version": b"1",
    b"protocol": b"synapse",
    b"entity_id": b"node-b",
    b"capabilities": b"tcp,acknowledged, discovery ,bad token!,",
    b"transport_types": b"tcp",
}


def _peer(txt: dict[bytes, bytes | None], addresses: list[str] | None = None, port: int = 4000):
    return peer_from_txt(txt, addresses or ["127.0.0.1"], port, "x._synapse._tcp.local.", 1.0)


def test_config_defaults_stay_on_loopback() -> None:
    config = MdnsConfig()
    assert config.interfaces == ("127.0.0.1",)
    assert config.service_type == SERVICE_TYPE == "_synapse._tcp.local."
    assert config.probe_name


def test_config_normalises() -> None:
    config = MdnsConfig(interfaces=["10.0.0.1", "::1"], ttl=30, query_interval=2)
    assert config.interfaces == ("10.0.0.1", "::1")
    assert isinstance(config.query_interval, float)
    assert config.replace(max_peers=3).max_peers == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interfaces": "127.0.0.1"}, "list of IP address"),
        ({"interfaces": ["eth0"]}, "not an IP address"),
        ({"interfaces": []}, "at least one"),
        ({"service_type": "synapse.local."}, "service_type"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": 1.5}, "ttl"),
        ({"query_interval": 0}, "query_interval"),
        ({"peer_timeout": -1}, "peer_timeout"),
        ({"discovery_timeout": True}, "discovery_timeout"),
        ({"max_peers": 0}, "max_peers"),
    ],
)
def test_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        MdnsConfig(**kwargs)  # type: ignore[arg-type]


def test_instance_labels_are_dns_safe_and_distinct() -> None:
    assert instance_label("node-1_a") == "node-1_a"
    odd = ["node.b", "node b", "nöde", "node/b", "node\\.b", "x" * 80]
    labels = [instance_label(entity_id) for entity_id in odd]
    for label in labels:
        assert len(label) <= 63
        assert all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in label)
    assert len(set(labels)) == len(labels)
    assert instance_label("node.b") != instance_label("node-b")


@pytest.mark.parametrize("bad", ["", "a\x00b", "tab\there", "zw\u200bsp", "é" * 123, 5])
def test_entity_id_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="entity_id"):
        check_entity_id(bad)


def test_a_good_txt_record() -> None:
    peer = _peer(GOOD_TXT, ["ff02::1", "not-an-ip", "0.0.0.0", "10.1.2.3", "127.0.0.1"])
    assert peer is not None
    assert peer.entity_id == "node-b"
    assert (peer.host, peer.port) == ("10.1.2.3", 4000)
    assert peer.addresses == ("10.1.2.3", "127.0.0.1")
    assert peer.capabilities == {"tcp", "acknowledged", "discovery"}
    assert peer.transport_types == {"tcp"}
    assert peer.version == "1"


@pytest.mark.parametrize(
    ("change", "port", "addresses"),
    [
        ({b"protocol": None}, 4000, None),
        ({b"protocol": b"http"}, 4000, None),
        ({b"version": b"2"}, 4000, None),
        ({b"version": None}, 4000, None),
        ({b"entity_id": None}, 4000, None),
        ({b"entity_id": b"\xff\xfe"}, 4000, None),
        ({b"entity_id": b"bell\x07"}, 4000, None),
        ({}, 0, None),
        ({}, 4000, ["224.0.0.251", "garbage"]),
    ],
)
def test_bogus_txt_records_are_ignored(
    change: dict[bytes, bytes | None], port: int, addresses: list[str] | None
) -> None:
    txt = {**GOOD_TXT, **change}
    txt = {k: v for k, v in txt.items() if v is not None or k not in change}
    assert _peer(txt, addresses, port) is None


def test_minor_versions_and_odd_capabilities_are_tolerated() -> None:
    peer = _peer({**GOOD_TXT, b"version": b"1.7", b"capabilities": b"\xff\xfe"})
    assert peer is not None
    assert peer.capabilities == frozenset()


def test_ids_differing_only_in_case_get_labels_differing_without_case() -> None:
    assert instance_label("node") == "node"  # lower-case ids keep their labels
    assert instance_label("node-1_a") == "node-1_a"
    variants = ["node", "Node", "NODE", "nodE"]
    labels = [instance_label(v).lower() for v in variants]
    assert len(set(labels)) == len(variants)
    assert all(len(label) <= 63 for label in labels)
