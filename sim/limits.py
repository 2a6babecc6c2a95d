"""Upper limits on sizes an experiment may ask for, checked when the config is validated.

Each limit bounds work done *before* the simulation starts (arrays of arrival times, per-token
moment sums, one SimPy process per replica or client), so an absurd value is refused at once with
the key's name instead of hanging or exhausting memory. They sit far above any real deployment;
docs/experiment.md ("Limits") lists them with their reasons.
"""
from __future__ import annotations

# Requests one run may generate (num_requests, or rate × duration_s): 10 M requests take ~20 min
# and ~2 GiB of per-request records; beyond that, split the run or sample it.
MAX_REQUESTS = 10_000_000
# Any token count or length bound: 2**25 = 33.5 M tokens, above the longest context window of any
# released model (10 M, Llama 4 Scout); a moment sum over that many values still takes about a second.
MAX_TOKENS = 2 ** 25
# Replicas behind one router (each is a SimPy process with its own KV cache and scheduler).
MAX_REPLICAS = 4096
# Closed-loop clients (one SimPy process each).
MAX_CLIENTS = 1_000_000
# Shared-prefix groups (a prefix length is drawn per group up front).
MAX_PREFIX_GROUPS = 1_000_000
# Largest magnitude of any float in a config: no simctl quantity (seconds, req/s, bytes/s, FLOP/s,
# dollars) is within orders of magnitude of it, so a bigger value is a typo or an overflow probe.
MAX_FLOAT = 1e18
# Speculative draft tokens per request per step (engine.speculative.num_speculative_tokens): each
# step draws a (verifying requests × k) acceptance matrix; published deployments use 1-10.
MAX_SPECULATIVE_TOKENS = 64
