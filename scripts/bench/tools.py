"""The programs the benchmark drives: batond (with batonctl), baton-load, baseline-echo.

Only structured output is read: batond's `--log-format json` log, `batonctl
status --json`, `batonctl history --json`, `batonctl metrics` (Prometheus
text), and baton-load's `--report` JSON.
"""
import json
import os
import signal
import subprocess
import threading
import time

import procs
from procs import StepFailed


class Tools:
    def __init__(self, batond, batonctl, loadgen, baseline):
        self.batond, self.batonctl, self.loadgen, self.baseline = batond, batonctl, loadgen, baseline
        self.batond_help = self._help(batond)
        self.load_help = self._help(loadgen)

    @staticmethod
    def _help(path):
        try:
            r = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10)
            return r.stdout + r.stderr
        except (OSError, subprocess.TimeoutExpired):
            return ""

    def missing(self):
        return [p for p in (self.batond, self.batonctl, self.loadgen, self.baseline) if not os.access(p, os.X_OK)]

    def batond_lacks(self):
        """The options this script needs that batond does not have."""
        return [o for o in ("--control", "--log-format", "--drain", "--pid-file") if o not in self.batond_help]

    @property
    def load_interval_ms(self):
        """baton-load's --interval-ms, if this build has it."""
        return "--interval-ms" in self.load_help


def ctl(tools, control, *args, timeout=30):
    """batonctl --control CONTROL ARGS; returns the CompletedProcess."""
    return subprocess.run([tools.batonctl, "--control", control, *args], capture_output=True, text=True,
                          timeout=timeout)


