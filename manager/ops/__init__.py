"""What operators see: the stats box, Prometheus and ``/healthz``, sd_notify,
process titles, retention of history.

May import :mod:`manager.store`, :mod:`manager.errors` and :mod:`manager.config`
only.
"""
