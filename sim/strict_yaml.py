"""Reading YAML/JSON input files strictly: one clear error naming the file and the key, never a traceback.

Every experiment file, hardware profile and ``--set`` value passes through here. Beyond what
``yaml.safe_load`` refuses, this module refuses:

- bytes that are not text: invalid UTF-8, NUL bytes (binary files). UTF-8 with a BOM and UTF-16/32
  with a BOM are decoded;
- files larger than :data:`MAX_FILE_BYTES` and nesting deeper than :data:`MAX_DEPTH` (a hand-written
  experiment is a few KiB and a few levels deep; anything else is a mistake or an attack);
- duplicate keys in a mapping (YAML 1.2 forbids them; PyYAML silently keeps the last, so a second
  ``engine:`` would replace the first);
- non-finite numbers (``.inf``, ``.nan``), floats beyond ±:data:`sim.limits.MAX_FLOAT` and integers
  beyond 64 bits anywhere in the data (no simctl quantity is infinite: leave a key out, or use
  ``null`` where the schema allows "none").

Merge keys (``<<: *anchor``) and anchors stay allowed; a merged key overridden in the mapping
itself is not a duplicate (that is what merging is for).
"""
from __future__ import annotations

import codecs
import math
from pathlib import Path
from typing import Any

import yaml

from sim.errors import ConfigError
from sim.limits import MAX_FLOAT

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
_INT_LIMIT = 2 ** 63 - 1
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_text(raw: bytes, source: str) -> str:
    """``raw`` as text: UTF-8 (or UTF-8/16/32 with a byte-order mark); ConfigError otherwise."""
    for bom, enc in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(enc)
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{source}: not valid {enc.upper()} text (byte offset {exc.start})") from None
    if b"\x00" in raw:
        raise ConfigError(f"{source}: a binary file, not text (NUL byte at offset {raw.index(0)})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at offset "
                          f"{exc.start}); save the file as UTF-8") from None


def read_text_file(path: str | Path, what: str = "file") -> str:
    """Read a small text input file (size-limited, decoded by :func:`decode_text`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what}" if not path.exists() else f"{path}: not a regular file")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes is too large for a {what} (limit {MAX_FILE_BYTES:,})")
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    return decode_text(raw, str(path))


def _yaml_error(exc: yaml.YAMLError, source: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(f"{source}: not valid YAML: {where}{problem}")


def _key_label(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else f"<{node.tag.rsplit(':', 1)[-1]}>"


def _check_nodes(root: yaml.Node, source: str) -> None:
    """Refuse duplicate mapping keys and excessive nesting (iterative: no recursion limit)."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias of a node already checked
            continue
        seen.add(id(node))
        if len(path) > MAX_DEPTH:
            raise ConfigError(f"{source}: line {node.start_mark.line + 1}: nesting deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                label = _key_label(key)
                if key.tag == "tag:yaml.org,2002:merge":
                    stack.append((value, path))
                    continue
                if label in first:
                    dotted = ".".join((*path, label))
                    raise ConfigError(f"{source}: line {key.start_mark.line + 1}: duplicate key '{dotted}' "
                                      f"(first at line {first[label]}); each key may appear once")
                first[label] = key.start_mark.line + 1
                stack.append((value, (*path, label)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, str(i))) for i, item in enumerate(node.value))


def check_numbers(data: Any, source: str, path: tuple[str, ...] = ()) -> None:
    """Refuse non-finite floats and integers beyond 64 bits anywhere in ``data`` (naming the key)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, path)]
    seen: set[int] = set()
    while stack:
        value, where = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: {'.'.join(where) or '(top level)'}: {value!r} is not a finite number "
                              "(no simctl quantity is infinite; leave the key out for its default)")
        if isinstance(value, float) and abs(value) > MAX_FLOAT:
            raise ConfigError(f"{source}: {'.'.join(where) or '(top level)'}: {value:g} is beyond simctl's limit of "
                              f"±{MAX_FLOAT:g} for any number (docs/experiment.md, Limits)")
        if isinstance(value, int) and abs(value) > _INT_LIMIT:
            raise ConfigError(f"{source}: {'.'.join(where) or '(top level)'}: {value} does not fit in 64 bits")
        if isinstance(value, (dict, list, tuple)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, (*where, str(k))) for k, v in items)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML text strictly (module docstring); ConfigError naming ``source`` on any problem."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, source)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    except RecursionError:
        raise ConfigError(f"{source}: nesting deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    check_numbers(data, source)
    return data


def load_yaml_file(path: str | Path, what: str = "file") -> Any:
    """Read and parse a YAML file strictly."""
    return load_yaml_text(read_text_file(path, what), str(path))
