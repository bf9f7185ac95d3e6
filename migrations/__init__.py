"""Numbered SQL migrations (``NNNN_name.sql``), applied in order, each once.

Run them with ``docagents migrate``.
"""
