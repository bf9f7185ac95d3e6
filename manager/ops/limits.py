"""The process's open-file limit, raised to what the system allows for long-running commands.

A manager holds about three descriptors per agent (its pipe, the process
sentinel, a /proc handle) and the docserver one per connection. The common
default soft limit of 1,024 would stop a manager near 330 agents although the
hard limit (often 524,288 under systemd, set with ``LimitNOFILE=``) allows far
more. As Go's runtime and nginx do, the long-running commands raise their soft
limit to the hard limit at start; a limit that cannot be raised is logged and
left as it is.
"""

from __future__ import annotations

import resource

import structlog

__all__ = ["raise_open_files_limit"]

log = structlog.get_logger(__name__)

#: Never ask for more than this, even when the hard limit is unlimited (select()
#: users and per-fd tables in libraries misbehave with absurd limits).
CEILING = 1 << 20


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one (capped at :data:`CEILING`).

    Returns ``(before, after)`` soft limits; they are equal when nothing changed.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("open_files_limit_kept", soft=soft, hard=hard, error=str(exc))
            return soft, soft
        log.debug("open_files_limit_raised", before=soft, after=target)
        return soft, target
    return soft, soft
