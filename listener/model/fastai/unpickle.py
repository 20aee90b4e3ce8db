"""Reading ``torch.save`` files from untrusted sources without running their code.

A pickle is a program: each global it names is imported and may be called.
:class:`SafeUnpickler` never imports anything. Each global the pickle names is
looked up in an explicit allow-list and resolved to one of:

* a small safe function of ours (tensor and parameter rebuilders, a
  latin-1-only ``_codecs.encode``) or a harmless builtin container
  (``OrderedDict``, ``set``, ``frozenset``, ``slice``, ``torch.Size``, dtypes);
* a storage-type marker (``torch.FloatStorage`` ...) for the raw tensor bytes;
* an inert :class:`Stub` class for classes and functions of ``torch.nn``,
  ``torch.optim``, torchvision, fastai, fastai_audio (package ``audio``),
  numpy reconstructors, ``functools.partial`` and ``pathlib`` paths. A stub
  only records the arguments and state the pickle hands it; nothing runs.

Anything else (``os.system``, ``builtins.eval``, ``subprocess.*``,
``builtins.getattr`` ...) raises :class:`~listener.errors.UnsafeCheckpointError`
naming ``module.name``. Sizes are bounded by
:class:`~listener.model.limits.Limits` so a crafted file cannot exhaust
memory: the pickle stream, each storage and their total are read with hard
caps, and tensor views are checked against their storage.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, ClassVar

import torch
from torch import Tensor

from listener.errors import UnsafeCheckpointError

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_DTYPE_NAMES = ("float32", "float", "float64", "double", "float16", "half", "bfloat16",
                "int64", "long", "int32", "int", "int16", "short", "int8", "uint8", "bool")
# Globals resolved to inert stubs: whole packages (and their submodules) and
# exact names. "audio" is fastai_audio's import name; torch.nn.backends is
# the _backend attribute that modules pickled with torch <= 1.4 carry.
STUB_PACKAGES: tuple[str, ...] = (
    "torch.nn.modules", "torch.nn.functional", "torch.nn.parameter", "torch.nn.backends",
    "torch.optim",
    "torchvision.models", "fastai", "fastai_audio", "audio",
)
STUB_EXACT: frozenset[str] = frozenset({
    "functools.partial", "torch.device", "torch.nn.Module", "collections.defaultdict",
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath",
    "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
    "numpy.ndarray", "numpy.dtype", "numpy.core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Stub:
    """Inert stand-in for a pickled class or function; records what it is given.

    ``stub_args`` / ``stub_kwargs``: arguments of the call or ``__new__``;
    ``stub_state``: the state ``BUILD`` set (a module's ``__dict__``).
    """

    pickle_global: ClassVar[str] = "?"
    stub_args: tuple[Any, ...]
    stub_kwargs: dict[str, Any]
    stub_state: Any
    stub_items: list[Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        obj = object.__new__(cls)
        obj.stub_args = args
        obj.stub_kwargs = kwargs
        obj.stub_state = None
        obj.stub_items = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # everything was recorded by __new__

    def __setstate__(self, state: Any) -> None:
        self.stub_state = state

    # Pickles of list and dict subclasses add their items with APPENDS and
    # SETITEMS; record them instead of failing.
    def __setitem__(self, key: Any, value: Any) -> None:
        self.stub_items.append((key, value))

    def append(self, value: Any) -> None:
        self.stub_items.append(value)

    def extend(self, values: Any) -> None:
        self.stub_items.extend(values)

    def __repr__(self) -> str:
        return f"<stub {self.pickle_global}>"

    def state_dict_items(self) -> dict[str, Any]:
        """The recorded ``__dict__`` (``BUILD`` state may be ``(dict, slotstate)``)."""
        state = self.stub_state
        if isinstance(state, tuple) and len(state) == 2:
            merged: dict[str, Any] = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            return merged
        return dict(state) if isinstance(state, dict) else {}


@dataclass(frozen=True)
class _StorageType:
    """What ``torch.FloatStorage`` & co. resolve to: just the element type."""

    name: str
    dtype: torch.dtype


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles encode bytes as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(f"_codecs.encode called with {encoding!r}; only latin1")
    return text.encode("latin1")


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or len(value) > 16 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise UnsafeCheckpointError(f"tensor {what} must be up to 16 non-negative ints, "
                                    f"got {value!r:.80}")
    return tuple(value)


def _view(storage: Any, offset: Any, size: Any, stride: Any) -> Tensor:
    """A view of ``storage`` checked to lie inside it (no copy, no allocation)."""
    if not isinstance(storage, Tensor) or storage.dim() != 1:
        raise UnsafeCheckpointError("tensor rebuilt from something that is not a storage")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    (off,) = _ints((offset,), "offset")
    if len(shape) != len(strides):
        raise UnsafeCheckpointError(f"tensor size {shape} and stride {strides} differ in length")
    if 0 in shape:
        return storage.new_empty(shape)
    last = off + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
    if last >= storage.numel():
        raise UnsafeCheckpointError(f"tensor of size {shape} reaches past its storage "
                                    f"({storage.numel()} elements)")
    return storage.as_strided(shape, strides, off)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> Tensor:
    return _view(storage, offset, size, stride)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any,
                       requires_grad: Any, hooks: Any, dtype: Any, *rest: Any) -> Tensor:
    if not isinstance(storage, Tensor) or not isinstance(dtype, torch.dtype):
        raise UnsafeCheckpointError("malformed _rebuild_tensor_v3 arguments")
    return _view(storage.view(torch.uint8).view(dtype), offset, size, stride)


def _rebuild_parameter(data: Any, *rest: Any) -> Tensor:
    if not isinstance(data, Tensor):
        raise UnsafeCheckpointError("parameter rebuilt from something that is not a tensor")
    return data  # a plain tensor is all we need; requires_grad and hooks are dropped


_SAFE: dict[str, Any] = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "collections.OrderedDict": OrderedDict,
    "_codecs.encode": _latin1_encode,
    "torch.Size": torch.Size,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.slice": slice,
    "builtins.complex": complex,
    **{f"torch.{name}": _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()},
    **{f"torch.{name}": getattr(torch, name) for name in _DTYPE_NAMES},
}

StorageLoader = Callable[[str, torch.dtype, int], Tensor]


class SafeUnpickler(pickle._Unpickler):
    """A pickle reader that resolves globals only through the allow-list.

    Built on the pure-Python unpickler (the pickles are small: the tensor
    bytes live outside them) because it lets two opcodes be tightened:
    ``BUILD`` (set an object's state) only applies to stubs (an
    ``OrderedDict``'s state, a state dict's ``_metadata``, is dropped), so a
    pickle cannot poke state into a real tensor or container; and ``BYTEARRAY8``
    (protocol 5, which torch never writes) is refused, because it allocates
    the length it claims before reading.

    Args:
        file: the pickle stream.
        load_storage: ``(key, dtype, numel) -> 1-D tensor`` for torch's
            ``("storage", ...)`` persistent ids.
        source: the file name, for error messages.
        extra_stub_modules: more packages whose globals become inert stubs
            (e.g. a renamed fastai_audio); ``"pkg"`` covers ``pkg.*``.
    """

    dispatch = pickle._Unpickler.dispatch.copy()

    def __init__(self, file: IO[bytes], load_storage: StorageLoader, source: str,
                 extra_stub_modules: tuple[str, ...] = ()) -> None:
        super().__init__(file)
        self._load_storage = load_storage
        self._source = source
        self._packages = tuple(p.rstrip(".") for p in STUB_PACKAGES + tuple(extra_stub_modules))
        self._stubs: dict[str, type[Stub]] = {}
        self.globals_seen: set[str] = set()

    def _load_build(self) -> None:
        state = self.stack.pop()  # type: ignore[attr-defined]
        inst = self.stack[-1]  # type: ignore[attr-defined]
        if isinstance(inst, OrderedDict) and isinstance(state, dict):
            return  # a state_dict's _metadata (BN versions): not needed, not applied
        if not isinstance(inst, Stub):
            raise UnsafeCheckpointError(f"{self._source}: the pickle sets the state of a "
                                        f"{type(inst).__name__}; only stubs may have state set")
        inst.__setstate__(state)

    def _load_bytearray8(self) -> None:
        raise UnsafeCheckpointError(f"{self._source}: protocol-5 bytearrays are not accepted")

    dispatch[pickle.BUILD[0]] = _load_build  # type: ignore[assignment]
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8  # type: ignore[assignment]

    def find_class(self, module: str, name: str) -> Any:
        if not (_NAME.match(module) and _NAME.match(name)):
            raise UnsafeCheckpointError(f"{self._source}: refused a malformed global "
                                        f"{module!r:.40}.{name!r:.40}")
        # Protocol-2 pickles (torch.save's default) use Python 2 names such as
        # __builtin__.set or commands.call; judge and report the Python 3 ones.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        self.globals_seen.add(full)
        if full in _SAFE:
            return _SAFE[full]
        if full in STUB_EXACT or any(module == p or module.startswith(p + ".")
                                     for p in self._packages):
            if full not in self._stubs:
                self._stubs[full] = type(name.rsplit(".", 1)[-1], (Stub,),
                                         {"pickle_global": full, "__module__": __name__})
            return self._stubs[full]
        raise UnsafeCheckpointError(
            f"{self._source}: refused to unpickle global {full}: it is not on the allow-list "
            f"of tensors, containers, torch.nn/fastai classes (the file may be malicious)")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise UnsafeCheckpointError(f"{self._source}: malformed persistent id")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if (kind == "module" and len(pid) == 4 and isinstance(pid[1], type)
                and issubclass(pid[1], Stub)):
            return pid[1]  # legacy format: a module class (a stub) plus its source text
        if kind != "storage" or len(pid) not in (5, 6):
            raise UnsafeCheckpointError(f"{self._source}: unexpected persistent id {kind!r:.40}")
        stype, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(stype, _StorageType) or not isinstance(key, str | int) or not (
                isinstance(numel, int) and numel >= 0):
            raise UnsafeCheckpointError(f"{self._source}: malformed storage reference")
        storage = self._load_storage(str(key), stype.dtype, numel)
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # pre-0.4 storage views: (view_key, offset, size)
            _, off, n = view
            (off, n) = _ints((off, n), "storage view")
            if off + n > storage.numel():
                raise UnsafeCheckpointError(f"{self._source}: storage view out of range")
            storage = storage[off:off + n]
        return storage
