"""The scheduler contract every policy implements.

The engine loop is::

    out = scheduler.schedule(now_s)          # -> SchedulerOutput (plain, frozen)
    cost = cost_model.step(out.shape)         # prices the batch
    yield env.timeout(cost.time_s)
    finished = scheduler.update_from_output(out, iteration, now_s)

Policies decide *who* runs and *how many tokens*; the KV-cache manager (``sim.engine.kv_cache``) decides
whether memory allows it and says no by return value. Policies never touch block lists directly.
"""
from __future__ import annotations

import abc
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.deploy.engine_defaults import LEGACY_MAX_NUM_SEQS
from sim.deploy.step_cost import BatchShape, BatchShapeBuilder
from sim.engine.kv_cache import KVCacheManager
from sim.engine.request import Request, RequestStatus
from sim.errors import ConfigError

# Reasons a request is rejected at admission (the ``reject_reason`` column).
REJECT_TOO_LONG = "prompt longer than max_model_len"
REJECT_KV_CAPACITY = "exceeds KV cache capacity"


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    """What one iteration computes. The cost model reads only ``shape``."""

    # request -> number of new tokens computed for it this step (insertion order = batch order)
    num_scheduled_tokens: dict[int, int]
    # the scheduled Request objects, aligned with num_scheduled_tokens' order
    scheduled: tuple[Request, ...]
    # aggregate sums priced by the cost model
    shape: BatchShape
    # requests preempted (recompute or swap) while building this step
    preempted_ids: tuple[int, ...] = ()
    # requests rejected while building this step (e.g. longer than the whole KV cache)
    rejected_ids: tuple[int, ...] = ()
    # policy-specific label of the step kind ("mixed", "prefill", "decode") for the iteration log
    kind: str = "mixed"
    # extra info for the iteration log
    info: dict = field(default_factory=dict)
    # running requests advanced in aggregate, one decode token each, NOT listed in
    # num_scheduled_tokens/scheduled (see DecodeGroup); they are counted in ``shape``
    num_grouped: int = 0
    # speculative decoding: request -> draft tokens it verifies this step (included in its
    # num_scheduled_tokens; empty without speculation)
    num_draft_tokens: dict[int, int] = field(default_factory=dict)


class StepBuilder:
    """Collects one step's batch while a policy walks its queues; :meth:`build` freezes it.

    Scheduling a request is O(1): it appends to the batch and adds to the running sums priced by the
    cost model (``sim.deploy.step_cost.BatchShapeBuilder``).
    """

    __slots__ = ("token_budget", "scheduled", "num_scheduled_tokens", "shape", "preempted_ids",
                 "rejected_ids", "now_s", "num_grouped", "num_draft_tokens")

    def __init__(self, token_budget: int, now_s: float) -> None:
        self.token_budget = token_budget  # tokens still available in this step
        self.scheduled: list[Request] = []
        self.num_scheduled_tokens: dict[int, int] = {}
        self.shape = BatchShapeBuilder()
        self.preempted_ids: list[int] = []
        self.rejected_ids: list[int] = []
        self.now_s = now_s
        self.num_grouped = 0
        self.num_draft_tokens: dict[int, int] | None = None  # a dict while speculation is on this step

    def add_decodes(self, num_seqs: int, sum_context_tokens: int) -> None:
        """Schedule ``num_seqs`` plain decodes (1 new token each, ``Σ ctx = sum_context_tokens``) in O(1)."""
        if num_seqs <= 0:
            return
        sh = self.shape
        sh.num_seqs += num_seqs
        sh.num_tokens += num_seqs
        sh.num_decode_seqs += num_seqs
        sh.sum_ctx_x_new += sum_context_tokens
        sh.sum_new_sq += num_seqs
        sh.sum_kv_tokens += sum_context_tokens + num_seqs
        sh.sum_decode_kv_tokens += sum_context_tokens + num_seqs
        self.token_budget -= num_seqs
        self.num_grouped += num_seqs

    def add(self, req: Request, num_new_tokens: int) -> None:
        """Schedule ``num_new_tokens`` of ``req`` on top of its ``num_computed_tokens``."""
        self.scheduled.append(req)
        self.num_scheduled_tokens[req.request_id] = num_new_tokens
        drafts = self.num_draft_tokens
        # speculation: tokens past num_tokens are drafts to verify
        d = 0 if drafts is None else req.num_computed_tokens + num_new_tokens - req.num_tokens
        if d > 0:
            drafts[req.request_id] = d
            self.shape.add_verify(num_new_tokens, req.num_computed_tokens, d)
        else:
            self.shape.add(num_new_tokens, req.num_computed_tokens)
        self.token_budget -= num_new_tokens
        if req.images_pending and req.num_computed_tokens < req.num_prompt_tokens:
            # vLLM V1 runs the encoder in the step whose chunk first reaches the image placeholders
            # (Scheduler._try_schedule_encoder_inputs); the placeholders open the request's own prompt.
            # A request whose prompt KV arrived computed (a disaggregated decode instance) encodes nothing.
            spec = req.spec
            self.shape.add_images(spec.num_images, spec.image_tokens)
            req.images_pending = False
        if req.first_scheduled_s < 0:
            req.first_scheduled_s = self.now_s

    def build(self, kind: str | None = None, info: dict | None = None) -> SchedulerOutput:
        """Freeze into a :class:`SchedulerOutput`; ``kind`` defaults to prefill/decode/mixed/idle."""
        shape = self.shape.build()
        if kind is None:
            if shape.num_seqs == 0:
                kind = "idle"
            elif shape.num_decode_seqs == shape.num_seqs:
                kind = "decode"
            elif shape.num_decode_seqs == 0:
                kind = "prefill"
            else:
                kind = "mixed"
        return SchedulerOutput(self.num_scheduled_tokens, tuple(self.scheduled), shape,
                               tuple(self.preempted_ids), tuple(self.rejected_ids), kind, info or {},
                               self.num_grouped, self.num_draft_tokens or {})


