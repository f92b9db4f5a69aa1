"""Safe checkpoint reading: safetensors, `torch.load(weights_only=True)`, else a restricted unpickler.

Checkpoints are untrusted input. A pickle can name any importable callable and have the loader call it, so a
Lightning `.ckpt` is first read with torch's own weights-only unpickler; when that refuses the file because it
names trainer classes (Lightning callbacks, omegaconf configs), it is read again with `RestrictedUnpickler`,
which rebuilds tensors and plain containers, turns a short list of known-harmless trainer classes into inert
placeholders, and refuses every other global without importing or calling it.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError

from ..errors import VqclipError, bad_arg, quote_error

SAFETENSORS_SUFFIX = ".safetensors"

# Exactly these callables may be called while unpickling: they rebuild tensors from storages torch has read.
TORCH_REBUILDERS = {
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Size"),
    ("torch", "device"),
}

# Plain data types that are safe to construct from pickled arguments.
SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes",
                 "bytearray", "slice", "range", "object"}

# Modules whose classes show up in training checkpoints (Lightning callbacks, hyper-parameters) and that vqclip
# never needs: their globals become inert placeholders, nothing from them is imported.
INERT_MODULE_ROOTS = {"pytorch_lightning", "lightning", "lightning_fabric", "lightning_utilities", "omegaconf",
                      "taming", "typing", "argparse", "pathlib", "numpy", "datetime", "enum", "collections"}


class UnsafeCheckpointError(VqclipError):
    """A checkpoint names a global that could run code; it was refused without being imported."""


class Inert:
    """Stand-in for a class or function a checkpoint names but vqclip never imports; it only records its inputs."""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items={}, elements=[])
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):  # pickle's BUILD
        self.__dict__["state"] = state

    def __setitem__(self, key, value):  # pickle's SETITEMS on dict subclasses
        self.__dict__["items"][key] = value

    def append(self, value):  # pickle's APPENDS on list subclasses
        self.__dict__["elements"].append(value)

    def extend(self, values):
        self.__dict__["elements"].extend(values)

    def __repr__(self):
        return f"<inert {type(self).__module__}.{type(self).__qualname__}>"


def _safe_reconstructor(cls, base, state):
    """copyreg._reconstructor limited to placeholders (protocol 0/1 pickles build objects with it)."""
    if not (isinstance(cls, type) and issubclass(cls, Inert)):
        raise UnsafeCheckpointError(f"the checkpoint asks copyreg._reconstructor to build {cls!r}; refused")
    return cls(state)


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose `find_class` keeps tensors and containers, neuters trainer classes and refuses the rest."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._inert_types: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles spell some modules the Python 2 way (__builtin__, copy_reg); pickle's own
        # find_class translates them, which this override must do too.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in TORCH_REBUILDERS:
            return getattr(__import__(module, fromlist=[name]), name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "builtins" and name in SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        if module == "collections" and name == "OrderedDict":
            from collections import OrderedDict

            return OrderedDict
        if module == "_codecs" and name == "encode":  # how protocol-2 pickles spell bytes; pure function
            import _codecs

            return _codecs.encode
        if module == "copyreg" and name == "_reconstructor":
            return _safe_reconstructor
        if module.split(".")[0] in INERT_MODULE_ROOTS:
            key = (module, name)
            if key not in self._inert_types:
                self._inert_types[key] = type(name.split(".")[-1], (Inert,), {"__module__": module,
                                                                              "__qualname__": name})
            return self._inert_types[key]
        raise UnsafeCheckpointError(
            f"the checkpoint refers to the global {module}.{name}, which vqclip will not import or call "
            "(only tensors, plain containers and known trainer classes are accepted). The file may be "
            "malicious or not a model checkpoint; it was not executed. Use a checkpoint from a trusted source, "
            "or a .safetensors file")


def restricted_pickle_module() -> types.ModuleType:
    """A `pickle_module` for `torch.load` built on RestrictedUnpickler (it handles zip and legacy formats)."""
    module = types.ModuleType("vqclip_restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()
    module.loads = lambda data, **kw: RestrictedUnpickler(__import__("io").BytesIO(data), **kw).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module


def _empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def is_safetensors(path: str | os.PathLike) -> bool:
    """True when the file starts like a safetensors file (8-byte header length, then a JSON object)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < n < os.path.getsize(path)


def _unreadable(arg: str, path: Path, problem: str) -> VqclipError:
    return bad_arg(arg, f"could not read the checkpoint ({problem})", str(path),
                   "The file is probably truncated or not a model checkpoint: download it again "
                   "(`vqclip models download NAME` verifies what it fetches) or pass the right file.")


def _torch_load(path: Path, arg: str) -> Any:
    """torch.load with weights_only=True, falling back to the restricted unpickler for trainer objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True,
                          mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as first:
        # Raised by torch's weights-only unpickler for any global outside its allow-list (Lightning callbacks,
        # omegaconf) and also for a damaged pickle stream: the restricted reader tells the two apart.
        reason = quote_error(first)
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, SafetensorError) as e:
        # SafetensorError: torch hands files in its own safetensors layout to safetensors, which raises that
        raise _unreadable(arg, path, "an empty file" if _empty(path) else quote_error(e)) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle_module())
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{arg}: {e}; got {str(path)!r}.") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError,
            KeyError, IndexError, zipfile.BadZipFile, SafetensorError) as e:
        raise _unreadable(arg, path, "an empty file" if _empty(path) else
                          f"{quote_error(e)}; weights-only reader: {reason}") from e


def read_checkpoint(path: str | os.PathLike, arg: str = "--vqgan-checkpoint") -> Any:
    """The object stored in a .safetensors / .ckpt / .pt / .pth file, read without running any pickled code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise bad_arg(arg, "checkpoint file not found", str(path), "Check the path (or download the model).")
    if is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own SafetensorError for damaged files
            raise _unreadable(arg, path, quote_error(e)) from e
    return _torch_load(path, arg)


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a .safetensors header ({} when there is none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def state_dict_of(obj: Any, arg: str = "--vqgan-checkpoint", path: str | os.PathLike = "") -> dict[str, torch.Tensor]:
    """The tensor state dict inside a checkpoint object: a Lightning dict keeps it under "state_dict"."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise bad_arg(arg, "the checkpoint holds no state dict (expected a mapping of names to tensors)",
                      str(path), "Pass a Lightning .ckpt, a plain state dict or a .safetensors file.")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise bad_arg(arg, "the checkpoint holds no tensors", str(path),
                      "Pass a Lightning .ckpt, a plain state dict or a .safetensors file.")
    return tensors


def strip_prefix(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = ("model.", "module.")) -> dict:
    """Remove a wrapper prefix that every key shares (e.g. `module.` from DataParallel)."""
    state = dict(state)
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def describe_key_mismatch(missing: list[str], unexpected: list[str], limit: int = 12) -> str:
    """`missing: a, b (+3 more); unexpected: c` for error messages."""

    def listing(keys: list[str]) -> str:
        keys = sorted(keys)
        more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {listing(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: {listing(unexpected)}")
    return "; ".join(parts)

