"""Turn a validated :class:`~workloads.config.WorkloadConfig` into a :class:`GeneratedWorkload`.

Randomness: every stream (arrivals per source, class choice, input and output lengths per class,
prefix groups, conversation turns and think times) is its own ``numpy.random.Generator`` derived
from the run's ``SeedSequence`` by a *name* (``spawn_key + (crc32(name),)``), never by spawn order.
Adding a class or changing one distribution therefore leaves every other stream untouched, and
changing only a rate leaves the request sequence identical (arrival times scale by old/new rate).

Lengths, classes and prefix groups are assigned by *request index within their stream* (chunks of
a fixed size), so the k-th request of a class has the same lengths however many requests are drawn
and whatever the arrival times are. Open-loop requests are generated at build time (``specs``);
closed-loop clients and multi-turn sessions are generated while the simulation runs, in the order
they are sent.
"""
from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from sim.engine.request import RequestSpec, RequestStatus
from sim.errors import ConfigError, TraceError
from workloads.arrivals import ArrivalProcess, ClosedArrival
from workloads.base import Submit
from workloads.config import ConversationConfig, PrefixConfig, WorkloadConfig
from workloads.datasets import canonical_dataset
from workloads.lengths import DatasetLength, LengthDistribution
from workloads.rate_curves import PiecewiseFunction
from workloads.traces import Trace, load_trace, window_trace

_CHUNK = 8192
DEFAULT_CLASS = "default"


class Streams:
    """Named, independent random streams derived from one ``SeedSequence``."""

    def __init__(self, seed_seq: np.random.SeedSequence) -> None:
        self._entropy = seed_seq.entropy
        self._spawn_key = tuple(seed_seq.spawn_key)
        self._pool_size = seed_seq.pool_size

    def rng(self, *names: str) -> np.random.Generator:
        """The generator for stream ``names`` (same names → same stream, every time)."""
        key = tuple(zlib.crc32(n.encode("utf-8")) for n in names)
        seq = np.random.SeedSequence(self._entropy, spawn_key=self._spawn_key + key, pool_size=self._pool_size)
        return np.random.Generator(np.random.PCG64(seq))


class _Lazy:
    """Values drawn in fixed-size chunks from one generator; ``take(n)`` returns the next ``n``."""

    def __init__(self, rng: np.random.Generator, draw: Callable[[np.random.Generator, int], np.ndarray]) -> None:
        self._rng = rng
        self._draw = draw
        self._buf = np.empty(0)
        self._pos = 0

    def take(self, n: int) -> np.ndarray:
        while len(self._buf) - self._pos < n:
            fresh = self._draw(self._rng, _CHUNK)
            self._buf = np.concatenate([self._buf[self._pos:], fresh]) if self._pos < len(self._buf) else fresh
            self._pos = 0
        out = self._buf[self._pos:self._pos + n]
        self._pos += n
        return out


# --------------------------------------------------------------------------------------------------
@dataclass
class ClassSpec:
    """A request class after inheritance from the top level."""

    name: str
    weight: float
    input_tokens: LengthDistribution | None
    output_tokens: LengthDistribution | None
    prefix_scope: str | None  # which prefix sampler it uses ("" = workload level), None = no prefix
    conversation: ConversationConfig | None
    weight_curve: PiecewiseFunction | None = None  # time-varying weight (replaces ``weight``)
    images: LengthDistribution | None = None  # images per request (multimodal), None = text only
    image_tokens: int = 0  # LM placeholder tokens per image

    @property
    def joint_dataset(self) -> bool:
        """True when input and output come from the same dataset (sampled as pairs)."""
        a, b = self.input_tokens, self.output_tokens
        return (isinstance(a, DatasetLength) and isinstance(b, DatasetLength)
                and _canon(a.dataset) == _canon(b.dataset) and a.column == "input" and b.column == "output")


def _canon(name: str) -> str:

    return canonical_dataset(name)


