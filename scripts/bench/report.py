"""The markdown report, progress on stderr, and the few statistics it needs."""
import math
import sys
import time


def pct(values, p):
    """The P-th percentile (nearest rank) of VALUES, or None if there are none."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    i = max(1, min(len(v), math.ceil(p * len(v) / 100)))
    return v[i - 1]


def median(values):
    return pct(values, 50)


def ms(us, digits=1):
    """µs -> "1.2" (ms); "n/a" for None."""
    return "n/a" if us is None else f"{us / 1000:.{digits}f}"


def summary_ms(values_us, digits=1):
    """"p50 / p99 / max" in ms of µs values."""
    if not [v for v in values_us if v is not None]:
        return "n/a"
    return " / ".join(ms(pct(values_us, p), digits) for p in (50, 99, 100))


def num(v, fmt="{:.2f}"):
    return "n/a" if v is None else fmt.format(v)


class Report:
    def __init__(self):
        self.lines = []
        self.broken = []   # steps that could not run
        self.notes = []
        self.t0 = time.monotonic()

    def md(self, *lines):
        self.lines.extend(lines)

    def table(self, header, rows):
        self.md("| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |")
        for r in rows:
            self.md("| " + " | ".join(str(c) for c in r) + " |")

    def progress(self, msg):
        print(f"bench [{time.monotonic() - self.t0:.0f}s]: {msg}", file=sys.stderr, flush=True)

    def step_broken(self, what, log_tail=None, log_name=None):
        self.broken.append(what)
        self.progress(f"STEP COULD NOT RUN: {what}")
        self.md("", f"**This step could not run: {what}.**")
        if log_tail:
            self.md("", f"Last lines of {log_name}:", "", "```", *[l.rstrip("\n") for l in log_tail], "```")
            for l in log_tail:
                print("  " + l.rstrip("\n"), file=sys.stderr)

    def text(self):
        return "\n".join(self.lines) + "\n"
