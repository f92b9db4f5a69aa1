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

from ..errors import VqclipError, bad_arg, one_line, quote_error

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


# Bounds on what a pickle may make the reader build. Everything a pickle builds from its own opcodes is bounded by
# the file's size; only a few calls build far more than they are given: `range(2**62)` (then `set(...)`,
# `list(...)`, `tuple(...)` of it) and `bytearray(2**40)` / `bytes(2**40)`. Those are checked before they run.
MAX_PICKLE_RANGE = 1_000_000  # items in a range a checkpoint may build (model checkpoints hold none)
MAX_PICKLE_ZERO_BYTES = 16 << 20  # bytes a `bytearray(n)` / `bytes(n)` call may allocate
MAX_PICKLE_OPS = 20_000_000  # opcodes in one pickle stream: a VQGAN checkpoint's has ~50,000
# Globals that allocate beyond their arguments: a pickle naming one is read by the bounded reader below, never by
# torch's weights-only reader (which builds `bytearray(2**30)` as asked).
EXPANDING_GLOBALS = {("builtins", "bytearray"), ("builtins", "bytes"), ("builtins", "range"),
                     ("__builtin__", "bytearray"), ("__builtin__", "bytes"), ("__builtin__", "xrange"),
                     ("__builtin__", "range")}


class CheckpointBombError(VqclipError):
    """A pickle asks for far more memory or work than its size (a pickle bomb); refused before building it."""


def _bomb(what: str) -> CheckpointBombError:
    return CheckpointBombError(f"the checkpoint asks to build {what}, beyond what a model checkpoint holds (a "
                               "pickle bomb?); refused before building it")


def _bounded_range(*args):
    r = range(*args)
    try:
        n = len(r)
    except OverflowError:
        n = MAX_PICKLE_RANGE + 1
    if n > MAX_PICKLE_RANGE:
        raise _bomb(f"a range of more than {MAX_PICKLE_RANGE} items")
    return r


def _bounded_bytes(kind: type):
    def build(*args):
        if args and isinstance(args[0], int) and not isinstance(args[0], bool) and args[0] > MAX_PICKLE_ZERO_BYTES:
            raise _bomb(f"{kind.__name__}({args[0]}), more than {MAX_PICKLE_ZERO_BYTES} bytes")
        return kind(*args)
    return build


BOUNDED_BUILTINS = {"range": _bounded_range, "bytearray": _bounded_bytes(bytearray), "bytes": _bounded_bytes(bytes)}


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
        if module == "builtins" and name in BOUNDED_BUILTINS:
            return BOUNDED_BUILTINS[name]
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


def _pickle_streams(path: Path):
    """The pickle streams of a checkpoint, to scan: `*/data.pkl` of a zip (torch's format), else the first
    pickles of a legacy file (magic number, version, system info, the object, its storage keys)."""
    import io

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith("data.pkl") and info.filename.count("/") <= 1:
                    if info.file_size > 1 << 30:
                        raise _bomb(f"a {info.file_size}-byte pickle")
                    yield io.BytesIO(z.read(info))
        return
    with open(path, "rb") as f:
        data = f.read(64 << 20)  # the legacy pickles come first; tensor bytes follow them
    stream = io.BytesIO(data)
    for _ in range(5):
        start = stream.tell()
        if start >= len(data):
            return
        yield stream
        if stream.tell() == start:  # the scan could not read this one: the loaders will say what is wrong
            return


def scan_pickle(path: Path) -> set[tuple[str, str]]:
    """The globals the checkpoint's pickles name, found by reading their opcodes without building anything;
    a stream of more than MAX_PICKLE_OPS opcodes is refused as a bomb. Damaged streams end the scan quietly
    (the loaders then report them)."""
    import pickletools

    found: set[tuple[str, str]] = set()
    for stream in _pickle_streams(path):
        strings: list[str] = []
        memo: dict[int, str] = {}
        ops = 0
        try:
            for op, arg, _ in pickletools.genops(stream):
                ops += 1
                if ops > MAX_PICKLE_OPS:
                    raise _bomb(f"more than {MAX_PICKLE_OPS} pickle operations")
                if op.name in ("GLOBAL", "INST"):
                    module, _, name = str(arg).partition(" ")
                    found.add((module, name))
                elif op.name == "STACK_GLOBAL":
                    found.add((strings[-2] if len(strings) > 1 else "?", strings[-1] if strings else "?"))
                elif isinstance(arg, str) and op.name.endswith("UNICODE"):
                    strings.append(arg)
                    strings[:] = strings[-2:]
                elif op.name in ("MEMOIZE",) and strings:
                    memo[len(memo)] = strings[-1]
                elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(arg, int) and arg in memo:
                    strings.append(memo[arg])
                    strings[:] = strings[-2:]
        except CheckpointBombError:
            raise
        except Exception:  # damaged or not a pickle: nothing more to learn here
            return found | {("?", "?")} if not found else found
    return found


