"""SGLang's scheduler (``sgl-project/sglang`` ``python/sglang/srt/managers/scheduler.py``,
``schedule_policy.py``, ``schedule_batch.py``; SEMANTICS.md §4).

**Prefill and decode are separate iterations** (SGLang without ``--enable-mixed-chunk``), and a new
prefill batch has priority (``get_next_batch_to_run``): each step first tries to build a prefill batch;
only if that is empty do the running requests decode.

*Prefill batch* (``get_new_batch_prefill`` / ``PrefillAdder``), token budget ``chunked_prefill_size``:

1. the in-flight chunked request (at most one) continues first with ``min(remaining, budget)``;
2. waiting requests follow in ``schedule_policy`` order — ``fcfs`` (arrival order, the default) or
   ``lpm`` (longest prefix-cache match first; stable, so ties stay FCFS; falls back to fcfs when more
   than 128 requests wait or prefix caching is off) or ``lof`` (longest output first) — until
   ``max_num_seqs`` requests run or the budget is spent. A request whose remaining prompt fits the
   budget is taken whole; otherwise its first ``budget`` tokens are, it becomes the chunked request,
   and the batch is closed.
3. Memory admission is SGLang's *conservative* estimate: a request is admitted only if its uncached
   prompt plus its future output (``min(max_output, 4096)``) fits in the free KV **minus** what the
   running requests are still expected to generate, ``Σ min(max_output − output, 4096) ×
   new_token_ratio``. ``new_token_ratio`` starts at 0.7, decays linearly to 0.7 × 0.14 over 600 decode
   steps, and after a retraction is reset to (decoded + 20 × running) / Σ max_output of the survivors.
   The first request that does not fit stops admission.

*Decode batch* (``update_running_batch``): every running request decodes one token. If the KV cache
cannot hold the next token of all of them, requests are **retracted** (``retract_decode``): sorted by
(fewest output tokens, then longest input) the first is retracted (KV freed, recomputed later,
appended to the *end* of the waiting queue), and more until the free KV holds 20 tokens per remaining
request, always keeping one.

Speed: decoding requests live in the base class's :class:`~policies.base.DecodeGroup`; a decode batch
that needs no retraction costs O(1) plus the requests crossing a KV block boundary. A prefill batch
(in which they do not decode) dissolves the group first.

Prefix cache: simctl uses the engine's block-level cache (``sim.engine.kv_cache``) in place of SGLang's
token-level radix tree: hits count in whole blocks of ``engine.block_size`` (SGLang's page size is
1 token), and eviction is LRU over freed blocks rather than over unlocked radix leaves. With
``block_size: 1`` the two agree on hit lengths. See docs/policies.md for the other simplifications.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from policies.base import Scheduler, SchedulerOutput, StepBuilder
from policies.registry import register_policy
from sim.engine.request import Request, RequestStatus
from sim.errors import ConfigError

# SGLang constants (global_config.py / schedule_policy.py / scheduler.py defaults).
CLIP_MAX_NEW_TOKENS = 4096  # future output counted per request in the admission estimate
LPM_MAX_WAITING = 128  # lpm turns into fcfs above this many waiting requests
RETRACT_DECODE_STEPS = 20  # free KV kept per remaining request after a retraction
SCHEDULE_POLICIES = ("fcfs", "lpm", "lof")

REJECT_OVER_BUDGET = "prompt longer than max_num_batched_tokens (sglang with chunked_prefill_size -1)"


@dataclass(frozen=True)
class SGLangOptions:
    """``engine.policy_options`` of ``sglang`` (names as SGLang's server arguments)."""

    chunked_prefill_size: int | None = None  # None = engine.max_num_batched_tokens; -1 = no chunking
    schedule_policy: str = "fcfs"  # fcfs | lpm | lof
    init_new_token_ratio: float = 0.7
    min_new_token_ratio_factor: float = 0.14
    new_token_ratio_decay_steps: int = 600
    # --schedule-conservativeness: scheduler.py sets init_new_token_ratio = min(0.7 × it, 1.0)
    schedule_conservativeness: float = 1.0
    # CUDA graphs (read by the cost model, sim/deploy/cuda_graphs.py; validated there): None = not modelled
    cuda_graph_max_bs: int | str | None = None
    eager_layer_host_s: float | None = None


@register_policy("sglang")
class SGLangScheduler(Scheduler):
    """SGLang: prefill batches (chunked, fcfs/lpm) before decode batches, retraction on decode OOM."""

    uses_decode_group = True
    # with nothing waiting or chunked, a step is the decode batch's group path plus the ratio decay
    supports_leap = True
    # SGLang verifies EAGLE/MTP drafts in its decode batch (linear drafts: topk 1)
    supports_speculation = True

    def __init__(self, engine_cfg: Any, kv: Any, max_model_len: int, **policy_options: Any) -> None:
        super().__init__(engine_cfg, kv, max_model_len, **policy_options)
        opts = self.options
        size = self.budget_bounded_option("chunked_prefill_size", opts.chunked_prefill_size)  # -1: no chunking
        self.chunking = size != -1
        # Tokens one prefill batch may compute (rem_chunk_tokens; max_prefill_tokens without chunking).
        self.prefill_budget: int = size if self.chunking else self.max_num_batched_tokens
        self.schedule_policy: str = opts.schedule_policy
        self.init_new_token_ratio = min(opts.init_new_token_ratio * opts.schedule_conservativeness, 1.0)
        self.min_new_token_ratio = min(self.init_new_token_ratio * opts.min_new_token_ratio_factor, 1.0)
        self.new_token_ratio_decay = ((self.init_new_token_ratio - self.min_new_token_ratio)
                                      / opts.new_token_ratio_decay_steps)
        self.new_token_ratio = self.init_new_token_ratio
        self.chunked_req: Request | None = None  # the request whose prompt is being chunked
        self.num_retractions = 0

    def parse_options(self, options: dict[str, Any]) -> SGLangOptions:
        """Validate ``engine.policy_options`` (see :class:`SGLangOptions`)."""
        known = set(SGLangOptions.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"engine.policy_options: unknown key(s) {unknown} for policy 'sglang' "
                              f"(known: {', '.join(sorted(known))})")
        size = options.get("chunked_prefill_size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or (size < 1 and size != -1)):
            raise ConfigError(f"engine.policy_options.chunked_prefill_size must be an integer ≥ 1 or -1 "
                              f"(no chunking), got {size!r}")
        policy = options.get("schedule_policy", "fcfs")
        if policy not in SCHEDULE_POLICIES:
            raise ConfigError(f"engine.policy_options.schedule_policy must be one of "
                              f"{', '.join(SCHEDULE_POLICIES)}, got {policy!r}")
        opts = SGLangOptions(**options)
        if not 0.0 < opts.init_new_token_ratio <= 1.0:
            raise ConfigError(f"engine.policy_options.init_new_token_ratio must be in (0, 1], "
                              f"got {opts.init_new_token_ratio!r}")
        if not (isinstance(opts.schedule_conservativeness, (int, float)) and opts.schedule_conservativeness > 0):
            raise ConfigError(f"engine.policy_options.schedule_conservativeness must be > 0, "
                              f"got {opts.schedule_conservativeness!r}")
        if not 0.0 <= opts.min_new_token_ratio_factor <= 1.0:
            raise ConfigError(f"engine.policy_options.min_new_token_ratio_factor must be in [0, 1], "
                              f"got {opts.min_new_token_ratio_factor!r}")
        if not isinstance(opts.new_token_ratio_decay_steps, int) or opts.new_token_ratio_decay_steps < 1:
            raise ConfigError(f"engine.policy_options.new_token_ratio_decay_steps must be an integer ≥ 1, "
                              f"got {opts.new_token_ratio_decay_steps!r}")
        return opts

    def rejection_reason(self, req: Request) -> str | None:
        """Base reasons, plus (without chunking) a prompt larger than the prefill budget."""
        reason = super().rejection_reason(req)
        if reason is None and not self.chunking and req.num_prompt_tokens > self.prefill_budget:
            reason = REJECT_OVER_BUDGET
        return reason

    # ------------------------------------------------------------------ the step
    def schedule(self, now_s: float) -> SchedulerOutput:
        """A prefill batch if one can be formed, else a decode batch of every running request."""
        step = StepBuilder(self.prefill_budget, now_s)
        self._schedule_prefill(step)
        if step.scheduled:
            self.dissolve_decode_group()  # its members do not decode in a prefill batch
            return step.build(kind="prefill", info={"new_token_ratio": self.new_token_ratio})
        step = self.new_step(now_s)
        self._schedule_decode(step)
        return step.build(kind="decode" if step.scheduled else None)

    def leap_ready(self) -> bool:
        """The base conditions, and no chunked request in flight (it would get a prefill batch)."""
        return self.chunked_req is None and super().leap_ready()

    def leap_waiting_blocked(self) -> bool:
        """No prefill batch is tried while ``max_num_seqs`` run (and nothing is chunked)."""
        return len(self.running) >= self.max_num_seqs

    def leap_plan(self, k: int) -> int | None:
        """The decode batch's KV changes, then the ``new_token_ratio`` decay of a step without retraction."""
        sum_context = super().leap_plan(k)
        if sum_context is not None:
            self._decay_new_token_ratio()
        return sum_context

    # ------------------------------------------------------------------ prefill batch
    def _schedule_prefill(self, step: StepBuilder) -> None:
        """Continue the chunked request, then admit waiting requests in policy order (PrefillAdder)."""
        running = self.running
        if self.chunked_req is None and (not self.waiting or len(running) >= self.max_num_seqs):
            return
        # Future output the running requests are still expected to generate (in tokens).
        reserved = self._reserved_future_tokens()
        if self.chunked_req is not None:
            self._continue_chunked(step)
        if not self.waiting:
            return
        self._prioritize()
        waiting, kv, block_size = self.waiting, self.kv, self.block_size
        while waiting and step.token_budget > 0 and len(running) < self.max_num_seqs:
            req = waiting[0]
            self.admit_prefix(req)
            extend = req.num_tokens - req.num_computed_tokens
            future = min(req.max_output_tokens - req.num_output_tokens, CLIP_MAX_NEW_TOKENS)
            free_tokens = kv.num_free_blocks * block_size - reserved
            # AddReqResult.NO_TOKEN; with nothing running there is nothing to wait for, so the
            # estimate yields (a request near the cache's whole size would otherwise never start).
            if extend + future >= free_tokens and running:
                self.undo_prefix(req)
                return
            chunked = extend > step.token_budget
            if chunked and not self.chunking:
                self.undo_prefix(req)
                return
            n = step.token_budget if chunked else extend
            if not kv.allocate_slots(req, n):
                self.undo_prefix(req)
                return
            self.start_running(req, step, n)
            if chunked:
                self.chunked_req = req  # the batch is full: its budget went to this chunk
                return
            reserved += future

    def _reserved_future_tokens(self) -> float:
        """``Σ min(max_output − output, 4096) × new_token_ratio`` over the running requests (not the
        chunked one); decode-group members' output counts follow from the group's bookkeeping."""
        chunked, k = self.chunked_req, self.next_iteration
        members = self.decode_group.members if self.decode_group is not None else {}
        total = 0
        for r in self.running:
            if r is chunked:
                continue
            m = members.get(r.request_id)
            out = r.num_output_tokens if m is None else m[3] + k - m[1]
            left = r.max_output_tokens - out
            total += left if left < CLIP_MAX_NEW_TOKENS else CLIP_MAX_NEW_TOKENS
        return total * self.new_token_ratio

    def _continue_chunked(self, step: StepBuilder) -> None:
        """Next chunk of the in-flight chunked request (``PrefillAdder.add_chunked_req``)."""
        req = self.chunked_req
        n = min(req.num_tokens - req.num_computed_tokens, step.token_budget)
        if not self.kv.allocate_slots(req, n):
            return  # no room this step: the decodes run and free memory as they finish
        step.add(req, n)
        if req.num_computed_tokens + n >= req.num_tokens:
            self.chunked_req = None  # its last chunk: it joins the decode batch after this step

    def _prioritize(self) -> None:
        """Order the waiting queue by ``schedule_policy`` (in place and stable, as SGLang does)."""
        policy = self.schedule_policy
        waiting = self.waiting
        if policy == "lpm":
            if not self.kv.enable_prefix_caching or len(waiting) > LPM_MAX_WAITING:
                return  # SGLang falls back to fcfs
            hits = {r.request_id: self._match_prefix(r) for r in waiting}
            self.waiting = deque(sorted(waiting, key=lambda r: -hits[r.request_id]))
        elif policy == "lof":
            self.waiting = deque(sorted(waiting, key=lambda r: -r.max_output_tokens))

    def _match_prefix(self, req: Request) -> int:
        """Prefix-cache hit (tokens) ``req`` would get now; its cached blocks become the most recently
        used, as SGLang's ``match_prefix`` refreshes the access time of the radix nodes it matches.
        The hit-rate counters are untouched, so ordering is not counted as a query."""
        if req.num_computed_tokens:
            return 0
        self.kv.refresh_prefix(req)
        return self.kv.peek_prefix_hit(req)

    # ------------------------------------------------------------------ decode batch
    def _schedule_decode(self, step: StepBuilder) -> None:
        """One token for every running request (not the chunked one), retracting on KV shortage."""
        group = self.decode_group
        if group is not None and group.num and self.try_schedule_decode_group(
                step, num_outside=int(self.chunked_req is not None)):
            self._decay_new_token_ratio()
            return
        self.dissolve_decode_group()
        decodes = [r for r in self.running if r is not self.chunked_req]
        if not decodes:
            return
        kv = self.kv
        ahead = 1 + self.num_lookahead  # speculative decoding: the sampled token plus its drafts
        needed = sum(kv.num_blocks_for(r.num_computed_tokens + ahead) - kv.num_held_blocks(r) for r in decodes)
        if needed > kv.num_free_blocks:
            decodes = self._retract(decodes, step)
        else:
            self._decay_new_token_ratio()
        for req in decodes:
            if step.token_budget <= 0:
                return  # only if max_num_seqs > max_num_batched_tokens: the rest decode next step
            n = self.num_new_tokens(req, step.token_budget) if ahead > 1 else 1
            if not kv.allocate_slots(req, 1, n - 1):  # drafts get lookahead slots
                self._retract_one(req, step)  # only when the chunked request holds the rest
                continue
            step.add(req, n)

    def _decay_new_token_ratio(self) -> None:
        """A decode step without retraction: ``new_token_ratio`` decays linearly to its minimum."""
        self.new_token_ratio = max(self.new_token_ratio - self.new_token_ratio_decay,
                                   self.min_new_token_ratio)

    def _retract(self, decodes: list[Request], step: StepBuilder) -> list[Request]:
        """SGLang's ``retract_decode``: retract (fewest outputs, then longest input) first until the free
        KV holds ``RETRACT_DECODE_STEPS`` tokens per remaining request; keep at least one."""
        order = sorted(decodes, key=lambda r: (r.num_output_tokens, -r.num_prompt_tokens), reverse=True)
        kv, block_size = self.kv, self.block_size
        first = True
        while first or kv.num_free_blocks * block_size < RETRACT_DECODE_STEPS * len(order):
            if len(order) == 1:
                break
            first = False
            self._retract_one(order.pop(), step)
        total_decoded = sum(r.num_output_tokens for r in order)
        total_max_new = sum(r.max_output_tokens for r in order)
        self.new_token_ratio = min(1.0, (total_decoded + RETRACT_DECODE_STEPS * len(order))
                                   / max(total_max_new, 1))
        retracted = set(step.preempted_ids)
        return [r for r in decodes if r.request_id not in retracted]

    def _retract_one(self, req: Request, step: StepBuilder) -> None:
        """Free ``req``'s KV and queue it at the end of the waiting queue for recompute."""
        self.running.remove(req)
        self.kv.free(req)
        req.num_computed_tokens = 0
        req.images_pending = req.spec.num_images > 0  # recompute re-runs the vision encoder
        req.status = RequestStatus.PREEMPTED
        req.num_preemptions += 1
        self.num_preemptions_total += 1
        self.num_retractions += 1
        step.preempted_ids.append(req.request_id)
        self.waiting.append(req)
