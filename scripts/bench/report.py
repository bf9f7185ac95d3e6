"""The Markdown report and its plots, from the results dictionary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from scripts.bench import capacity


def _get(d: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _fmt(v: Any, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        v = f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"
    return f"{v}{unit}"


def _row(
    name: str,
    value: Any,
    unit: str,
    target: str,
    ok: bool | None,
    floor: Any = None,
    funit: str = "",
    ratio_to_floor: float | None = None,
) -> str:
    """``ratio_to_floor``: given when it is not value / floor (a median of ratios)."""
    verdict = "—" if ok is None else ("✅" if ok else "❌")
    ratio = "—"
    if ratio_to_floor is not None:
        ratio = f"{ratio_to_floor:.1f}x"
    elif isinstance(value, (int, float)) and isinstance(floor, (int, float)) and floor:
        ratio = f"{value / floor:.1f}x"
    return (
        f"| {name} | {_fmt(value, unit)} | {target} | {verdict} | {_fmt(floor, funit)} | {ratio} |"
    )


def _le(v: Any, limit: float) -> bool | None:
    return None if not isinstance(v, (int, float)) else v <= limit


def _ge(v: Any, limit: float) -> bool | None:
    return None if not isinstance(v, (int, float)) else v >= limit


def rows(r: dict[str, Any]) -> list[str]:
    a, e, m, rc = (
        r.get("attach", {}),
        r.get("events", {}),
        r.get("marks", {}),
        r.get("recovery", {}),
    )
    fork = _get(a, "floor_forkserver_first_message_ms", "p50")
    bare = _get(a, "floor_bare_python") or {}
    seq = a.get("sequential_ms", {})
    out = [
        "| figure | measured | target | ok | floor | ratio to floor |",
        "|---|---|---|---|---|---|",
        _row(
            "attach p50 (INSERT -> connected)",
            seq.get("p50"),
            " ms",
            "≤ 25 ms",
            _le(seq.get("p50"), 25),
            fork,
            " ms",
        ),
        _row("attach p90", seq.get("p90"), " ms", "", None, fork, " ms"),
        _row(
            "attach p99", seq.get("p99"), " ms", "≤ 100 ms", _le(seq.get("p99"), 100), fork, " ms"
        ),
    ]
    for n, limit in (("100", 2000), ("300", 6000), ("50", None)):
        v = _get(a, "bursts", n, "all_connected_ms")
        trials = _get(a, "bursts", n, "trials_ms") or []
        label = f"{n} at once, all connected"
        if len(trials) > 1:
            label += f" (median of {len(trials)}: {min(trials):.0f} to {max(trials):.0f} ms)"
        # Floor: as many bare forkserver children at once, just before each trial.
        burst_floor = _get(a, "bursts", n, "floor_ms")
        if v is not None:
            ratio = _get(a, "bursts", n, "ratio_to_floor")  # the median of per-trial ratios
            out.append(
                _row(
                    label,
                    v,
                    " ms",
                    f"≤ {limit} ms" if limit else "",
                    _le(v, limit) if limit else None,
                    burst_floor if burst_floor is not None else fork,
                    " ms",
                    ratio if isinstance(ratio, (int, float)) else None,
                )
            )
    for n, mem in (a.get("memory") or {}).items():
        out.append(
            _row(
                f"PSS per idle worker ({n} running)",
                mem["pss_mib"],
                " MiB",
                "≤ 25 MiB",
                _le(mem["pss_mib"], 25),
                bare.get("pss_mib"),
                " MiB",
            )
        )
        out.append(
            _row(
                f"USS per idle worker ({n} running)",
                mem["uss_mib"],
                " MiB",
                "≤ 10 MiB",
                _le(mem["uss_mib"], 10),
                bare.get("uss_mib"),
                " MiB",
            )
        )
        out.append(
            _row(
                f"RSS per idle worker ({n} running)",
                mem["rss_mib"],
                " MiB",
                "",
                None,
                bare.get("rss_mib"),
                " MiB",
            )
        )
    out += capacity.report_rows(a, _row)
    floor_rate = e.get("floor_bare_reader_per_s")
    for kind in ("noop_repeats", "transitions"):
        k = e.get(kind) or {}
        out.append(
            _row(
                f"events applied/s ({kind.replace('_', ' ')})",
                k.get("applied_per_s"),
                "/s",
                "≥ 5000/s",
                _ge(k.get("applied_per_s"), 5000),
                floor_rate,
                "/s",
            )
        )
        out.append(
            _row(
                f"event lag, max ({kind.replace('_', ' ')})",
                k.get("lag_max_s"),
                " s",
                "≤ 1 s",
                _le(k.get("lag_max_s"), 1),
            )
        )
    for key, label in (
        ("gazetteer_default", "period -> mark, gazetteer, default settings"),
        ("gazetteer_debounce_only", "period -> mark, gazetteer, 300 ms debounce only"),
        ("llm_default", "period -> mark, LLM (200 ms), default settings"),
        ("llm_debounce_only", "period -> mark, LLM (200 ms), 300 ms debounce only"),
    ):
        g = m.get(key) or {}
        relay = _get(g, "floor_relay_ms", "p50")
        p = g.get("period_to_mark_ms") or {}
        llm = key.startswith("llm")
        target = 20 if llm else 50
        what = "overhead above the model and the delay" if llm else "minus the configured delay"
        out.append(_row(label + ", p50", p.get("p50"), " ms", "", None, relay, " ms"))
        out.append(_row(label + ", p99", p.get("p99"), " ms", "", None, relay, " ms"))
        out.append(
            _row(
                f"{label}, {what}, p50",
                g.get("overhead_p50_ms"),
                " ms",
                f"≤ {target} ms" if llm else "",
                _le(g.get("overhead_p50_ms"), target) if llm else None,
            )
        )
        out.append(
            _row(
                f"{label}, {what}, p99",
                g.get("overhead_p99_ms"),
                " ms",
                "" if llm else f"≤ {target} ms",
                None if llm else _le(g.get("overhead_p99_ms"), target),
            )
        )
    fl = r.get("fleet", {})
    if fl:
        ttl = fl.get("lease_ttl_s")
        ftrials = fl.get("failover_trials_s") or []
        spread = ", ".join(f"{t:.1f}" for t in ftrials)
        name = (
            f"failover: kill -9 one of {fl.get('fleet_managers')} managers, "
            f"{fl.get('fleet_documents')} documents (trials: {spread} s; LEASE_TTL_S {ttl})"
        )
        limit = None if ttl is None else ttl + 1
        firsts = fl.get("first_moved_trials_s") or []
        if firsts:
            out.append(
                _row(
                    f"{name}, first document active elsewhere, max",
                    max(firsts),
                    " s",
                    "" if limit is None else f"≤ {limit:g} s",
                    None if limit is None else _le(max(firsts), limit),
                )
            )
        for which in ("p50", "max"):
            value = fl.get(f"failover_{which}_s")
            out.append(
                _row(
                    f"{name}, {which}",
                    value,
                    " s",
                    "" if limit is None else f"≤ {limit:g} s",
                    None if limit is None else _le(value, limit),
                )
            )
    if fl.get("drain_documents"):
        name = (
            f"drain: handoff gap per document, {fl['drain_documents']} documents "
            f"(all handed over in {fl.get('drain_all_handed_over_s', 0):.1f} s)"
        )
        for which in ("p50", "p99"):
            value = fl.get(f"drain_gap_{which}_ms")
            out.append(
                _row(
                    f"{name}, {which}",
                    value,
                    " ms",
                    "≤ 200 ms" if which == "p99" else "",
                    _le(value, 200) if which == "p99" else None,
                )
            )
    label = f"recovery of {rc.get('recovery_agents', '?')} agents after kill -9"
    rtrials = rc.get("recovery_trials_s") or []
    if len(rtrials) > 1:
        label += f" (median of {len(rtrials)}: {min(rtrials):.1f} to {max(rtrials):.1f} s)"
    out.append(
        _row(
            label,
            rc.get("recovery_s"),
            " s",
            "≤ 3 s",
            _le(rc.get("recovery_s"), 3),
            rc.get("floor_manager_import_s"),
            " s",
        )
    )
    out.append(
        _row(
            "workers outlive a killed manager by",
            rc.get("orphans_gone_s"),
            " s",
            "≤ 2 s",
            _le(rc.get("orphans_gone_s"), 2),
        )
    )
    out.append(
        _row(
            f"manager CPU, {rc.get('cpu_agents', '?')} idle agents",
            rc.get("cpu_manager_percent"),
            " %",
            "",
            None,
            rc.get("cpu_idle_manager_percent"),
            " %",
        )
    )
    out += _memory_rows(r.get("memory", {}))
    return out


def _memory_rows(mem: dict[str, Any]) -> list[str]:
    """The extraction memory's figures (scenario ``memory``), if it ran."""
    if not mem or "reopen" not in mem:
        return []
    reopen, ratio = mem["reopen"], mem.get("first_pass_p99_over_idle_p99")
    n = reopen.get("sentences", "?")
    idle = _get(mem, "typing_idle", "period_to_mark_ms", "p99")
    busy = _get(mem, "typing_during_first_pass", "period_to_mark_ms", "p99")
    backlog = _get(mem, "typing_during_first_pass", "backlog_sentences")
    calls = reopen.get("reopen_model_calls")
    return [
        _row(f"model calls, reopen of {n} sentences", calls, "", "0", _le(calls, 0)),
        _row(
            f"sentences sent, reopen of {n}",
            reopen.get("reopen_sentences_sent"),
            "",
            "0",
            _le(reopen.get("reopen_sentences_sent"), 0),
        ),
        _row(
            f"'.' -> mark p99 during a {backlog}-sentence first pass",
            busy,
            " ms",
            "≤ 2x idle p99",
            _le(ratio, 2.0),
            idle,
            " ms",
        ),
    ]


