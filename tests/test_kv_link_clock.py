"""The processor-sharing KV link (sim.engine.disagg.KVLink) and the max-min fair NIC fabric
(sim.engine.kv_handoff.NICFabric) late in a run: the clock's rounding must not
livelock it, and its byte accounting stays within the bandwidth up to that rounding.

A completion timer lands up to half an ulp of the clock off the exact last-byte time; one ulp at
t = 86 400 s (a day) is 1.5e-11 s, 0.7 B at 400 Gb/s. A flow left with a remainder above the link's
1e-3 B threshold but a send time under half an ulp used to re-arm its timer for the same instant forever
(it hung autoscaled PD runs past t ≈ 500 s on a 1 TB/s link)."""
from __future__ import annotations

import math

import numpy as np
import simpy

from sim.engine.disagg import KVLink


def _drive(start_s: float, bandwidth: float, seed: int, num_flows: int = 400, max_events: int = 200_000):
    env = simpy.Environment(initial_time=start_s)
    link = KVLink(env, bandwidth, "0->1")
    rng = np.random.default_rng(seed)
    done: dict[int, float] = {}
    starts = start_s + np.cumsum(rng.exponential(2e-4, num_flows))
    sizes = rng.integers(1_000, 5_000_000, num_flows).astype(float)

    def feeder():
        for i, (t, n) in enumerate(zip(starts, sizes)):
            yield env.timeout(t - env.now)
            link.start(i, n, lambda i=i: done.__setitem__(i, env.now))

    env.process(feeder())
    for _ in range(max_events):  # a livelock would spin at one instant: bound the event count
        if env.peek() == math.inf:
            break
        env.step()
    return link, done, starts, sizes


def test_link_late_in_a_day_completes_every_flow_without_spinning():
    for start_s, bandwidth in ((86_400.0, 5e10), (512.1, 1e12), (3.0e6, 5e10)):
        link, done, starts, sizes = _drive(start_s, bandwidth, seed=int(start_s) % 97)
        assert len(done) == len(sizes) and not link.flows, (start_s, bandwidth)
        # no flow beat its size at the full bandwidth, up to one ulp of the clock
        for i, t in done.items():
            assert t - starts[i] >= sizes[i] / bandwidth - math.ulp(t) - 1e-12
        # never above the bandwidth: the bytes asked for fit in the busy time plus the timers' rounding
        assert link.bytes_requested <= bandwidth * (link.busy_s + link.clock_rounding_s) * (1 + 1e-9) + 1.0
        assert link.clock_rounding_s <= link.num_flows * math.ulp(starts[-1] + 1.0) * 2


def test_nic_fabric_late_in_a_day_completes_every_flow_without_spinning():
    """The max-min fair NIC fabric (kv_transfer.sharing: nic) has the same completion timer."""
    from sim.engine.kv_handoff import NICFabric

    for start_s, bandwidth in ((86_400.0, 5e10), (512.1, 1e12), (3.0e6, 5e10)):
        env = simpy.Environment(initial_time=start_s)
        fab = NICFabric(env, bandwidth)
        rng = np.random.default_rng(int(start_s) % 89)
        starts = start_s + np.cumsum(rng.exponential(2e-4, 300))
        sizes = rng.integers(1_000, 5_000_000, starts.size).astype(float)
        pairs = rng.integers(0, 3, (starts.size, 2))
        done: dict[int, float] = {}

        def feeder(env=env, fab=fab, starts=starts, sizes=sizes, pairs=pairs, done=done):
            for i, (t, n, (src, dst)) in enumerate(zip(starts, sizes, pairs)):
                yield env.timeout(t - env.now)
                fab.start(i, int(src), 10 + int(dst), n, lambda i=i: done.__setitem__(i, env.now))

        env.process(feeder())
        for _ in range(200_000):  # a livelock would spin at one instant: bound the event count
            if env.peek() == math.inf:
                break
            env.step()
        assert len(done) == sizes.size and not fab.flows, (start_s, bandwidth)
        fab.check()
        for i, t in done.items():
            assert t - starts[i] >= sizes[i] / bandwidth - math.ulp(t) - 1e-12
