"""Write the hostile-input corpus read by tests/test_hostile_inputs.py: `python make_corpus.py`.

Each case is one file (plus CLI arguments) and what must happen: ``refuse`` (exit 2, one ``error:``
line containing ``needle``) or ``run`` (exit 0). Files are written deterministically.
"""
import copy
import gzip
import json
from pathlib import Path

import yaml

HERE = Path(__file__).parent
BASE = {"name": "h", "seed": 0, "model": "llama-3.1-8b", "hardware": "h100-sxm",
        "engine": {"max_num_batched_tokens": 8192, "max_model_len": 8192},
        "workload": {"num_requests": 12, "arrival": {"process": "poisson", "rate": 8.0},
                     "input_tokens": {"dist": "lognormal", "mean": 256, "std": 128, "max": 2048},
                     "output_tokens": 8}}
cases = []


def y(d):
    return yaml.safe_dump(d, sort_keys=False).encode()


def mod(path, value, base=None):
    d = copy.deepcopy(base or BASE)
    cur = d
    parts = path.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return d


def add(cls, name, content, needle="", args=(), expect="refuse"):
    cases.append({"cls": cls, "name": name, "content": content if isinstance(content, bytes) else y(content),
                  "args": list(args), "expect": expect, "needle": needle})


# encodings and YAML
add("encoding", "utf16_bom", y(BASE).decode().encode("utf-16"), expect="run")
add("encoding", "utf8_bom", b"\xef\xbb\xbf" + y(BASE), expect="run")
add("encoding", "latin1", y(BASE).replace(b"name: h", "name: café".encode("latin-1")), "not UTF-8")
add("encoding", "binary", bytes(range(256)) * 4, "binary")
add("encoding", "empty", b"", "mapping")
add("encoding", "nul", b"name: a\x00b\n", "binary")
add("encoding", "deep_flow", ("a: " + "[" * 3000 + "]" * 3000 + "\n").encode(), "nesting")
add("encoding", "deep_block", "".join("  " * i + f"k{i}:\n" for i in range(200)).encode(), "nesting")
add("encoding", "scalar_top", b"42\n", "mapping")
add("encoding", "list_top", b"- a\n- b\n", "mapping")
add("encoding", "tab_indent", b"name: a\n\tseed: 1\n", "not valid YAML")
add("encoding", "python_tag", b"name: !!python/object/apply:os.system ['echo hi']\n", "not valid YAML")
add("encoding", "unclosed", b"engine: {max_num_seqs: 4\n", "not valid YAML")
add("yaml", "dup_top", y(BASE) + b"engine:\n  max_num_seqs: 4\n", "duplicate key 'engine'")
add("yaml", "dup_nested", y(BASE).replace(b"  max_model_len: 8192\n", b"  max_model_len: 8192\n  max_model_len: 4096\n"),
    "duplicate key 'engine.max_model_len'")
add("yaml", "base_dir", mod("base_dir", "/etc"), "base_dir")
add("yaml", "unknown_key", mod("engine.max_num_seq", 4), "max_num_seqs")
add("yaml", "merge_key", b"x: &x {max_num_seqs: 4}\n" + y(BASE).replace(b"engine:\n", b"engine:\n  <<: *x\n"), "x")
# booleans where numbers belong
for key in ["engine.max_num_seqs", "replicas", "seed", "workload.num_requests", "workload.arrival.rate",
            "parallel.tp", "engine.gpu_memory_utilization", "warmup_s", "workload.output_tokens",
            "workload.input_tokens.mean", "cost.gpu_hour_usd"]:
    add("bool_number", key, mod(key, True), key.split(".")[-1])
# non-finite and huge numbers
for key in ["workload.arrival.rate", "warmup_s", "max_duration_s", "engine.swap_space_gib", "workload.input_tokens.mean",
            "workload.input_tokens.std", "cost.gpu_hour_usd", "slo.ttft_ms.p99"]:
    for label, v in (("inf", float("inf")), ("nan", float("nan")), ("1e30", 1e30), ("-inf", float("-inf"))):
        add("nonfinite", f"{key}={label}", mod(key, v), key.split(".")[-1])
add("nonfinite", "seed=-1", mod("seed", -1), "seed")
add("nonfinite", "seed=2**70", mod("seed", 2 ** 70), "seed")
add("nonfinite", "think_inf", mod("workload.arrival", {"process": "closed", "clients": 2, "think_time_s": float("inf")}), "think_time_s")
add("nonfinite", "burstiness_inf", mod("workload.arrival", {"process": "gamma", "rate": 8, "burstiness": float("inf")}), "burstiness")
add("nonfinite", "zipf_a_inf", mod("workload.input_tokens", {"dist": "zipf", "a": float("inf"), "max": 100}), "a")
add("nonfinite", "lognormal_mu_inf", mod("workload.input_tokens", {"dist": "lognormal", "mu": float("inf"), "sigma": 1}), "mu")
add("nonfinite", "speedup_inf", mod("workload", {"trace": {"path": "trace.csv", "speedup": float("inf")}}), "speedup")
# sizes that would cost time before anything runs
add("size", "num_requests_1e12", mod("workload.num_requests", 10 ** 12), "num_requests")
add("size", "num_requests_1e12_float", mod("workload.num_requests", 1e12), "num_requests")
add("size", "fixed_input_1e9", mod("workload.input_tokens", 10 ** 9), "input_tokens")
add("size", "uniform_high_1e9", mod("workload.input_tokens", {"dist": "uniform", "low": 1, "high": 10 ** 9}), "high")
add("size", "replicas_1e6", mod("replicas", 10 ** 6), "replicas")
add("size", "rate_x_duration", mod("workload", {"duration_s": 1e9, "arrival": {"process": "poisson", "rate": 8},
                                                "input_tokens": 16, "output_tokens": 16}), "num_requests")
