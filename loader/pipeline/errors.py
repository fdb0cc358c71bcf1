"""Typed load errors: a plain message for the user, a technical detail for the log.

The UI prefixes the message with "❌ 오류:"; ``code`` lets tests and scripts branch on the kind
of failure without parsing prose. The message is Korean text that keeps its template and
parameters (``i18n.gettext_noop``), so the page and the CLI can say it in English too.
"""

from __future__ import annotations

from typing import Any

from loader.pipeline.i18n import Msg, gettext_noop, parts


class LoadError(Exception):
    code = "load_error"

    def __init__(self, user_message: str, detail: str = "") -> None:
        super().__init__(user_message)
        # A ``Msg`` stays one (its template and parameters travel with it), so whoever passes the
        # message on (the catalog's problem column) can still say it in English.
        self.user_message: str = user_message if isinstance(user_message, Msg) else str(user_message)
        self.template, self.params = parts(user_message)
        self.detail = detail or str(user_message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code, "message": self.user_message, "detail": self.detail,
            "template": self.template, "params": self.params,
        }  # fmt: skip


class FolderMissing(LoadError):
    code = "folder_missing"


class FolderUnreadable(LoadError):
    code = "folder_unreadable"


class NotAModelFolder(LoadError):
    code = "not_a_model_folder"


class ConfigUnreadable(LoadError):
    code = "config_unreadable"


class UnknownArchitecture(LoadError):
    code = "unknown_architecture"


class RemoteCodeRefused(LoadError):
    code = "remote_code_refused"


class TokenizerError(LoadError):
    code = "tokenizer_error"


class ShardMissing(LoadError):
    code = "shard_missing"


class ShardCorrupt(LoadError):
    code = "shard_corrupt"


class DeviceUnavailable(LoadError):
    code = "device_unavailable"


class InvalidOption(LoadError):
    code = "invalid_option"


class MissingPackage(LoadError):
    code = "missing_package"


class OutOfMemory(LoadError):
    """Memory ran out during the load itself (the preflight's refusal is ``DoesNotFit``)."""

    code = "out_of_memory"


class DoesNotFit(LoadError):
    """The preflight's refusal: the weights need more memory than the device has free."""

    code = "does_not_fit"


class WeightsMismatch(LoadError):
    """The checkpoint's tensors are not the model's: loading would leave random weights."""

    code = "weights_mismatch"


class UnsafeFile(LoadError):
    """A file the loader would read is not a regular file inside the model's folder."""

    code = "unsafe_file"


class FileTooLarge(LoadError):
    """A JSON or tokenizer file is larger than any real one; it is refused unread."""

    code = "file_too_large"


class LoaderBusy(LoadError):
    code = "busy"


class LoadCancelled(LoadError):
    """Raised inside the load when a cancel request is seen; not a failure."""

    code = "cancelled"

    def __init__(self) -> None:
        super().__init__(gettext_noop("로드가 취소되었습니다."), "cancelled by request")


class UnsupportedFormat(LoadError):
    """A folder in a format transformers does not load (GGUF, MLX, ONNX, …); the message says what to use."""

    code = "unsupported_format"


class UnsafePickle(LoadError):
    """A ``.bin``/``.pt`` pickle the safe (``weights_only``) unpickler refused; nothing in it ran."""

    code = "unsafe_pickle"


class AdapterBaseMissing(LoadError):
    """A PEFT adapter whose base model (``base_model_name_or_path``) is not on this machine."""

    code = "adapter_base_missing"


class AdapterMismatch(LoadError):
    """A PEFT adapter whose tensors do not fit its base model's modules."""

    code = "adapter_mismatch"


class AdapterBaseOutside(AdapterBaseMissing):
    """An adapter whose base is an absolute path outside the folders the web may read."""

    code = "adapter_base_outside"
