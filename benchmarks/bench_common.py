"""What every benchmark shares: JSON-line output, progress on stderr, a background-load meter."""
import contextlib
import json
import os
import sys
import time


def log(benchmark, message):
    print(f"[{benchmark}] {message}", file=sys.stderr, flush=True)


def emit(record):
    """One result as a JSON line on stdout (stdout carries nothing else)."""
    print(json.dumps(record), flush=True)


class BackgroundLoad:
    """CPU cores' worth of work done by *other* processes while the benchmark ran (Linux only).

    Busy time of the whole machine from /proc/stat minus this process's own CPU time (and its
    finished children's), divided by wall time: 0 on an otherwise idle machine; ~1 means another
    process kept a core busy, and then every configuration here ran on roughly half the machine.
    """

    def __init__(self):
        self.began, self.machine, self.own = time.perf_counter(), self._machine_busy(), self._own()

    @staticmethod
    def _machine_busy():
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own():
        # Finished child processes count as the benchmark's own work (a peer library run in one).
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def cores(self):
        machine = self._machine_busy()
        if machine is None or self.machine is None:
            return None
        other = (machine - self.machine) - (self._own() - self.own)
        return round(max(other, 0.0) / (time.perf_counter() - self.began), 2)


def train_once(config):
    """(train result, wall seconds) of the run `config` describes; a run directory that a
    benchmark already finished is reused, with the time it took then."""
    from tfpref.training.run import RESULT_FILE, train

    timing = os.path.join(config.model_dir, "benchmark_train_seconds.json")
    if os.path.exists(timing):
        with open(timing, encoding="utf-8") as f:
            seconds = json.load(f)
        with open(os.path.join(config.model_dir, RESULT_FILE), encoding="utf-8") as f:
            return json.load(f), seconds
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON lines
        result = train(config, show_progress=False)
    seconds = round(time.perf_counter() - began, 1)
    with open(timing, "w", encoding="utf-8") as f:
        json.dump(seconds, f)
    return result, seconds
