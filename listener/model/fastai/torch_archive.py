"""The two ``torch.save`` container formats, read with hard size limits.

* zip (torch >= 1.6): ``<name>/data.pkl`` plus one ``<name>/data/<key>``
  member of raw little-endian bytes per storage, and a few small metadata
  members. Any other member is refused (a TorchScript archive, say).
* legacy (torch < 1.6): four pickles in a row (magic number, protocol
  version, system info, the object), a pickled list of storage keys, then
  each storage as an int64 element count followed by its bytes.

Both are unpickled by :class:`~listener.model.fastai.unpickle.SafeUnpickler`, so
nothing in the file is imported or run. Big-endian files are refused
(no training machine writes them).
"""

from __future__ import annotations

import io
import pickle
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, Literal

import torch
from torch import Tensor

from listener.errors import ModelLoadError, UnsafeCheckpointError
from listener.model.fastai.unpickle import SafeUnpickler
from listener.model.limits import Limits

ArchiveFormat = Literal["zip", "legacy"]
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MEMBER = re.compile(r"^(data\.pkl|version|\.format_version|\.storage_alignment|byteorder"
                         r"|\.data/version|\.data/serialization_id|data/\d{1,9})$")
_SMALL_MEMBER_BYTES = 4096


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _to_storage(data: bytes, dtype: torch.dtype, numel: int, where: str) -> Tensor:
    if len(data) != numel * _element_size(dtype):
        raise UnsafeCheckpointError(f"{where}: storage holds {len(data)} bytes, expected "
                                    f"{numel} elements of {_element_size(dtype)}")
    if numel == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype)


class _Budget:
    """Counts storage bytes against :class:`Limits` before anything is allocated."""

    def __init__(self, limits: Limits, src: str) -> None:
        self.limits, self.src, self.used = limits, src, 0

    def take(self, nbytes: int) -> None:
        if (nbytes > self.limits.max_storage_bytes
                or self.used + nbytes > self.limits.max_total_storage_bytes):
            raise UnsafeCheckpointError(
                f"{self.src}: tensor data beyond the limits ({nbytes} bytes asked, {self.used} "
                f"already read; at most {self.limits.max_storage_bytes} per tensor, "
                f"{self.limits.max_total_storage_bytes} in all)")
        self.used += nbytes


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, src: str) -> bytes:
    """Read one member, never more than ``limit`` bytes whatever its header claims."""
    if info.file_size > limit:
        raise UnsafeCheckpointError(f"{src}: archive member {info.filename} is "
                                    f"{info.file_size} bytes, over the {limit} limit")
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsafeCheckpointError(f"{src}: archive member {info.filename} inflates past "
                                    f"the {limit} byte limit")
    return data


def _load_zip(path: Path, limits: Limits, extra: tuple[str, ...]) -> tuple[Any, set[str]]:
    src = str(path)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if not infos or len(infos) > limits.max_members:
            raise UnsafeCheckpointError(f"{src}: archive has {len(infos)} members")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise UnsafeCheckpointError(f"{src}: archive has duplicate member names")
        prefix = names[0].split("/", 1)[0] + "/"
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            rest = info.filename[len(prefix):] if info.filename.startswith(prefix) else ""
            if rest in ("constants.pkl", "code") or rest.startswith("code/"):
                raise ModelLoadError(f"{src}: this is a TorchScript archive, not a torch.save "
                                     f"file of a fastai Learner")
            if not _ZIP_MEMBER.match(rest):
                raise UnsafeCheckpointError(f"{src}: unexpected archive member "
                                            f"{info.filename!r:.120}")
            if info.flag_bits & 0x1:
                raise UnsafeCheckpointError(f"{src}: archive member {info.filename} is encrypted")
            members[rest] = info
        if "data.pkl" not in members:
            raise ModelLoadError(f"{src}: zip archive without data.pkl: not a torch.save file")
        if "byteorder" in members:
            order = _read_member(zf, members["byteorder"], _SMALL_MEMBER_BYTES, src)
            if order.strip() != b"little":
                raise ModelLoadError(f"{src}: byte order {order[:16]!r} is not supported")
        budget = _Budget(limits, src)
        cache: dict[str, Tensor] = {}

        def load_storage(key: str, dtype: torch.dtype, numel: int) -> Tensor:
            if key not in cache:
                info = members.get(f"data/{key}")
                if info is None:
                    raise UnsafeCheckpointError(f"{src}: storage {key!r:.20} is not in the archive")
                nbytes = numel * _element_size(dtype)
                budget.take(nbytes)
                cache[key] = _to_storage(_read_member(zf, info, nbytes, src), dtype, numel, src)
            storage = cache[key]
            if storage.dtype != dtype:  # one storage seen through two dtypes: refuse
                raise UnsafeCheckpointError(f"{src}: storage {key} used with two dtypes")
            return storage

        pkl = _read_member(zf, members["data.pkl"], limits.max_pickle_bytes, src)
        unpickler = SafeUnpickler(io.BytesIO(pkl), load_storage, src, extra)
        return _run(unpickler, src), unpickler.globals_seen


