"""Fault injection for Synapse: a Toxiproxy-compatible server, its client, faults and scenarios."""

from chaos.backends import (
    Backend,
    EmbeddedBackend,
    ExternalBackend,
    resolve_backend,
)
from chaos.control.client import ToxiproxyClient
from chaos.control.faults import Fault, FlappingFault
from chaos.control.faultspec import FAULT_KINDS
from chaos.control.proxy import Proxy
from chaos.control.types import ProxyInfo, ToxicInfo
from chaos.embedded import EmbeddedToxiproxy
from chaos.errors import (
    BackendError,
    BackendUnavailable,
    ChaosError,
    EmbeddedServerError,
    FaultError,
    InvalidFault,
    InvalidToxic,
    NotFound,
    ProxyExists,
    ScenarioBindingError,
    ScenarioError,
    ScenarioFileError,
    ToxiproxyError,
    ToxiproxyUnavailable,
    UnknownScenario,
)
from chaos.scenarios.runner import RunnerEvent, ScenarioRunner
from chaos.scenarios.scenario import (
    Scenario,
    ScenarioStep,
    load_scenario,
    parse_scenario,
    scenario_library,
)
from chaos.server import ChaosServer

__all__ = [
    "FAULT_KINDS",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "ChaosError",
    "ChaosServer",
    "EmbeddedBackend",
    "EmbeddedServerError",
    "EmbeddedToxiproxy",
    "ExternalBackend",
    "Fault",
    "FaultError",
    "FlappingFault",
    "InvalidFault",
    "InvalidToxic",
    "NotFound",
    "Proxy",
    "ProxyExists",
    "ProxyInfo",
    "RunnerEvent",
    "Scenario",
    "ScenarioBindingError",
    "ScenarioError",
    "ScenarioFileError",
    "ScenarioRunner",
    "ScenarioStep",
    "ToxicInfo",
    "ToxiproxyClient",
    "ToxiproxyError",
    "ToxiproxyUnavailable",
    "UnknownScenario",
    "load_scenario",
    "parse_scenario",
    "resolve_backend",
    "scenario_library",
]
