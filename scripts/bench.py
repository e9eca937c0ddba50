#!/usr/bin/python3
"""scripts/bench.py [--smoke]: measures what "fast" means in DESIGN.md ("What fast means
here") on this machine, with the binaries already built in build/:

  1, 1b. upgrades under load, by SIGUSR2 and by `batonctl upgrade`, drain = wait and handoff;
  2.  the naive restart (SIGTERM, a new batond on the same port) under the same load;
  3.  the latency goal: round-trip p99 and max of 50 paced connections, runs left alone
      against runs upgraded every 1.5 s, per drain mode, and the naive restart for contrast;
  4.  the serving loop's lag during each upgrade;  5. the per-connection hand-off stop;
  6.  the start-up breakdown of an upgrade, next to the cost of exec'ing batond at all;
  7.  echo throughput against baseline-echo;  8. memory per idle connection;
  9.  the targets;  10. the chaos run (docs/chaos.json);  11. supervisor mode against gunicorn.

Full mode (about 7 minutes on 2 cores) writes docs/benchmarks.md and its plots in
docs/bench/ (BENCH_OUT=DIR writes DIR/benchmarks.md and DIR/bench/ instead); --smoke runs
the same steps with tiny sizes (about 40 s), prints the report and writes nothing in docs/.
Either mode exits non-zero only when a step could not run at all (a tool missing or
crashed, nothing verified), never because a target was missed. Loopback only; every
process it starts is killed by pid at exit. BENCH_KEEP=DIR keeps logs, reports and plots.
BATOND, BATONCTL, LOADGEN, BASELINE override the binaries. Reads structured data only:
batond's JSON log, `batonctl status|history --json`, `batonctl metrics`, baton-load's report.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(ROOT, "scripts", "bench"))

import procs  # noqa: E402
from procs import StepFailed  # noqa: E402
from report import Report, median, ms, num, pct, summary_ms  # noqa: E402
from tools import Baseline, Batond, Load, Tools, ctl, timeline  # noqa: E402

FULL = SimpleNamespace(
    up_k=30, up_spacing=1.3, up_lead=1.5, up_tail=2.0, drain_s=2, status_after=1.15,
    naive_r=6, naive_spacing=4.0, naive_lead=2.0, naive_tail=4.0,
    load_conns=16, load_pipeline=8, load_size=512, load_rate=1000, load_churn=100,
    goal_run_s=10.0, goal_pairs=3, goal_naive_pairs=1, goal_every=1.5, goal_first=0.75,
    tp_rounds=4, tp_seconds=3, tp_conns=4,
    mem_n=10000, mem_settle=1.0,
    sv_restarts=8, sv_spacing=1.0,
)
SMOKE = SimpleNamespace(
    up_k=2, up_spacing=1.3, up_lead=0.4, up_tail=0.6, drain_s=0.5, status_after=1.15,
    naive_r=2, naive_spacing=1.0, naive_lead=0.5, naive_tail=0.6,
    load_conns=4, load_pipeline=4, load_size=512, load_rate=500, load_churn=50,
    goal_run_s=2.0, goal_pairs=1, goal_naive_pairs=1, goal_every=1.5, goal_first=0.75,
    tp_rounds=1, tp_seconds=1, tp_conns=4,
    mem_n=500, mem_settle=0.3,
    sv_restarts=1, sv_spacing=0.3,
)
# The latency goal's load, as issue 14 defines it: 50 connections, 5000 messages/s in all.
GOAL_LOAD = ["--connections", 50, "--rate", 100, "--pipeline", 4, "--message-size", 512, "--timeout-ms", 5000,
             "--quiet"]
GOAL_INTERVAL_MS = 100
STEPS = ["requested", "spawned", "exec", "hello", "ready", "commit_received", "serving"]
PHASES = [("spawn", "requested", "spawned"), ("exec + dynamic linking", "spawned", "exec"),
          ("start-up to HELLO", "exec", "hello"), ("HELLO → READY", "hello", "ready"),
          ("READY → COMMIT received", "ready", "commit_received"), ("COMMIT → serving", "commit_received", "serving")]


# ---- shared pieces ------------------------------------------------------------------

def load_args(s):
    persistent = ["--connections", s.load_conns, "--pipeline", s.load_pipeline, "--message-size", s.load_size,
                  "--rate", s.load_rate, "--timeout-ms", 5000, "--quiet"]
    churn = ["--connections", 0, "--churn-rate", s.load_churn, "--message-size", s.load_size, "--timeout-ms", 5000,
             "--quiet"]
    return persistent, churn


def start_batond(ctx, name, args, port=0):
    b = Batond(ctx.tools, ctx.work, name, args, port)
    if not b.start():
        raise StepFailed(f"{name}: batond did not start (log: {''.join(procs.tail(b.log, 5)).strip()})")
    return b


def start_loads(ctx, port, *specs):
    """Starts baton-load runs [(name, args, duration)] and waits until each runs."""
    loads = [Load(ctx.tools, ctx.work, name, port, args, dur, interval) for name, args, dur, interval in specs]
    for l in loads:
        if not l.wait_started(30):
            for x in loads:
                x.interrupt()
            raise StepFailed(f"baton-load ({l.name}) did not start: {''.join(procs.tail(l.err_path, 5)).strip()}")
    return loads


def events_of(record):
    return {e["name"]: e["at_us"] for e in record.get("events", [])}


def upgrade_records(history):
    """from_pid -> history record, for upgrades."""
    return {h.get("from_pid"): h for h in history if h.get("kind") == "upgrade"}


def failures_text(report):
    f = report["failures"]
    return ", ".join(f"{f[k]} {k}" for k in ("refused", "reset", "timeout", "early_eof", "mismatch", "stall", "other"))


def client_table(r, persistent, churn):
    rows = []
    for label, rep, kind in (("churn (new short connections)", churn, "churn"),
                             ("persistent (pipelined)", persistent, "persistent")):
        if not rep:
            rows.append([label, "report missing"] + [""] * 10)
            continue
        lat = rep["latency_us"][kind]
        f = rep["failures"]
        if kind == "churn":
            c = rep["churn"]
            conns, verified, what = (f"{c['attempted']} attempted, {c['skipped']} skipped",
                                     f"{c['succeeded']} connections echoed", "(connect to echo)")
        else:
            p = rep["persistent"]
            conns, verified, what = (f"{p['connections']} + {p['reconnects']} reconnects",
                                     f"{p['messages']} messages, {p['bytes_verified']} bytes", "(per message)")
        rows.append([label, conns, verified,
                     f"{lat['p50'] / 1000:.2f} / {lat['p99'] / 1000:.2f} / {lat['max'] / 1000:.2f} {what}",
                     f["total"], f["refused"], f["reset"], f["timeout"], f["early_eof"], f["mismatch"], f["stall"],
                     f["other"]])
    r.table(["load", "connections", "verified", "latency p50 / p99 / max (ms)", "failures", "refused", "reset",
             "timeout", "early_eof", "mismatch", "stall", "other"], rows)
    for name, rep in (("churn", churn), ("persistent", persistent)):
        texts = (rep or {}).get("errno_texts") or {}
        if texts:
            r.md("", f"errno texts ({name}): " + "; ".join(f"{k} ×{v}" for k, v in texts.items()))


def note_upgrade_status(ctx, mode, step, old_pid, status):
    """Keeps the loop lag and hand-off stop of the upgrade OLD_PID ran, from `status --json`."""
    if not status:
        return
    ctx.status_seen = True
    lag = (status.get("loop_lag_ms") or {}).get("last_upgrade")
    if lag and lag.get("pid") == old_pid:
        ctx.lag.append(dict(lag, mode=mode, step=step))
    if "handoff_stop_us" in status:
        ctx.handoff_key_seen = True
        hs = status["handoff_stop_us"]
        if hs and hs.get("pid") == old_pid:
            ctx.handoff_stop.append(dict(hs, mode=mode, step=step))


def metrics_summary(m):
    if not m:
        return "not available"

    def closed(reason):
        return int(m.get('baton_connections_closed_total{reason="%s"}' % reason, 0))
    return (f"{closed('client')} closed by their clients, {closed('drain_deadline')} half-closed at the drain "
            f"deadline, {closed('forced')} closed forcibly, {int(m.get('baton_connections_handed_off_total', 0))} "
            "handed off to a newer generation (`batonctl metrics` of the last generation; its counters carry on "
            "across upgrades)")


def problem_summary(b):
    counts = {}
    for level, msg in b.problems():
        key = f"{level}: " + "".join("N" if ch.isdigit() else ch for ch in msg)
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])[:8]


# ---- machine --------------------------------------------------------------------------

def git(*args):
    try:
        r = subprocess.run(["git", "--no-optional-locks", "-C", ROOT, *args], capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def build_type(binary):
    d = os.path.dirname(os.path.abspath(binary))
    while d != "/":
        cache = os.path.join(d, "CMakeCache.txt")
        if os.path.exists(cache):
            with open(cache) as f:
                for line in f:
                    if line.startswith("CMAKE_BUILD_TYPE:"):
                        return f"{line.split('=', 1)[1].strip() or 'unset'} ({os.path.relpath(cache, ROOT)})"
        d = os.path.dirname(d)
    return "unknown (no CMakeCache.txt above the binary)"


def machine_section(ctx):
    r = ctx.r
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(next(l for l in f if l.startswith("MemTotal:")).split()[1])
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = len([l for l in git("status", "--porcelain").splitlines() if l.strip()])
    built = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(os.path.getmtime(ctx.tools.batond)))
    r.md("# baton benchmarks", "",
         f"Generated by `{ctx.command}` ({ctx.mode} mode), started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.",
         "Do not edit by hand: run the script again. Method and caveats are in each section.", "",
         "## Machine", "")
    r.table(["", ""], [
        ["CPUs (nproc)", os.cpu_count()], ["CPU model", model], ["kernel", os.uname().release],
        ["memory", f"{mem_kib / 1048576:.1f} GiB"], ["load average (1/5/15 min) at start", load],
        ["source", f"git {rev}" + (f" plus {dirty} uncommitted path(s)" if dirty else "") + f"; batond built {built}"],
        ["build", build_type(ctx.tools.batond)], ["open-file limit", ctx.nofile],
        ["baton-load timeline", f"{GOAL_INTERVAL_MS} ms intervals (`--interval-ms`)" if ctx.tools.load_interval_ms
         else "1 s intervals (this baton-load has no `--interval-ms`)"],
    ])
    r.md("", "The machine is shared with other work while this runs, and baton-load runs on the",
         "same cores as the server it measures: every figure below is noisy, one run's worth.")


# ---- 1. upgrades under load ---------------------------------------------------------------

def step_upgrade(ctx, dm, sec):
    r, s = ctx.r, ctx.s
    r.md("", f"## {sec}. Upgrade under load, drain = {dm}", "")
    b = start_batond(ctx, f"upgrade-{dm}", ["--drain-timeout", s.drain_s, "--drain", dm, "--max-connections", 20000])
    dur = s.up_lead + s.up_k * s.up_spacing + s.up_tail
    pa, ca = load_args(s)
    lp, lc = start_loads(ctx, b.port, (f"up-{dm}-persistent", pa, dur, None), (f"up-{dm}-churn", ca, dur, None))
    r.progress(f"{sec}. {s.up_k} upgrades under load, every {s.up_spacing} s ({dur:.1f} s of load)")
    ups, problems = [], []
    start = time.monotonic()
    for i in range(1, s.up_k + 1):
        procs.sleep_until(start + s.up_lead + (i - 1) * s.up_spacing)
        old = b.serving_pid()
        if not procs.alive(old):
            problems.append(f"the serving batond (pid {old}) is gone before upgrade {i}")
            break
        via = "batonctl" if i % 2 == 0 else "SIGUSR2"
        u = dict(i=i, via=via, old=old, new=0, rc=None, ctl_s=None)
        u["t0"] = time.monotonic()
        if via == "SIGUSR2":
            procs.signal_ours(old, signal.SIGUSR2)
        else:
            try:
                u["rc"] = ctl(ctx.tools, b.control, "upgrade", timeout=30).returncode
            except subprocess.TimeoutExpired:
                u["rc"] = "timeout"
            u["ctl_s"] = time.monotonic() - u["t0"]
        u["new"] = procs.wait_until(lambda: (p := b.serving_pid()) != old and p, 20, 0.005) or 0
        if u["new"]:
            procs.sleep_until(u["t0"] + s.status_after)
            note_upgrade_status(ctx, dm, sec, old, b.status())
        ups.append(u)
    reports = {}
    for l in (lp, lc):
        reports[l] = l.finish()
    final = b.status() or {}
    hist = upgrade_records(b.history())
    metrics = b.metrics()
    problem_lines = problem_summary(b)
    # Old generations' exits land in the history as `old_exited`, after the drain.
    for u in ups:
        if u["new"]:
            procs.wait_exit(u["old"], 15)
    hist = upgrade_records(b.history()) or hist
    killed = b.stop_chain()

    for u in ups:
        h = hist.get(u["old"])
        u["record"] = h
        u["ev"] = events_of(h) if h else {}
        ev = u["ev"]
        if "serving" in ev:
            u["accepting_us"] = ev["serving"] - u["t0"] * 1e6
        ctx.upgrades.append(dict(mode=dm, step=sec, **{k: u[k] for k in ("i", "via", "old", "new", "ev")}))
    done = [u for u in ups if u["new"]]
    failed = [u for u in ups if not u["new"]]
    for u in failed:
        h = u.get("record")
        problems.append(f"upgrade {u['i']} ({u['via']}, pid {u['old']}): "
                        + (f"{h.get('outcome')}: {h.get('error')}" if h else "no new pid within 20 s")
                        + (f" (batonctl exit {u['rc']})" if u["via"] == "batonctl" else ""))
    for u in done:
        if u["via"] == "batonctl" and u["rc"] != 0:
            problems.append(f"upgrade {u['i']}: batonctl exited {u['rc']} although pid {u['new']} serves")

    def col(f, sel=lambda u: True):
        return [f(u) for u in done if sel(u) and f(u) is not None]

    def off(name):
        return lambda u: (u["ev"][name] - u["ev"]["requested"]) if name in u["ev"] and "requested" in u["ev"] else None

    exited = col(lambda u: 1 if "old_exited" in u["ev"] else None)
    r.md(f"batond (`--drain-timeout {s.drain_s}`, `--drain {dm}`) under two baton-load runs at once:",
         f"persistent: {s.load_conns} connections, pipeline {s.load_pipeline}, {s.load_size}-byte messages, at most "
         f"{s.load_rate} messages/s per connection;",
         f"churn: {s.load_churn} new short connections per second (connect, one {s.load_size}-byte echo, close).",
         f"{s.up_k} upgrades were requested every {s.up_spacing:g} s, alternately by SIGUSR2 and by "
         "`batonctl --control PATH upgrade`; each waited for the previous one to have committed (the pid file names "
         "the new pid).", "")
    r.table(["", ""], [
        ["upgrades requested", len(ups)],
        ["upgrades done", f"{len(done)} ({sum(u['via'] == 'SIGUSR2' for u in done)} by SIGUSR2, "
                          f"{sum(u['via'] == 'batonctl' for u in done)} by batonctl)"],
        ["upgrades failed or rolled back", len(failed)],
        ["generation at the end", final.get("generation", "?")],
        ["old generations that exited (history event `old_exited`)", f"{len(exited)} of {len(done)}"
         + (f" ({len(killed)} still running at the end: killed)" if killed else "")],
        ["connections", metrics_summary(metrics)],
    ])
    r.md("", "Latency. *From outside*: the script's `time.monotonic()` when it sends the signal or starts batonctl, "
         "to the `serving` event of `batonctl history --json` (CLOCK_MONOTONIC, the same clock). The rest are "
         f"batond's own offsets from the request (`offset_us` of the history events). p99 of {len(done)} samples "
         "is close to the max.", "")
    rows = [
        ["new generation accepting (`serving`), from outside, SIGUSR2",
         summary_ms(col(lambda u: u.get("accepting_us"), lambda u: u["via"] == "SIGUSR2")),
         len(col(lambda u: u.get("accepting_us"), lambda u: u["via"] == "SIGUSR2"))],
        ["new generation accepting, from outside, `batonctl upgrade` (includes starting batonctl)",
         summary_ms(col(lambda u: u.get("accepting_us"), lambda u: u["via"] == "batonctl")),
         len(col(lambda u: u.get("accepting_us"), lambda u: u["via"] == "batonctl"))],
    ]
    v = col(lambda u: u["ev"]["requested"] - u["t0"] * 1e6 if "requested" in u["ev"] else None,
            lambda u: u["via"] == "SIGUSR2")
    rows.append(["batond noting the request (`requested`), from outside, SIGUSR2 (signal delivery and the loop "
                 "turn that reads it)", summary_ms(v, 2), len(v)])
    for label, name in (("READY (`ready`)", "ready"), ("COMMIT received (`commit_received`)", "commit_received"),
                        ("old generation no longer accepting (`old_stopped_accepting`)", "old_stopped_accepting"),
                        ("new generation serving (`serving`)", "serving"),
                        ("probation passed (`probation_passed`)", "probation_passed"),
                        ("old generation drained (`old_drained`)", "old_drained"),
                        (f"old generation exited (`old_exited`; bounded by `--drain-timeout {s.drain_s}`)",
                         "old_exited")):
        v = col(off(name))
        rows.append([f"batond: {label}", summary_ms(v), len(v)])
    v = col(lambda u: u["ctl_s"] * 1e6 if u["ctl_s"] is not None else None)
    rows.append(["`batonctl upgrade` returning (its whole run)", summary_ms(v), len(v)])
    r.table(["from the request to", "p50 / p99 / max (ms)", "samples"], rows)
    slow = max(done, key=lambda u: u.get("accepting_us") or 0, default=None)
    if slow and slow["ev"]:
        r.md("", f"The slowest upgrade (number {slow['i']}, by {slow['via']}): {ms(slow.get('accepting_us'))} ms "
             f"from the request to the new generation accepting; old pid {slow['old']}, new pid {slow['new']}. "
             "Its history (`offset_us` from the request):", "")
        evs = slow["record"]["events"]
        r.table(["event", "ms after the request", "detail"],
                [[e["name"], f"{e['offset_us'] / 1000:.2f}", e.get("detail", "")] for e in evs])
    r.md("", "What the clients saw (from baton-load's JSON reports):", "")
    client_table(r, reports[lp], reports[lc])
    if dm == "wait":
        r.md("", "With drain = wait, a persistent client stays on the generation that accepted it; that generation",
             "half-closes it at `--drain-timeout` and the client, which always has messages in flight, counts an",
             "early EOF (`early_eof`, then reconnects to the new generation). Those closes are the drain deadline at",
             "work, not lost connections of the hand-off; compare them with the drain counters above.")
    else:
        r.md("", "With drain = handoff the old generation passes its open connections to the new one once the",
             "probation is over; a persistent failure above is a connection the hand-off did not carry over intact.")
    if problems:
        r.md("", "Problems:", "", *[f"- {p}" for p in problems])
    if problem_lines:
        r.md("", "batond warnings and errors in this step (count, message with digits as N):", "", "```",
             *[f"{n:5d} {m}" for m, n in problem_lines], "```")
    acc = col(lambda u: u.get("accepting_us"), lambda u: u["via"] == "SIGUSR2")
    ctx.res[f"up_{dm}"] = dict(done=len(done), failed=len(failed), churn=reports[lc]["failures"]["total"],
                              persistent=reports[lp]["failures"]["total"], accept_p50=pct(acc, 50),
                              accept_max=pct(acc, 100),
                              ctl_accept_p50=pct(col(lambda u: u.get("accepting_us"),
                                                     lambda u: u["via"] == "batonctl"), 50),
                              linger_p50=pct(col(off("old_exited")), 50), linger_max=pct(col(off("old_exited")), 100))
    r.progress(f"{sec}. upgrades done {len(done)}/{len(ups)}, SIGUSR2 -> accepting {summary_ms(acc)} ms, "
               f"churn failures {reports[lc]['failures']['total']}, persistent failures "
               f"{reports[lp]['failures']['total']} ({failures_text(reports[lp])})")
    if not done:
        raise StepFailed(f"upgrade ({dm}): no upgrade completed")


# ---- 2. naive restart -----------------------------------------------------------------------

def naive_restart(ctx, name, port, args, wait_for_exit, cur):
    """SIGTERM to CUR (a Batond), [wait for its exit], start a new batond on PORT (retried while
    the port is taken). Returns (new Batond or None, failed binds, seconds to serving)."""
    t0 = time.monotonic()
    pid = cur.serving_pid()
    if procs.ours(pid):
        os.kill(pid, signal.SIGTERM)
    if wait_for_exit:
        procs.wait_exit(pid, 30)
    for tries in range(100):
        b = Batond(ctx.tools, ctx.work, f"{name}", args, port)
        if b.start():
            return b, tries, time.monotonic() - t0
        time.sleep(0.02)
    return None, 100, None


def step_naive(ctx):
    r, s = ctx.r, ctx.s
    r.md("", "## 2. The naive way: SIGTERM, then a new batond on the same port", "")
    args = ["--drain-timeout", s.drain_s, "--max-connections", 20000]
    first = start_batond(ctx, "naive-0", args)
    port = first.port
    dur = s.naive_lead + s.naive_r * s.naive_spacing + s.naive_tail
    pa, ca = load_args(s)
    lp, lc = start_loads(ctx, port, ("naive-persistent", pa, dur, None), ("naive-churn", ca, dur, None))
    r.progress(f"2. {s.naive_r} naive restarts under the same load ({dur:.1f} s)")
    gaps = {"at once": [], "after exit": []}
    cur, servers, retries, restarted, problems = first, [first], 0, 0, []
    start = time.monotonic()
    restart_at = []
    for i in range(1, s.naive_r + 1):
        procs.sleep_until(start + s.naive_lead + (i - 1) * s.naive_spacing)
        way = "after exit" if i % 2 == 0 else "at once"
        restart_at.append((time.monotonic(), way))
        new, tries, took = naive_restart(ctx, f"naive-{i}", port, args, way == "after exit", cur)
        if not new:
            problems.append(f"restart {i}: no new batond could bind 127.0.0.1:{port} in 100 tries")
            break
        retries += tries
        gaps[way].append(took * 1e6)
        restarted += 1
        cur = new
        servers.append(new)
    rep_p, rep_c = lp.finish(), lc.finish()
    for b in servers:
        b.stop_chain()
    r.md(f"Same load and `--drain-timeout {s.drain_s}` as above; {s.naive_r} restarts, {s.naive_spacing:g} s apart, "
         "alternating two ways: *at once* (`kill -TERM` the serving batond, which stops accepting and drains, and "
         "start a new batond on the same port immediately) and *after exit* (`kill -TERM`, wait for the old process "
         "to be gone, then start the new one, as `systemctl restart` does). A start that fails to bind is retried. "
         "*Accepting* is when the new batond first answers `batonctl status`.", "")
    r.table(["", ""], [
        ["restarts done", f"{restarted} of {s.naive_r} ({retries} failed start(s) before a new one served)"],
        ["SIGTERM → new batond accepting, *at once*, p50 / p99 / max (ms)", summary_ms(gaps["at once"])],
        ["SIGTERM → new batond accepting, *after exit*, p50 / p99 / max (ms)", summary_ms(gaps["after exit"])],
    ])
    r.md("", "What the clients saw:", "")
    client_table(r, rep_p, rep_c)
    # Failures by the restart that preceded them, from the timeline.
    rows = []
    for label, l, rep in (("churn", lc, rep_c), ("persistent", lp, rep_p)):
        by = {}
        for t_start, t_end, p in timeline(rep, l.zero(), 0):
            way = "before"
            for t, w in restart_at:
                if t <= t_start + 1e-3:
                    way = w
            agg = by.setdefault(way, {})
            for k, v in p["failures"].items():
                agg[k] = agg.get(k, 0) + v
        for way in ("at once", "after exit", "before"):
            f = by.get(way)
            if f and (way != "before" or f["total"]):
                rows.append([label, way, f["total"], failures_text({"failures": f})])
    r.md("", "The same failures split by the restart that preceded them (from the timeline, so a",
         "failure detected late, e.g. a timeout, may land on the next restart):", "")
    r.table(["load", "restart way", "failures", "by reason"], rows)
    if problems:
        r.md("", "Problems:", "", *[f"- {p}" for p in problems])
    ctx.res["naive"] = dict(churn=rep_c["failures"]["total"], persistent=rep_p["failures"]["total"])
    r.progress(f"2. naive restarts {restarted}, churn failures {rep_c['failures']['total']} "
               f"({failures_text(rep_c)}), persistent failures {rep_p['failures']['total']}")


# ---- 3. the latency goal -----------------------------------------------------------------------

def goal_run(ctx, b, name, upgraded, naive=None):
    """One run of the goal's load against batond B: left alone, or upgraded (or, with NAIVE =
    (args, holder), restarted the naive way) every goal_every s. Returns a dict."""
    s = ctx.s
    if not naive:
        # Start from a quiet server: no older generation still draining from the last run.
        procs.wait_until(lambda: not ((b.status() or {}).get("draining_generations") or []), 15, 0.1)
    port = b.port if not naive else naive[1][0].port
    (load,) = start_loads(ctx, port, (name, GOAL_LOAD, s.goal_run_s, GOAL_INTERVAL_MS))
    z = load.started_at
    marks = []
    t = z + s.goal_first
    while t + s.status_after < z + s.goal_run_s:
        procs.sleep_until(t)
        if naive:
            holder = naive[1]
            if upgraded:
                t0 = time.monotonic()
                new, _, _ = naive_restart(ctx, f"{name}-{len(marks) + 1}", holder[0].port, naive[0], True, holder[0])
                marks.append(dict(t0=t0, ok=bool(new)))
                if new:
                    holder.append(new)
                    holder[0] = new
        else:
            old = b.serving_pid()
            if upgraded and procs.alive(old):
                t0 = time.monotonic()
                procs.signal_ours(old, signal.SIGUSR2)
                new = procs.wait_until(lambda: (p := b.serving_pid()) != old and p, 5, 0.005)
                marks.append(dict(t0=t0, old=old, new=new or 0, ok=bool(new)))
            # The same status query in both kinds of run, so they differ by the upgrade only.
            procs.sleep_until(t + s.status_after)
            st = b.status()
            if upgraded and marks and marks[-1]["ok"]:
                note_upgrade_status(ctx, b.goal_mode, "3", marks[-1]["old"], st)
        t += s.goal_every
    rep = load.finish()
    lat = rep["latency_us"]["persistent"]
    return dict(name=name, upgraded=upgraded, p99=lat["p99"], max=lat["max"], p50=lat["p50"],
                failures=rep["failures"]["total"], failures_text=failures_text(rep), messages=rep["persistent"]["messages"],
                zero=load.zero(), report=rep, marks=marks)


def pair_order(pairs):
    """A, B, B, A, A, B...: drift on the machine weighs on both kinds alike."""
    out = []
    for k in range(pairs):
        out += [False, True] if k % 2 == 0 else [True, False]
    return out


def step_goal(ctx):
    r, s = ctx.r, ctx.s
    r.md("", "## 3. The latency goal: upgraded against left alone", "")
    res = {}
    for dm in ("wait", "handoff"):
        b = start_batond(ctx, f"goal-{dm}", ["--drain", dm, "--drain-timeout", 30, "--max-connections", 20000])
        b.goal_mode = dm
        r.progress(f"3. drain = {dm}: {s.goal_pairs} pair(s) of {s.goal_run_s:g} s runs, left alone / upgraded")
        runs = []
        try:
            for k, up in enumerate(pair_order(s.goal_pairs)):
                runs.append(goal_run(ctx, b, f"goal-{dm}-{k + 1}-{'upgraded' if up else 'alone'}", up))
            hist = upgrade_records(b.history())
        finally:
            b.stop_chain()
        for run in runs:
            for m in run["marks"]:
                h = hist.get(m["old"])
                m["ev"] = events_of(h) if h else {}
                ctx.upgrades.append(dict(mode=dm, step="3", old=m["old"], new=m["new"], ev=m["ev"], via="SIGUSR2"))
        res[dm] = runs
    # The naive way under the same load: SIGTERM, wait for the exit, start again.
    args = ["--drain", "wait", "--drain-timeout", 0.2, "--max-connections", 20000]
    holder = [start_batond(ctx, "goal-naive-0", args)]
    holder[0].goal_mode = "naive"
    r.progress(f"3. naive restart: {s.goal_naive_pairs} pair(s) of {s.goal_run_s:g} s runs")
    runs = []
    try:
        for k, up in enumerate(pair_order(s.goal_naive_pairs)):
            runs.append(goal_run(ctx, holder[0], f"goal-naive-{k + 1}-{'restarted' if up else 'alone'}", up,
                                 naive=(args, holder)))
    finally:
        for b in holder[1:] + holder[:1]:
            b.stop_chain()
    res["naive"] = runs
    ctx.goal = res

    r.md("Issue 14's definition: one batond per drain mode (`--drain-timeout 30`), 50 persistent connections at "
         f"100 messages/s each, 5000 messages/s in all (baton-load `{' '.join(map(str, GOAL_LOAD))}`), "
         f"runs of {s.goal_run_s:g} s, alternately left alone and upgraded by SIGUSR2 every {s.goal_every:g} s "
         f"(first at {s.goal_first:g} s), {s.goal_pairs} pair(s) per mode in the order alone/upgraded, "
         "upgraded/alone, ... Each run is baton-load's own latency histogram (round trip of every verified "
         f"message, send to echo). In both kinds of run `batonctl status --json` is asked {s.status_after:g} s after "
         "each (would-be) upgrade, for the loop lag and hand-off figures below. The naive way runs on a batond "
         "with `--drain-timeout 0.2`: SIGTERM, wait for the exit, start a new batond on the port.", "")
    rows, ratios = [], {}
    for key, label in (("wait", "drain = wait"), ("handoff", "drain = handoff"), ("naive", "naive SIGTERM + restart")):
        runs = res[key]
        alone = [x for x in runs if not x["upgraded"]]
        up = [x for x in runs if x["upgraded"]]
        pr = [(u["p99"] / a["p99"] if a["p99"] else None, u["max"] / a["max"] if a["max"] else None)
              for a, u in zip(alone, up)]
        r99, rmax = median([p[0] for p in pr]), median([p[1] for p in pr])
        ratios[key] = (r99, rmax, [p[0] for p in pr], [p[1] for p in pr])
        rows.append([label, " / ".join(f"{x['p99'] / 1000:.2f}" for x in alone),
                     " / ".join(f"{x['p99'] / 1000:.2f}" for x in up),
                     f"**{num(r99)}×** [{', '.join(num(p[0]) for p in pr)}]",
                     " / ".join(f"{x['max'] / 1000:.2f}" for x in alone),
                     " / ".join(f"{x['max'] / 1000:.2f}" for x in up),
                     f"**{num(rmax)}×** [{', '.join(num(p[1]) for p in pr)}]",
                     f"{sum(x['failures'] for x in alone)} / {sum(x['failures'] for x in up)}",
                     sum(len(x["marks"]) for x in up)])
    r.table(["method", "p99 alone (ms)", "p99 upgraded (ms)", "p99 ratio: median [each pair]", "max alone (ms)",
             "max upgraded (ms)", "max ratio: median [each pair]", "failures alone / upgraded", "upgrades"], rows)
    r.md("", "The goal (issue 14): upgraded / left alone ≤ 1.3× at p99 and ≤ 2× at the max, for both drain modes.", "")
    grows = []
    for key in ("wait", "handoff"):
        r99, rmax, _, _ = ratios[key]
        grows.append([f"drain = {key}", f"{num(r99)}×", verdict(r99, "<=", 1.3), f"{num(rmax)}×",
                      verdict(rmax, "<=", 2)])
    r.table(["drain", "p99 ratio", "p99 ≤ 1.3×", "max ratio", "max ≤ 2×"], grows)
    for key in ("wait", "handoff", "naive"):
        for x in res[key]:
            if x["failures"]:
                r.md("", f"{x['name']}: {x['failures']} client failures ({x['failures_text']}).")
    r.md("", "With drain = wait the connections stay on the generation that accepted them until the run ends: "
         "after the first upgrade of a run, the loop that serves them is an old generation's, which later "
         "upgrades do not touch. With drain = handoff every upgrade moves every connection to the new "
         "generation once its probation is over. The naive restart closes them (half-close at its 0.2 s drain "
         "deadline) and they reconnect: failures, and the latency of the messages that made it.")
    if ctx.plots:
        r.md("", "Round-trip p99 and max, and messages/s, per "
             f"{GOAL_INTERVAL_MS if ctx.tools.load_interval_ms else 1000} ms interval of the last pair "
             "(grey: the run left alone; colour: the run upgraded; dashed lines: the upgrade requests):", "")
        for key, label in (("wait", "drain = wait"), ("handoff", "drain = handoff"), ("naive", "naive restart")):
            f = ctx.plots.goal_timeline(key, label, res[key])
            if f:
                r.md(f"![{label}: round trip and throughput over time]({f})", "")
    ctx.res["goal"] = ratios
    r.progress("3. ratios upgraded/alone p99, max: " + "; ".join(
        f"{k} {num(v[0])}x, {num(v[1])}x" for k, v in ratios.items()))


# ---- 4. loop lag; 5. hand-off stop; 6. start-up breakdown --------------------------------------

def verdict(v, op, target):
    if v is None:
        return "not measured"
    ok = v <= target if op == "<=" else v >= target
    return "within the target" if ok else "**outside the target**"


def step_loop_lag(ctx):
    r = ctx.r
    r.md("", "## 4. The serving loop during upgrades", "")
    if not ctx.lag:
        r.md("Not reported: no `loop_lag_ms.last_upgrade` in `batonctl status --json` after any upgrade"
             + ("" if ctx.status_seen else " (status never answered)") + ".")
        return
    r.md("`batonctl status --json` → `loop_lag_ms.last_upgrade`, asked after each upgrade of sections 1, 1b and 3 "
         "(kept when its `pid` is the old generation's), from the request to the outcome (or the end of the "
         "connection hand-off), in the old generation's loop:", "",
         "- `upgrade_work_*`: the time batond's upgrade code ran, summed per loop turn (the request, each step, "
         "COMMIT, the outcome, the hand-off's source, drain reports; wall time, and its CPU time). It is how long "
         "the upgrade held the loop in one turn: what an echo event arriving meanwhile waited for it. Not in it: "
         "the library's own callbacks that do not call back into batond (sending a batch of connections, reading "
         "half a message).",
         "- `upgrade_work_held_*`: the same less the time the loop's thread was runnable but waited for a core "
         "(its run-queue wait, from `/proc/thread-self/schedstat`): what the upgrade code itself held the loop, "
         "system calls that slept included, but not the time the kernel gave both cores to other processes.",
         "- `upgrade_turn_*`: whole loop turns that ran upgrade code, and every turn while a connection hand-off "
         "was in flight: an upper bound, which also counts the echo service's own work in the same turn (under "
         "this load an echo turn alone can use ~0.9 ms of CPU).",
         "- `blocked_*`: every turn of the window, the service's own included; `lag_max`: how late the 100 ms "
         "probe timer ran.", "",
         "The goal: the old loop never blocked by an upgrade more than 1 ms, judged twice: on `upgrade_work_max` "
         "(wall time, which on this shared 2-core machine also counts time the thread waited for a core while the "
         "new generation, baton-load or batonctl ran) and on `upgrade_work_held_max` (that wait left out); the CPU "
         "time is shown beside them.", "")
    done = {}
    for u in ctx.upgrades:
        if u.get("new"):
            done[u["mode"]] = done.get(u["mode"], 0) + 1
    r.md("Measured (`pid` matching) for " + ", ".join(
        f"{sum(x['mode'] == m for x in ctx.lag)} of {n} drain = {m} upgrades" for m, n in sorted(done.items()))
         + f"; the others had not reported their window {ctx.s.status_after:g} s after the request.", "")

    def spread(xs, key, ps):
        vals = [x[key] for x in xs if key in x]
        return " / ".join(num(pct(vals, p)) for p in ps) if vals else "n/a"

    def over(xs, key):
        vals = [x[key] for x in xs if x.get(key) is not None]
        return f"{sum(v > 1.0 for v in vals)} of {len(vals)}" if vals else "n/a"

    rows = []
    groups = [("all", lambda x: True)] + [(f"drain = {m}", lambda x, m=m: x["mode"] == m) for m in ("wait", "handoff")]
    for label, sel in groups:
        xs = [x for x in ctx.lag if sel(x)]
        if not xs:
            continue
        rows.append([label, len(xs), spread(xs, "upgrade_work_max", (50, 90, 100)),
                     spread(xs, "upgrade_work_held_max", (50, 90, 100)),
                     spread(xs, "upgrade_work_cpu_max", (50, 100)), over(xs, "upgrade_work_max"),
                     over(xs, "upgrade_work_held_max"),
                     spread(xs, "upgrade_turn_max", (50, 100)), spread(xs, "upgrade_turn_cpu_max", (50, 100)),
                     spread(xs, "blocked_max", (50, 100)), spread(xs, "lag_max", (50, 100)),
                     num(median([x["iterations"] for x in xs]), "{:.0f}")])
    r.table(["upgrades", "measured", "upgrade work per turn, max: p50 / p90 / max (ms)",
             "less its run-queue wait (held), max: p50 / p90 / max (ms)",
             "its CPU, max: p50 / max (ms)", "upgrades with upgrade work > 1 ms in a turn",
             "with held > 1 ms",
             "upgrade turns whole, max: p50 / max (ms)", "their CPU, max: p50 / max (ms)",
             "all turns: blocked_max p50 / max (ms)", "lag_max p50 / max (ms)", "loop turns, median"], rows)
    work = [x for x in ctx.lag if "upgrade_work_max" in x]
    where = {}
    for x in work:
        if x.get("upgrade_work_max_in"):
            where.setdefault(x["upgrade_work_max_in"], []).append(x["upgrade_work_max"])
    if where:
        r.md("", "Where each upgrade's longest upgrade work ran (`upgrade_work_max_in`: the callback), with the "
             "median and max of those: " + "; ".join(
                 f"`{k}` ×{len(v)} ({num(median(v))} / {num(max(v))} ms)"
                 for k, v in sorted(where.items(), key=lambda kv: -len(kv[1]))) + ".")
    if work:
        ctx.res["lag_work_max"] = max(x["upgrade_work_max"] for x in work)
        ctx.res["lag_work_cpu_max"] = max(x.get("upgrade_work_cpu_max", 0.0) for x in work)
        ctx.res["lag_turn_max"] = max(x.get("upgrade_turn_max", 0.0) for x in work)
        ctx.res["lag_over_1ms"] = sum(x["upgrade_work_max"] > 1.0 for x in work)
        held = [x["upgrade_work_held_max"] for x in work if x.get("upgrade_work_held_max") is not None]
        if held:
            ctx.res["lag_held_max"] = max(held)
            ctx.res["lag_held_over_1ms"] = sum(v > 1.0 for v in held)
            ctx.res["lag_held_n"] = len(held)
        ctx.res["lag_n"] = len(work)
    if ctx.plots:
        f = ctx.plots.loop_lag(ctx.lag)
        if f:
            r.md("", f"![loop blocked per upgrade]({f})")


def step_handoff_stop(ctx):
    r = ctx.r
    r.md("", "## 5. Per-connection hand-off stop (drain = handoff)", "")
    if not ctx.handoff_key_seen:
        r.md("`handoff_stop_us` is not reported by this batond (no such key in `batonctl status --json`).")
        return
    xs = [x for x in ctx.handoff_stop if x.get("mode") == "handoff"]
    seen = {}
    for x in xs:
        seen[(x.get("pid"), x.get("generation"))] = x
    xs = list(seen.values())
    if not xs:
        r.md("batond has `handoff_stop_us`, but it was null after every drain = handoff upgrade measured.")
        return
    samples = [v for x in xs for v in x.get("samples", [])]
    r.md("`batonctl status --json` → `handoff_stop_us` after each drain = handoff upgrade (sections 1b and 3): per "
         "connection, from the old process stopping to read it to the old process hearing that the new one "
         "adopted it (at most 1000 samples per upgrade).", "")
    r.table(["", ""], [
        ["upgrades with a hand-off", len(xs)],
        ["connections handed over (their `count`)", sum(x.get("count", 0) for x in xs)],
        ["samples kept", len(samples)],
        ["all samples: p50 / p90 / p99 / max (ms)", " / ".join(ms(pct(samples, p), 2) for p in (50, 90, 99, 100))],
        ["per upgrade p99 (ms): median / max", f"{ms(median([x.get('p99') for x in xs]), 2)} / "
                                               f"{ms(max(x.get('p99', 0) for x in xs), 2)}"],
        ["per upgrade max (ms): median / max", f"{ms(median([x.get('max') for x in xs]), 2)} / "
                                               f"{ms(max(x.get('max', 0) for x in xs), 2)}"],
    ])
    ctx.res["handoff_stop"] = (pct(samples, 50), pct(samples, 99), pct(samples, 100))
    if ctx.plots and samples:
        f = ctx.plots.handoff_stop(samples)
        if f:
            r.md("", f"![hand-off stop distribution]({f})")


def step_startup(ctx):
    r = ctx.r
    r.md("", "## 6. Where an upgrade's time goes: the start-up breakdown", "")
    runs = []
    for _ in range(10):
        t = time.monotonic()
        subprocess.run([ctx.tools.batond, "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=10)
        runs.append((time.monotonic() - t) * 1e6)
    ups = [u for u in ctx.upgrades if all(k in u["ev"] for k in STEPS)]
    r.md(f"From the history events of {len(ups)} upgrade(s) of sections 1, 1b and 3 (`at_us` differences). "
         "For scale, the physical floor: Python starting `batond --version` and seeing it exit (fork, exec, "
         f"dynamic linking, exit) takes {summary_ms(runs)} ms (p50 / p99 / max of 10 runs, measured now, "
         "without load).", "")
    rows = []
    for label, a, z in PHASES:
        v = [u["ev"][z] - u["ev"][a] for u in ups]
        rows.append([label, f"`{a}` → `{z}`", summary_ms(v, 2)])
    tot = [u["ev"]["serving"] - u["ev"]["requested"] for u in ups]
    rows.append(["**request → serving**", "`requested` → `serving`", summary_ms(tot, 2)])
    rows.append(["`batond --version`, wall time", "fork + exec + exit, from Python", summary_ms(runs, 2)])
    r.table(["phase", "events", "p50 / p99 / max (ms)"], rows)
    ctx.res["startup"] = (median(tot), median(runs))
    if ctx.plots and ups:
        f = ctx.plots.breakdown(ups, PHASES, median(runs))
        if f:
            r.md("", f"![upgrade latency breakdown]({f})")


# ---- 7. throughput; 8. memory -------------------------------------------------------------------

def step_throughput(ctx):
    r, s = ctx.r, ctx.s
    r.md("", "## 7. Echo throughput: batond against baseline-echo", "")
    b = start_batond(ctx, "tp-batond", [])
    e = Baseline(ctx.tools, ctx.work, "tp-baseline")
    if not e.start():
        raise StepFailed("throughput: baseline-echo did not start")
    servers = {"batond": (b.port, b.proc.pid), "baseline": (e.port, e.proc.pid)}
    hz = os.sysconf("SC_CLK_TCK")
    res = {}
    r.progress(f"7. throughput: {s.tp_rounds} round(s) x 2 sizes x 2 servers x {s.tp_seconds} s")
    for rnd in range(1, s.tp_rounds + 1):
        for size in (64, 16384):
            order = ["batond", "baseline"] if rnd % 2 else ["baseline", "batond"]
            for name in order:
                port, pid = servers[name]
                c0 = procs.cpu_ticks(pid)
                l = Load(ctx.tools, ctx.work, f"tp-{name}-{size}-{rnd}", port,
                         ["--connections", s.tp_conns, "--pipeline", 32 if size == 64 else 4, "--message-size", size,
                          "--quiet"], s.tp_seconds)
                rep = l.finish()
                c1 = procs.cpu_ticks(pid)
                t = rep["duration_s"] + rep["drain_s"]
                row = (rep["persistent"]["messages"] / t, rep["persistent"]["bytes_verified"] / t / 1e6,
                       (c1 - c0) / hz / t * 100, rep["failures"]["total"])
                res.setdefault((name, size), []).append(row)
                r.progress(f"   round {rnd}, {size} B, {name}: {row[0]:.0f} messages/s, {row[1]:.1f} MB/s, "
                           f"server CPU {row[2]:.0f}%, failures {row[3]}")
    b.stop_chain()
    procs.stop(e.proc, 10)
    r.md(f"baton-load with {s.tp_conns} persistent connections, uncapped, {s.tp_seconds} s per run; 64-byte messages "
         "with pipeline 32, 16 KiB messages with pipeline 4. Each round runs both servers back to back (the order "
         f"alternates between rounds); the table gives the median of {s.tp_rounds} round(s) and every run in brackets. "
         "Rates count only echoes verified byte for byte, over the run including its final drain. Server CPU is the "
         "server's user+system time over the run's wall time (100% = one core; both servers are single-threaded).", "")
    rows = []
    for size in (64, 16384):
        for name in ("batond", "baseline"):
            v = res.get((name, size), [])
            rows.append([f"{size} B", "batond" if name == "batond" else "baseline-echo",
                         f"{median([x[0] for x in v]):.0f} [{', '.join(f'{x[0]:.0f}' for x in v)}]",
                         f"{median([x[1] for x in v]):.1f}", f"{median([x[2] for x in v]):.0f}%",
                         num(median([x[0] / (x[2] / 100) for x in v if x[2] > 0]), "{:.0f}"), sum(x[3] for x in v)])
    r.table(["message", "server", "messages/s: median [each round]", "MB/s verified (median)", "server CPU (median)",
             "messages per server CPU-second (median)", "failures"], rows)
    r.md("", "batond / baseline-echo. Each round's two runs are back to back, so the ratio within a round is the least "
         "disturbed by the other work on the machine; the headline is the median of those.", "")
    rows = []
    for size in (64, 16384):
        fb, fe = res.get(("batond", size), []), res.get(("baseline", size), [])
        per = [x[0] / y[0] for x, y in zip(fb, fe) if y[0] > 0]
        eff = [(x[0] / x[2]) / (y[0] / y[2]) for x, y in zip(fb, fe) if x[2] > 0 and y[2] > 0 and y[0] > 0]
        rom = median([x[0] for x in fb]) / median([y[0] for y in fe])
        rows.append([f"{size} B", f"**{num(median(per))}×** [{', '.join(f'{x:.2f}' for x in per)}]", f"{rom:.2f}×",
                     f"{num(median(eff))}×"])
        ctx.res[f"tp_{size}"] = (median(per), median(eff))
    r.table(["message", "messages/s ratio: median of rounds [each round]", "ratio of the medians above",
             "messages per server CPU-second ratio: median of rounds"], rows)
    r.md("", "When the server's CPU is well under 100%, the single-threaded client (on the other core) is what limits "
         "the rate, and the messages/s ratio says more about the client than the server; messages per server "
         "CPU-second compares the servers' own cost per echo.")


def step_memory(ctx):
    r, s = ctx.r, ctx.s
    n = s.mem_n
    r.md("", "## 8. Memory per idle connection", "")
    r.progress(f"8. memory: {n} idle connections, batond then baseline-echo")
    r.md(f"Resident set (VmRSS) of the server freshly started and idle, then holding {n} idle connections "
         f"(baton-load --connections {n} --rate 0.001 --pipeline 1 --message-size 64: every connection echoes one or "
         f"two messages at the start, then stays idle). Measured {s.mem_settle:g} s after the server holds them all. "
         "Per connection = (RSS with − RSS idle) / connections held. Kernel socket buffers are not in RSS.", "")
    rows = []
    for name in ("batond", "baseline"):
        if name == "batond":
            srv = start_batond(ctx, "mem-batond", ["--max-connections", n + 1000])
            pid, port = srv.proc.pid, srv.port
        else:
            srv = Baseline(ctx.tools, ctx.work, "mem-baseline")
            if not srv.start():
                raise StepFailed("memory: baseline-echo did not start")
            pid, port = srv.proc.pid, srv.port
        time.sleep(0.3)
        idle, socks0 = procs.rss_kib(pid), procs.socket_count(pid)
        (l,) = start_loads(ctx, port, (f"mem-{name}", ["--connections", n, "--rate", 0.001, "--pipeline", 1,
                                                      "--message-size", 64, "--timeout-ms", 30000, "--quiet"], 300,
                                       None))
        procs.wait_until(lambda: procs.socket_count(pid) >= socks0 + n, 20, 0.1)
        time.sleep(s.mem_settle)
        with_ = procs.rss_kib(pid)
        held = procs.socket_count(pid) - socks0
        l.interrupt()
        rep = l.finish(60)
        time.sleep(0.5)
        after = procs.rss_kib(pid)
        per = (with_ - idle) / held if held > 0 else None
        rows.append([name, idle, with_, held, f"**{num(per)}**", after,
                     f"{rep['failures']['total']} ({rep['persistent']['messages']} messages verified)"])
        r.progress(f"8. {name}: idle {idle} KiB, with {held} connections {with_} KiB: {num(per)} KiB per connection")
        if name == "batond":
            ctx.res["mem"] = per
            srv.stop_chain()
        else:
            procs.stop(srv.proc, 10)
    r.table(["server", "RSS idle (KiB)", "RSS with connections (KiB)", "connections held", "KiB per connection",
             "RSS after they closed (KiB)", "client failures"], rows)


# ---- 9. targets; 10. chaos; 11. supervisor ------------------------------------------------------

def interpretation_section(ctx):
    r, res = ctx.r, ctx.res
    r.md("", "## 9. Against the targets in DESIGN.md (\"What fast means here\")", "",
         "This run's figures only; a noisy shared machine can move them either way.", "")
    rows = []
    for dm in ("wait", "handoff"):
        u = res.get(f"up_{dm}")
        if not u:
            continue
        rows.append([f"zero failed or reset connections across upgrades under load (drain = {dm})",
                     f"{u['done']} upgrades done, {u['failed']} failed; new connections: {u['churn']} failures; "
                     f"persistent connections: {u['persistent']} failures"
                     + (" (drain-deadline closes, see 1)" if dm == "wait" else ""),
                     f"new connections: {'within the target' if u['churn'] == 0 and u['failed'] == 0 else '**outside the target**'}; "
                     f"persistent: {'within' if u['persistent'] == 0 else '**outside**'}"
                     + (f" (drain = wait with a {ctx.s.drain_s} s deadline)" if dm == "wait" else "")])
    if "naive" in res:
        rows.append(["naive restart for contrast", f"new connections: {res['naive']['churn']} failures, persistent: "
                                                   f"{res['naive']['persistent']}", ""])
    w, h = res.get("up_wait", {}), res.get("up_handoff", {})
    rows.append(["SIGUSR2 → new generation accepting: ≤ 5 ms median",
                 f"drain = wait: {ms(w.get('accept_p50'))} ms (max {ms(w.get('accept_max'))}); drain = handoff: "
                 f"{ms(h.get('accept_p50'))} ms (max {ms(h.get('accept_max'))}) (`batonctl upgrade` → accepting: "
                 f"{ms(w.get('ctl_accept_p50'))} / {ms(h.get('ctl_accept_p50'))} ms)",
                 f"wait: {verdict(w.get('accept_p50') and w['accept_p50'] / 1000, '<=', 5)}; handoff: "
                 f"{verdict(h.get('accept_p50') and h['accept_p50'] / 1000, '<=', 5)}"])
    if "startup" in res:
        tot, floor = res["startup"]
        rows.append(["… close to the cost of exec'ing the binary at all",
                     f"request → serving median {ms(tot, 2)} ms; `batond --version` median {ms(floor, 2)} ms", ""])
    if h:
        rows.append(["old generation gone in milliseconds with drain = handoff (no number given)",
                     f"p50 {ms(h.get('linger_p50'))} ms, max {ms(h.get('linger_max'))} ms from the request to "
                     f"`old_exited` (the probation is 1 s of it; drain = wait: p50 {ms(w.get('linger_p50'))}, max "
                     f"{ms(w.get('linger_max'))} ms)", ""])
    for dm in ("wait", "handoff"):
        g = res.get("goal", {}).get(dm)
        if g:
            rows.append([f"live connections cannot feel an upgrade (drain = {dm}): upgraded / left alone ≤ 1.3× at p99, "
                         "≤ 2× at the max (issue 14)", f"p99 {num(g[0])}×, max {num(g[1])}×",
                         f"p99: {verdict(g[0], '<=', 1.3)}; max: {verdict(g[1], '<=', 2)}"])
    if "lag_n" in res:
        rows.append(["the serving loop never blocked by an upgrade more than 1 ms (upgrade code per loop turn, "
                     "wall time)",
                     f"{res['lag_over_1ms']} of {res['lag_n']} upgrades over 1 ms; the longest "
                     f"{res['lag_work_max']:.2f} ms ({res['lag_work_cpu_max']:.2f} ms of CPU at most); whole turns "
                     f"that ran upgrade code, echo work included: up to {res['lag_turn_max']:.2f} ms",
                     verdict(res["lag_work_max"], "<=", 1.0)])
    if "lag_held_n" in res:
        rows.append(["the same, less the time the loop waited for a core (held: the upgrade code's own time, "
                     "sleeping system calls included)",
                     f"{res['lag_held_over_1ms']} of {res['lag_held_n']} upgrades over 1 ms; the longest "
                     f"{res['lag_held_max']:.2f} ms", verdict(res["lag_held_max"], "<=", 1.0)])
    t64, t16 = res.get("tp_64", (None, None)), res.get("tp_16384", (None, None))
    rows.append(["echo throughput ≥ 0.9× baseline at 64 B", f"{num(t64[0])}× messages/s ({num(t64[1])}× per server "
                 "CPU-second)", f"{verdict(t64[0], '>=', 0.9)} (per CPU-second: {verdict(t64[1], '>=', 0.9)})"])
    rows.append(["echo throughput ≥ 0.95× baseline at 16 KiB", f"{num(t16[0])}× messages/s ({num(t16[1])}× per "
                 "server CPU-second)", f"{verdict(t16[0], '>=', 0.95)} (per CPU-second: {verdict(t16[1], '>=', 0.95)})"])
    rows.append(["≤ 2 KiB of user-space memory per idle connection", f"{num(res.get('mem'))} KiB",
                 verdict(res.get("mem"), "<=", 2)])
    r.table(["target", "this run", ""], rows)


def chaos_section(ctx):
    r = ctx.r
    r.md("", "## 10. Chaos: disturbed upgrades under load", "")
    path = os.path.join(ROOT, "docs", "chaos.json")
    if not os.path.exists(path):
        r.md("No recorded run: `./scripts/chaos.sh --record 10` makes one.")
        return
    with open(path) as f:
        c = json.load(f)
    r.md(f"`{c['command']}` on git {c['git']}, {c['date']}, seed {c['seed']}: {c['minutes']} minutes of",
         "upgrades under two byte-verifying baton-load runs (TCP: 16 persistent connections, pipeline 2,",
         "512-byte messages at 40/s each, 10 new connections/s; Unix: 4 persistent, 2048-byte messages,",
         "4 new/s), each upgrade disturbed at random: the new generation stopped (SIGSTOP, held 2.5 s:",
         "longer than any timeout) at fork, after exec, around READY, at COMMIT, during the connection",
         "hand-off or after it serves; killed before READY; storms of SIGUSR2; an upgrade of the new",
         "generation while the old one still has it on probation (chain); drain mode flipped by reload.", "")
    rows = [["upgrades requested", f"{c['upgrades']} ({c['disturbed']} disturbed)"],
            ["new generation serving (passed probation)", c["succeeded"]],
            ["rolled back, old generation serving on", c["rolled_back"]],
            ["disturbances", ", ".join(f"{k} {v}" for k, v in sorted(c["disturbances"].items()))]]
    if c.get("moments"):
        rows.append(["where they landed", ", ".join(f"{k} {v}" for k, v in sorted(c["moments"].items()))])
    rows.append(["echoed messages verified", f"{c['messages']}"
                 + (f" ({c['bytes_verified']} bytes)" if "bytes_verified" in c else "")])
    rows.append(["**client errors** (refused, reset, wrong or missing byte, stall > 15 s)", f"**{c['client_errors']}**"])
    r.table(["", ""], rows)
    r.md("", "At the end one generation serves, the pid file names it, it answers `batonctl`, every",
         "older generation has exited and none is a zombie (the test fails otherwise).")


def step_supervisor(ctx):
    r, s = ctx.r, ctx.s
    if not shutil.which("wrk") or not os.access("/usr/bin/gunicorn", os.X_OK):
        r.md("", "## 11. Supervisor mode", "", "Skipped: needs wrk and gunicorn.")
        return
    import supervisor
    r.progress(f"11. supervisor mode: {s.sv_restarts} restart(s) each way under wrk")
    r.md("", supervisor.section(ctx.tools.batond, ctx.tools.batonctl, restarts=s.sv_restarts, spacing=s.sv_spacing,
                                section="11", log_to=r.progress).rstrip("\n"))


# ---- run --------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; print the report, write nothing in docs/")
    a = ap.parse_args()
    mode = "smoke" if a.smoke else "full"
    tools = Tools(os.environ.get("BATOND", f"{ROOT}/build/daemon/batond"),
                  os.environ.get("BATONCTL", f"{ROOT}/build/cli/batonctl"),
                  os.environ.get("LOADGEN", f"{ROOT}/build/tests/load/baton-load"),
                  os.environ.get("BASELINE", f"{ROOT}/build/tests/load/baseline-echo"))
    missing = tools.missing()
    if missing:
        print(f"bench: {', '.join(missing)} missing; build first (cmake --build build -j2)", file=sys.stderr)
        return 1
    lacks = tools.batond_lacks()
    if lacks:
        print(f"bench: this batond has no {', '.join(lacks)}: too old for this benchmark", file=sys.stderr)
        return 1
    try:
        import plots
        plots_mod = plots
    except ImportError as e:
        print(f"bench: matplotlib is needed for the plots (apt-get install python3-matplotlib): {e}", file=sys.stderr)
        return 1

    work = tempfile.mkdtemp(prefix="baton-bench-")
    os.environ[procs.RUN_MARK] = work  # inherited by every process of this run, batond generations included
    out_dir = os.environ.get("BENCH_OUT") or os.path.join(ROOT, "docs")
    plot_dir = os.path.join(out_dir if mode == "full" else work, "bench")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        nofile = hard if hard != resource.RLIM_INFINITY else 1048576
    except (ValueError, OSError):
        nofile = 1024
    s = SimpleNamespace(**vars(SMOKE if a.smoke else FULL))
    r = Report()
    if s.mem_n + 200 > nofile:
        r.notes.append(f"open-file limit {nofile}: memory step uses {nofile - 200} idle connections "
                       f"instead of {s.mem_n}")
        s.mem_n = nofile - 200
    ctx = SimpleNamespace(tools=tools, work=work, mode=mode, s=s, r=r, res={}, nofile=nofile,
                          command="./scripts/bench.py" + (" --smoke" if a.smoke else ""),
                          plots=plots_mod.Plots(plot_dir, "bench"), upgrades=[], lag=[], handoff_stop=[],
                          status_seen=False, handoff_key_seen=False)
    rc = 0
    try:
        machine_section(ctx)
        r.progress(f"{mode} mode; work dir {work}")

        def step(name, fn, *args):
            try:
                fn(ctx, *args)
            except StepFailed as e:
                r.step_broken(f"{name}: {e}")
            except Exception as e:  # a crash of this script's step: reported, the others still run
                traceback.print_exc()
                r.step_broken(f"{name}: {type(e).__name__}: {e}")
            finally:
                procs.kill_started()

        step("1. upgrade (wait)", step_upgrade, "wait", "1")
        step("1b. upgrade (handoff)", step_upgrade, "handoff", "1b")
        step("2. naive restart", step_naive)
        step("3. latency goal", step_goal)
        step("4. loop lag", step_loop_lag)
        step("5. hand-off stop", step_handoff_stop)
        step("6. start-up breakdown", step_startup)
        step("7. throughput", step_throughput)
        step("8. memory", step_memory)
        interpretation_section(ctx)
        chaos_section(ctx)
        step("11. supervisor mode", step_supervisor)
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        r.md("", "## Run", "", f"Took {time.monotonic() - r.t0:.0f} s; load average (1/5/15 min) at the end: {load}.")
        for n in r.notes:
            r.md("", f"Note: {n}")
        if r.broken:
            r.md("", "Steps that could not run:", "", *[f"- {b}" for b in r.broken])
        text = r.text()
        print(text)
        # What the sections were computed from, for a closer look (BENCH_KEEP keeps it).
        with open(os.path.join(work, "bench-data.json"), "w") as f:
            json.dump({"upgrades": ctx.upgrades, "loop_lag": ctx.lag, "handoff_stop": ctx.handoff_stop,
                       "goal": {k: [{x: v for x, v in run.items() if x != "report"} for run in runs]
                                for k, runs in getattr(ctx, "goal", {}).items()}}, f, indent=1, default=str)
        if mode == "full":
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "benchmarks.md"), "w") as f:
                f.write(text)
            print(f"bench: wrote {os.path.relpath(os.path.join(out_dir, 'benchmarks.md'), os.getcwd())} and "
                  f"{len(ctx.plots.written)} plot(s) in {os.path.relpath(plot_dir, os.getcwd())}/")
        else:
            print(f"bench: smoke mode: the report above was not written to docs/ ({len(ctx.plots.written)} plot(s) "
                  "drawn in the work dir)")
        if r.broken:
            print(f"bench: {len(r.broken)} step(s) could not run: {'; '.join(r.broken)}", file=sys.stderr)
            rc = 1
    except KeyboardInterrupt:
        rc = 130
    finally:
        procs.kill_started()
        keep = os.environ.get("BENCH_KEEP")
        if keep:
            shutil.copytree(work, keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
