"""Activity sources: where the manager hears that a document became active or idle.

A notification (NOTIFY, Supabase Realtime) is only a wake-up hint; the truth is
``document_activity`` read by id cursor. May import :mod:`manager.store`,
:mod:`manager.errors` and :mod:`manager.config`.
"""
