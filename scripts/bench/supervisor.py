#!/usr/bin/python3
"""Restarting a gunicorn app under HTTP load, three ways, side by side:

  baton     batond --exec -- gunicorn ...; each restart is `batonctl restart`
  gunicorn  gunicorn's own upgrade: USR2 to the master (it re-execs itself on
            the same sockets), wait for the new master's pid file, then TERM
            to the old master (gunicorn's documented USR2 + stop-the-old dance)
  naive     TERM to gunicorn, wait for its exit, start it again

Each method gets the same wrk load (1 thread, C connections) for the whole
run and R restarts S seconds apart; wrk's totals come from a report script as
JSON. `section()` returns a markdown section (scripts/bench.py puts it in
docs/benchmarks.md); run alone, it prints it on stdout, progress on stderr.
Loopback only; every process it starts (and every process they start, by the
run's marker in their environment) is killed by pid on exit (procs.py).

  supervisor.py --batond B --batonctl C [--restarts R] [--spacing S] [--connections C] [--section N]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import procs  # noqa: E402
from procs import free_port, read_pid  # noqa: E402

REPORT_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d,"seconds":%.3f}\n',
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, summary.duration / 1e6))
end
"""

APP = """import os
def application(environ, start_response):
    body = b'pid=%d' % os.getpid()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
"""

_log = None


def log(msg):
    if _log:
        _log(f"supervisor: {msg}")
    else:
        print(f"bench supervisor: {msg}", file=sys.stderr, flush=True)


def start(argv, **kw):
    return procs.start(argv, **kw)


def wait_until(cond, timeout, what):
    if not procs.wait_until(cond, timeout):
        raise RuntimeError(f"timed out waiting for {what}")


def answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return s.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


class Wrk:
    def __init__(self, port, connections, work):
        script = os.path.join(work, "report.lua")
        with open(script, "w") as f:
            f.write(REPORT_LUA)
        self.out = open(os.path.join(work, "wrk.out"), "w+")
        self.proc = start(["wrk", "-t1", f"-c{connections}", "-d600s", "--timeout", "10s", "-s", script,
                           f"http://127.0.0.1:{port}/"], stdout=self.out, stderr=subprocess.STDOUT)

    def finish(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        self.out.seek(0)
        for line in self.out:
            if line.startswith('{"requests"'):
                return json.loads(line)
        raise RuntimeError("wrk printed no report")


def gunicorn_argv(work, port=None, pidfile=None):
    argv = ["/usr/bin/gunicorn", "--chdir", work, "--workers", "2", "--graceful-timeout", "10"]
    if port:
        argv += ["--bind", f"127.0.0.1:{port}"]
    if pidfile:
        argv += ["--pid", pidfile]
    return argv + ["webapp:application"]


def run_baton(args, work, port):
    control = os.path.join(work, "control.sock")
    ctl = [args.batonctl, "--control", control]
    batond = start([args.batond, "--control", control, "--listen", f"http=tcp://127.0.0.1:{port}",
                    "--app-probation", str(args.probation), "--exec", "--"] + gunicorn_argv(work),
                   stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "batond.log"), "w"))
    wait_until(lambda: answers(port), 30, "batond's gunicorn to answer")

    def note_app_groups():
        # Each app instance leads a process group of its own, which killing
        # batond's would not reach.
        r = subprocess.run(ctl + ["status", "--json"], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            for i in json.loads(r.stdout).get("app", {}).get("instances", []):
                procs.adopt(i["pid"])

    note_app_groups()
    wrk = Wrk(port, args.connections, work)
    times = []
    time.sleep(args.spacing)
    for _ in range(args.restarts):
        t = time.monotonic()
        r = subprocess.run(ctl + ["restart"], capture_output=True, text=True, timeout=120)
        note_app_groups()
        if r.returncode != 0:
            raise RuntimeError("batonctl restart failed: " + r.stderr.strip())
        times.append(time.monotonic() - t)
        time.sleep(args.spacing)
    report = wrk.finish()
    subprocess.run(ctl + ["stop"], capture_output=True, timeout=60)
    batond.wait(timeout=60)
    return report, times


def run_gunicorn_usr2(args, work, port):
    pidfile = os.path.join(work, "gunicorn.pid")
    start(gunicorn_argv(work, port, pidfile), stdout=subprocess.DEVNULL,
          stderr=open(os.path.join(work, "gunicorn.log"), "w"))
    wait_until(lambda: answers(port) and read_pid(pidfile), 30, "gunicorn to answer")
    wrk = Wrk(port, args.connections, work)
    times = []
    time.sleep(args.spacing)
    for _ in range(args.restarts):
        old = read_pid(pidfile)
        t = time.monotonic()
        procs.signal_ours(old, signal.SIGUSR2)
        # The new master (a child of the old one, in its process group) writes
        # PIDFILE.2 once it has booted; then the old master is told to stop,
        # and the new one, promoted, takes the pid file's name.
        wait_until(lambda: read_pid(pidfile + ".2") not in (0, old), 30, "the new gunicorn master")
        new = read_pid(pidfile + ".2")
        procs.signal_ours(old, signal.SIGTERM)
        wait_until(lambda: read_pid(pidfile) == new, 30, "the new gunicorn master to be promoted")
        times.append(time.monotonic() - t)
        time.sleep(args.spacing)
    report = wrk.finish()
    procs.signal_ours(read_pid(pidfile), signal.SIGTERM)
    return report, times


def run_naive(args, work, port):
    times = []
    g = start(gunicorn_argv(work, port), stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "naive.log"), "w"))
    wait_until(lambda: answers(port), 30, "gunicorn to answer")
    wrk = Wrk(port, args.connections, work)
    time.sleep(args.spacing)
    for _ in range(args.restarts):
        t = time.monotonic()
        g.send_signal(signal.SIGTERM)
        g.wait(timeout=60)
        g = start(gunicorn_argv(work, port), stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "naive.log"), "a"))
        wait_until(lambda: answers(port), 30, "the restarted gunicorn to answer")
        times.append(time.monotonic() - t)
        time.sleep(args.spacing)
    report = wrk.finish()
    g.send_signal(signal.SIGTERM)
    g.wait(timeout=60)
    return report, times