class DecodeGroup:
    """Running requests in steady decode, advanced in aggregate: O(events) per step, not O(requests).

    A member computes exactly one token per iteration and emits one, from iteration ``s0`` on, so its
    state at iteration ``k`` follows from the state it joined with (``c0`` computed, ``o0`` output):
    ``num_computed = c0 + (k - s0)``. Per step the group costs O(1) plus its *events*:

    - a member needs a new KV block when its computed count crosses a block boundary — members are
      bucketed by ``(c0 - s0) mod block_size``, so one bucket (≈ 1/block_size of them) allocates per step;
    - a member finishes at a known iteration (``finish_at``).

    :meth:`materialize` writes a member's true counters and its emission run back to the Request
    (when it finishes, is preempted, or the policy needs exact per-request order); the
    :class:`Scheduler` keeps members in ``running`` (order unchanged) so exact paths still work.
    """

    __slots__ = ("members", "buckets", "finish_at", "num", "base_ctx", "block_size")

    def __init__(self, block_size: int) -> None:
        self.members: dict[int, tuple[Request, int, int, int]] = {}  # id -> (req, s0, c0, o0)
        # members by (c0 - s0) mod block_size: id -> (req, s0, c0, o0)
        self.buckets: list[dict[int, tuple[Request, int, int, int]]] = [{} for _ in range(block_size)]
        self.finish_at: dict[int, list[int]] = {}  # iteration -> ids finishing in it (may be stale)
        self.num = 0
        self.base_ctx = 0  # Σ (c0 - s0): Σ num_computed at iteration k is base_ctx + num·k
        self.block_size = block_size

    def __len__(self) -> int:
        return self.num

    def sum_context(self, iteration: int) -> int:
        """Σ num_computed_tokens of the members before ``iteration`` runs."""
        return self.base_ctx + self.num * iteration

    def join(self, req: Request, first_iteration: int) -> None:
        """Make ``req`` (needing exactly one token, holding its KV) a member from ``first_iteration``."""
        c0, o0 = req.num_computed_tokens, req.num_output_tokens
        rid = req.request_id
        m = self.members[rid] = (req, first_iteration, c0, o0)
        self.buckets[(c0 - first_iteration) % self.block_size][rid] = m
        fin = first_iteration + req.max_output_tokens - o0 - 1
        lst = self.finish_at.get(fin)
        if lst is None:
            self.finish_at[fin] = [rid]
        else:
            lst.append(rid)
        self.num += 1
        self.base_ctx += c0 - first_iteration

    def num_boundary(self, iteration: int) -> int:
        """How many members need one new KV block before ``iteration`` runs."""
        return len(self.buckets[(-iteration) % self.block_size])

    def boundary(self, iteration: int, set_computed: bool = False) -> list[Request]:
        """Members that need one new KV block before ``iteration`` runs (their computed count is a
        multiple of the block size). ``set_computed`` writes their current ``num_computed_tokens``."""
        bucket = self.buckets[(-iteration) % self.block_size]
        if not set_computed:
            return [m[0] for m in bucket.values()]
        out = []
        for req, s0, c0, _ in bucket.values():
            req.num_computed_tokens = c0 + iteration - s0
            out.append(req)
        return out

    def filling(self, iteration: int) -> list[Request]:
        """Members whose last block becomes full in ``iteration`` (computed ≡ block_size − 1), with
        their current ``num_computed_tokens`` written: the prefix cache registers that block now, as
        vLLM does when it schedules the token that fills it. Empty for block size 1 (the boundary
        allocation registers it then)."""
        if self.block_size == 1:
            return []
        out = []
        for req, s0, c0, _ in self.buckets[(-iteration - 1) % self.block_size].values():
            req.num_computed_tokens = c0 + iteration - s0
            out.append(req)
        return out

    def materialize(self, req: Request, last_iteration: int, last_time_s: float) -> None:
        """Remove ``req`` from the group, writing back its counters and emissions up to ``last_iteration``."""
        rid = req.request_id
        _, s0, c0, o0 = self.members.pop(rid)
        del self.buckets[(c0 - s0) % self.block_size][rid]
        self.num -= 1
        self.base_ctx -= c0 - s0
        k = last_iteration - s0 + 1  # iterations it ran as a member
        if k <= 0:
            req.num_computed_tokens = c0
            return
        req.num_computed_tokens = c0 + k
        req.num_output_tokens = o0 + k
        runs = req.runs
        if runs and req.last_emit_iter == s0 - 1:
            runs[-1] = last_iteration
        else:
            runs.append(s0)
            runs.append(last_iteration)
        req.last_emit_iter = last_iteration
        if req.first_token_s < 0:
            req.first_token_s = last_time_s
        req.last_token_s = last_time_s

    def pop_finishing(self, iteration: int) -> list[Request]:
        """Members whose last token was emitted by ``iteration`` (still members; caller materializes)."""
        ids = self.finish_at.pop(iteration, None)
        if not ids:
            return []
        out: dict[int, Request] = {}  # a member that left and rejoined may be listed twice
        members = self.members
        for rid in ids:
            m = members.get(rid)
            if m is not None and m[1] + m[0].max_output_tokens - m[3] - 1 == iteration:
                out[rid] = m[0]
        return list(out.values())

    def all_members(self) -> list[Request]:
        """Members in join order."""
        return [m[0] for m in self.members.values()]


