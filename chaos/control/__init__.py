"""The control side: drives a Toxiproxy API (ours or the real one) from synchronous code.

``client`` (:class:`ToxiproxyClient`, the HTTP API, kept-alive connections from ``httppool``),
``proxy`` (:class:`Proxy`, one proxy's handle and its fault methods), ``faults`` (the fault
objects those methods return), ``faultspec`` (fault kinds, their parameters, the toxics each is
built from), ``livefaults`` (which faults this process holds, toxic names, owners) and
``traffic`` (the embedded server's record of connections and bytes); ``types`` holds the
records the API returns (:class:`ProxyInfo`, :class:`ToxicInfo`).

Users import these names from :mod:`chaos`.
"""

from chaos.control.client import ToxiproxyClient
from chaos.control.faults import Fault, FlappingFault
from chaos.control.faultspec import FAULT_KINDS
from chaos.control.proxy import Proxy
from chaos.control.types import ProxyInfo, ToxicInfo

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FlappingFault",
    "Proxy",
    "ProxyInfo",
    "ToxicInfo",
    "ToxiproxyClient",
]
