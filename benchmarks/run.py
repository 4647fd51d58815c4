"""The one benchmark command: prints one table of our figures next to baselines measured in the same run.

    python benchmarks/run.py            # full run, ~25 minutes on the 2-core machine
    python benchmarks/run.py --quick    # sanity run, under 3 minutes (smaller N, shorter windows, 1 repeat)

Everything runs on loopback; every process started here is ended here by its pid. The machines are shared and
noisy: figures are medians over interleaved repeats, compared only with baselines from the same run, and
nothing here is a test (no timing asserts anywhere in the test suite). Method: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _common
from _common import (
    BENCH_DIR,
    StandIn,
    bench_env,
    create_forever_executions,
    databricks_conn,
    median,
    ours_conn,
    percentile,
    run_child_json,
)


@dataclass(frozen=True)
class Config:
    scale: tuple[tuple[int, float, float], ...]  # (N, poll interval s, measured window s)
    scale_repeats: int
    httpx_slow: tuple[int, float, float] | None  # httpx again at a rate it can sustain, for its CPU per poll
    kills: int
    kill_background: int
    import_repeats: int
    economy_runs: int
    e2e_kills: int  # per kind (running, deferred), on a real Airflow: only with --only ...,e2e


FULL = Config(scale=((1000, 1.0, 20.0), (10000, 10.0, 30.0)), scale_repeats=3, httpx_slow=(1000, 10.0, 20.0),
              kills=200, kill_background=200, import_repeats=7, economy_runs=500, e2e_kills=12)
QUICK = Config(scale=((1000, 1.0, 5.0),), scale_repeats=1, httpx_slow=None,
               kills=20, kill_background=50, import_repeats=2, economy_runs=100, e2e_kills=4)
CLIENTS = ("ours", "databricks", "httpx", "aiohttp", "idle")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_pressure() -> float | None:
    """The kernel's 10-second CPU pressure (% of time some task waited for a CPU): a noise gauge."""
    try:
        with open("/proc/pressure/cpu") as pressure:
            return float(pressure.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


# -- the four benchmarks ---------------------------------------------------------------------------------------


def run_scale(config: Config, emulator: Any, standin: StandIn, ids_file: str,
              results: list[dict[str, Any]], save: Callable[[], None]) -> None:
    env = bench_env({
        "AIRFLOW_CONN_DUNE_BENCH": ours_conn(emulator.base_url("dune")),
        "AIRFLOW_CONN_DATABRICKS_BENCH": databricks_conn(standin.port),
    })
    plan: list[tuple[str, int, float, float, int]] = []
    for n, interval, window in config.scale:
        for repeat in range(config.scale_repeats):
            for client in CLIENTS:  # interleaved: noise hits every client alike
                if client == "idle" and repeat > 0:
                    continue
                if client == "httpx" and (n > 1000 or repeat > 0 or config.httpx_slow is None):
                    continue  # it collapses at 1,000 x 1 s already: more runs would only cost minutes
                plan.append((client, n, interval, window, repeat))
    if config.httpx_slow is not None:
        plan.append(("httpx", *config.httpx_slow, 0))
    for client, n, interval, window, repeat in plan:
        log(f"scale: {client} N={n} interval={interval:g}s window={window:g}s (repeat {repeat + 1})")
        pressure = cpu_pressure()
        try:
            result = run_child_json(
                [sys.executable, str(BENCH_DIR / "scale.py"), "--client", client, "--n", str(n),
                 "--interval", str(interval), "--window", str(window), "--url", emulator.base_url("dune"),
                 "--ids-file", ids_file, "--seed", str(repeat)],
                env=env, timeout=window + 3 * interval + 120,
            )
        except RuntimeError as err:
            log(f"  failed: {err}")
            result = {"client": client, "n": n, "interval_s": interval, "error": str(err)[-500:]}
        result["cpu_pressure_before"] = pressure
        result["repeat"] = repeat
        results.append(result)
        save()
        if "error" not in result:
            log(f"  {result['cpu_ms_per_poll']:.3f} ms CPU/poll, {result['kb_per_execution']:.1f} KB/exec, "
                f"{100 * result['poll_rate_ratio']:.1f}% of scheduled polls, "
                f"p99 late {result['sleep_late_p99_ms']:.0f} ms + "
                f"p99 latency {result['latency_p99_ms']:.0f} ms")


def run_cancel(config: Config, emulator: Any, standin: StandIn, ids: list[str]) -> dict[str, Any]:
    env = bench_env({
        "AIRFLOW_CONN_DUNE_BENCH": ours_conn(emulator.base_url("dune")),
        "AIRFLOW_CONN_DATABRICKS_BENCH": databricks_conn(standin.port),
    })
    journal = emulator.client()
    out: dict[str, Any] = {}
    kinds = ["trigger", "operator", "databricks-trigger", "databricks-operator"]
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(ids[:config.kills + config.kill_background], handle)  # a killed execution stays cancelled
    ids_file = handle.name
    try:
        for kind in kinds:
            log(f"cancel latency: {kind} x{config.kills}")
            since = journal.journal(action="cancel")[-1]["seq"] if journal.journal(action="cancel") else 0
            receipts_before = len(standin.receipts())
            args = [sys.executable, str(BENCH_DIR / "cancel_latency.py"), "--kind", kind,
                    "--kills", str(config.kills), "--ids-file", ids_file]
            if kind.endswith("trigger"):
                args += ["--background", str(config.kill_background)]
            try:
                result = run_child_json(args, env=env, timeout=600)
            except RuntimeError as err:
                log(f"  failed: {err}")
                out[kind] = {"error": str(err)[-500:]}
                continue
            if kind.startswith("databricks"):
                received = {r["id"]: r["ts"] for r in standin.receipts()[receipts_before:]}
            else:
                received = {}
                for entry in journal.journal(action="cancel", since=since):
                    received.setdefault(entry["execution_id"], entry["ts"])
            latencies = [1000 * (received[k] - t) for k, t in result["on_kill"].items() if k in received]
            from_kill = [1000 * (received[k] - t) for k, t in result["kill"].items() if k in received]
            out[kind] = {
                "kills": len(result["on_kill"]),
                "received": len(latencies),
                "median_ms": median(latencies),
                "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies) if latencies else math.nan,
                "from_cancel_median_ms": median(from_kill) if from_kill else None,
                "from_cancel_p99_ms": percentile(from_kill, 99) if from_kill else None,
            }
            log(f"  median {out[kind]['median_ms']:.1f} ms, p99 {out[kind]['p99_ms']:.1f} ms "
                f"({len(latencies)}/{len(result['on_kill'])} cancels received)")
    finally:
        journal.close()
        os.unlink(ids_file)
    return out


def run_e2e(config: Config) -> dict[str, Any]:
    log(f"end-to-end cancel latency on a real Airflow: {config.e2e_kills} kills of each kind (one stack)")
    return run_child_json([sys.executable, str(BENCH_DIR / "e2e_cancel.py"), "--kills", str(config.e2e_kills)],
                          env=bench_env(baselines=False), timeout=3600)


def run_imports(config: Config) -> list[dict[str, Any]]:
    import import_cost

    log(f"DAG-parse cost: {len(import_cost.vendor_modules())} vendor module(s), {config.import_repeats} samples each")
    return import_cost.measure(config.import_repeats)


def run_economy(config: Config) -> list[dict[str, Any]]:
    import economy

    log("request economy: simulated time (virtual clock), no waiting")
    return economy.measure(config.economy_runs)


# -- the table -------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "collapsed (0 polls done)"
    return f"{value:.{digits}f}{unit}"


def _ok(flag: bool | None) -> str:
    return "n/a" if flag is None else ("yes" if flag else "**no**")


def _scale_summary(results: Sequence[dict[str, Any]], client: str, n: int,
                   interval: float | None = None) -> dict[str, Any] | None:
    runs = [r for r in results if r.get("client") == client and r.get("n") == n and "error" not in r
            and interval in (None, r.get("interval_s"))]
    if not runs:
        return None
    interval = runs[0]["interval_s"]
    late = median([r["sleep_late_p99_ms"] for r in runs])
    # Growth of the median lag from the window's first half to its second: a loop that falls behind lags more and
    # more, while one pause (a GC) lands in one half and moves only the tail.
    drift = median([r.get("sleep_late_p50_second_half_ms", math.nan) - r.get("sleep_late_p50_first_half_ms", math.nan)
                    for r in runs])
    latency = median([r["latency_p99_ms"] for r in runs])
    rate = median([r["poll_rate_ratio"] for r in runs])
    if not any(r["polls"] for r in runs):  # collapsed: no poll completed in the window
        return {"cpu": math.inf, "kb": median([r["kb_per_execution"] for r in runs]), "rate": 0.0,
                "late_ms": math.inf, "latency_ms": math.inf, "drift_ms": math.inf, "kept": False,
                "interval": interval, "runs": len(runs)}
    return {
        "cpu": median([r["cpu_ms_per_poll"] for r in runs]),
        "kb": median([r["kb_per_execution"] for r in runs]),
        "rate": rate,
        "late_ms": late,
        "latency_ms": latency,
        "drift_ms": drift,
        # Not falling behind: >= 95% of the scheduled polls happened, and the median lag did not grow through the
        # window by more than 10% of the interval (math.nan, from an older result file, counts as growth).
        "kept": rate >= 0.95 and drift <= 100 * interval,
        "interval": interval,
        "runs": len(runs),
    }


def _schedule_text(s: dict[str, Any] | None) -> str:
    if s is None:
        return "n/a"
    if math.isinf(s["late_ms"]):
        return "collapsed (0 polls done)"
    return (f"{'kept' if s['kept'] else 'behind'} ({100 * s['rate']:.0f}% of polls; p99 wake-up late "
            f"{s['late_ms']:.0f} ms; median lag {s['drift_ms']:+.0f} ms from the window's first half to its second; "
            f"p99 request {s['latency_ms']:.0f} ms)")


def table(data: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str, str]] = []
    add: Callable[..., None] = lambda *cells: rows.append(tuple(cells))  # noqa: E731
    scale = data.get("scale", [])
    sizes = sorted({(r["n"], r["interval_s"]) for r in scale if r.get("client") == "ours" and "n" in r})
    for n, interval in sizes:
        ours = _scale_summary(scale, "ours", n, interval)
        dbx = _scale_summary(scale, "databricks", n, interval)
        hx = _scale_summary(scale, "httpx", n, interval)
        hx_slow = [r for r in scale if r.get("client") == "httpx" and r.get("n") == n and "error" not in r
                   and r.get("interval_s") != interval and r.get("polls")]
        floor = _scale_summary(scale, "aiohttp", n, interval)
        idle = _scale_summary(scale, "idle", n, interval)
        if ours is None:
            continue
        head = f"scale N={n:,} @ {interval:g} s"
        httpx_text = "not run (collapses at 1,000 x 1 s in the full run)" if hx is None else _fmt(hx["cpu"], 3)
        if hx_slow:
            httpx_text += f", {hx_slow[0]['cpu_ms_per_poll']:.3f} at {hx_slow[0]['interval_s']:g} s"
        base_cpu = f"Databricks {_fmt(dbx and dbx['cpu'], 3)}; httpx {httpx_text}; " \
                   f"aiohttp floor {_fmt(floor and floor['cpu'], 3)}"
        is_small = n <= 1000
        s, label = ours, "ours"
        ratio = dbx["cpu"] / s["cpu"] if dbx else None
        add(f"{head}: CPU ms/poll ({label})", _fmt(s["cpu"], 3), base_cpu, f"Databricks / ours = {_fmt(ratio)}x",
            "<= 0.35 ms / >= 1.9x" if is_small else "-",
            f"{_ok(s['cpu'] <= 0.35)} / {_ok((ratio or 0) >= 1.9)}" if is_small else "-")
        own = s["kb"] - idle["kb"] if idle else None
        add(f"{head}: KB/execution, RSS ({label})",
            f"{_fmt(s['kb'], 1)} ({_fmt(own, 1)} over idle)",
            f"Databricks {_fmt(dbx and dbx['kb'], 1)}; httpx {_fmt(hx and hx['kb'], 1)}; "
            f"floor {_fmt(floor and floor['kb'], 1)}; idle trigger {_fmt(idle and idle['kb'], 1)}",
            f"Databricks / ours = {_fmt(dbx['kb'] / s['kb'] if dbx else None)}x",
            "<= 5 KB" if is_small else "-", _ok(s["kb"] <= 5) if is_small else "-")
        add(f"{head}: polls on schedule ({label})", _schedule_text(s),
            f"Databricks {_schedule_text(dbx)}; httpx {_schedule_text(hx)}", "-",
            "no falling behind" if not is_small else "report", _ok(s["kept"]) if not is_small else "-")
    if len(sizes) >= 2:  # the cost of one more execution, fixed costs (session, pool buffers) left out
        (small, _), (big, _) = sizes[0], sizes[-1]

        def slope(client: str) -> float | None:
            runs = [_scale_summary(scale, client, n) for n in (small, big)]
            if runs[0] is None or runs[1] is None:
                return None
            return (runs[1]["kb"] * big - runs[0]["kb"] * small) / (big - small)

        ours_kb, idle_kb, dbx_kb = slope("ours"), slope("idle"), slope("databricks")
        if ours_kb is not None:
            add(f"KB per additional execution, RSS slope N={small:,} -> {big:,} (ours)",
                f"{_fmt(ours_kb, 1)} ({_fmt(ours_kb - idle_kb if idle_kb is not None else None, 1)} over idle)",
                f"Databricks {_fmt(dbx_kb, 1)}; idle trigger {_fmt(idle_kb, 1)}",
                f"Databricks / ours = {_fmt(dbx_kb / ours_kb if dbx_kb else None)}x", "report", "-")
    cancel = data.get("cancel", {})
    for kind, base in (("trigger", "databricks-trigger"), ("operator", "databricks-operator")):
        ours_c, base_c = cancel.get(kind), cancel.get(base)
        if not ours_c or "error" in ours_c:
            continue
        base_text = "n/a" if not base_c or "error" in base_c else \
            f"Databricks {base_c['median_ms']:.1f} / {base_c['p99_ms']:.1f}"
        ratio = base_c["p99_ms"] / ours_c["p99_ms"] if base_c and "error" not in base_c else None
        add(f"cancel latency, on_kill -> API ({kind}): median / p99 ms over {ours_c['received']} kills",
            f"{ours_c['median_ms']:.1f} / {ours_c['p99_ms']:.1f}", base_text,
            f"Databricks / ours = {_fmt(ratio)}x (p99)",
            "p99 < 50 ms", _ok(ours_c["p99_ms"] < 50 and ours_c["received"] == ours_c["kills"]))
    e2e = data.get("e2e_cancel")
    if e2e and "error" not in e2e:
        heartbeat = e2e["config"].get("workers.min_heartbeat_interval") or "?"
        for kind in ("running", "deferred"):
            row = e2e[kind]
            add(f"cancel latency end to end, REST mark failed -> API ({kind} task): median / p99 s over "
                f"{row['kills']} kills", f"{row['median_s']:.2f} / {row['p99_s']:.2f}",
                f"Airflow's [workers] min_heartbeat_interval {heartbeat} s; [triggerer] job_heartbeat_sec "
                f"{e2e['config'].get('triggerer.job_heartbeat_sec') or '?'} s", "-", "report", "-")
    imports = data.get("imports", [])
    base_text = "; ".join(f"{r['name']} {_fmt(r.get('median_ms'), 0)} ms" for r in imports if r["side"] == "baseline")
    smallest_base = min((r["median_ms"] for r in imports if r["side"] == "baseline" and r.get("median_ms")),
                        default=None)
    for row in imports:
        if row["side"] == "baseline":
            continue
        value = "error: " + row["error"][:60] if row.get("error") else f"{_fmt(row.get('median_ms'), 1)} ms"
        heavy = f" (drags in {', '.join(row['heavy'])})" if row.get("heavy") else ""
        ratio = smallest_base / row["median_ms"] if smallest_base and row.get("median_ms") else None
        together = row["side"] == "ours-all"
        add(f"DAG-parse import on top of airflow.sdk: {row['name']}", value + heavy, base_text,
            f"dbt Cloud / ours = {_fmt(ratio, 1)}x" if ratio else "-",
            "< 30 ms, all five" if together else "-",
            _ok(row.get("median_ms") is not None and row["median_ms"] < 30 and len(row["modules"]) >= 5)
            if together else "-")
    for row in data.get("economy", []):
        ratio = row["fixed_requests"] / row["ours_requests"]
        lag_share = row["ours_lag_s"] / row["duration_s"]
        lag_worst = row["ours_lag_max_s"] / row["duration_s"]
        is_long = row["duration_s"] >= 1800
        add(f"requests per execution of {row['case']} (simulated time), lag",
            f"{row['ours_requests']:.0f} req, lag {row['ours_lag_s']:.1f} s ({100 * lag_share:.1f}%; "
            f"worst {100 * lag_worst:.1f}%)",
            f"fixed 2 s: {row['fixed_requests']} req, lag {row['fixed_lag_s']:.1f} s", f"fixed / ours = {ratio:.1f}x",
            ">= 5x, lag < 10%" if is_long else "-", _ok(ratio >= 5 and lag_worst < 0.10) if is_long else "-")
    return rows