class Scheduler(abc.ABC):
    """Base class of every scheduling policy (one instance per replica).

    Subclasses implement :meth:`schedule`, split into short functions (running requests first, then
    waiting ones), using :class:`StepBuilder` and the shared helpers here. The shared
    :meth:`update_from_output` advances requests after the step ran; policies normally keep it.

    State:

    - ``waiting``: deque of requests not holding KV (new, or preempted for recompute; front = next);
    - ``running``: list of requests holding KV blocks, in admission order (preemption takes the last);
    - ``swapped``: deque of requests whose KV is in host memory (swap preemption only).

    Requests are rejected at :meth:`add_request` when they can never run (prompt + output longer than
    ``max_model_len``, or more KV blocks than the whole cache). Policies read ``policy_options``
    through :meth:`parse_options`, which they override to validate their own parameters.
    """

    policy_name: str = "base"
    #: whether the real engine plans step k+1 while step k runs (vLLM V1's async scheduling); the
    #: replica honours it unless ``engine.async_scheduling`` says otherwise
    async_scheduling_default: bool = False
    # Policies whose decodes are "every running request in steady decode gets one token" set this to
    # keep such requests in a DecodeGroup (O(1) per step instead of O(running)); see DecodeGroup.
    uses_decode_group: bool = False
    # Policies that never split a prompt set this reason: a prompt longer than the whole token budget
    # (``max_num_batched_tokens``) could never run, so it is rejected with it at admission.
    reject_prompt_over_budget: str | None = None
    #: whether :meth:`leap_ready` / :meth:`leap_plan` describe this policy's plan when only decode-group
    #: members run (iteration leaping, ``sim.engine.leap``); a policy sets it after checking that
    supports_leap: bool = False
    #: whether the policy schedules speculative draft tokens (``engine.speculative``); see
    #: :meth:`enable_speculation`
    supports_speculation: bool = False

    def __init__(self, engine_cfg: Any, kv: KVCacheManager, max_model_len: int, **policy_options: Any) -> None:
        self.cfg = engine_cfg
        self.kv = kv
        self.max_model_len = max_model_len
        self.block_size = kv.block_size
        # None when no deployment resolved it (a bare EngineConfig): the engine-independent default
        self.max_num_seqs: int = engine_cfg.max_num_seqs or LEGACY_MAX_NUM_SEQS
        budget = engine_cfg.max_num_batched_tokens
        if budget is None:  # vLLM's fallback when nothing resolved it (sim.api resolves per GPU)
            budget = 2048 if engine_cfg.enable_chunked_prefill else max(max_model_len, 2048)
        self.max_num_batched_tokens: int = budget
        self.long_prefill_token_threshold: int = engine_cfg.long_prefill_token_threshold
        self.enable_chunked_prefill: bool = engine_cfg.enable_chunked_prefill
        self.preemption_mode: str = engine_cfg.preemption_mode
        # engine.async_scheduling, or the policy's default when unset (the replica reads it from here)
        flag = getattr(engine_cfg, "async_scheduling", None)
        self.async_scheduling: bool = type(self).async_scheduling_default if flag is None else bool(flag)
        self.options = self.parse_options(dict(policy_options))
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.swapped: deque[Request] = deque()
        self.num_preemptions_total = 0
        self.decode_group: DecodeGroup | None = DecodeGroup(kv.block_size) if self.uses_decode_group else None
        # With a decode group: the running requests outside it (prefill chunks, resumed requests), in
        # running order. Policies append admitted/resumed requests; update_from_output drops those that
        # joined the group or stopped running.
        self.individual: list[Request] = []
        self.next_iteration = 0  # index the next non-empty step will run as (the engine's numbering)
        self.last_step_end_s = 0.0  # end time of the last completed step
        # speculative decoding (policies.speculative.Speculator), off by default; num_lookahead is the
        # number of draft tokens a decoding request carries in the step being built (0 = none)
        self.speculator: Any = None
        self.num_lookahead = 0

    # ------------------------------------------------------------------ options
    def budget_bounded_option(self, key: str, value: int | None) -> int:
        """A per-step token count from ``engine.policy_options`` (a chunk size): the token budget when
        unset, and never above it (clear error naming both keys)."""
        if value is None:
            return self.max_num_batched_tokens
        if value > self.max_num_batched_tokens:
            raise ConfigError(
                f"engine.policy_options.{key} = {value} exceeds engine.max_num_batched_tokens = "
                f"{self.max_num_batched_tokens}; raise engine.max_num_batched_tokens to at least {value}")
        return value

    def parse_options(self, options: dict[str, Any]) -> Any:
        """Validate ``engine.policy_options``; the base accepts none (unknown keys are errors)."""
        if options:
            raise ConfigError(f"engine.policy_options: policy '{self.policy_name}' takes no options, "
                              f"got {sorted(options)}")
        return None

    # ------------------------------------------------------------------ queues
    def add_request(self, req: Request) -> bool:
        """Queue a new request; returns False (status REJECTED, ``reject_reason`` set) if it can never run."""
        reason = self.rejection_reason(req)
        if reason is not None:
            req.status = RequestStatus.REJECTED
            req.reject_reason = reason
            return False
        req.status = RequestStatus.WAITING
        self.waiting.append(req)
        return True

    def rejection_reason(self, req: Request) -> str | None:
        """Why ``req`` can never run here, or None.

        The last sampled token is never computed, so a request needs KV for prompt + output − 1 tokens.
        Policies that never split a prompt also reject one longer than the token budget
        (``reject_prompt_over_budget``).
        """
        total = req.num_prompt_tokens + req.max_output_tokens
        if total > self.max_model_len:
            return REJECT_TOO_LONG
        if not self.kv.can_fit(max(total - 1, req.num_prompt_tokens)):
            return REJECT_KV_CAPACITY
        if self.reject_prompt_over_budget is not None and req.num_prompt_tokens > self.max_num_batched_tokens:
            return self.reject_prompt_over_budget
        return None

    def has_unfinished(self) -> bool:
        """True while any request is waiting, running or swapped out."""
        return bool(self.waiting or self.running or self.swapped)

    @property
    def num_waiting(self) -> int:
        """Requests waiting for (re)admission, swapped ones included."""
        return len(self.waiting) + len(self.swapped)

    @property
    def num_running(self) -> int:
        """Requests holding KV blocks on the device."""
        return len(self.running)

    def num_unfinished(self) -> int:
        """Requests this replica still owes an answer."""
        return len(self.waiting) + len(self.running) + len(self.swapped)

    # ------------------------------------------------------------------ the step
    @abc.abstractmethod
    def schedule(self, now_s: float) -> SchedulerOutput:
        """Choose this step's batch: which requests run and how many new tokens each computes."""

    def new_step(self, now_s: float) -> StepBuilder:
        """A :class:`StepBuilder` with this scheduler's full token budget."""
        step = StepBuilder(self.max_num_batched_tokens, now_s)
        if self.speculator is not None:
            self.num_lookahead = self.speculator.num_lookahead(len(self.running))
            if self.num_lookahead:
                step.num_draft_tokens = {}
        return step

    def enable_speculation(self, speculator: Any) -> None:
        """Schedule speculative draft tokens from now on (``policies.speculative``); before any request.

        Decoding requests then advance by a random number of tokens per step, so the decode group's
        one-token-per-step bookkeeping is off: every step takes the exact per-request path.
        """
        if not self.supports_speculation:
            raise ConfigError(
                f"engine.speculative: policy '{self.policy_name}' does not schedule speculative draft tokens "
                "(policies that do: vllm, sglang); remove engine.speculative or use one of those")
        self.speculator = speculator
        self.decode_group = None

    def num_new_tokens(self, req: Request, token_budget: int) -> int:
        """Tokens ``req`` would compute now: min(remaining, long_prefill_token_threshold if > 0, budget).

        With speculation on, a running decoding request (one token to compute, at least one emitted;
        not one just resumed, whose drafts were dropped) also carries ``num_lookahead`` draft tokens,
        never more than its remaining output minus one; the budget cuts drafts first, as vLLM's
        scheduler does."""
        n = req.num_tokens - req.num_computed_tokens
        if n == 1 and self.num_lookahead and req.num_output_tokens and req.status is RequestStatus.RUNNING:
            d = req.max_output_tokens - req.num_output_tokens - 1
            n += d if d < self.num_lookahead else self.num_lookahead
        threshold = self.long_prefill_token_threshold
        if 0 < threshold < n:
            n = threshold
        return n if n < token_budget else token_budget

    def admit_prefix(self, req: Request) -> int:
        """Take ``req``'s prefix-cache hit (if it restarts from zero) and set ``num_computed_tokens``.

        Returns the hit in tokens. Records ``num_cached_tokens`` at the first admission.
        """
        if req.num_computed_tokens == 0:
            hit = self.kv.get_computed_blocks(req)
            req.num_computed_tokens = hit
            if req.first_scheduled_s < 0:
                req.num_cached_tokens = hit
            return hit
        return 0

    def undo_prefix(self, req: Request) -> None:
        """Give back what :meth:`admit_prefix` took when the request could not be admitted after all."""
        self.kv.free(req)
        req.num_computed_tokens = 0

    def preempt(self, req: Request, step: StepBuilder | None = None) -> None:
        """Preempt ``req`` (already removed from ``running`` by the caller).

        Recompute (default): free its blocks, ``num_computed_tokens = 0``, front of ``waiting``.
        Swap (``engine.preemption_mode: swap``): move its blocks to the host pool (bytes added to the
        step's ``swap_bytes``) and append it to ``swapped``; falls back to recompute if the pool is full.
        """
        req.num_preemptions += 1
        self.num_preemptions_total += 1
        if step is not None:
            step.preempted_ids.append(req.request_id)
        if self.preemption_mode == "swap":
            moved = self.kv.swap_out(req)
            if moved is not None:
                req.status = RequestStatus.SWAPPED
                self.swapped.append(req)
                if step is not None:
                    step.shape.swap_bytes += moved
                return
        self.kv.free(req)
        req.num_computed_tokens = 0
        req.images_pending = req.spec.num_images > 0  # vLLM frees the encoder cache of a preempted request
        req.status = RequestStatus.PREEMPTED
        self.waiting.appendleft(req)

    def swap_in(self, req: Request, step: StepBuilder | None = None, num_new_tokens: int = 0,
                reserve_blocks: int = 0) -> bool:
        """Bring a swapped request back (bytes added to ``swap_bytes``); False — nothing changed — if
        blocks are short.

        With ``num_new_tokens`` it also allocates that chunk, and it proceeds only if the swapped blocks
        plus the chunk's new blocks leave at least ``reserve_blocks`` free (a watermark).
        """
        kv = self.kv
        if num_new_tokens or reserve_blocks:
            c = req.num_computed_tokens
            needed = kv.num_swapped_blocks(req) + kv.num_blocks_for(c + num_new_tokens) - kv.num_blocks_for(c)
            if kv.num_free_blocks - needed < reserve_blocks:
                return False
        moved = kv.swap_in(req)
        if moved is None:
            return False
        if num_new_tokens and not kv.allocate_slots(req, num_new_tokens):
            raise AssertionError("allocation failed after the swap-in room check")
        req.status = RequestStatus.RUNNING
        if step is not None:
            step.shape.swap_bytes += moved
        return True

    def allocate_or_preempt(self, req: Request, num_new_tokens: int, step: StepBuilder) -> bool:
        """Allocate ``req``'s chunk, preempting the last running request (:meth:`preempt`) until it
        fits. Returns False when ``req`` itself had to be preempted (nothing behind it is left)."""
        running = self.running
        lookahead = 0
        if self.num_lookahead:  # draft tokens get lookahead slots (never hashed into the prefix cache)
            lookahead = req.num_computed_tokens + num_new_tokens - req.num_tokens
            if lookahead > 0:
                num_new_tokens -= lookahead
            else:
                lookahead = 0
        while not self.kv.allocate_slots(req, num_new_tokens, lookahead):
            victim = running.pop()
            self.preempt(victim, step)
            if victim is req:
                return False
        return True

    def start_running(self, req: Request, step: StepBuilder, num_new_tokens: int) -> None:
        """Move ``req`` — the front of ``waiting``, its KV allocated — to ``running`` (and ``individual``
        with a decode group) and schedule ``num_new_tokens`` of it."""
        self.waiting.popleft()
        req.status = RequestStatus.RUNNING
        self.running.append(req)
        if self.decode_group is not None:
            self.individual.append(req)
        step.add(req, num_new_tokens)

    def schedule_swapped(self, step: StepBuilder, reserve_blocks: int = 0,
                         cap_long_prefills: bool = True) -> None:
        """Swap requests back in, oldest first, while the budget lasts, fewer than ``max_num_seqs`` run
        and :meth:`swap_in` finds room (keeping ``reserve_blocks`` free); each resumes with
        :meth:`num_new_tokens` (``cap_long_prefills``) or ``min(remaining, budget)`` tokens."""
        swapped, running = self.swapped, self.running
        while swapped and step.token_budget > 0 and len(running) < self.max_num_seqs:
            req = swapped[0]
            if cap_long_prefills:
                n = self.num_new_tokens(req, step.token_budget)
            else:
                n = min(req.num_tokens - req.num_computed_tokens, step.token_budget)
            if not self.swap_in(req, step, num_new_tokens=n, reserve_blocks=reserve_blocks):
                return
            swapped.popleft()
            running.append(req)
            if self.decode_group is not None:
                self.individual.append(req)
            step.add(req, n)

    def try_schedule_decode_group(self, step: StepBuilder, reqs: Sequence[Request] = (),
                                  chunks: Sequence[int] = (), num_outside: int | None = None) -> bool:
        """Fast path: schedule the decode group (one token per member) plus ``chunks[i]`` tokens of each
        ``reqs[i]`` — if every running request is a member or one of ``num_outside`` others (default
        ``len(individual)``) and the token budget and the free blocks hold them all. Otherwise change
        nothing and return False (the caller runs its exact per-request loop)."""
        group, kv = self.decode_group, self.kv
        if num_outside is None:
            num_outside = len(self.individual)
        if group is None or group.num + num_outside != len(self.running):
            return False  # the bookkeeping must cover every running request
        if group.num + sum(chunks) > step.token_budget:
            return False
        blocks = group.num_boundary(self.next_iteration)
        for req, n in zip(reqs, chunks):
            blocks += kv.num_blocks_to_allocate(req, n)
        if blocks > kv.num_free_blocks:
            return False
        self.schedule_decode_group(step)
        for req, n in zip(reqs, chunks):
            if not kv.allocate_slots(req, n):
                raise AssertionError("allocation failed after the free-block check")
            step.add(req, n)
        return True

    def schedule_reserved_decodes(self, step: StepBuilder) -> None:
        """Every running request computes what it still needs (one decode token) while the budget
        lasts, for policies that reserved every slot up front (so allocation cannot fail): the decode
        group in O(1) when it holds every running request and all fit, else one by one."""
        if self.try_schedule_decode_group(step, num_outside=0):
            return
        self.dissolve_decode_group()
        for req in self.running:
            if step.token_budget <= 0:
                return  # only if max_num_seqs > max_num_batched_tokens: the rest decode next step
            n = req.num_tokens - req.num_computed_tokens
            if not self.kv.allocate_slots(req, n):
                raise AssertionError(f"{self.policy_name}: request {req.request_id} "
                                     "lost its reserved KV slots")
            step.add(req, n)

    def schedule_decode_group(self, step: StepBuilder) -> None:
        """Add every decode-group member to ``step`` (one token each) in O(1) plus its events: members
        crossing a block boundary get one block, and with prefix caching the block a member fills in
        this step is registered now (as vLLM does when it schedules the filling token).

        The caller checked the budget (``decode_group.num``) and the free blocks
        (``decode_group.num_boundary(next_iteration)``).
        """
        group, kv, k = self.decode_group, self.kv, self.next_iteration
        if group.num_boundary(k):
            kv.append_block_each(group.boundary(k, set_computed=kv.enable_prefix_caching))
        if kv.enable_prefix_caching:
            kv.register_filled_each(group.filling(k))  # the blocks this step fills (allocate_slots(req, 1))
        step.add_decodes(group.num, group.sum_context(k))

    # ------------------------------------------------------------------ iteration leaping
    def leap_ready(self) -> bool:
        """True when the next plan is the decode group alone, one token per member, and nothing else
        (``sim.engine.leap``): a policy that sets ``supports_leap`` has checked that its
        :meth:`schedule` then does exactly :meth:`leap_plan` and labels the step "decode".

        Holds while every running request is a group member, nothing is swapped out, no speculation
        runs, the group fits the step's token budget (:meth:`leap_token_budget`) and nothing waits —
        or the policy shows that its plan would not even try to admit a waiting request
        (:meth:`leap_waiting_blocked`)."""
        group = self.decode_group
        return (self.supports_leap and group is not None and group.num > 0 and self.speculator is None
                and not self.individual and not self.swapped
                and group.num == len(self.running) and group.num <= self.leap_token_budget()
                and (not self.waiting or self.leap_waiting_blocked()))

    def leap_waiting_blocked(self) -> bool:
        """True when the policy's plan, with the decode group alone running, would not look at its
        waiting queue at all (e.g. ``max_num_seqs`` requests run): then waiting requests do not stop
        a leap. The default, False, is always safe."""
        return False

    def leap_token_budget(self) -> int:
        """The token budget a decode-only plan gets (``max_num_batched_tokens`` unless the policy says)."""
        return self.max_num_batched_tokens

    def leap_plan(self, k: int) -> int | None:
        """Plan step ``k`` as the decode group alone (after :meth:`leap_ready`; ``k`` is
        ``next_iteration`` plus the leapt steps not yet applied by :meth:`leap_update`): the same KV
        changes as :meth:`schedule_decode_group`, in the same order. Returns Σ context tokens of the
        members before the step, or None — nothing changed — when the blocks crossing a boundary are
        not free (then :meth:`schedule` must run: it preempts)."""
        group, kv = self.decode_group, self.kv
        buckets, block_size = group.buckets, group.block_size
        crossing = buckets[(-k) % block_size]  # group.num_boundary(k) members
        if crossing:
            if len(crossing) > kv.num_free_blocks:
                return None
            kv.append_block_each(group.boundary(k, set_computed=kv.enable_prefix_caching))
        if kv.enable_prefix_caching and block_size > 1 and buckets[(-k - 1) % block_size]:
            kv.register_filled_each(group.filling(k))  # the blocks this step fills (allocate_slots(req, 1))
        return group.base_ctx + group.num * k  # group.sum_context(k)

    def leap_update(self, num_steps: int, last_end_s: float) -> None:
        """:meth:`update_from_output` of the ``num_steps`` steps from ``next_iteration`` on, planned by
        :meth:`leap_plan`, in which no member finished; the last one ended at ``last_end_s``."""
        first = self.next_iteration
        finish_at = self.decode_group.finish_at
        if finish_at:  # stale entries only (nobody finished in them): drop those of these steps
            last = first + num_steps
            if len(finish_at) < num_steps:
                for iteration in [i for i in finish_at if first <= i < last]:
                    del finish_at[iteration]
            else:
                for iteration in range(first, last):
                    finish_at.pop(iteration, None)
        self.next_iteration = first + num_steps
        self.last_step_end_s = last_end_s

    def update_from_output(self, out: SchedulerOutput, iteration: int, now_s: float,
                           step_time_s: float = 0.0) -> list[Request]:
        """Apply a finished step at time ``now_s``; return the requests that finished in it.

        Each scheduled request advances ``num_computed_tokens``; one that caught up with ``num_tokens``
        samples one token (``Request.record_emission``). At ``max_output_tokens`` it finishes: KV
        freed, status FINISHED, ``finish_s`` set, removed from ``running``. ``prefill_compute_s``
        accumulates ``step_time_s`` over the steps that computed its prompt the first time.

        Speculative drafts (``out.num_draft_tokens``): the accepted ones count as computed, the rejected
        ones are rolled back, and the accepted drafts are emitted together with the sampled token.
        """
        finished: list[Request] = []
        group = self.decode_group
        joining: list[Request] = []
        counts = out.num_scheduled_tokens.values()
        if out.num_draft_tokens:
            counts = self.speculator.verified_tokens(out)
        for req, n in zip(out.scheduled, counts):
            if req.prefill_done_s < 0:
                req.prefill_compute_s += step_time_s
            c = req.num_computed_tokens + n
            req.num_computed_tokens = c
            total = req.num_prompt_tokens + req.num_output_tokens
            if c < total:
                continue  # a prefill chunk that did not reach the end: no token yet
            if req.prefill_done_s < 0:
                req.prefill_done_s = now_s
            if req.num_output_tokens < req.max_output_tokens:
                req.record_emission(iteration, now_s)
                if c > total:  # accepted drafts arrive with it
                    req.record_burst(iteration, c - total)
            if req.num_output_tokens >= req.max_output_tokens:
                self._finish(req, now_s)
                finished.append(req)
            elif group is not None:
                joining.append(req)
        if group is not None:
            if group.num:
                for req in group.pop_finishing(iteration):
                    self._materialize(req, iteration, now_s)
                    self._finish(req, now_s)
                    finished.append(req)
            for req in joining:
                group.join(req, iteration + 1)
            if self.individual:
                members, running_status = group.members, RequestStatus.RUNNING
                self.individual = [r for r in self.individual
                                   if r.status is running_status and r.request_id not in members]
        self.next_iteration = iteration + 1
        self.last_step_end_s = now_s
        if finished:
            done = RequestStatus.FINISHED  # local: enum attribute look-ups are slow in a loop
            self.running = [r for r in self.running if r.status is not done]
        return finished

    def _finish(self, req: Request, now_s: float) -> None:
        """A request produced its last token: free its KV, mark it FINISHED (caller fixes ``running``)."""
        self.release_finished(req)
        req.status = RequestStatus.FINISHED
        req.finish_s = now_s
        if self.speculator is not None:
            self.speculator.forget(req)

    def release_finished(self, req: Request) -> None:
        """Free a finished request's KV blocks (a policy may keep them until its next plan)."""
        self.kv.free(req)

    def _materialize(self, req: Request, last_iteration: int, last_time_s: float) -> None:
        """Take ``req`` out of the decode group with its true counters (and cache its full blocks)."""
        self.decode_group.materialize(req, last_iteration, last_time_s)
        if self.kv.enable_prefix_caching:
            self.kv.allocate_slots(req, 0)  # registers blocks filled since its last allocation

    def dissolve_decode_group(self) -> None:
        """Materialize every member (before exact per-request scheduling, preemption or the horizon)."""
        group = self.decode_group
        if group is None or not group.num:
            return
        last_iter, last_s = self.next_iteration - 1, self.last_step_end_s
        for req in group.all_members():
            self._materialize(req, last_iter, last_s)

    def drain_unfinished(self) -> list[Request]:
        """At the horizon: release every unfinished request's KV and return them (running first)."""
        self.dissolve_decode_group()
        left = list(self.running) + list(self.swapped) + list(self.waiting)
        for req in left:
            self.kv.free(req)
        self.running, self.swapped, self.waiting = [], deque(), deque()
        return left
