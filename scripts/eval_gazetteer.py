"""Precision and recall of the offline gazetteer on the labelled dev set.

    python scripts/eval_gazetteer.py [--data scripts/data/gazetteer_devset.jsonl] [-v]

Each line of the data set is a sentence with the place texts it names (cities,
countries, US states, continents; a "City, Region" pair counts once, as the city) and
a split: "heldout" sentences were written before the extractor was tuned and were not
looked at while tuning. A prediction is a true positive when its text matches an
expected text of the sentence (each expected occurrence used once). Precision per kind
uses the predicted kind, recall the expected kind. "where" labels check the
disambiguation: the chosen display name must contain them.

Also prints the gazetteer's load time and the RSS it adds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.extract.gazetteer import load_gazetteer
from worker.extract.gazetteer_extractor import GazetteerExtractor

DEFAULT_DATA = Path(__file__).parent / "data" / "gazetteer_devset.jsonl"
KINDS = ("city", "country", "us_state", "continent")


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "  n/a"


async def evaluate(rows: list[dict], verbose: bool) -> None:
    gaz = load_gazetteer()
    extractor = GazetteerExtractor(gaz)
    by_split: dict[str, dict[str, Counter]] = {}
    for row in rows:
        stats = by_split.setdefault(
            row["split"], {"tp": Counter(), "fp": Counter(), "fn": Counter(), "where": Counter()}
        )
        places = (await extractor.extract([row["text"]])).places
        expected = list(row["places"])
        for place in places:
            kind = (
                gaz.by_id(place.geonames_id).kind
                if place.geonames_id and gaz.by_id(place.geonames_id)
                else "country"
            )
            match = next((e for e in expected if e["text"] == place.text), None)
            if match is None:
                stats["fp"][kind] += 1
                if verbose:
                    print(f"FP {row['id']}: {place.text!r} -> {place.name}")
                continue
            expected.remove(match)
            stats["tp"][match["kind"]] += 1
            stats["tp"]["pred:" + kind] += 1
            if "where" in match:
                ok = match["where"] in place.name
                stats["where"]["ok" if ok else "bad"] += 1
                if verbose and not ok:
                    print(
                        f"WHERE {row['id']}: {place.text!r} -> {place.name} (want {match['where']})"
                    )
        for miss in expected:
            stats["fn"][miss["kind"]] += 1
            if verbose:
                print(f"FN {row['id']}: {miss['text']!r}")

    for split in ("dev", "heldout"):
        if split not in by_split:
            continue
        s = by_split[split]
        n = sum(1 for r in rows if r["split"] == split)
        tp = sum(s["tp"][k] for k in KINDS)
        fp = sum(s["fp"].values())
        fn = sum(s["fn"].values())
        print(f"\n== {split}: {n} sentences, {tp + fn} expected places")
        print(
            f"overall    precision {_ratio(tp, tp + fp)}  recall {_ratio(tp, tp + fn)}  "
            f"(tp={tp} fp={fp} fn={fn})"
        )
        for kind in KINDS:
            ptp = s["tp"]["pred:" + kind]
            print(
                f"{kind:<10} precision {_ratio(ptp, ptp + s['fp'][kind])}  "
                f"recall {_ratio(s['tp'][kind], s['tp'][kind] + s['fn'][kind])}  "
                f"(expected {s['tp'][kind] + s['fn'][kind]})"
            )
        w = s["where"]
        print(f"disambiguation ('where' labels right) {w['ok']}/{w['ok'] + w['bad']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("-v", "--verbose", action="store_true", help="list every error")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text("utf-8").splitlines() if line.strip()]

    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    load_gazetteer()
    load_s = time.perf_counter() - t0
    rss_mib = (proc.memory_info().rss - rss0) / 2**20
    print(
        f"gazetteer: {len(load_gazetteer())} entries, load {load_s:.2f} s, RSS +{rss_mib:.1f} MiB"
    )
    anyio.run(evaluate, rows, args.verbose)


if __name__ == "__main__":
    main()
