"""``simctl model info`` / ``simctl model list``."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sim.cli import cli, main


def run(*args: str):
    return CliRunner().invoke(cli, ["model", *args], catch_exceptions=False)


def test_info_json_deepseek_v3():
    r = run("info", "deepseek-v3", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["total_params"] == 671_026_404_352
    assert d["active_params"] == 37_552_282_624
    assert d["kv_cache_bytes_per_token"] == 70_272 and d["kv_cache_dtype"] == "bf16"
    assert sum(d["breakdown"].values()) == d["total_params"]
    assert d["layer_split"]["dense_layers"] == 3 * 583_483_392
    assert [(g["kind"], g["num_layers"]) for g in d["layer_groups"]] == [("dense", 3), ("moe", 58)]
    assert d["attention_dims"]["decode"] == {"form": "absorbed", "num_q_heads": 128, "num_kv_heads": 1,
                                             "qk_head_dim": 576, "v_head_dim": 512}
    assert d["mla"]["kv_lora_rank"] == 512 and d["moe"]["num_experts"] == 256


def test_info_kv_dtype_and_tp():
    d = json.loads(run("info", "llama-2-7b", "--json", "--kv-cache-dtype", "fp8").output)
    assert d["kv_cache_bytes_per_token"] == 262_144 and d["kv_cache_dtype"] == "fp8"
    d = json.loads(run("info", "llama-2-7b", "--json", "--kv-cache-dtype", "auto", "--tp", "2").output)
    assert d["kv_cache_bytes_per_token"] == 524_288
    assert d["parallel"]["params_per_gpu"] < d["total_params"] / 2 + 1e6


def test_info_table():
    r = run("info", "mixtral-8x7b")
    assert r.exit_code == 0
    out = r.output
    assert "46,702,792,704" in out and "12,879,925,248" in out
    assert "experts" in out and "KV cache (bf16)" in out and "131,072 B" in out
    r = run("info", "meta-llama/Llama-2-7b-hf", "--kv-cache-dtype", "fp8")
    assert "6,738,415,616" in r.output and "KV cache (fp8)" in r.output and "262,144 B" in r.output


def test_info_names_the_recurrent_state_dtypes():
    """A hybrid's state line says the dtypes it is counted in (vLLM's: Nemotron's SSM state float32)."""
    assert "state 49,082,368 B/sequence (SSM state float32, conv window bf16)" in run("info", "nemotron-3-nano-30b-a3b").output
    assert "(SSM state bf16, conv window bf16)" in run("info", "qwen3-next-80b-a3b").output


def test_info_from_path(tmp_path):
    from sim.deploy.models import catalog
    p = tmp_path / "config.json"
    p.write_text(catalog()["gpt2"].path.read_text())
    d = json.loads(run("info", str(p), "--json").output)
    assert d["total_params"] == 124_439_808


def test_list():
    r = run("list")
    assert r.exit_code == 0
    assert "deepseek-v3" in r.output and "meta-llama/Llama-3.1-8B" in r.output
    rows = json.loads(run("list", "--json").output)
    assert len(rows) >= 20
    by = {x["name"]: x for x in rows}
    assert by["llama-2-7b"]["kv_cache_bytes_per_token"] == 524_288


def test_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["model", "info", "llama-3.1-8"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'llama-3.1-8'") and "llama-3.1-8b" in err
    with pytest.raises(SystemExit) as ei:
        main(["model", "info", "llama-2-7b", "--kv-cache-dtype", "fp7"])
    assert ei.value.code == 2
