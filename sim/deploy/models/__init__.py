"""Model architectures: exact parameter accounting and the bundled catalog.

>>> from sim.deploy.models import load_model
>>> m = load_model("llama-3.1-8b")          # catalog short name
>>> m = load_model("meta-llama/Llama-3.1-8B")  # or its HF repo id
>>> m = load_model("path/to/config.json")    # or any HF config.json (or a directory holding one)
>>> m.total_params(), m.active_params(), m.kv_cache_bytes_per_token("bf16")

The catalog lives in ``sim/deploy/models/catalog/``: one shipped ``config.json`` per model (named
``<short-name>.json``) and ``index.json`` mapping short names and HF ids to files, with sources.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sim.deploy.models.hf_config import (
    SUPPORTED_MODEL_TYPES,
    UnsupportedModelError,
    read_config_file,
    spec_from_config,
)
from sim.deploy.models.spec import (
    DTYPE_BYTES,
    AttentionDims,
    LayerGroup,
    LinearOp,
    MLASpec,
    ModelSpec,
    MoESpec,
    dtype_bytes,
)
from sim.errors import ConfigError, UnknownNameError, suggest, unknown_name

__all__ = [
    "AttentionDims", "CatalogEntry", "DTYPE_BYTES", "LayerGroup", "LinearOp", "MLASpec", "ModelSpec", "MoESpec",
    "CATALOG_DIR", "SUPPORTED_MODEL_TYPES", "UnsupportedModelError", "catalog", "dtype_bytes", "list_models",
    "load_model", "resolve_name", "spec_from_config",
]

CATALOG_DIR = Path(__file__).with_name("catalog")


@dataclass(frozen=True)
class CatalogEntry:
    """One bundled model: short name, HF repo id, config file and where its values come from."""

    name: str
    hf_repo: str
    file: str
    aliases: tuple[str, ...] = ()
    source: str = ""
    published_params: int | None = None  # an exact published total, when one is known
    published_source: str = ""
    notes: str = ""

    @property
    def path(self) -> Path:
        """The shipped config.json."""
        return CATALOG_DIR / self.file


@lru_cache(maxsize=1)
def catalog() -> dict[str, CatalogEntry]:
    """Bundled models by short name (ordered as in ``index.json``)."""
    index = CATALOG_DIR / "index.json"
    data = json.loads(index.read_text(encoding="utf-8"))
    out: dict[str, CatalogEntry] = {}
    for row in data["models"]:
        e = CatalogEntry(name=row["name"], hf_repo=row["hf_repo"], file=row["file"],
                         aliases=tuple(row.get("aliases", ())), source=row.get("source", ""),
                         published_params=row.get("published_params"),
                         published_source=row.get("published_source", ""), notes=row.get("notes", ""))
        out[e.name] = e
    return out


@lru_cache(maxsize=1)
def _lookup() -> dict[str, str]:
    """lower-cased name / HF id / alias -> short name."""
    table: dict[str, str] = {}
    for e in catalog().values():
        for key in (e.name, e.hf_repo, *e.aliases):
            table[key.lower()] = e.name
    return table


def list_models() -> list[str]:
    """Short names of the bundled models."""
    return list(catalog())


def resolve_name(name: str) -> str | None:
    """Catalog short name for a short name, HF repo id or alias (case-insensitive), else None."""
    key = name.strip().lower()
    if key.startswith("hf://"):
        key = key[5:]
    return _lookup().get(key)


@lru_cache(maxsize=256)
def _load_catalog(short: str) -> ModelSpec:
    e = catalog()[short]
    return spec_from_config(read_config_file(e.path), name=e.name, source=str(e.path), hf_repo=e.hf_repo)


def _looks_like_path(s: str) -> bool:
    return s.endswith(".json") or s.startswith((".", "/", "~")) or "\\" in s or s.count("/") > 1


def load_model(name_or_path: str | Path) -> ModelSpec:
    """A :class:`ModelSpec` for a catalog short name, an HF repo id from the catalog, or a path to a
    ``config.json`` (or a directory containing one).

    Raises :class:`~sim.errors.UnknownNameError` (with suggestions) for unknown names,
    :class:`~sim.errors.ConfigError` naming the file and key for bad configs, and
    :class:`UnsupportedModelError` listing supported families for an unknown ``model_type``.
    """
    if isinstance(name_or_path, Path):
        return _load_path(name_or_path)
    s = str(name_or_path).strip()
    if not s:
        raise ConfigError("model: empty model name")
    short = resolve_name(s)
    if short is not None:
        return _load_catalog(short)
    p = Path(s).expanduser()
    if p.exists():
        return _load_path(p)
    if _looks_like_path(s):
        raise ConfigError(f"{s}: no such file or directory (model given as a path)")
    if "/" in s:
        # an HF repo id that is not bundled: suggest close repo ids, and how to use any model
        repos = {e.hf_repo: e.name for e in catalog().values()}
        hint = suggest(s, repos)
        raise UnknownNameError(
            f"unknown model '{s}'{hint}: it is not in the bundled catalog (see `simctl model list`). "
            f"For any other Hugging Face model, download its config.json and pass the file's path")
    raise unknown_name("model", s, list_models())


def _load_path(p: Path) -> ModelSpec:
    data = read_config_file(p)
    cfg = p / "config.json" if p.is_dir() else p
    name = p.name if p.is_dir() else (p.parent.name if p.name == "config.json" and p.parent.name else p.stem)
    repo = data.get("_name_or_path")
    repo = repo if isinstance(repo, str) and repo.count("/") == 1 and not repo.startswith((".", "/")) else None
    return spec_from_config(data, name=name, source=str(cfg), hf_repo=repo)