class _Clamped:
    """A file wrapper whose reads never ask for more than the file has left.

    A pickle opcode may claim a length of gigabytes; a buffered reader
    allocates what is asked before reading, so the request is clamped first.
    """

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f, self._size = f, size

    def _left(self) -> int:
        return max(0, self._size - self._f.tell())

    def read(self, n: int = -1) -> bytes:
        return self._f.read(self._left() if n < 0 else min(n, self._left()))

    def readline(self) -> bytes:
        return self._f.readline(self._left())


def _no_storage(key: str, dtype: torch.dtype, numel: int) -> Tensor:
    raise UnsafeCheckpointError("a tensor inside the legacy header pickles")


def _load_legacy(path: Path, limits: Limits, extra: tuple[str, ...]) -> tuple[Any, set[str]]:
    src = str(path)
    file_bytes = path.stat().st_size
    with path.open("rb") as raw:
        f: Any = _Clamped(raw, file_bytes)
        magic = _run(SafeUnpickler(f, _no_storage, src), src)
        if magic != _LEGACY_MAGIC:
            raise ModelLoadError(f"{src}: not a torch.save file (no legacy magic number)")
        if _run(SafeUnpickler(f, _no_storage, src), src) != _LEGACY_PROTOCOL:
            raise ModelLoadError(f"{src}: unknown legacy torch protocol version")
        sys_info = _run(SafeUnpickler(f, _no_storage, src), src)
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise ModelLoadError(f"{src}: only little-endian legacy files are supported")
        budget = _Budget(limits, src)
        storages: dict[str, Tensor] = {}

        def load_storage(key: str, dtype: torch.dtype, numel: int) -> Tensor:
            # The bytes come after the object pickle: allocate now (bounded by
            # the limits and by the file's size), fill in below.
            if key not in storages:
                nbytes = numel * _element_size(dtype)
                if budget.used + nbytes > file_bytes:
                    raise UnsafeCheckpointError(f"{src}: storage {key} claims {nbytes} bytes, "
                                                f"more than the file holds")
                budget.take(nbytes)
                storages[key] = torch.zeros(numel, dtype=dtype)
            if storages[key].dtype != dtype:
                raise UnsafeCheckpointError(f"{src}: storage {key} used with two dtypes")
            return storages[key]

        unpickler = SafeUnpickler(f, load_storage, src, extra)
        obj = _run(unpickler, src)
        keys = _run(SafeUnpickler(f, _no_storage, src), src)
        if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
            raise UnsafeCheckpointError(f"{src}: the storage key list does not match the "
                                        f"storages the object uses")
        for key in map(str, keys):
            _fill_legacy_storage(f, storages[key], src)
    return obj, unpickler.globals_seen


def _fill_legacy_storage(f: IO[bytes], storage: Tensor, src: str) -> None:
    header = f.read(8)
    if len(header) != 8:
        raise ModelLoadError(f"{src}: truncated legacy storage data")
    (numel,) = struct.unpack("<q", header)
    if numel != storage.numel():
        raise UnsafeCheckpointError(f"{src}: legacy storage declares {numel} elements, "
                                    f"expected {storage.numel()}")
    nbytes = numel * storage.element_size()
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise ModelLoadError(f"{src}: truncated legacy storage data")
    if nbytes:
        storage.copy_(torch.frombuffer(bytearray(data), dtype=storage.dtype))


def _run(unpickler: SafeUnpickler, src: str) -> Any:
    """``unpickler.load()`` with library errors turned into ours."""
    try:
        return unpickler.load()
    except ModelLoadError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
            IndexError, KeyError, RuntimeError, MemoryError, RecursionError,
            zipfile.BadZipFile, struct.error, zlib.error, OSError) as err:
        raise ModelLoadError(f"{src}: malformed pickle: {type(err).__name__}: {err}") from err


def load_torch_file(path: Path, limits: Limits | None = None,
                    extra_stub_modules: tuple[str, ...] = ()
                    ) -> tuple[Any, set[str], ArchiveFormat]:
    """Unpickle a ``torch.save`` file without running any code from it.

    Returns:
        The object (classes replaced by inert stubs, tensors real), the
        ``module.name`` globals the pickle named, and the container format.

    Raises:
        UnsafeCheckpointError: a global outside the allow-list, an unexpected
            archive member, or sizes beyond ``limits``.
        ModelLoadError: missing, truncated or malformed file.
    """
    limits = limits or Limits()
    src = str(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as err:
        raise ModelLoadError(f"{src}: cannot read: {err.strerror or err}") from err
    if size > limits.max_file_bytes:
        raise UnsafeCheckpointError(f"{src}: {size} bytes is over the "
                                    f"{limits.max_file_bytes} byte limit")
    try:
        if head.startswith(b"PK\x03\x04"):
            return (*_load_zip(path, limits, extra_stub_modules), "zip")
        if head.startswith(b"\x80"):
            return (*_load_legacy(path, limits, extra_stub_modules), "legacy")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error) as err:
        raise ModelLoadError(f"{src}: corrupt or truncated file: {err}") from err
    raise ModelLoadError(f"{src}: not a torch.save file (starts with {head!r})")