def plots(r: dict[str, Any], out_dir: Path) -> list[tuple[str, str]]:
    made: list[tuple[str, str]] = []
    a, m = r.get("attach", {}), r.get("marks", {})
    samples = _get(a, "sequential_ms", "samples")
    if samples:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(samples, bins=40, color="#4477aa")
        for p, style in (("p50", "-"), ("p99", "--")):
            ax.axvline(
                a["sequential_ms"][p],
                color="k",
                linestyle=style,
                label=f"{p} {a['sequential_ms'][p]:.0f} ms",
            )
        ax.axvline(25, color="g", linestyle=":", label="target p50 25 ms")
        ax.axvline(100, color="r", linestyle=":", label="target p99 100 ms")
        ax.set_xlabel("INSERT -> connected (ms), one at a time")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "attach_sequential.png", dpi=110)
        plt.close(fig)
        made.append(("Attach latency, one document at a time", "attach_sequential.png"))
    bursts = a.get("bursts") or {}
    if bursts:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for n, b in bursts.items():
            spans = b["spans_ms"]
            ax.plot(
                spans, [(i + 1) / len(spans) * 100 for i in range(len(spans))], label=f"{n} at once"
            )
        ax.set_xlabel("ms after the committed INSERT")
        ax.set_ylabel("% connected")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "attach_bursts.png", dpi=110)
        plt.close(fig)
        made.append(
            ("Documents becoming active at once: share connected over time", "attach_bursts.png")
        )
    steps = _get(a, "capacity", "steps") or []
    if steps:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
        ns = [s["n"] for s in steps if "memory" in s]
        for key, label in (("rss_mib", "RSS"), ("pss_mib", "PSS"), ("uss_mib", "USS")):
            ax1.plot(
                ns, [s["memory"][key] for s in steps if "memory" in s], marker="o", label=label
            )
        ax1.set_xlabel("running agents")
        ax1.set_ylabel("MiB per worker")
        ax1.legend()
        ax2.plot(
            ns, [s["probe_ms"]["max"] for s in steps if "probe_ms" in s], marker="o", label="max"
        )
        ax2.plot(
            ns, [s["probe_ms"]["p50"] for s in steps if "probe_ms" in s], marker="o", label="p50"
        )
        ax2.axhline(1000, color="r", linestyle=":", label="1 s")
        ax2.set_xlabel("running agents")
        ax2.set_ylabel("attach of one more (ms)")
        ax2.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "capacity.png", dpi=110)
        plt.close(fig)
        made.append(("Memory per worker and attach latency as agents accumulate", "capacity.png"))
    series = [
        (k, _get(v, "period_to_mark_ms", "samples")) for k, v in m.items() if isinstance(v, dict)
    ]
    series = [(k, s) for k, s in series if s]
    if series:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.boxplot(
            [s for _, s in series],
            tick_labels=[k.replace("_debounce_", "\ndebounce ") for k, _ in series],
        )
        ax.set_ylabel("typed '.' -> mark seen (ms)")
        fig.tight_layout()
        fig.savefig(out_dir / "marks.png", dpi=110)
        plt.close(fig)
        made.append(("Typed period -> geoMark visible to the typing client", "marks.png"))
    return made


def write(r: dict[str, Any], out_dir: Path) -> None:
    lines = [
        "# docagents benchmark",
        "",
        f"{r.get('started')} · {json.dumps(r.get('machine'))} · total {_fmt(r.get('total_s'))} s",
        "",
        "Latencies on 2 cores move with whatever else runs: check the load averages above"
        " (anything much over 1 at the start means another job shared the machine)."
        " `cpu_reference_ms` is a fixed pure-Python loop (best of 5; lower is faster) at"
        " the start, before each scenario and at the end: the machine's speed, to compare"
        " two runs by.",
        "",
        *rows(r),
        "",
    ]
    errors = {k: v["error"] for k, v in r.items() if isinstance(v, dict) and "error" in v}
    for name, err in errors.items():
        lines.append(f"**{name} failed**: `{err}`\n")
    pool = _get(r, "attach", "pool")
    if pool:
        lines.append(
            f"Warm pool: size {pool['size']}, {pool['hits']} starts from the pool,"
            f" {pool['misses']} cold.\n"
        )
    for title, name in plots(r, out_dir):
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    lines += ["Configuration: `" + json.dumps(r.get("config")) + "`", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