def load_weights_only(path: str | os.PathLike) -> Any:
    """`torch.load(weights_only=True)` for small files that need no trainer classes (projections): pickle bombs
    and globals that allocate beyond their arguments are refused (as pickle.UnpicklingError) before torch reads
    the file."""
    path = Path(path)
    try:
        names = scan_pickle(path)
    except CheckpointBombError as e:
        raise pickle.UnpicklingError(str(e)) from None
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        names = set()
    if names & EXPANDING_GLOBALS:
        found = ", ".join(sorted(f"{m}.{n}" for m, n in names & EXPANDING_GLOBALS))
        raise pickle.UnpicklingError(f"the file names {found}, which allocates beyond its arguments and no "
                                     "weights file needs; refused without reading it (weights_only)")
    return torch.load(path, map_location="cpu", weights_only=True)


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
    """torch.load with weights_only=True, falling back to the restricted unpickler for trainer objects.

    A pickle naming a global that allocates beyond its arguments (`bytearray(n)`, `range(n)`) goes straight to
    the restricted unpickler, which bounds those calls; torch's own reader would build them."""
    try:
        names = scan_pickle(path)
    except CheckpointBombError as e:
        raise CheckpointBombError(f"{arg}: {e}; got {str(path)!r}. Use a checkpoint from a trusted source, or a "
                                  ".safetensors file.") from None
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        names = set()
    try:
        if names & EXPANDING_GLOBALS:
            raise pickle.UnpicklingError("the pickle names a global that allocates (bytearray, range)")
        return torch.load(path, map_location="cpu", weights_only=True,
                          mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as first:
        # Raised by torch's weights-only unpickler for any global outside its allow-list (Lightning callbacks,
        # omegaconf) and also for a damaged pickle stream: the restricted reader tells the two apart.
        reason = quote_error(first)
    except MemoryError as e:
        raise _unreadable(arg, path, "it asks for more memory than this machine has (a pickle bomb?)") from e
    except Exception as e:  # noqa: BLE001 - any failure to parse these bytes (IndexError: pop from empty list, ...)
        # SafetensorError: torch hands files in its own safetensors layout to safetensors, which raises that
        raise _unreadable(arg, path, "an empty file" if _empty(path) else quote_error(e)) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle_module())
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{arg}: {e}; got {str(path)!r}.") from None
    except CheckpointBombError as e:
        raise CheckpointBombError(f"{arg}: {e}; got {str(path)!r}. Use a checkpoint from a trusted source, or a "
                                  ".safetensors file.") from None
    except MemoryError as e:
        raise _unreadable(arg, path, "it asks for more memory than this machine has (a pickle bomb?)") from e
    except Exception as e:  # noqa: BLE001 - whatever a damaged or foreign pickle stream makes the reader raise
        raise _unreadable(arg, path, "an empty file" if _empty(path) else
                          f"{quote_error(e)}; weights-only reader: {reason}") from e


def read_checkpoint(path: str | os.PathLike, arg: str = "--vqgan-checkpoint") -> Any:
    """The object stored in a .safetensors / .ckpt / .pt / .pth file, read without running any pickled code."""
    import warnings

    with warnings.catch_warnings():  # torch warns on stderr (sparse tensors, pickle protocols): errors say it all
        warnings.simplefilter("ignore")
        return _read_checkpoint(path, arg)


def _read_checkpoint(path: str | os.PathLike, arg: str) -> Any:
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
    """The tensor state dict inside a checkpoint object: a Lightning dict keeps it under "state_dict".

    Refused with the rule, before any tensor is used: a state dict that is not a mapping (a list), keys that are
    not parameter names (integers), and tensors that hold no real data (the `meta` device), are not dense
    (sparse layouts) or claim more elements than their storage holds (an expanded view)."""
    fix = "Pass a Lightning .ckpt, a plain state dict or a .safetensors file."
    if isinstance(obj, Mapping) and "state_dict" in obj and not isinstance(obj["state_dict"], Mapping):
        raise bad_arg(arg, "the checkpoint's `state_dict` must map parameter names to tensors, but it is a "
                      f"{type(obj['state_dict']).__name__}", str(path), fix)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise bad_arg(arg, "the checkpoint holds no state dict (expected a mapping of names to tensors, got a "
                      f"{type(obj).__name__})", str(path), fix)
    odd = [k for k, v in obj.items() if isinstance(v, torch.Tensor) and not isinstance(k, str)]
    if odd:
        raise bad_arg(arg, f"state dict keys must be parameter names (text); {len(odd)} are not, e.g. "
                      f"{one_line(repr(odd[0]), 60)} ({type(odd[0]).__name__})", str(path), fix)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise bad_arg(arg, "the checkpoint holds no tensors", str(path), fix)
    for k, v in tensors.items():
        problem = tensor_problem(v)
        if problem:
            raise bad_arg(arg, f"the tensor {one_line(k, 80)} {problem}", str(path),
                          "The file is not a usable model checkpoint: pass the original checkpoint or a "
                          ".safetensors file.")
    return tensors


def tensor_problem(t: torch.Tensor) -> str | None:
    """Why a tensor read from a file cannot be a weight (None when it can): no data, not dense, or a view
    claiming more elements than its storage holds."""
    if t.is_meta or t.device.type == "meta":
        return "is on the `meta` device (a shape without data)"
    if t.layout != torch.strided:
        return f"is {str(t.layout).replace('torch.', '')}, not a dense tensor"
    if t.is_quantized or t.is_complex() or t.dtype == torch.bool:
        return f"has dtype {str(t.dtype).replace('torch.', '')}, not a real number type"
    if t.numel():
        span = 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))
        if t.numel() > span or (t.storage_offset() + span) * t.element_size() > t.untyped_storage().nbytes():
            return (f"is a view of {t.numel()} elements over fewer stored values (an expanded or out-of-bounds view, "
                    f"{t.untyped_storage().nbytes()} bytes stored)")
    return None


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

