"""Agentic sessions (workloads/agentic.py): whole-history prompts, first-turn task, parallel tool
calls as branches sharing the history, tool latencies as think times, presets."""
from __future__ import annotations

import numpy as np
import pytest
import simpy

from sim.config import parse_experiment
from sim.errors import ConfigError
from sim.runs.runner import run
from workloads import build_workload
from workloads.agentic import AGENTIC_PRESETS
from workloads.config import WorkloadConfig


def drive(cfg: dict, seed: int = 0):
    """Run a workload against an instant server (each request answered after 1 s); the sent specs."""
    wl = build_workload(WorkloadConfig.model_validate(cfg), np.random.SeedSequence(seed), ".")
    env = simpy.Environment()
    sent = []

    class Answer:
        def __init__(self, spec):
            self.status = None
            self.num_output_tokens = spec.max_output_tokens

    def submit(spec):
        sent.append((env.now, spec))
        ev = env.event()
        env.timeout(1.0).callbacks.append(lambda _e: ev.succeed(Answer(spec)))
        return ev

    env.process(wl.process(env, submit))
    env.run()
    return sent


AGENT = {"num_requests": 200, "arrival": {"process": "poisson", "rate": 0.2},
         "prefix": {"num_groups": 1, "prefix_tokens": 1000}, "input_tokens": 100, "output_tokens": 50,
         "conversation": {"turns": 6, "first_input_tokens": 3000, "think_time_s": 2.0,
                          "parallel_calls": {"dist": "uniform", "low": 1, "high": 3}}}


def test_prompts_are_whole_history_and_branches_share_it():
    sent = drive(AGENT)
    by_session: dict[int, list] = {}
    for t, s in sent:
        by_session.setdefault(s.session_id, []).append((t, s))
    saw_branch = False
    for turns in by_session.values():
        t0, first = turns[0]
        assert first.num_prompt_tokens == 1000 + 3000  # system prompt + the task
        assert first.prompt_segments[0] == (("prefix", 0), 1000)
        times = [t for t, _ in turns]
        for (ta, a), (tb, b) in zip(turns, turns[1:]):
            if ta == tb:  # parallel calls of one turn: same history, own tool result
                saw_branch = True
                assert a.prompt_segments[:-1] == b.prompt_segments[:-1]
            else:  # the next turn holds everything before it: answer (1 s) + tool latency (2 s) later
                assert tb - ta == pytest.approx(3.0)
                assert b.prompt_segments[:len(a.prompt_segments) - 1] == a.prompt_segments[:-1]
                assert a.prompt_segments[-1] in b.prompt_segments  # its tool result joined the history
        assert times == sorted(times)
    assert saw_branch


def test_history_grows_by_tool_result_and_answer():
    cfg = {**AGENT, "conversation": {**AGENT["conversation"], "parallel_calls": 1}}
    sent = drive(cfg)
    s0 = [s for _, s in sent if s.session_id == 0]
    assert [s.num_prompt_tokens for s in s0] == [4000 + i * 150 for i in range(6)]


@pytest.mark.parametrize("name", sorted(AGENTIC_PRESETS))
def test_presets_parse_and_keep_explicit_keys(name):
    cfg = WorkloadConfig.model_validate({"agentic_preset": name, "num_requests": 10,
                                         "arrival": {"process": "poisson", "rate": 1.0}, "output_tokens": 7})
    assert cfg.conversation is not None and cfg.prefix is not None
    assert cfg.output_tokens.mean == 7  # the file's key wins over the preset's


def test_codex_preset_matches_the_published_shape():
    sent = drive({"agentic_preset": "codex-agent", "num_requests": 30, "arrival": {"process": "poisson", "rate": 0.001}})
    s0 = [s for _, s in sent if s.session_id == 0]
    assert len(s0) == 30
    # 20K common + 10K first input; then +900 output +2,048 tool result per turn
    assert s0[0].num_prompt_tokens == 30_000
    assert s0[29].num_prompt_tokens == 30_000 + 29 * (900 + 2048)


def test_unknown_preset_is_one_line_error():
    data = {"name": "x", "model": "llama-3.1-8b", "hardware": "h100-sxm",
            "workload": {"agentic_preset": "codx", "num_requests": 5}}
    with pytest.raises(ConfigError, match="exp.yaml: workload.*agentic_preset: unknown preset 'codx'"):
        parse_experiment(data, "exp.yaml")


def test_agentic_run_end_to_end():
    data = {"name": "a", "model": "llama-3.1-8b", "hardware": "h100-sxm",
            "engine": {"max_model_len": 32768}, "workload": {**AGENT, "num_requests": 60}}
    s = run(parse_experiment(data, "<t>")).summary
    assert s["completed"] == 60 and s["prefix_cache_hit_rate"] > 0.5
