"""Sweep workers die with the sweep: SIGTERM (handled: workers terminated, finished points kept) and
SIGKILL (kernel parent-death signal) both leave no worker process behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import os, sys, time
    from sim.config import parse_experiment
    from sim.plan.sweep import sweep
    import sim.plan.sweep as sw

    def slow(cfg):  # a point that takes long: the sweep is killed while workers compute
        print("worker", os.getpid(), flush=True)
        time.sleep(60)

    cfg = parse_experiment({"name": "k", "model": "opt-125m", "hardware": "h100-sxm",
                            "workload": {"num_requests": 2, "arrival": {"process": "poisson", "rate": 1},
                                         "input_tokens": 8, "output_tokens": 2},
                            "sweep": {"grid": {"seed": [1, 2]}}})
    sweep(cfg, sys.argv[1], jobs=2, point_fn=slow, progress=False)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_workers_die_with_the_sweep(tmp_path: Path, sig: signal.Signals) -> None:
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out")], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # a worker is computing
    assert line.startswith("worker"), line
    time.sleep(0.5)
    # every child of the sweep (the pool's workers), not only those that reported
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    workers = sorted({int(line.split()[1]), *map(int, children)})
    proc.send_signal(sig)
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)
