"""Fixtures shared by every test directory."""

from __future__ import annotations

import socket

import pytest


def _loopback_multicast_problem() -> str | None:
    """Why multicast on 127.0.0.1 does not work here (so mDNS tests must skip), or ``None``.

    Sends one datagram to an mDNS-style group on a private port through the loopback interface
    and waits up to a second for it to come back.
    """
    group, iface = "224.0.0.251", "127.0.0.1"
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind((group, 0))  # the group itself: nothing else reaches this socket
        port = receiver.getsockname()[1]
        membership = socket.inet_aton(group) + socket.inet_aton(iface)
        receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        receiver.settimeout(1.0)
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sender.sendto(b"synapse-probe", (group, port))
        data, _ = receiver.recvfrom(64)
    except OSError as exc:
        return (
            f"multicast over loopback does not work here ({exc}); mDNS tests need it "
            "(as root: ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo)"
        )
    finally:
        receiver.close()
        sender.close()
    return None if data == b"synapse-probe" else "multicast over loopback returned garbage"


@pytest.fixture(scope="session")
def loopback_multicast() -> None:
    """Skip the test, saying why, when mDNS cannot work over loopback on this machine."""
    problem = _loopback_multicast_problem()
    if problem is not None:
        pytest.skip(problem)
