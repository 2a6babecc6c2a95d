"""Iteration leaping: a replica in steady decode runs its steps without planning them one by one.

A lightly loaded replica spends most of its life in *decode-only* steps: every running request is a
member of the policy's :class:`~policies.base.DecodeGroup`, nothing waits, and each step computes
one token per member. The plan of such a step is known without calling ``schedule()``: the members'
context sum grows by ``n`` per step, a member needs a KV block when its context crosses a block
boundary, and the step's :class:`~sim.deploy.step_cost.BatchShape` follows from ``n`` and the
context sum. :func:`leap` runs these steps in a tight loop:

- **plan** — :meth:`Scheduler.leap_plan <policies.base.Scheduler.leap_plan>` makes exactly the KV
  changes ``schedule()`` would (boundary blocks and, with prefix caching, the registration of the
  block a member fills), in the same order, at the same simulated instant; the engine builds the
  shape and prices it with the replica's own cost model (the same call, so the same bits);
- **wait** — one ``env.timeout`` per step, created at the same point of the step's start as the
  per-step path creates it. So SimPy sees the same events in the same order with the same ids, and
  ties between events at equal times break exactly as they do without leaping. A step whose end
  comes before everything in SimPy's heap is run at once (the clock set to its end, no event):
  SimPy would pop its timeout next;
- **update** — :meth:`Scheduler.leap_update <policies.base.Scheduler.leap_update>` and the
  iteration-log columns of the steps, as ``update_from_output`` and the engine loop would write them
  for steps in which nobody finishes: applied in bulk when the leap ends (or, if the run stops inside
  it, by ``replica.leap_flush`` before the results are collected), since nobody else reads them.

It stops — handing back to the per-step loop at the start of the next plan, with the state the
per-step path has at that instant — as soon as the next plan could differ: a member would finish in
it (the per-step path runs that step, so finishing and vLLM's async *hold* go through the exact
code), the boundary blocks are not free (the exact path preempts), a request became visible to the
plan (a synchronous submit queues it at once; under async scheduling an inbox entry delivered by the
start of the step now ending), or the policy's own conditions fail (:meth:`leap_ready`). So a leap is
cut only by what targets this replica; other replicas' events never stop it.

Between two steps nobody outside the replica can see a difference: the router and the autoscaler
read ``outstanding``, queue lengths and KV usage, which are the same (the KV changes happen eagerly,
at the step start); cache-aware routers read the prefix cache, registered at the same instant.

Where leaping cannot be exact it is off for the replica, with a reason (:func:`leap_off_reasons`,
reported in ``meta.json`` under ``leap``): ``SIMCTL_NO_LEAP=1`` (tests compare both paths), a policy
that does not declare its decode-only plan, speculative decoding (a random number of tokens per
step), DP-attention ranks (a group's step is set by its slowest rank), per-step hooks of a
disaggregated pool (KV transfers), KV tiers (write-through after every step).
"""
from __future__ import annotations

import os
from array import array
from operator import attrgetter
from typing import Any

from policies.base import Scheduler
from sim.deploy.step_cost import BatchShape

__all__ = ["NO_LEAP_ENV", "leap", "leap_off_reasons", "leap_report"]

#: environment variable that forces the per-step path (``SIMCTL_NO_LEAP=1``)
NO_LEAP_ENV = "SIMCTL_NO_LEAP"
_KIND = "decode"  # every leaping policy labels a decode-only step so (StepBuilder.build)
# the StepCost fields logged per step, read in C when a leap's rows are written
_TIME_S, _FLOPS, _BYTES_MOVED, _MFU, _MBU, _PREFILL_TIME_S = (
    attrgetter(f) for f in ("time_s", "flops", "bytes_moved", "mfu", "mbu", "prefill_time_s"))
#: most memoised decode prices kept per cost model and batch size (a bound on memory, ~200 B each)
MAX_MEMO_PER_BATCH_SIZE = 1 << 16


