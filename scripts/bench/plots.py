"""The benchmark's plots: SVG files drawn by matplotlib (Agg), as reproducible as it allows
(a fixed svg.hashsalt, no date in the metadata), linked from the report."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator  # noqa: E402

from tools import timeline  # noqa: E402

plt.rcParams.update({"svg.hashsalt": "baton-bench", "svg.fonttype": "none", "font.size": 9,
                     "axes.grid": True, "grid.alpha": 0.3})
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")


def plain_log_axis(axis):
    """A log axis labelled 0.5, 1, 2, 5, 10 rather than 10^0."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(PLAIN)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


COLOURS = {"wait": "tab:blue", "handoff": "tab:green", "naive": "tab:red"}


class Plots:
    def __init__(self, directory, link_prefix):
        self.dir, self.link_prefix, self.written = directory, link_prefix, []

    def _save(self, fig, name):
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, name)
        fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
        plt.close(fig)
        self.written.append(path)
        return f"{self.link_prefix}/{name}"

    def goal_timeline(self, key, label, runs):
        """Round-trip p99/max and messages/s over time of the last pair of runs, upgrade requests marked."""
        alone = [x for x in runs if not x["upgraded"]]
        up = [x for x in runs if x["upgraded"]]
        if not alone or not up:
            return None
        alone, up = alone[-1], up[-1]
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        colour = COLOURS.get(key, "tab:blue")
        for run, c, what in ((alone, "0.6", "left alone"), (up, colour, "upgraded" if key != "naive" else "restarted")):
            # The last interval is the short one of the final drain: its rate would mislead.
            full = run["report"].get("parameters", {}).get("interval_ms", 1000) / 1000
            pts = [x for x in timeline(run["report"], run["zero"]) if x[2]["seconds"] >= 0.5 * full]
            xs = [e for _, e, _ in pts]
            ax1.step(xs, [p["p99_us"] / 1000 for _, _, p in pts], where="pre", color=c, lw=1.2,
                     label=f"p99, {what}")
            ax1.step(xs, [p["max_us"] / 1000 for _, _, p in pts], where="pre", color=c, lw=0.8, ls=":",
                     label=f"max, {what}")
            ax2.step(xs, [p["messages"] / p["seconds"] if p["seconds"] > 0 else 0 for _, _, p in pts], where="pre",
                     color=c, lw=1, label=what)
            fails = [(e, p["failures"]["total"]) for _, e, p in pts if p["failures"]["total"]]
            if fails:
                ax2.scatter([f[0] for f in fails], [0] * len(fails), marker="x", color="black", s=18, zorder=3,
                            label=f"intervals with failures ({sum(f[1] for f in fails)} in all)")
        for m in up["marks"]:
            for ax in (ax1, ax2):
                ax.axvline(m["t0"] - up["zero"], color=colour, ls="--", lw=0.7, alpha=0.7)
        ax1.set_yscale("log")
        plain_log_axis(ax1.yaxis)
        ax1.set_ylabel("round trip (ms)")
        ax1.set_title(f"{label}: 50 connections at 5000 messages/s; dashed: "
                      + ("upgrade requested" if key != "naive" else "SIGTERM + restart"))
        ax1.legend(loc="upper right", fontsize=7, ncol=2)
        ax2.set_ylabel("messages/s")
        ax2.set_xlabel("seconds since the load started")
        ax2.legend(loc="lower right", fontsize=7)
        return self._save(fig, f"latency-{key}.svg")

    def handoff_stop(self, samples_us):
        v = sorted(x / 1000 for x in samples_us)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.2))
        ax1.plot(v, [(i + 1) / len(v) for i in range(len(v))], color=COLOURS["handoff"])
        ax1.set_xscale("log")
        plain_log_axis(ax1.xaxis)
        ax1.set_xlabel("hand-off stop per connection (ms)")
        ax1.set_ylabel("fraction of connections")
        ax1.set_title(f"CDF of {len(v)} samples")
        ax2.hist(v, bins=40, color=COLOURS["handoff"])
        ax2.set_xlabel("hand-off stop per connection (ms)")
        ax2.set_ylabel("connections")
        ax2.set_title("histogram")
        return self._save(fig, "handoff-stop.svg")

    def breakdown(self, ups, phases, floor_us):
        """Stacked bars, one per upgrade in the order they ran, of the phases' durations."""
        fig, ax = plt.subplots(figsize=(9, 3.6))
        xs = list(range(len(ups)))
        bottom = [0.0] * len(ups)
        cmap = plt.get_cmap("tab10")
        for k, (label, a, z) in enumerate(phases):
            h = [(u["ev"][z] - u["ev"][a]) / 1000 for u in ups]
            ax.bar(xs, h, bottom=bottom, color=cmap(k), label=label, width=0.8)
            bottom = [b + x for b, x in zip(bottom, h)]
        # A machine stall can make one upgrade a hundred times slower than the rest: the
        # axis stops at a few times the usual total and the bars above it are labelled.
        totals = sorted(bottom)
        top = max(totals[int(0.9 * (len(totals) - 1))] * 2.5, (floor_us or 0) / 1000 * 1.5)
        if totals and totals[-1] > top:
            ax.set_ylim(0, top)
            for x, t in zip(xs, bottom):
                if t > top:
                    ax.annotate(f"{t:.0f} ms", (x, top), xytext=(0, -3), textcoords="offset points", ha="center",
                                va="top", rotation=90, fontsize=6)
        if floor_us:
            ax.axhline(floor_us / 1000, color="black", ls="--", lw=0.8, label="batond --version, wall time (median)")
        # Where one step's upgrades end and the next's begin.
        for i in range(1, len(ups)):
            if (ups[i]["step"], ups[i]["mode"]) != (ups[i - 1]["step"], ups[i - 1]["mode"]):
                ax.axvline(i - 0.5, color="0.5", lw=0.6)
        groups = []
        for i, u in enumerate(ups):
            g = f"{u['step']} {u['mode']}"
            if not groups or groups[-1][0] != g:
                groups.append([g, i, i])
            groups[-1][2] = i
        ax.set_xticks([(a + b) / 2 for _, a, b in groups])
        ax.set_xticklabels([f"section {g}" for g, _, _ in groups], fontsize=7)
        ax.set_ylabel("ms from the request")
        ax.set_title("Each upgrade from request to serving, by phase (history events)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        return self._save(fig, "upgrade-breakdown.svg")

    def loop_lag(self, lags):
        fig, ax = plt.subplots(figsize=(8, 3))
        for mode in ("wait", "handoff"):
            xs = [i for i, x in enumerate(lags) if x["mode"] == mode]
            work = [i for i in xs if lags[i].get("upgrade_work_max", 0) > 0]
            ax.scatter(work, [lags[i]["upgrade_work_max"] for i in work], s=14, color=COLOURS[mode],
                       label=f"upgrade work in one turn, drain = {mode}")
            held = [i for i in xs if (lags[i].get("upgrade_work_held_max") or 0) > 0]
            ax.scatter(held, [lags[i]["upgrade_work_held_max"] for i in held], s=14, marker="x", color=COLOURS[mode],
                       alpha=0.8, label=f"the same less its wait for a core, drain = {mode}")
            turns = [i for i in xs if lags[i].get("upgrade_turn_max", 0) > 0]
            ax.scatter(turns, [lags[i]["upgrade_turn_max"] for i in turns], s=14, facecolors="none",
                       edgecolors=COLOURS[mode], alpha=0.7, label=f"whole upgrade turns, drain = {mode}")
        ax.axhline(1.0, color="black", ls="--", lw=0.8, label="goal: 1 ms")
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("upgrade (in the order measured)")
        ax.set_ylabel("ms")
        ax.set_title("The old generation's loop during each upgrade, longest per upgrade (status → loop_lag_ms.last_upgrade)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        return self._save(fig, "loop-lag.svg")
