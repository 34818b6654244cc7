"""Health endpoints a service embeds: ``/health``, ``/breakers``, ``/metrics``, a live dashboard.

::

    from synapse_core.health import HealthEndpoints, serve_health

    server = serve_health()                 # its own port, a background thread: server.url
    endpoints = HealthEndpoints(critical=["payments"])
    starlette_app.mount("/ops", endpoints.asgi)     # or any ASGI server
    flask_app.wsgi_app = DispatcherMiddleware(flask_app.wsgi_app, {"/ops": endpoints.wsgi})

No web framework is needed (the standalone server uses the standard library). Paths, relative
to where they are mounted; ``GET`` and ``HEAD`` (others get 405, other paths 404):

* ``/health``: 200 while no critical breaker is open (every breaker is critical unless
  ``critical=`` says otherwise), else 503; the body names each breaker and its state.
* ``/breakers``: every breaker's state, stats, config and recent transitions, with a
  ``schema_version`` (documented in ``docs/health.md``).
* ``/metrics``: Prometheus text (``synapse_core.metrics``), OpenMetrics when asked.
* ``/dashboard``: a self-contained live page; ``/events``: its server-sent events.
"""

from synapse_core.health.documents import SCHEMA_VERSION
from synapse_core.health.endpoints import PATHS, HealthEndpoints
from synapse_core.health.server import HealthServer, serve_health

__all__ = ["PATHS", "SCHEMA_VERSION", "HealthEndpoints", "HealthServer", "serve_health"]