def leap_off_reasons(replica: Any) -> tuple[str, ...]:
    """Why ``replica`` (a ``sim.engine.simulator._Replica``, hooks set) never leaps; empty when it may."""
    reasons = []
    if os.environ.get(NO_LEAP_ENV, "") not in ("", "0"):
        reasons.append(f"{NO_LEAP_ENV}=1")
    sched = replica.scheduler
    if not getattr(sched, "supports_leap", False):
        reasons.append(f"policy '{sched.policy_name}' does not declare its decode-only plan")
    if sched.speculator is not None:
        reasons.append("speculative decoding (a random number of tokens per step)")
    elif sched.decode_group is None and getattr(sched, "supports_leap", False):
        reasons.append("no decode group")
    if replica.dp_group is not None:
        reasons.append("DP attention ranks step in lockstep")
    if getattr(replica.cluster, "pd", None) is not None or replica.pre_step is not None \
            or replica.post_step is not None:
        reasons.append("disaggregated pool (per-step KV-transfer hooks)")
    if replica.tiers is not None:
        reasons.append("KV tiers (write-through after every step)")
    return tuple(reasons)


def leap(replica: Any, env: Any, kind_code: dict[str, int], invariant_error: type):
    """Run decode-only steps of ``replica`` from now (a SimPy sub-generator; see the module docstring).

    The caller checked ``replica.scheduler.leap_ready()`` at the start of a plan. Returns the number
    of steps run (0: nothing changed, plan this step the per-step way); after ≥ 1 the replica is at
    the start of its next plan, as after the per-step loop's update. The steps' iteration-log rows are
    buffered and written when the leap ends, or by ``replica.leap_flush`` if the run stops inside it."""
    sched = replica.scheduler
    group = sched.decode_group
    inbox = replica.inbox
    ready, plan, update = sched.leap_ready, sched.leap_plan, sched.leap_update
    cost_model = replica.cost_model
    step_cost = cost_model.step
    kv = replica.kv
    free_blocks, num_blocks = kv.free_queue, kv.num_blocks  # KV usage = 1 − free / total (kv.usage)
    timeout = env.timeout
    n = group.num
    # the first iteration in which a member emits its last token: the per-step path runs that one
    finish = min(s0 + req.max_output_tokens - o0 - 1 for req, s0, _c0, o0 in group.members.values())
    k = sched.next_iteration
    # a pure cost model prices equal shapes equally: a decode step's shape is (n, Σ context), so
    # its price is memoised per cost model (shared by replicas; lightly loaded ones repeat contexts)
    memo = None
    if getattr(cost_model, "step_is_pure", False):
        prices = replica.cluster.leap_prices.setdefault(id(cost_model), {})
        memo = prices.get(n)
        if memo is None:
            memo = prices[n] = {}
    # per-step values of the log rows of the steps that have ended (the rest of a row is constant)
    start0 = env.now
    costs: list[Any] = []
    usages: list[float] = []
    waits: list[int] = []
    ends: list[float] = []  # SimPy's clock at each step's end: its start + its time, added in turn

    def flush() -> None:
        """Apply the ended steps: the scheduler's update, the replica's plan cutoff and the log rows,
        as the per-step loop would have left them."""
        replica.leap_flush = None
        m = len(costs)
        if not m:
            return
        replica.num_leapt += m
        update(m, ends[-1])
        replica.plan_cutoff_s = ends[-2] if m > 1 else start0  # the last step's start
        cols = replica.log.columns
        code = kind_code.get(_KIND)  # assigned when first logged, as the per-step loop does
        if code is None:
            code = kind_code[_KIND] = len(kind_code)
        cols["end_s"].extend(ends)
        cols["num_waiting"].extend(waits)
        cols["num_running"].extend(array("q", [n]) * m)
        cols["kv_usage"].extend(usages)
        cols["start_s"].append(start0)
        cols["start_s"].extend(ends[:-1])  # a leapt step starts when the previous one ends
        cols["time_s"].extend(map(_TIME_S, costs))
        cols["kind"].extend(array("b", [code]) * m)
        for name in ("num_seqs", "num_tokens", "num_decode_seqs"):
            cols[name].extend(array("q", [n]) * m)
        for name in ("num_prefill_tokens", "num_preempted"):
            cols[name].extend(array("q", [0]) * m)
        cols["flops"].extend(map(_FLOPS, costs))
        cols["bytes_moved"].extend(map(_BYTES_MOVED, costs))
        cols["mfu"].extend(map(_MFU, costs))
        cols["mbu"].extend(map(_MBU, costs))
        cols["prefill_time_s"].extend(map(_PREFILL_TIME_S, costs))

    replica.leap_flush = flush
    waiting = sched.waiting
    num_waiting_seen = len(waiting)
    # Scheduler.leap_plan changes KV only for members at a block boundary (bucket -k mod block
    # size) or, with prefix caching, filling a block (bucket -k-1): other steps need no call
    plain = type(sched).leap_plan is Scheduler.leap_plan
    buckets, block_size, base_ctx = group.buckets, group.block_size, group.base_ctx
    fill = kv.enable_prefix_caching and block_size > 1
    # SimPy's event heap of (time, priority, id, event) (simpy 4.x, Environment._queue) and clock
    queue = env._queue
    now = start0
    while k < finish:
        r = -k % block_size
        if not plain or buckets[r] or (fill and buckets[r - 1]):
            sum_context = plan(k)
            if sum_context is None:
                break  # boundary blocks short: schedule() preempts
        else:  # the base plan with no member at a block boundary: no KV change, nothing to call
            sum_context = base_ctx + n * k
        cost = memo.get(sum_context) if memo is not None else None
        if cost is None:
            kv_tokens = sum_context + n
            # the shape StepBuilder.add_decodes + build() gives for the group alone
            cost = step_cost(BatchShape(num_seqs=n, num_tokens=n, num_decode_seqs=n, sum_ctx_x_new=sum_context,
                                        sum_new_sq=n, sum_kv_tokens=kv_tokens, sum_decode_kv_tokens=kv_tokens))
            if not cost.time_s >= 0.0:
                raise invariant_error(f"cost model returned step time {cost.time_s!r} for a decode step of {n}")
            if memo is not None and len(memo) < MAX_MEMO_PER_BATCH_SIZE:
                memo[sum_context] = cost
        # what the per-step loop logs, read when it reads it (after the plan): swapped is empty
        wait_now = len(waiting) + len(inbox)
        usage = 1.0 - len(free_blocks) / num_blocks
        dt = cost.time_s
        end = now + dt  # Environment.schedule(): the clock + the delay
        if queue and queue[0][0] <= end:
            # another event is due first (at a tie it was created earlier: the smaller id wins)
            yield timeout(dt)
        else:  # nothing else is due before this step's end: SimPy would pop its timeout next
            env._now = end
        start, now = now, end  # now is env.now
        ends.append(end)
        costs.append(cost)
        usages.append(usage)
        waits.append(wait_now)
        k += 1
        # the next plan sees a request delivered by the start of the step just ended: hand back. Of
        # what leap_ready() checks, only the waiting queue can change from outside between two plans
        if inbox and inbox[0][0] <= start:
            break
        if len(waiting) != num_waiting_seen:
            if not ready():
                break
            num_waiting_seen = len(waiting)
    num_steps = len(costs)
    flush()
    return num_steps


def leap_report(replicas: list[Any]) -> dict[str, Any]:
    """``meta.json``'s ``leap`` block: iterations leapt (count and share) and why replicas did not leap."""
    total = sum(len(r.log) for r in replicas)
    leapt = sum(r.num_leapt for r in replicas)
    off: dict[str, list[int]] = {}
    for r in replicas:
        for reason in r.leap_off:
            off.setdefault(reason, []).append(r.index)
    return {"num_iterations": int(total), "num_leapt_iterations": int(leapt),
            "leapt_share": leapt / total if total else 0.0, "off": off}
