"""The one dtype table: safetensors codes, torch names, element sizes, and what each may become.

The header check, the ``.bin`` reader, the memory estimate, the skeleton's dtype choice, the
config check, the option list and the streaming engine all need to know the same facts about a
dtype. Each used to keep its own table, and they drifted (one knew float8, another did not); a
new dtype is now one line here. No torch import: the preflight reads this before torch is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dtype:
    code: str  # as a safetensors header spells it, e.g. "BF16"
    torch_name: str  # the ``torch`` attribute, e.g. "bfloat16"
    itemsize: int  # bytes per element
    # A float a dtype request converts (``dtype=float16`` makes it float16). float8 is a quantized
    # storage format: kept as stored, so it is not one.
    is_float: bool
    # The streaming engine views landed bytes as this dtype; the others go to transformers' path.
    streamed: bool = True


_TABLE = (
    Dtype("F64", "float64", 8, True),
    Dtype("F32", "float32", 4, True),
    Dtype("F16", "float16", 2, True),
    Dtype("BF16", "bfloat16", 2, True),
    Dtype("I64", "int64", 8, False),
    Dtype("I32", "int32", 4, False),
    Dtype("I16", "int16", 2, False),
    Dtype("I8", "int8", 1, False),
    Dtype("U8", "uint8", 1, False),
    Dtype("BOOL", "bool", 1, False),
    Dtype("F8_E4M3", "float8_e4m3fn", 1, False, streamed=False),
    Dtype("F8_E5M2", "float8_e5m2", 1, False, streamed=False),
    # torch's unsigned types wider than a byte have few kernels: not streamed.
    Dtype("U16", "uint16", 2, False, streamed=False),
    Dtype("U32", "uint32", 4, False, streamed=False),
    Dtype("U64", "uint64", 8, False, streamed=False),
)

BY_CODE: dict[str, Dtype] = {d.code: d for d in _TABLE}
BY_NAME: dict[str, Dtype] = {d.torch_name: d for d in _TABLE}

# Codes whose tensors take the requested dtype's size once loaded (the memory estimate).
FLOAT_CODES = frozenset(d.code for d in _TABLE if d.is_float)
# What a config's ``dtype``/``torch_dtype`` may say.
FLOAT_NAMES = tuple(d.torch_name for d in _TABLE if d.is_float)
# What a user may ask a load for (``auto`` aside): every device of ours has these three.
LOADABLE_NAMES = ("bfloat16", "float16", "float32")


def code_of(torch_name: str) -> str | None:
    """The safetensors code for a torch dtype name ("bfloat16" → "BF16"), None if it has none."""
    entry = BY_NAME.get(torch_name)
    return entry.code if entry is not None else None


def name_of(code: str) -> str | None:
    """The torch dtype name for a safetensors code ("BF16" → "bfloat16"), None if unknown."""
    entry = BY_CODE.get(code)
    return entry.torch_name if entry is not None else None


def element_size(torch_name: str) -> int | None:
    """Bytes per element of a torch dtype name; None for ``auto`` or an unknown name."""
    entry = BY_NAME.get(torch_name)
    return entry.itemsize if entry is not None else None
