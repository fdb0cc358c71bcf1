"""What a folder (or file) holds, decided from file names, the config and a few header bytes.

transformers loads safetensors and, through the safe ``weights_only`` unpickler, ``pytorch_model.bin``;
a PEFT adapter loads over its base. Users also keep GGUF files for llama.cpp/Ollama, MLX-quantized
folders, ONNX exports, TensorFlow/Flax weights and Meta's original ``consolidated.*.pth``: those are
named here with what to do instead, so the list shows the reason and a load refuses them with a
typed ``unsupported_format`` rather than a traceback. Nothing here unpickles or parses weights.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from loader.pipeline.errors import LoadError, MissingPackage, UnsupportedFormat
from loader.pipeline.i18n import Msg, gettext_noop
from loader.pipeline.inspect.safefs import folder_root, open_regular

SAFETENSORS, BIN, ADAPTER = "safetensors", "bin", "adapter"
GGUF, MLX, ONNX, TF, FLAX, PTH, QUANT, NONE = "gguf", "mlx", "onnx", "tensorflow", "flax", "pth", "quant", "none"
BIN_NAME, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
ADAPTER_CONFIG = "adapter_config.json"
GGUF_MAGIC = b"GGUF"

# Korean, English: what it is and what to do. The catalog shows the Korean one as the problem.
# Whole sentences per format (the page and the CLI say them in the viewer's language).
_ADVICE: dict[str, str] = {
    GGUF: gettext_noop(
        "지원하지 않는 형식입니다(GGUF): {name}. GGUF는 llama.cpp/Ollama용 형식입니다. "
        "llama.cpp나 Ollama로 실행하거나, 원본 Hugging Face 체크포인트(safetensors)를 models/에 넣으세요."
    ),
    MLX: gettext_noop(
        "지원하지 않는 형식입니다(MLX): {name}. MLX로 양자화된 모델입니다(Apple MLX 전용). "
        "mlx-lm으로 실행하거나, 양자화하지 않은 원본 체크포인트를 models/에 넣으세요."
    ),
    ONNX: gettext_noop(
        "지원하지 않는 형식입니다(ONNX): {name}. ONNX 내보내기입니다. "
        "onnxruntime/Optimum으로 실행하거나, 원본 PyTorch 체크포인트를 models/에 넣으세요."
    ),
    TF: gettext_noop(
        "지원하지 않는 형식입니다(TensorFlow): {name}. TensorFlow 가중치(tf_model.h5)입니다. "
        "transformers 5는 TensorFlow를 지원하지 않습니다: safetensors로 변환된 체크포인트를 사용하세요."
    ),
    FLAX: gettext_noop(
        "지원하지 않는 형식입니다(Flax): {name}. Flax 가중치(flax_model.msgpack)입니다. "
        "transformers 5는 Flax를 지원하지 않습니다: safetensors로 변환된 체크포인트를 사용하세요."
    ),
    PTH: gettext_noop(
        "지원하지 않는 형식입니다(Meta .pth): {name}. Meta 원본 형식(consolidated.*.pth)입니다. "
        "transformers의 convert_llama_weights_to_hf로 변환한 체크포인트를 사용하세요."
    ),
}


def _names(path: Path) -> set[str]:
    try:
        return {n for n in os.listdir(path) if not n.startswith(".")}
    except OSError:
        return set()


def mlx_quantized(config: Any) -> bool:
    """mlx-lm writes ``"quantization": {"group_size", "bits"}`` and no ``quantization_config``."""
    if not isinstance(config, dict) or config.get("quantization_config") is not None:
        return False
    quant = config.get("quantization")
    return isinstance(quant, dict) and "group_size" in quant and "bits" in quant


def detect(path: Path, config: Any = None) -> str:
    """The format of ``path`` from its file names (and ``config`` when already read)."""
    if path.suffix == ".gguf" and not _is_dir(path):
        return GGUF
    names = _names(path)
    if "model.safetensors" in names or "model.safetensors.index.json" in names:
        return MLX if mlx_quantized(config) else SAFETENSORS
    if ADAPTER_CONFIG in names and "config.json" not in names:
        return ADAPTER
    if BIN_NAME in names or BIN_INDEX in names:
        return BIN
    if ADAPTER_CONFIG in names:
        return ADAPTER
    if any(n.endswith(".gguf") for n in names):
        return GGUF
    if "weights.npz" in names or (mlx_quantized(config) and any(n.endswith(".safetensors") for n in names)):
        return MLX
    if "model.onnx" in names or "onnx" in names or any(n.endswith(".onnx") for n in names):
        return ONNX
    if "tf_model.h5" in names:
        return TF
    if "flax_model.msgpack" in names:
        return FLAX
    if "params.json" in names and any(n.startswith("consolidated.") and n.endswith(".pth") for n in names):
        return PTH
    return NONE


def offered(path: Path) -> bool:
    """A folder without ``config.json`` still worth listing: an adapter, or a format we can name."""
    return detect(path) not in (NONE, SAFETENSORS, BIN)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def advice(kind: str, name: str = "") -> str:
    """What to do with a folder of ``kind`` (empty for formats we load)."""
    template = _ADVICE.get(kind)
    return Msg(template, {"name": name}) if template else ""


def gguf_header(file: Path, root: Path | None = None) -> dict[str, int]:
    """Version, tensor and metadata counts of a GGUF file, after checking its magic."""
    root = root or folder_root(file.parent)
    with open_regular(file, root) as (fh, _size):
        head = fh.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        return {}
    version, tensors, kv = struct.unpack("<IQQ", head[4:24])
    return {"version": version, "tensors": tensors, "metadata_keys": kv}


def refuse(kind: str, path: Path, lang: str = "ko") -> UnsupportedFormat:
    """The typed refusal for a format transformers cannot load."""
    label = {GGUF: "GGUF", MLX: "MLX", ONNX: "ONNX", TF: "TensorFlow", FLAX: "Flax", PTH: "Meta .pth"}.get(kind, kind)
    detail = f"{path.name}: {label} format"
    if kind == GGUF:
        gguf = next(iter(sorted(path.glob("*.gguf"))), path) if _is_dir(path) else path
        try:
            header = gguf_header(gguf, folder_root(path if _is_dir(path) else path.parent))
            detail += f" ({gguf.name}: {header or 'no GGUF magic'})"
        except Exception as exc:  # the refusal stands; the header is only a detail
            detail += f" ({type(exc).__name__})"
    return UnsupportedFormat(
        advice(kind, path.name)
        or gettext_noop("지원하지 않는 형식입니다({label}): {name}", label=label, name=path.name),
        detail,
    )


# The package each quantization method needs (its import name, its pip name), checked before the
# load starts: the previous model then stays, and the words name the package, not transformers.
QUANT_PACKAGES = {
    "bitsandbytes": ("bitsandbytes", "bitsandbytes"), "hqq": ("hqq", "hqq"), "eetq": ("eetq", "eetq"),
    "torchao": ("torchao", "torchao"), "aqlm": ("aqlm", "aqlm"), "vptq": ("vptq", "vptq"),
    "compressed-tensors": ("compressed_tensors", "compressed-tensors"), "quanto": ("optimum.quanto", "optimum-quanto"),
}  # fmt: skip


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing (optimum for optimum.quanto)
        return False


def quant_refusal(config: dict[str, Any], path: Path) -> LoadError | None:
    """A ``quantization_config`` whose method this transformers does not know (MLX's own is caught
    above), or whose package is not installed."""
    quant = config.get("quantization_config")
    if not isinstance(quant, dict):
        return None
    method = quant.get("quant_method")
    if method is None and (quant.get("load_in_4bit") or quant.get("load_in_8bit")):
        method = "bitsandbytes"  # old bitsandbytes configs: transformers infers the method
    if method is None:
        return None
    if isinstance(method, str) and method in QUANT_PACKAGES:
        module, pip_name = QUANT_PACKAGES[method]
        if not _installed(module):
            return MissingPackage(
                gettext_noop(
                    "이 체크포인트는 {method} 양자화입니다: {package} 패키지가 설치되어 있지 않습니다(pip install {package}).",
                    method=method, package=pip_name,
                ),
                f"{path.name}: quant_method={method!r} needs the {module!r} module",
            )  # fmt: skip
        return None
    try:
        from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING
    except ImportError:
        return None
    if isinstance(method, str) and method in AUTO_QUANTIZATION_CONFIG_MAPPING:
        return None
    shown = str(method)[:40] if method is not None else "?"
    return UnsupportedFormat(
        gettext_noop(
            "이 버전의 transformers가 모르는 양자화 방식입니다({shown}): {name}. 양자화하지 않은 원본 체크포인트를 사용하세요.",
            shown=shown,
            name=path.name,
        ),
        f"{path.name}: quantization_config.quant_method={shown!r} unknown to transformers",
    )