class _LengthSampler:
    """(input, output) lengths of one class, by request index within the class."""

    def __init__(self, cls: ClassSpec, streams: Streams) -> None:
        self.cls = cls
        if cls.joint_dataset:
            a, b = cls.input_tokens, cls.output_tokens
            assert isinstance(a, DatasetLength) and isinstance(b, DatasetLength)
            table_in, table_out = a.pair_table()
            self._idx = _Lazy(streams.rng("pairs", cls.name), lambda g, n: g.integers(0, len(table_in), size=n))
            self._tables = (table_in, table_out)
        else:
            assert cls.input_tokens is not None and cls.output_tokens is not None
            d_in, d_out = cls.input_tokens, cls.output_tokens
            self._in = _Lazy(streams.rng("input", cls.name), lambda g, n: d_in.sample(g, n))
            self._out = _Lazy(streams.rng("output", cls.name), lambda g, n: d_out.sample(g, n))

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``n`` (input, output) pairs (int64)."""
        if self.cls.joint_dataset:
            a, b = self.cls.input_tokens, self.cls.output_tokens
            idx = self._idx.take(n).astype(np.int64)
            inp = np.clip(self._tables[0][idx], a.min, a.max if a.max is not None else None)  # type: ignore[union-attr]
            out = np.clip(self._tables[1][idx], b.min, b.max if b.max is not None else None)  # type: ignore[union-attr]
            return inp.astype(np.int64), out.astype(np.int64)
        return self._in.take(n).astype(np.int64), self._out.take(n).astype(np.int64)


class _PrefixSampler:
    """Group lengths (drawn once) and per-request group assignment (``-1`` = no shared prefix)."""

    def __init__(self, cfg: PrefixConfig, scope: str, group_offset: int, streams: Streams) -> None:
        self.cfg = cfg
        self.offset = group_offset
        self.lengths = cfg.prefix_tokens.sample(streams.rng("prefix-lengths", scope), cfg.num_groups)
        self._u = _Lazy(streams.rng("prefix-assign", scope), lambda g, n: g.random((n, 2)).reshape(-1))
        if cfg.assignment == "zipf":
            w = 1.0 / np.arange(1, cfg.num_groups + 1, dtype=float) ** cfg.zipf_s
            self._cdf = np.cumsum(w / w.sum())
        self._next_rr = 0
        self.used = 0  # requests assigned so far

    def assign(self, n: int) -> np.ndarray:
        """Global group ids of the next ``n`` requests."""
        self.used += n
        u = self._u.take(2 * n).reshape(n, 2)
        g_count = self.cfg.num_groups
        if self.cfg.assignment == "uniform":
            groups = np.minimum((u[:, 0] * g_count).astype(np.int64), g_count - 1)
        elif self.cfg.assignment == "zipf":
            groups = np.minimum(np.searchsorted(self._cdf, u[:, 0], side="right"), g_count - 1).astype(np.int64)
        else:
            groups = np.empty(n, dtype=np.int64)
        has = u[:, 1] < self.cfg.fraction if self.cfg.fraction < 1 else np.ones(n, dtype=bool)
        if self.cfg.assignment == "round-robin":
            k = int(has.sum())
            groups[has] = (self._next_rr + np.arange(k)) % g_count
            self._next_rr = (self._next_rr + k) % g_count
        return np.where(has, groups + self.offset, -1)

    def length_of(self, group: int) -> int:
        """Prefix length of global group id ``group``."""
        return int(self.lengths[group - self.offset])


@dataclass
class _Source:
    """One arrival stream and the classes it draws from."""

    name: str
    arrival: ArrivalProcess
    classes: list[ClassSpec]
    cap: int | None  # own num_requests cap

    @property
    def weights_cdf(self) -> np.ndarray:
        w = np.array([c.weight for c in self.classes], dtype=float)
        return np.cumsum(w / w.sum())

    @property
    def time_varying(self) -> bool:
        """True when some class's weight changes over time."""
        return any(c.weight_curve is not None for c in self.classes)

    def weights_cdf_at(self, times: np.ndarray) -> np.ndarray:
        """Row i: the cumulative class probabilities at ``times[i]`` (shape n × classes)."""
        w = np.stack([c.weight_curve(times) if c.weight_curve is not None else np.full(len(times), c.weight)
                      for c in self.classes], axis=1)
        total = w.sum(axis=1, keepdims=True)
        # a moment where every weight is 0: fall back to the constant weights
        w = np.where(total > 0, w, np.array([c.weight for c in self.classes])[None, :])
        return np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)


@dataclass
class _RunState:
    """Per-run generators and counters (rebuilt on every ``process`` call, so runs are repeatable)."""

    lengths: dict[str, _LengthSampler]
    prefixes: dict[str, _PrefixSampler]
    class_choice: dict[str, _Lazy]
    turns: dict[str, _Lazy]
    think: dict[str, _Lazy]
    client_think: dict[str, _Lazy]
    sent: int = 0
    sent_by_source: dict = field(default_factory=dict)
    next_uid: int = 0
    next_session: int = 0
    images: dict = field(default_factory=dict)  # class name -> _Lazy image counts (classes with images only)


