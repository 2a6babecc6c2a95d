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
  ties between events at equal times break exactly as they do without leaping;
- **update** — :meth:`Scheduler.leap_update <policies.base.Scheduler.leap_update>` and the
  iteration-log columns of the step, as ``update_from_output`` and the engine loop would write them
  for a step in which nobody finishes.

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
from typing import Any

from sim.deploy.step_cost import BatchShape

__all__ = ["NO_LEAP_ENV", "leap_off_reasons", "leap", "leap_report"]

#: environment variable that forces the per-step path (``SIMCTL_NO_LEAP=1``)
NO_LEAP_ENV = "SIMCTL_NO_LEAP"
_KIND = "decode"  # every leaping policy labels a decode-only step so (StepBuilder.build)
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


def leap(replica: Any, env: Any, appenders: tuple, kind_code: dict[str, int], invariant_error: type):
    """Run decode-only steps of ``replica`` from now (a SimPy sub-generator; see the module docstring).

    The caller checked ``replica.scheduler.leap_ready()`` at the start of a plan. Returns the number
    of steps run (0: nothing changed, plan this step the per-step way); after ≥ 1 the replica is at
    the start of its next plan, as after the per-step loop's update."""
    sched = replica.scheduler
    group = sched.decode_group
    inbox = replica.inbox
    ready, plan, update = sched.leap_ready, sched.leap_plan, sched.leap_update
    cost_model = replica.cost_model
    step_cost = cost_model.step
    kv = replica.kv
    timeout = env.timeout
    (a_start, a_end, a_time, a_kind, a_seqs, a_tokens, a_prefill, a_decode, a_waiting, a_running,
     a_usage, a_flops, a_bytes, a_mfu, a_mbu, a_prefill_time, a_preempted) = appenders
    n = group.num
    # the first iteration in which a member emits its last token: the per-step path runs that one
    finish = min(s0 + req.max_output_tokens - o0 - 1 for req, s0, _c0, o0 in group.members.values())
    k = sched.next_iteration
    num_running = len(sched.running)
    code = kind_code.get(_KIND)  # assigned when first logged, as the per-step loop does
    # a pure cost model prices equal shapes equally: a decode step's shape is (n, Σ context), so
    # its price is memoised per cost model (shared by replicas; lightly loaded ones repeat contexts)
    memo = None
    if getattr(cost_model, "step_is_pure", False):
        prices = replica.cluster.leap_prices.setdefault(id(cost_model), {})
        memo = prices.get(n)
        if memo is None:
            memo = prices[n] = {}
    num_waiting_seen = len(sched.waiting)
    num_steps = 0
    while k < finish:
        sum_context = plan()
        if sum_context is None:
            break  # boundary blocks short: schedule() preempts
        cost = memo.get(sum_context) if memo is not None else None
        if cost is None:
            kv_tokens = sum_context + n
            # the shape StepBuilder.add_decodes + build() gives for the group alone
            cost = step_cost(BatchShape(num_seqs=n, num_tokens=n, num_decode_seqs=n, sum_ctx_x_new=sum_context,
                                        sum_new_sq=n, sum_kv_tokens=kv_tokens, sum_decode_kv_tokens=kv_tokens))
            if memo is not None and len(memo) < MAX_MEMO_PER_BATCH_SIZE:
                memo[sum_context] = cost
        dt = cost.time_s
        if not dt >= 0.0:
            raise invariant_error(f"cost model returned step time {dt!r} for a decode step of {n}")
        num_waiting, usage = sched.num_waiting + len(inbox), kv.usage
        now = env.now
        replica.plan_cutoff_s = now  # the next step is planned while this one runs
        yield timeout(dt)
        end = env.now
        update(k, end)
        # the per-step loop's columns, in its order of appends
        a_end(end)
        a_waiting(num_waiting)
        a_running(num_running)
        a_usage(usage)
        a_start(now)
        a_time(dt)
        if code is None:
            code = kind_code[_KIND] = len(kind_code)
        a_kind(code)
        a_seqs(n)
        a_tokens(n)
        a_prefill(0)
        a_decode(n)
        a_flops(cost.flops)
        a_bytes(cost.bytes_moved)
        a_mfu(cost.mfu)
        a_mbu(cost.mbu)
        a_prefill_time(cost.prefill_time_s)
        a_preempted(0)
        k += 1
        num_steps += 1
        # the next plan sees a delivered request: hand back. Of what leap_ready() checks, only the
        # waiting queue can change from outside between two plans (a synchronous submit)
        if inbox and inbox[0][0] <= now:
            break
        if len(sched.waiting) != num_waiting_seen:
            if not ready():
                break
            num_waiting_seen = len(sched.waiting)
    replica.num_leapt += num_steps
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
