"""The result of one simulation run (what ``sim.run`` returns and ``simctl run`` writes)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sim.engine.request import TokenTimeline


@dataclass
class RunResult:
    """Outputs of one run.

    - ``summary``: flat dict of metrics (keys as in ``vllm bench serve`` plus simctl's; docs/metrics.md)
    - ``requests``: one row per request (columns ``sim.engine.request.RECORD_COLUMNS``)
    - ``iterations``: one row per engine iteration per replica (iteration log)
    - ``timeline``: compact token timestamps (rebuild any request's token times)
    - ``config``: the resolved experiment config (plain dict)
    - ``meta``: memory plan, model/hardware description, warnings (e.g. uncalibrated GPU)
    - ``fleet``: autoscaled runs only — ``intervals``, ``replicas`` and ``ticks`` tables
      (``sim.runs.autoscaled.fleet_outputs``; saved as ``fleet_<name>.parquet``)
    """

    summary: dict[str, Any]
    requests: pd.DataFrame
    iterations: pd.DataFrame
    timeline: TokenTimeline
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    fleet: dict[str, pd.DataFrame] | None = None