def render(rows: Sequence[Sequence[str]]) -> str:
    header = ("metric", "ours", "baseline(s), same run", "ratio", "target", "met?")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small N, short windows, one repeat (< 3 minutes)")
    parser.add_argument("--only", default="scale,cancel,imports,economy",
                        help="comma-separated subset of: scale, cancel, imports, economy, e2e (a real Airflow "
                        "stack, ~10 minutes: not in the default)")
    parser.add_argument("--json", default="", help="raw results file (default: results/latest.json, "
                        "results/quick.json with --quick)")
    parser.add_argument("--from-json", default="", help="measure nothing: print the table of an earlier run "
                        "(several files, comma-separated, are merged, later ones winning: e.g. an e2e run, "
                        "then a full run)")
    parser.add_argument("--scale", default="", metavar="N:INTERVAL:WINDOW[,...]",
                        help="scale runs instead of the mode's, e.g. 10000:10:30 (seconds)")
    parser.add_argument("--repeats", type=int, default=0, help="scale repeats instead of the mode's")
    args = parser.parse_args()
    if args.from_json:
        data = {}
        for path in args.from_json.split(","):
            data.update(json.loads(Path(path).read_text()))
        report(data, args.from_json)
        return
    config = QUICK if args.quick else FULL
    if args.scale:
        runs = tuple((int(n), float(i), float(w)) for n, i, w in (part.split(":") for part in args.scale.split(",")))
        config = replace(config, scale=runs)
    if args.repeats:
        config = replace(config, scale_repeats=args.repeats)
    args.json = args.json or str(BENCH_DIR / "results" / ("quick.json" if args.quick else "latest.json"))
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    started = time.monotonic()
    os.environ.setdefault("AIRFLOW_HOME", _common.airflow_home())
    os.environ["AIRFLOW_DISABLE_GREENBACK_PORTAL"] = "true"

    import baselines

    baselines.ensure(log)

    data: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every step: a crash or a kill keeps what was measured
        data["minutes"] = (time.monotonic() - started) / 60
        Path(args.json).write_text(json.dumps(data, indent=1, default=str))

    if "economy" in only:
        data["economy"] = run_economy(config)
        save()
    if "imports" in only:
        data["imports"] = run_imports(config)
        save()
    if "e2e" in only:
        try:
            data["e2e_cancel"] = run_e2e(config)
        except RuntimeError as err:
            log(f"  failed: {err}")
            data["e2e_cancel"] = {"error": str(err)[-2000:]}
        save()
    if only & {"scale", "cancel"}:
        from airflow_provider_cancel.emulator.testing import EmulatorProcess

        largest = max(n for n, _, _ in config.scale) if "scale" in only else 0
        needed = largest + (config.kills + config.kill_background if "cancel" in only else 0)
        emulator = EmulatorProcess(env=bench_env(baselines=False))
        standin = None
        try:
            emulator.start()
            standin = StandIn()
            log(f"emulator pid {emulator.pid} on {emulator.url}; stand-in pid {standin.pid} on {standin.url}")
            log(f"creating {needed:,} never-ending Dune executions on the emulator")
            ids = create_forever_executions(emulator.base_url("dune"), needed)
            if "scale" in only:
                ids_file = str(Path(_common.airflow_home()) / "scale-ids.json")
                Path(ids_file).write_text(json.dumps(ids[:largest]))
                data["scale"] = []
                run_scale(config, emulator, standin, ids_file, data["scale"], save)
            if "cancel" in only:
                data["cancel"] = run_cancel(config, emulator, standin, ids[largest:])
                save()
        finally:
            if standin is not None:
                standin.stop()
            emulator.stop()
    save()
    report(data, args.json)


def report(data: dict[str, Any], path: str) -> None:
    print()
    print(f"airflow-provider-cancel benchmarks ({data['mode']} run, {data['started']}, "
          f"{data['machine']['cpus']} CPUs, Python {data['machine']['python']}; {data['minutes']:.1f} min)")
    print(render(table(data)))
    print()
    print("CPU: client process time (user+system, all threads) per completed status poll, steady-state window;"
          " servers run in other processes. Memory: RSS growth per execution (RSS once every trigger has polled,"
          " minus RSS before starting them, one-time costs paid before; / N); 'idle trigger' = the triggerer's"
          " own cost per trigger; the slope row leaves fixed costs (shared session, pool buffers) out.")
    print("Request economy runs on a virtual clock (core.poll.PollSchedule): no real 30-minute wait.")
    pressures = [r["cpu_pressure_before"] for r in data.get("scale", []) if r.get("cpu_pressure_before") is not None]
    if pressures:
        print(f"Machine noise: median CPU pressure before scale runs {median(pressures):.0f}% "
              "(share of time something waited for a CPU; high = noisy neighbours).")
    print(f"Raw results: {path}")


if __name__ == "__main__":
    main()
