"""Where a stage's memory goes: run its main in a project, printing each named step's
peak anonymous memory (RssAnon, sampled every 10 ms in a thread) and seconds.

    cd PROJECT && python -m bench.stepmem colorize.stages.curate \
        stage:curate colorize.curation.checks:near_duplicate_pairs colorize.curation.review:mirror_curated

Each STEP is MODULE:FUNCTION, or stage:NAME for a name the stage module imported; the
function is wrapped where it is looked up, so a step called as `module.function` must be
given by its module. Run it from the project (cwd), with this repository importable
(PYTHONPATH). Not a test; docs/scale.md quotes its lines.
"""
from __future__ import annotations

import importlib
import sys
import threading
import time

from colorize.common import portable

portable.pin()  # as the stage's own __main__ does, before numpy and torch
_peak = [0]  # since the current step began (a nested step restarts it)
_overall = [0]  # the whole run's


def _anon_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024
    return 0


def _sample() -> None:
    while True:
        now = _anon_mb()
        _peak[0], _overall[0] = max(_peak[0], now), max(_overall[0], now)
        time.sleep(0.01)


def _wrap(owner, name: str) -> None:
    inner = getattr(owner, name)

    def step(*args, **kwargs):
        before = _peak[0] = _anon_mb()
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            print(f"STEP {name}: before {before} MB, peak {_peak[0]} MB, after {_anon_mb()} MB, "
                  f"{time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)

    setattr(owner, name, step)


def main() -> None:
    threading.Thread(target=_sample, daemon=True).start()
    stage = importlib.import_module(sys.argv[1])
    for spec in sys.argv[2:]:
        module, name = spec.split(":")
        _wrap(stage if module == "stage" else importlib.import_module(module), name)
    stage.main()
    print(f"END peak {_overall[0]} MB (the whole run), since the last step {_peak[0]} MB, now {_anon_mb()} MB",
          file=sys.stderr)


if __name__ == "__main__":
    main()