add("size", "clients_1e9", mod("workload.arrival", {"process": "closed", "clients": 10 ** 9}), "clients")
add("size", "prefix_groups_1e9", mod("workload.prefix", {"num_groups": 10 ** 9, "prefix_tokens": 16}), "num_groups")
add("size", "zipf_without_max", mod("workload.output_tokens", {"dist": "zipf", "a": 1.05}), expect="run")
add("size", "tp_1e6", mod("parallel.tp", 10 ** 6), "parallel.tp")
# nonsense that used to run
add("nonsense", "ep_dense", mod("parallel.ep", 2), "parallel.ep")
add("nonsense", "ep_not_dividing", mod("parallel", {"tp": 1, "ep": 3}, mod("model", "mixtral-8x7b")), "parallel.ep")
add("nonsense", "min_above_max", mod("workload.input_tokens", {"dist": "uniform", "low": 1, "high": 10, "min": 20, "max": 5}), "min")
add("nonsense", "start_past_trace", mod("workload", {"trace": {"path": "trace.csv", "start_s": 10000}}), "start_s")
add("nonsense", "token_min_0", mod("workload.input_tokens", {"dist": "uniform", "low": 0, "high": 5, "min": 0}), "min")
# traces
csv = b"arrival_time_s,input_tokens,output_tokens\n" + b"".join(f"{i * 0.1:.1f},{100 + i},4\n".encode() for i in range(400))
gz = gzip.compress(csv, mtime=0)
(HERE / "trace.csv").write_bytes(csv)
(HERE / "truncated.csv.gz").write_bytes(gz[: len(gz) // 2])
(HERE / "not_gzip.csv.gz").write_bytes(csv)
add("trace", "truncated_gz", mod("workload", {"trace": {"path": "truncated.csv.gz"}}), "truncated.csv.gz")
add("trace", "not_gzip", mod("workload", {"trace": {"path": "not_gzip.csv.gz"}}), "not_gzip.csv.gz")
add("trace", "missing", mod("workload", {"trace": {"path": "nope.csv"}}), "nope.csv")
add("trace", "ok", mod("workload", {"trace": {"path": "trace.csv", "max_requests": 12}}), expect="run")
# --set
classes = mod("workload.classes", [{"name": "a", "weight": 1}, {"name": "b"}])
add("set", "list_index", classes, args=["--set", "workload.classes.0.weight=2"], expect="run")
add("set", "list_out_of_range", classes, "index", args=["--set", "workload.classes.5.weight=2"])
add("set", "list_bad_index", classes, "index", args=["--set", "workload.classes.x.weight=2"])
add("set", "through_scalar", BASE, "not a mapping", args=["--set", "seed.x=1"])
add("set", "not_yaml", BASE, "not valid YAML", args=["--set", "engine.max_num_seqs=[1,"])
add("set", "no_equals", BASE, "KEY=VALUE", args=["--set", "engine.max_num_seqs"])
add("set", "empty_key", BASE, "empty key", args=["--set", "=3"])
add("set", "unknown", BASE, "engine.nope", args=["--set", "engine.nope=3"])
add("set", "base_dir", BASE, "base_dir", args=["--set", "base_dir=/etc"])
add("set", "bool_number", BASE, "max_num_seqs", args=["--set", "engine.max_num_seqs=true"])
add("set", "inf", BASE, "rate", args=["--set", "workload.arrival.rate=.inf"])
add("set", "dup_in_value", BASE, "duplicate", args=["--set", "engine={max_num_seqs: 1, max_num_seqs: 2}"])
# output locations (OUT is replaced by the test's temporary directory)
add("outdir", "out_is_file", BASE, "not a directory", args=["--out", "{here}/trace.csv"])
add("outdir", "out_under_file", BASE, "is a file", args=["--out", "{here}/trace.csv/sub"])
add("outdir", "out_unwritable", BASE, "--out", args=["--out", "/proc/simctl-nope"])
for label, nm in (("dotdot", "../../etc"), ("absolute", "/tmp/abs"), ("empty", ""), ("dot", "."), ("slash", "a/b"),
                  ("long", "a" * 300), ("tilde", "~")):
    add("outname", label, mod("name", nm), expect="default-out")

manifest = []
for i, c in enumerate(cases):
    fn = f"{i:03d}_{c['cls']}_{''.join(ch if ch.isalnum() else '_' for ch in c['name'])[:40]}.yaml"
    (HERE / fn).write_bytes(c.pop("content"))
    manifest.append({"file": fn, **c})
(HERE / "cases.json").write_text(json.dumps(manifest, indent=1) + "\n")
print(len(manifest), "cases")
