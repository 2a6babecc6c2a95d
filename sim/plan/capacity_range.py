"""The capacity range: ``max_request_rate`` at the two ends of the hardware profile's uncertainty.

With an ``uncertainty:`` section, :func:`sim.plan.capacity.capacity_search` searches twice more, on the
profiles whose iteration is at the fast and the slow end of ``level`` among many parameter draws
(``sim.runs.uncertainty.parameter_draws``). A profile is ranked by the time of one representative mixed
iteration of the deployment: 32 decodes on 1,024 cached tokens plus one 512-token prefill chunk (capacity
is bounded by how fast iterations run; this ranks draws without simulating each). The slow end gives
``max_request_rate_low`` — what a planner should provision for — and the fast end ``_high``.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim.deploy.deployment import build_deployment
from sim.deploy.roofline import RooflineCostModel
from sim.deploy.step_cost import BatchShapeBuilder
from sim.runs.uncertainty import parameter_draws

#: parameter draws ranked to find the two ends
NUM_DRAWS = 64


def representative_step_s(cost_model: RooflineCostModel) -> float:
    """Time of 32 decodes on 1,024 cached tokens + one 512-token prefill chunk."""
    b = BatchShapeBuilder()
    for _ in range(32):
        b.add(1, 1024)
    b.add(512, 0)
    return cost_model.step(b.build()).time_s


def bracketing_profiles(cfg: Any) -> tuple[Any, Any]:
    """(slow, fast) profiles at the ends of ``cfg.uncertainty.level`` of the iteration time."""
    ucfg = cfg.uncertainty
    dep = build_deployment(cfg)
    hw = dep.hardware
    draws = parameter_draws(hw, NUM_DRAWS, np.random.default_rng(ucfg.seed))
    profiles = [hw.with_parameters(**d) for d in draws]
    times = np.array([representative_step_s(RooflineCostModel(dep.model, p, cfg.parallel, cfg.precision))
                      for p in profiles])
    order = np.argsort(times)
    q = (1.0 - ucfg.level) / 2
    fast = profiles[int(order[int(round(q * (NUM_DRAWS - 1)))])]
    slow = profiles[int(order[int(round((1 - q) * (NUM_DRAWS - 1)))])]
    return slow, fast


def rate_range(cfg: Any, search_fn: Callable[[Any], float | None]) -> tuple[float | None, float | None]:
    """``(low, high)`` max request rate: ``search_fn(cfg)`` on the slow and the fast profile."""
    slow, fast = bracketing_profiles(cfg)
    out = []
    with tempfile.TemporaryDirectory(prefix="simctl-capacity-range-") as tmp:
        for tag, prof in (("slow", slow), ("fast", fast)):
            path = Path(tmp) / f"{tag}.yaml"
            path.write_text(prof.to_yaml())
            out.append(search_fn(cfg.model_copy(update={"hardware": str(path)})))
    return out[0], out[1]
