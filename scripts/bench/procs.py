"""Processes for the benchmark: started by pid, killed by pid, waited on with a bound.

Every process is started in a session of its own, with BATON_BENCH_RUN in its
environment; batond passes the environment on to every generation it starts,
so `ours(pid)` tells a pid of this run from a pid the system reused for
someone else's process, and nothing else is ever signalled. batond
generations started by an upgrade are found by the pids in batond's JSON log
(`--log-format json`: one object a line, with `pid`).
"""
import json
import os
import signal
import socket
import subprocess
import time

RUN_MARK = "BATON_BENCH_RUN"


class StepFailed(Exception):
    """A step could not run at all (a tool missing or crashed, nothing verified)."""


# ---- our processes --------------------------------------------------------------

_started = []      # Popen objects (and their pids) we started ourselves
_extra_pids = set()  # pids we did not start but that are ours (batond generations, app instances)
_logs = []         # batond JSON logs: every generation that wrote one is listed there


def run_mark():
    return os.environ.get(RUN_MARK, "")


def ours(pid):
    """True if PID runs (not a zombie) with this run's marker in its environment."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return False
    return f"{RUN_MARK}={run_mark()}".encode() in env


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=None):
    """Starts ARGV in a new session; returns its Popen."""
    p = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=env)
    _started.append(p)
    return p


def adopt(pid):
    """PID is ours to kill at the end even though we did not start it."""
    _extra_pids.add(pid)


def watch_log(path):
    if path not in _logs:
        _logs.append(path)


def signal_ours(pid, sig=signal.SIGKILL):
    """Sends SIG to PID only if it is a process of this run (see ours())."""
    # A child between fork and exec may not show the marker for a moment: look twice.
    if alive(pid) and not ours(pid):
        time.sleep(0.05)
    if ours(pid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def marked_pids():
    """Every process that carries this run's marker: what we started and all it started
    (batond generations, app instances, gunicorn workers), as long as they kept the
    environment."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid() and ours(int(d)):
            out.append(int(d))
    return out


def kill_started():
    """SIGKILL, by pid, to every process of this run still alive; reaps our children."""
    pids = [p.pid for p in _started] + sorted(_extra_pids)
    for log in _logs:
        pids += log_pids(log)
    pids += marked_pids()
    for pid in dict.fromkeys(pids):
        signal_ours(pid)
    for p in _started:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    _started.clear()
    _extra_pids.clear()


def wait_exit(pid, timeout):
    """Until PID is gone (or a zombie); False on timeout."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def stop(p, timeout, sig=signal.SIGTERM):
    """Signals a Popen we started, waits TIMEOUT s, then SIGKILL. True if it stopped by itself."""
    if p.poll() is not None:
        return True
    signal_ours(p.pid, sig)
    try:
        p.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        signal_ours(p.pid)
        p.wait(timeout=10)
        return False


# ---- small helpers ---------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connects(port, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(cond, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def sleep_until(t):
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


def read_json_lines(path):
    """The JSON objects of a `--log-format json` log; lines that are not JSON are skipped."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def log_pids(path):
    return sorted({e["pid"] for e in read_json_lines(path) if isinstance(e.get("pid"), int)})


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return f.readlines()[-n:]
    except OSError:
        return []


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def socket_count(pid):
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            except OSError:
                pass
    except OSError:
        pass
    return n
