"""Regenerate ``worker/extract/english_words.txt`` from ``wordfreq`` (a developer tool).

    pip install wordfreq && python scripts/data/make_english_words.py

The gazetteer reads the file while it compiles: a town whose name is also a frequent
English word or first name ("Hope", "Liberty", "Jasper") is marked only with place
context. ``wordfreq`` is not a dependency of docagents; its English list (``large``)
is read once here and the words at or above :data:`MIN_ZIPF` are written with their
Zipf frequency times ten. The list is derived from wordfreq's data (CC BY-SA 4.0,
Robyn Speer and contributors); the file's header says so.
"""

from __future__ import annotations

import math
import re
from importlib.metadata import version
from pathlib import Path

import wordfreq

MIN_ZIPF = 2.5
OUT = Path(__file__).resolve().parents[2] / "worker" / "extract" / "english_words.txt"
_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")


def main() -> None:
    freqs = wordfreq.get_frequency_dict("en", "large")
    rows = sorted(
        (word, round(math.log10(freq * 1e9) * 10))
        for word, freq in freqs.items()
        if _WORD.fullmatch(word) and math.log10(freq * 1e9) >= MIN_ZIPF
    )
    header = (
        f"# English words with their Zipf frequency x10, from wordfreq {version('wordfreq')} "
        "(data CC BY-SA 4.0, Robyn Speer and contributors).\n"
        "# Regenerate with scripts/data/make_english_words.py.\n"
    )
    OUT.write_text(header + "".join(f"{w} {z}\n" for w, z in rows), "utf-8")
    print(f"{len(rows)} words -> {OUT}")


if __name__ == "__main__":
    main()