# --------------------------------------------------------------------------------------------------
class GeneratedWorkload:
    """A workload built from a config: open-loop requests precomputed in :attr:`specs`, plus any
    closed-loop clients and multi-turn sessions, all driven by :meth:`process`."""

    def __init__(self, cfg: WorkloadConfig, seed_seq: np.random.SeedSequence, base_dir: Path, model_name: str | None = None) -> None:
        self.config = cfg
        self.base_dir = Path(base_dir)
        self.model_name = model_name
        self._streams = Streams(seed_seq)
        self.trace: Trace | None = None
        self._trace_rows: tuple[np.ndarray, np.ndarray] | None = None
        self.classes: dict[str, ClassSpec] = {}
        self._prefix_cfgs: dict[str, tuple[PrefixConfig, int]] = {}
        self.sources: list[_Source] = []
        self._setup()
        state = self._new_state()
        self.specs: tuple[RequestSpec, ...] = tuple(self._open_loop_specs(state))
        # Prefix samplers may be shared by open-loop and live (closed/session) requests: live draws
        # continue after the ones the open-loop requests used.
        self._prefix_used = {scope: p.used for scope, p in state.prefixes.items()}

    # ---- setup --------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.config
        offset = 0
        if cfg.prefix is not None:
            self._prefix_cfgs[""] = (cfg.prefix, 0)
            offset += cfg.prefix.num_groups
        if cfg.trace is not None:
            self._setup_trace()
            return
        class_cfgs = cfg.classes or ()
        if not class_cfgs:
            self.classes[DEFAULT_CLASS] = ClassSpec(DEFAULT_CLASS, 1.0, self._resolve(cfg.input_tokens), self._resolve(cfg.output_tokens),
                                                     "" if cfg.prefix is not None else None, cfg.conversation)
            self.classes[DEFAULT_CLASS].images = cfg.images_per_request
            self.classes[DEFAULT_CLASS].image_tokens = cfg.image_tokens or 0
            self.sources.append(_Source("", self._resolve_arrival(cfg.arrival), [self.classes[DEFAULT_CLASS]], None))
            return
        shared: list[ClassSpec] = []
        for c in class_cfgs:
            scope: str | None = "" if cfg.prefix is not None else None
            if c.prefix is not None:
                scope = c.name
                self._prefix_cfgs[c.name] = (c.prefix, offset)
                offset += c.prefix.num_groups
            curve = None
            if c.weight_over_time is not None:
                wc = c.weight_over_time
                curve = PiecewiseFunction([p[0] for p in wc.points], [p[1] for p in wc.points], wc.interpolation, wc.period_s)
            spec = ClassSpec(c.name, c.weight, self._resolve(c.input_tokens or cfg.input_tokens),
                             self._resolve(c.output_tokens or cfg.output_tokens), scope, c.conversation or cfg.conversation,
                             curve)
            spec.images = c.images_per_request if c.images_per_request is not None else cfg.images_per_request
            spec.image_tokens = (c.image_tokens if c.image_tokens is not None else cfg.image_tokens) or 0
            self.classes[c.name] = spec
            if c.arrival is None:
                shared.append(spec)
            else:
                self.sources.append(_Source(c.name, self._resolve_arrival(c.arrival), [spec], c.num_requests))
        if shared:
            self.sources.insert(0, _Source("", self._resolve_arrival(cfg.arrival), shared, None))

    def _resolve(self, dist: LengthDistribution | None) -> LengthDistribution | None:
        return None if dist is None else dist.resolve(self.base_dir)

    def _resolve_arrival(self, arrival: ArrivalProcess) -> ArrivalProcess:
        """Read any file the arrival process names (a rate curve's CSV) relative to the experiment."""
        resolve = getattr(arrival, "resolve", None)
        return resolve(self.base_dir) if resolve is not None else arrival

    def _setup_trace(self) -> None:
        cfg = self.config
        tcfg = cfg.trace
        assert tcfg is not None
        path = Path(tcfg.path).expanduser()
        path = path if path.is_absolute() else self.base_dir / path
        self.trace = load_trace(path, tcfg.format, dict(tcfg.columns), tcfg.time_unit)
        if cfg.input_tokens is not None or cfg.output_tokens is not None:
            raise ConfigError(f"workload.trace: {path} supplies the token lengths; remove workload.input_tokens/output_tokens")
        scope = "" if cfg.prefix is not None else None
        self.classes[DEFAULT_CLASS] = ClassSpec(DEFAULT_CLASS, 1.0, None, None, scope, None)
        if cfg.arrival is None and self.trace.arrival_s is None:
            raise TraceError(f"{path}: the trace has no arrival-time column (looked for arrival_time_s, TIMESTAMP, ...); "
                             "set workload.arrival to generate arrivals for its lengths, or trace.columns.arrival")
        if cfg.arrival is not None:
            inp, out = self.trace.input_tokens, self.trace.output_tokens
            if tcfg.max_requests is not None:
                inp, out = inp[:tcfg.max_requests], out[:tcfg.max_requests]
            self._trace_rows = (inp, out)
            self.sources.append(_Source("", self._resolve_arrival(cfg.arrival), [self.classes[DEFAULT_CLASS]], None))

    def _new_state(self) -> _RunState:
        s = self._streams
        lengths = {name: _LengthSampler(c, s) for name, c in self.classes.items() if c.input_tokens is not None}
        prefixes = {scope: _PrefixSampler(pc, scope or "workload", off, s) for scope, (pc, off) in self._prefix_cfgs.items()}
        choice = {src.name: _Lazy(s.rng("class-choice", src.name), lambda g, n: g.random(n)) for src in self.sources if len(src.classes) > 1}
        turns, think = {}, {}
        for name, c in self.classes.items():
            if c.conversation is not None:
                conv = c.conversation
                turns[name] = _Lazy(s.rng("turns", name), lambda g, n, d=conv.turns: d.sample(g, n))
                think[name] = _Lazy(s.rng("session-think", name), lambda g, n, d=conv.think_time_s: d.sample_real(g, n))
                # agentic streams exist only when configured, so other workloads draw exactly as before
                if conv.first_input_tokens is not None:
                    turns[("first", name)] = _Lazy(s.rng("first-input", name), lambda g, n, d=conv.first_input_tokens: d.sample(g, n))
                if conv.parallel_calls is not None:
                    turns[("calls", name)] = _Lazy(s.rng("parallel-calls", name), lambda g, n, d=conv.parallel_calls: d.sample(g, n))
        client_think = {}
        for src in self.sources:
            if isinstance(src.arrival, ClosedArrival):
                d = src.arrival.think_time
                client_think[src.name] = _Lazy(s.rng("client-think", src.name), lambda g, n, d=d: d.sample_real(g, n))
        state = _RunState(lengths, prefixes, choice, turns, think, client_think)
        # image streams exist only for classes with images, so text-only workloads draw exactly as before
        state.images = {name: _Lazy(s.rng("images", name), lambda g, n, d=c.images: d.sample(g, n))
                        for name, c in self.classes.items() if c.images is not None}
        return state

    # ---- open loop ----------------------------------------------------------------------------
    def _open_sources(self) -> list[_Source]:
        """Sources whose requests are all known up front (open loop, no conversations)."""
        return [s for s in self.sources if not s.arrival.closed_loop and all(c.conversation is None for c in s.classes)]

    def _cap(self, own: int | None) -> int | None:
        caps = [c for c in (own, self.config.num_requests) if c is not None]
        return min(caps) if caps else None

    def _choose(self, state: _RunState, src: _Source, n: int, times: np.ndarray | None = None) -> np.ndarray:
        """Class index (into ``src.classes``) of the next ``n`` requests of a source, sent at ``times``
        (needed when a class weight varies over time; the uniform draws are the same either way)."""
        if len(src.classes) == 1:
            return np.zeros(n, dtype=np.int64)
        u = state.class_choice[src.name].take(n)
        if src.time_varying and times is not None:
            cdf = src.weights_cdf_at(np.asarray(times, dtype=np.float64))
            return np.minimum((cdf <= u[:, None]).sum(axis=1), len(src.classes) - 1).astype(np.int64)
        return np.minimum(np.searchsorted(src.weights_cdf, u, side="right"), len(src.classes) - 1)

    def _open_loop_specs(self, state: _RunState) -> list[RequestSpec]:
        cfg = self.config
        if self.trace is not None and cfg.arrival is None:
            tcfg = cfg.trace
            assert tcfg is not None
            times, inp, out = window_trace(self.trace, tcfg.start_s, tcfg.duration_s, tcfg.max_requests, tcfg.speedup)
            if cfg.duration_s is not None:
                keep = times <= cfg.duration_s
                times, inp, out = times[keep], inp[keep], out[keep]
            if cfg.num_requests is not None:
                times, inp, out = times[:cfg.num_requests], inp[:cfg.num_requests], out[:cfg.num_requests]
            names = np.zeros(len(times), dtype=np.int64)
            return self._make_specs(state, times, names, [DEFAULT_CLASS], inp, out)

        parts_t, parts_c, parts_in, parts_out = [], [], [], []
        class_names: list[str] = []
        for src in self._open_sources():
            times = src.arrival.arrival_times(self._streams.rng("arrivals", src.name), self._cap(src.cap), cfg.duration_s)
            n = len(times)
            which = self._choose(state, src, n, times)
            inp = np.empty(n, dtype=np.int64)
            out = np.empty(n, dtype=np.int64)
            for k, c in enumerate(src.classes):
                mask = which == k
                if self._trace_rows is not None:  # length-only trace, rows in order (wrapping around)
                    rows = np.arange(int(mask.sum())) % len(self._trace_rows[0])
                    inp[mask], out[mask] = self._trace_rows[0][rows], self._trace_rows[1][rows]
                else:
                    inp[mask], out[mask] = state.lengths[c.name].take(int(mask.sum()))
            base = len(class_names)
            class_names.extend(c.name for c in src.classes)
            parts_t.append(times)
            parts_c.append(which + base)
            parts_in.append(inp)
            parts_out.append(out)
        if not parts_t:
            return []
        times = np.concatenate(parts_t)
        order = np.argsort(times, kind="stable")
        if cfg.num_requests is not None:
            order = order[:cfg.num_requests]
        return self._make_specs(state, times[order], np.concatenate(parts_c)[order], class_names,
                                np.concatenate(parts_in)[order], np.concatenate(parts_out)[order])

    def _make_specs(self, state: _RunState, times: np.ndarray, cls_idx: np.ndarray, class_names: list[str],
                    inp: np.ndarray, out: np.ndarray) -> list[RequestSpec]:
        n = len(times)
        groups = np.full(n, -1, dtype=np.int64)
        for k, name in enumerate(class_names):
            scope = self.classes[name].prefix_scope
            if scope is None:
                continue
            mask = cls_idx == k
            if mask.any():
                groups[mask] = state.prefixes[scope].assign(int(mask.sum()))
        specs = []
        names = [class_names[i] for i in cls_idx.tolist()]
        for uid, (t, name, i, o, g) in enumerate(zip(times.tolist(), names, inp.tolist(), out.tolist(), groups.tolist())):
            specs.append(self._spec(state, uid, t, name, i, o, g))
        state.next_uid = n
        return specs

    def _spec(self, state: _RunState, uid: int, t: float, name: str, inp: int, out: int, group: int) -> RequestSpec:
        images = state.images.get(name) if state.images else None
        if images is not None:
            return self._image_spec(state, uid, t, name, inp, out, group, int(images.take(1)[0]))
        if group < 0:
            return RequestSpec(arrival_s=t, num_prompt_tokens=inp, max_output_tokens=out, class_name=name)
        scope = self.classes[name].prefix_scope
        length = state.prefixes[scope].length_of(group)  # type: ignore[index]
        segments = ((("prefix", group), length), (("req", uid), inp))
        return RequestSpec(arrival_s=t, num_prompt_tokens=length + inp, max_output_tokens=out, class_name=name,
                           prompt_segments=segments, prefix_group=group)

    def _image_spec(self, state: _RunState, uid: int, t: float, name: str, inp: int, out: int, group: int,
                    num_images: int) -> RequestSpec:
        """A request whose own prompt opens with ``num_images`` images: their placeholder tokens
        (``image_tokens`` each) come after any shared prefix and before the text (docs/workloads.md)."""
        per = self.classes[name].image_tokens
        own = num_images * per + inp
        if group < 0:
            return RequestSpec(arrival_s=t, num_prompt_tokens=own, max_output_tokens=out, class_name=name,
                               num_images=num_images, image_tokens=per)
        scope = self.classes[name].prefix_scope
        length = state.prefixes[scope].length_of(group)  # type: ignore[index]
        segments = ((("prefix", group), length), (("req", uid), own))
        return RequestSpec(arrival_s=t, num_prompt_tokens=length + own, max_output_tokens=out, class_name=name,
                           prompt_segments=segments, prefix_group=group, num_images=num_images, image_tokens=per)

    # ---- SimPy --------------------------------------------------------------------------------
    def process(self, env: simpy.Environment, submit: Submit) -> Generator[Any, Any, None]:
        """Drive the requests into ``submit``: open-loop ones at their times, closed-loop clients and
        sessions as earlier requests end. Ends when every request has been sent."""
        state = self._new_state()
        state.next_uid = len(self.specs)
        for scope, used in self._prefix_used.items():
            if used:
                state.prefixes[scope].assign(used)
        procs = []
        if self.specs:
            procs.append(env.process(self._run_open(env, submit, state)))
        for src in self.sources:
            conv = any(c.conversation is not None for c in src.classes)
            if isinstance(src.arrival, ClosedArrival):
                for client in range(src.arrival.clients):
                    procs.append(env.process(self._run_client(env, submit, state, src, client)))
            elif conv:
                procs.append(env.process(self._run_session_arrivals(env, submit, state, src)))
        if procs:
            yield env.all_of(procs)

    def _budget_left(self, state: _RunState) -> bool:
        n = self.config.num_requests
        return n is None or state.sent < n

    def _send(self, env: simpy.Environment, submit: Submit, state: _RunState, spec: RequestSpec) -> simpy.Event:
        state.sent += 1
        return submit(spec)

    def _run_open(self, env: simpy.Environment, submit: Submit, state: _RunState) -> Generator[Any, Any, None]:
        cap = self.config.max_concurrency
        slots = simpy.Resource(env, capacity=cap) if cap is not None else None
        for spec in self.specs:
            delay = spec.arrival_s - env.now
            if delay > 0:
                yield env.timeout(delay)
            if not self._budget_left(state):
                return
            if slots is None:
                self._send(env, submit, state, spec)
                continue
            slot = slots.request()
            yield slot  # FIFO: later arrivals wait behind this one, as vllm bench's semaphore
            if env.now > spec.arrival_s:
                spec = dataclasses.replace(spec, arrival_s=env.now)  # latency counts from the actual send
            ev = self._send(env, submit, state, spec)
            _on_done(ev, lambda _e, s=slot: slots.release(s))

    def _plain_spec(self, state: _RunState, cls: ClassSpec, t: float) -> RequestSpec:
        """The next single-turn request of class ``cls`` sent at ``t`` (lengths by index in the class)."""
        i, o = state.lengths[cls.name].take(1)
        inp, out = int(i[0]), int(o[0])
        group = int(state.prefixes[cls.prefix_scope].assign(1)[0]) if cls.prefix_scope is not None else -1
        uid = state.next_uid
        state.next_uid += 1
        return self._spec(state, uid, t, cls.name, inp, out, group)

    def _run_client(self, env: simpy.Environment, submit: Submit, state: _RunState, src: _Source, client: int) -> Generator[Any, Any, None]:
        duration = self.config.duration_s
        think = state.client_think[src.name]
        while self._budget_left(state) and (src.cap is None or state.sent_by_source.get(src.name, 0) < src.cap):
            if duration is not None and env.now > duration:
                return
            cls = src.classes[int(self._choose(state, src, 1, np.array([env.now]))[0])]
            if cls.conversation is not None:
                yield from self._run_session(env, submit, state, cls, src)
            else:
                state.sent_by_source[src.name] = state.sent_by_source.get(src.name, 0) + 1
                yield self._send(env, submit, state, self._plain_spec(state, cls, env.now))
            gap = float(think.take(1)[0])
            if gap > 0:
                yield env.timeout(gap)

    def _run_session_arrivals(self, env: simpy.Environment, submit: Submit, state: _RunState, src: _Source) -> Generator[Any, Any, None]:
        times = src.arrival.arrival_times(self._streams.rng("arrivals", src.name), self._cap(src.cap), self.config.duration_s)
        which = self._choose(state, src, len(times), times)
        sessions = []
        for t, k in zip(times.tolist(), which.tolist()):
            if t > env.now:
                yield env.timeout(t - env.now)
            if not self._budget_left(state):
                break
            cls = src.classes[k]
            if cls.conversation is None:  # a single-turn class sharing the stream with session classes
                self._send(env, submit, state, self._plain_spec(state, cls, env.now))
            else:
                sessions.append(env.process(self._run_session(env, submit, state, cls, src)))
        if sessions:
            yield env.all_of(sessions)

    def _run_session(self, env: simpy.Environment, submit: Submit, state: _RunState, cls: ClassSpec, src: _Source) -> Generator[Any, Any, None]:
        """One conversation: turn t's prompt = turn t−1's prompt + its answer + a new user message."""
        conv = cls.conversation
        assert conv is not None
        session = state.next_session
        state.next_session += 1
        num_turns = int(state.turns[cls.name].take(1)[0])
        inp, out = state.lengths[cls.name].take(num_turns)
        thinks = state.think[cls.name].take(num_turns)
        group = int(state.prefixes[cls.prefix_scope].assign(1)[0]) if cls.prefix_scope is not None else -1
        segments: tuple = ()
        if group >= 0:
            segments = ((("prefix", group), state.prefixes[cls.prefix_scope].length_of(group)),)  # type: ignore[index]
        first = state.turns.get(("first", cls.name))
        if first is not None:
            inp = inp.copy()
            inp[0] = int(first.take(1)[0])
        calls = state.turns.get(("calls", cls.name))
        prev_uid, prev_out = None, 0
        for turn in range(num_turns):
            if not self._budget_left(state):
                return
            k = int(calls.take(1)[0]) if calls is not None and turn > 0 else 1
            if k > 1:  # parallel tool calls: branches sharing the history, joined into the next turn
                if prev_uid is not None:
                    segments = segments + ((("out", prev_uid), prev_out),)
                segments = yield from self._run_branches(env, submit, state, cls, session, group, segments,
                                                         int(inp[turn]), int(out[turn]), k)
                if segments is None:
                    return
                prev_uid = None
                if turn + 1 < num_turns and thinks[turn] > 0:
                    yield env.timeout(float(thinks[turn]))
                continue
            uid = state.next_uid
            state.next_uid += 1
            if prev_uid is not None:
                segments = segments + ((("out", prev_uid), prev_out),)
            segments = segments + ((("req", uid), int(inp[turn])),)
            prompt = sum(n for _, n in segments)
            limit = conv.max_context_tokens
            if limit is not None and prompt + int(out[turn]) > limit:
                return
            spec = RequestSpec(arrival_s=env.now, num_prompt_tokens=prompt, max_output_tokens=int(out[turn]),
                               class_name=cls.name, prompt_segments=segments, session_id=session,
                               prefix_group=group, output_key=("out", uid))
            req = yield self._send(env, submit, state, spec)
            if getattr(req, "status", None) is RequestStatus.REJECTED:
                return  # the conversation cannot go on without an answer
            prev_uid, prev_out = uid, int(getattr(req, "num_output_tokens", out[turn]) or out[turn])
            if turn + 1 < num_turns and thinks[turn] > 0:
                yield env.timeout(float(thinks[turn]))

    def _run_branches(self, env: simpy.Environment, submit: Submit, state: _RunState, cls: ClassSpec, session: int,
                      group: int, history: tuple, inp0: int, out0: int, k: int) -> Generator[Any, Any, tuple | None]:
        """One agentic turn with ``k`` parallel tool calls: ``k`` requests, each the whole ``history``
        plus its own tool result, sent together; returns the history with every branch's result and
        answer appended (in branch order), or None if the session must end."""
        conv = cls.conversation
        assert conv is not None
        more_in, more_out = state.lengths[cls.name].take(k - 1)
        ins, outs = [inp0, *map(int, more_in)], [out0, *map(int, more_out)]
        events, uids = [], []
        for j in range(k):
            if not self._budget_left(state):
                break
            uid = state.next_uid
            state.next_uid += 1
            segs = history + ((("req", uid), ins[j]),)
            prompt = sum(n for _, n in segs)
            if conv.max_context_tokens is not None and prompt + outs[j] > conv.max_context_tokens:
                break
            spec = RequestSpec(arrival_s=env.now, num_prompt_tokens=prompt, max_output_tokens=outs[j],
                               class_name=cls.name, prompt_segments=segs, session_id=session,
                               prefix_group=group, output_key=("out", uid))
            events.append(self._send(env, submit, state, spec))
            uids.append(uid)
        if not events:
            return None
        reqs = yield env.all_of(events)
        for j, (uid, ev) in enumerate(zip(uids, events)):
            req = reqs[ev]
            if getattr(req, "status", None) is RequestStatus.REJECTED:
                return None
            n_out = int(getattr(req, "num_output_tokens", outs[j]) or outs[j])
            history = history + ((("req", uid), ins[j]), (("out", uid), n_out))
        return history if len(events) == k else None

    # ---- reporting ----------------------------------------------------------------------------
    @property
    def closed_loop(self) -> bool:
        """True when some requests are generated while the run goes (clients or sessions)."""
        return any(isinstance(s.arrival, ClosedArrival) or any(c.conversation for c in s.classes) for s in self.sources)

    @property
    def expected_num_requests(self) -> int | None:
        """Exact number of requests :meth:`process` submits, or None when it depends on the run
        (duration-bounded clients, sessions whose length depends on rejections)."""
        live = [s for s in self.sources if s not in self._open_sources()]
        if not live:
            return len(self.specs)
        cfg = self.config
        plain_closed = all(isinstance(s.arrival, ClosedArrival) and s.cap is None and all(c.conversation is None for c in s.classes)
                           for s in live)
        if plain_closed and cfg.num_requests is not None and cfg.duration_s is None:
            return cfg.num_requests
        return None

    def describe(self) -> dict[str, Any]:
        """Workload description for reports (JSON-serialisable)."""
        cfg = self.config
        out: dict[str, Any] = {"kind": self._kind()}
        if cfg.scenario:
            out["scenario"] = cfg.scenario
        # ``num_requests``: how many requests will be submitted, only when known exactly (the engine
        # reads it to count requests that never arrived); ``max_requests`` is the configured cap.
        exact = self.expected_num_requests
        if exact is not None:
            out["num_requests"] = exact
        if cfg.num_requests is not None:
            out["max_requests"] = cfg.num_requests
        if cfg.duration_s is not None:
            out["duration_s"] = cfg.duration_s
        if cfg.max_concurrency is not None:
            out["max_concurrency"] = cfg.max_concurrency
        if self.specs:
            arr = np.array([s.arrival_s for s in self.specs])
            out["num_open_loop_requests"] = len(self.specs)
            out["last_arrival_s"] = float(arr.max())
            out["mean_prompt_tokens"] = float(np.mean([s.num_prompt_tokens for s in self.specs]))
            out["mean_output_tokens"] = float(np.mean([s.max_output_tokens for s in self.specs]))
            if len(arr) > 1 and arr.max() > 0:
                out["observed_rate"] = float(len(arr) / arr.max())
        rate = cfg.mean_rate
        if rate is not None:
            out["mean_rate"] = rate
        if cfg.arrival is not None:
            out["arrival"] = cfg.arrival.describe()
        if self.trace is not None:
            tcfg = cfg.trace
            out["trace"] = {"path": str(self.trace.path), "rows": self.trace.num_rows, "columns": self.trace.columns,
                            "span_s": self.trace.span_s, "speedup": tcfg.speedup, "start_s": tcfg.start_s,
                            "duration_s": tcfg.duration_s, "max_requests": tcfg.max_requests}
        out["classes"] = [self._describe_class(c) for c in self.classes.values()]
        if self._prefix_cfgs:
            out["prefix"] = {scope or "workload": {**pc.model_dump(mode="json", exclude={"prefix_tokens"}),
                                                   "prefix_tokens": pc.prefix_tokens.describe(), "group_offset": off}
                             for scope, (pc, off) in self._prefix_cfgs.items()}
        return out

    def _kind(self) -> str:
        if self.trace is not None:
            return "trace"
        kinds = set()
        for s in self.sources:
            if any(c.conversation for c in s.classes):
                kinds.add("sessions")
            elif isinstance(s.arrival, ClosedArrival):
                kinds.add("closed-loop")
            else:
                kinds.add("open-loop")
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def _describe_class(self, c: ClassSpec) -> dict[str, Any]:
        d: dict[str, Any] = {"name": c.name, "weight": c.weight}
        if c.input_tokens is not None:
            d["input_tokens"] = c.input_tokens.describe()
            d["output_tokens"] = c.output_tokens.describe()  # type: ignore[union-attr]
            d["joint_dataset_pairs"] = c.joint_dataset
        src = next((s for s in self.sources if c in s.classes), None)
        if src is not None and src.name:
            d["arrival"] = src.arrival.describe()
        if c.conversation is not None:
            d["conversation"] = {"turns": c.conversation.turns.describe(),
                                 "think_time_s": c.conversation.think_time_s.model_dump(mode="json", exclude_none=True),
                                 "max_context_tokens": c.conversation.max_context_tokens}
        return d


def _on_done(ev: simpy.Event, callback: Callable[[simpy.Event], None]) -> None:
    """Run ``callback`` when ``ev`` is processed (immediately if it already was)."""
    if ev.callbacks is None:
        callback(ev)
    else:
        ev.callbacks.append(callback)


def build_workload(cfg: WorkloadConfig, seed_seq: np.random.SeedSequence, base_dir: Path, *,
                   model_name: str | None = None) -> GeneratedWorkload:
    """Build the workload of an experiment.

    ``seed_seq`` is the run's seed sequence (streams are derived from it by name, it is not mutated);
    relative trace/CSV paths resolve against ``base_dir`` (the experiment file's directory).
    """
    if isinstance(cfg, dict):
        cfg = WorkloadConfig.model_validate(cfg)
    if isinstance(seed_seq, int):
        seed_seq = np.random.SeedSequence(seed_seq)
    return GeneratedWorkload(cfg, seed_seq, Path(base_dir), model_name)
