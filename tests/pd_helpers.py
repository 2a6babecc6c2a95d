"""A small disaggregated experiment for the PD tests, and dotted-key edits of it."""
from __future__ import annotations

import copy
from typing import Any

from sim.config import parse_experiment

#: Llama-3.1-8B, one prefill and one decode H100, a 100 Gb/s RDMA link, one 4000-token prompt.
PD_BASE: dict[str, Any] = {
    "name": "pd-test", "seed": 0, "model": "llama-3.1-8b", "hardware": "h100-sxm", "parallel": {"tp": 1},
    "engine": {"policy": "vllm", "max_num_seqs": 64, "max_num_batched_tokens": 8192, "max_model_len": 8192,
               "enable_prefix_caching": False},
    "disaggregation": {"prefill": {"replicas": 1}, "decode": {"replicas": 1},
                       "kv_transfer": {"link": "rdma", "bandwidth_gbps": 100, "latency_us": 20}},
    "workload": {"num_requests": 1, "arrival": {"process": "offline"},
                 "input_tokens": {"dist": "fixed", "value": 4000}, "output_tokens": {"dist": "fixed", "value": 16}},
}


def edited(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with each dotted key set to its value (``None`` removes the key)."""
    data = copy.deepcopy(base)
    for dotted, value in changes.items():
        cur = data
        parts = dotted.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        if value is None:
            cur.pop(parts[-1], None)
        else:
            cur[parts[-1]] = value
    return data


def pd_config(base: dict[str, Any] = PD_BASE, **changes: Any):
    """The parsed experiment of ``base`` edited by ``changes`` (see :func:`edited`)."""
    return parse_experiment(edited(base, changes), "pd.yaml")