def ctl_json(tools, control, *args, timeout=10):
    try:
        r = ctl(tools, control, *args, "--json", timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return None
    try:
        return json.loads(r.stdout)
    except ValueError:
        return None


def parse_metrics(text):
    """Prometheus text -> {'name{labels}': value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


class Batond:
    """One batond (and the generations its upgrades start), on a free loopback port
    unless PORT is given, with a control socket, a pid file and a JSON log."""

    def __init__(self, tools, work, name, args=(), port=0):
        self.tools, self.name, self.args, self.port = tools, name, [str(a) for a in args], port
        self.log = os.path.join(work, f"{name}.log")
        self.control = os.path.join(work, f"{name}.sock")
        self.pid_file = os.path.join(work, f"{name}.pid")
        self.proc = None
        self.first_pid = 0
        procs.watch_log(self.log)

    def start(self, timeout=10):
        """Starts batond and waits until it answers `status` as the serving pid. Returns
        False if it exited or did not answer in time (a port still taken, say)."""
        argv = [self.tools.batond, "--listen", f"echo=tcp://127.0.0.1:{self.port}", "--control", self.control,
                "--pid-file", self.pid_file, "--log-format", "json", *self.args]
        with open(self.log, "a") as log:
            self.proc = procs.start(argv, stdout=log, stderr=log)
        pid = self.proc.pid

        def up():
            if self.proc.poll() is not None:
                return "exited"
            s = self.status()
            return s if s and s.get("pid") == pid and s.get("state") == "serving" else None

        s = procs.wait_until(up, timeout, 0.02)
        if not isinstance(s, dict):
            if self.proc.poll() is None:
                procs.stop(self.proc, 2, signal.SIGKILL)
            return False
        self.first_pid = pid
        for lst in s.get("listeners", []):
            if lst.get("name") == "echo":
                self.port = int(lst["address"].rsplit(":", 1)[1])
        return True

    def status(self):
        return ctl_json(self.tools, self.control, "status")

    def history(self):
        h = ctl_json(self.tools, self.control, "history")
        return h if isinstance(h, list) else []

    def metrics(self):
        try:
            r = ctl(self.tools, self.control, "metrics", timeout=10)
        except subprocess.TimeoutExpired:
            return {}
        return parse_metrics(r.stdout) if r.returncode == 0 else {}

    def serving_pid(self):
        return procs.read_pid(self.pid_file)

    def log_entries(self):
        return procs.read_json_lines(self.log)

    def problems(self):
        """warn/error/critical log entries: [(level, msg)]."""
        return [(e.get("level"), e.get("msg", "")) for e in self.log_entries()
                if e.get("level") in ("warn", "warning", "error", "critical")]

    def stop_chain(self):
        """Graceful stop of the serving generation, then every generation in the log
        gone within a bound (else SIGKILL). Returns the pids that had to be killed."""
        killed = []
        cur = self.serving_pid() or (self.proc.pid if self.proc else 0)
        if cur and procs.ours(cur):
            os.kill(cur, signal.SIGTERM)
            if not procs.wait_exit(cur, 15):
                procs.signal_ours(cur)
                killed.append(cur)
        for pid in procs.log_pids(self.log):
            if procs.ours(pid) and not procs.wait_exit(pid, 10):
                procs.signal_ours(pid)
                killed.append(pid)
        if self.proc:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        return killed


class Load:
    """One baton-load run in the background, its JSON report in WORK/NAME.json."""

    def __init__(self, tools, work, name, port, args, duration, interval_ms=None):
        self.tools, self.name, self.duration = tools, name, duration
        self.report_path = os.path.join(work, f"{name}.json")
        self.err_path = os.path.join(work, f"{name}.err")
        argv = [tools.loadgen, "--target", f"tcp://127.0.0.1:{port}", *map(str, args), "--duration",
                f"{duration:g}", "--report", self.report_path]
        if interval_ms and tools.load_interval_ms:
            argv += ["--interval-ms", str(interval_ms)]
        self.spawned = time.monotonic()
        self.started_at = None  # monotonic s when it reported the run phase started
        self._started = threading.Event()
        self.proc = procs.start(argv, stdout=subprocess.PIPE, stderr=open(self.err_path, "w"))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.report = None
        self.rc = None

    def _read(self):
        # baton-load prints "baton-load: started ..." when its run phase begins: the
        # readiness signal every test of it waits for. Anything else is drained.
        for line in self.proc.stdout:
            if not self._started.is_set() and line.startswith(b"baton-load: started"):
                self.started_at = time.monotonic()
                self._started.set()

    def wait_started(self, timeout=30):
        return self._started.wait(timeout)

    def interrupt(self):
        if self.proc.poll() is None:
            procs.signal_ours(self.proc.pid, signal.SIGINT)

    def finish(self, extra=30):
        """Waits for the run to end (SIGINT past duration + EXTRA s, then SIGKILL) and reads
        the report. Raises StepFailed if nothing was verified or the tool broke."""
        try:
            self.rc = self.proc.wait(timeout=max(0.0, self.spawned + self.duration + extra - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.interrupt()
            try:
                self.rc = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                procs.signal_ours(self.proc.pid)
                self.rc = self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        try:
            with open(self.report_path) as f:
                self.report = json.load(f)
        except (OSError, ValueError):
            self.report = None
        verified = 0
        if self.report:
            verified = self.report["persistent"]["messages"] + self.report["churn"]["succeeded"]
        if self.rc is None or self.rc > 1 or not self.report or verified == 0:
            err = "".join(procs.tail(self.err_path, 8)).strip()
            raise StepFailed(f"baton-load ({self.name}) did not run: exit {self.rc}, verified {verified}"
                             + (f"; stderr: {err}" if err else ""))
        return self.report

    def zero(self):
        """CLOCK_MONOTONIC seconds of the timeline's zero: from the report when this
        baton-load writes it, else when it said it started."""
        if self.report and self.report.get("started_monotonic_us"):
            return self.report["started_monotonic_us"] / 1e6
        return self.started_at if self.started_at is not None else self.spawned


def timeline(report, zero, base=None):
    """[(start_s, end_s, point)] of a report's timeline, on the axis where BASE (monotonic s)
    is 0; the report's own zero is ZERO."""
    out = []
    end = 0.0
    shift = zero - (base if base is not None else zero)
    for p in report.get("timeline", []):
        start = end
        end = p["end_s"] if "end_s" in p else end + p["seconds"]
        out.append((start + shift, end + shift, p))
    return out


class Baseline:
    """baseline-echo on a free loopback port (chosen here, tried a few times)."""

    def __init__(self, tools, work, name):
        self.tools, self.out = tools, os.path.join(work, f"{name}.out")
        self.proc, self.port = None, 0

    def start(self):
        for _ in range(5):
            port = procs.free_port()
            self.proc = procs.start([self.tools.baseline, "--listen", f"127.0.0.1:{port}"],
                                    stdout=open(self.out, "a"), stderr=subprocess.STDOUT)
            if procs.wait_until(lambda: self.proc.poll() is not None or procs.connects(port), 10):
                if self.proc.poll() is None:
                    self.port = port
                    return True
        return False
