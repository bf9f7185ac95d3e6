"""What operators see and what keeps the host tidy: the stats box, Prometheus and
``/healthz``, sd_notify, process titles, retention of history.

:mod:`~manager.ops.stats` (the stats box and ``stats --json``, pure rendering),
:mod:`~manager.ops.telemetry` (metrics registry and HTTP server),
:mod:`~manager.ops.sdnotify` (systemd notifications), :mod:`~manager.ops.proctitle`
(process titles), :mod:`~manager.ops.retention` (pruning old rows),
:mod:`~manager.ops.limits` (the open-file limit of the long-running commands).

Layer (pyproject.toml, ``[tool.importlinter]``): may import only the layers below
it, :mod:`manager.store`, :mod:`manager.database`, :mod:`manager.embedded`,
:mod:`manager.config` and :mod:`manager.errors`; everything above may import it.
"""