def section(batond, batonctl, restarts=10, spacing=1.0, connections=16, probation=1.0, section="7", log_to=None):
    """Runs the three methods; returns the markdown section."""
    global _log
    _log = log_to
    args = argparse.Namespace(batond=batond, batonctl=batonctl, restarts=restarts, spacing=spacing,
                              connections=connections, probation=probation)
    rows = []
    try:
        for name, run in (("baton (`batonctl restart`)", run_baton), ("gunicorn USR2 re-exec + TERM to the old master", run_gunicorn_usr2),
                          ("naive: TERM, then start again", run_naive)):
            with tempfile.TemporaryDirectory(prefix="baton-bench-sv-") as work:
                with open(os.path.join(work, "webapp.py"), "w") as f:
                    f.write(APP)
                log(f"{name}: {restarts} restarts under wrk -c{connections}")
                report, times = run(args, work, free_port())
                procs.kill_started()
                rows.append((name, report, times))
    finally:
        procs.kill_started()

    out = [f"## {section}. Supervisor mode: restarting gunicorn under HTTP load\n",
           f"`scripts/bench/supervisor.py`: gunicorn 2 sync workers answering a 10-byte body; wrk, 1 thread, "
           f"{connections} connections, for the whole run; {restarts} restarts {spacing:g} s apart; "
           f"baton with `--app-probation {probation:g}`. A failed request is any wrk socket error "
           "(connect, read, write, timeout) or non-2xx response.\n",
           "| method | requests | failed requests | connect / read / write / timeout errors | non-2xx | p50 / p99 / max latency (ms) | restart took, median / max (s) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r, times in rows:
        failed = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["status"]
        times = sorted(times)
        median = times[len(times) // 2] if times else 0
        out.append(f"| {name} | {r['requests']} | **{failed}** | {r['connect']} / {r['read']} / {r['write']} / {r['timeout']} | "
                   f"{r['status']} | {r['p50_us'] / 1000:.2f} / {r['p99_us'] / 1000:.2f} / {r['max_us'] / 1000:.1f} | "
                   f"{median:.2f} / {max(times or [0]):.2f} |")
    out.append("\nbaton's restart time includes the probation (the new instance must live that long before the old one is "
               "stopped); gunicorn's own upgrade has none: a new master that fails after booting leaves no old one to fall "
               "back on. The naive restart refuses connections while no gunicorn listens.")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batond", required=True)
    p.add_argument("--batonctl", required=True)
    p.add_argument("--restarts", type=int, default=10)
    p.add_argument("--spacing", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--probation", type=float, default=1.0)
    p.add_argument("--section", default="7")
    a = p.parse_args()
    os.environ.setdefault(procs.RUN_MARK, f"supervisor-{os.getpid()}")
    print(section(a.batond, a.batonctl, a.restarts, a.spacing, a.connections, a.probation, a.section), end="")


if __name__ == "__main__":
    main()
