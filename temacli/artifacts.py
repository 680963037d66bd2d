"""The contracts between stages: Parquet and NPY files, atomic writes, manifests.

Every stage reads and writes its files through this module:

* ``write_table`` / ``read_table``: Parquet via pyarrow, validated against a :class:`Contract`
  (columns and types); a reader's error names the file, the column and the fix.
* ``write_npy`` / ``npy_writer`` / ``read_npy``: NPY via numpy; reads are memory-mapped, and
  ``npy_writer`` fills a memory-mapped temporary file so large arrays never sit in RAM twice.
* Every write goes to a temporary name in the same folder and is renamed into place, so an
  interrupted stage never leaves a half-written file. ``atomic_dir`` does the same for a folder.
* ``build_manifest`` / ``write_manifest`` / ``read_manifest``: the JSON manifest beside every output
  (stage, parameters, inputs with content fingerprints, outputs, counts, versions, time).
  ``manifest_path(p)`` is ``p/manifest.json`` for a folder and ``p.manifest.json`` for a file.

The contract of each artifact is documented in ``docs/artifacts.md``; the module that writes an
artifact owns its :class:`Contract` (``temacli.data.split`` for the dataset, ``temacli.tags`` for
tags, ...).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from temacli import __version__
from temacli.errors import TemacliError

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 22


# ----------------------------------------------------------------------------- contracts
_KIND_CHECKS = {
    "int": pa.types.is_integer,
    "float": pa.types.is_floating,
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "bool": pa.types.is_boolean,
    "list<int>": lambda t: (pa.types.is_list(t) or pa.types.is_large_list(t))
    and pa.types.is_integer(t.value_type),
}
_KIND_TYPES = {
    "int": pa.int64(),
    "float": pa.float32(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "list<int>": pa.list_(pa.int32()),
}


@dataclass(frozen=True)
class Column:
    """One column of a contract: ``kind`` is int, float, string, bool or list<int>."""

    name: str
    kind: str
    type: pa.DataType | None = None  # the exact type written; None = the kind's default
    nullable: bool = False
    doc: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        return self.type if self.type is not None else _KIND_TYPES[self.kind]


@dataclass(frozen=True)
class Contract:
    """The columns a Parquet artifact must have, and how to make it when it is wrong."""

    name: str
    columns: tuple[Column, ...]
    fix: str = ""  # what the user should do when the file is missing or wrong
    optional: tuple[Column, ...] = field(default_factory=tuple)

    def schema(self, include_optional: bool = True) -> pa.Schema:
        cols = list(self.columns) + (list(self.optional) if include_optional else [])
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in cols])


def _fix_hint(contract: Contract) -> str:
    return f"; {contract.fix}" if contract.fix else ""


def validate_table(table: pa.Table, contract: Contract, path: str | os.PathLike = "<table>") -> pa.Table:
    """Check ``table`` against ``contract`` and cast its columns to the contract's exact types."""
    names = table.column_names
    arrays, fields = [], []
    for col in contract.columns + contract.optional:
        if col.name not in names:
            if col in contract.optional:
                continue
            raise TemacliError(
                f"{path}: column '{col.name}' is missing (found: {', '.join(names) or 'none'})"
                f"{_fix_hint(contract)}"
            )
        arr = table.column(col.name)
        if not _KIND_CHECKS[col.kind](arr.type):
            raise TemacliError(
                f"{path}: column '{col.name}' has type {arr.type}, expected {col.kind}"
                f"{_fix_hint(contract)}"
            )
        if not col.nullable and arr.null_count:
            raise TemacliError(
                f"{path}: column '{col.name}' has {arr.null_count} missing values"
                f"{_fix_hint(contract)}"
            )
        if arr.type != col.arrow_type:
            try:
                arr = arr.cast(col.arrow_type)
            except pa.ArrowException as e:  # invalid values or a cast arrow cannot do
                raise TemacliError(
                    f"{path}: column '{col.name}' cannot be read as {col.arrow_type} ({e})"
                    f"{_fix_hint(contract)}"
                ) from None
        arrays.append(arr)
        fields.append(pa.field(col.name, col.arrow_type, nullable=col.nullable))
    # keep extra columns after the contract's own, untouched
    known = {f.name for f in fields}
    for name in names:
        if name not in known:
            arrays.append(table.column(name))
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# ----------------------------------------------------------------------------- atomic writes
# Temporary names: ``.<name>.<pid>-<host>.<random>.temacli-tmp<suffix>`` (files and folders being written) and
# ``.<name>.<pid>-<host>.<random>.temacli-old`` (a folder being swapped out). The pid and a short host tag let
# :func:`clean_stale_temps` remove only the leftovers of writers that are no longer running.
TEMP_MARK = ".temacli-tmp"
OLD_MARK = ".temacli-old"
_TEMP_RE = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{6})\.[^.]+(?:\.temacli-tmp.*|\.temacli-old)$"
)
# leftovers of temacli <= 0.1.0 (mkstemp's ``.<name>.<8 random>.tmp<suffix>``, ``.old`` folders)
_LEGACY_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.(?:tmp(?:\..*)?|old)$")
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it (``/proc/self/status``; elsewhere a locked swap)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # no /proc: os.umask can only be read by setting it; restore at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new output file: ``0666 & ~umask`` (0644 under the usual 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a new output folder: ``0777 & ~umask`` (0755 under the usual 022)."""
    return 0o777 & ~current_umask()


def _host_tag() -> str:
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _temp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}-{_host_tag()}."


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(entry: Path, host: str, pid: int | None, max_age: float) -> bool:
    if pid is not None and host == _host_tag():
        return pid != os.getpid() and not _pid_alive(pid)
    # another machine's writer (shared file system) or an old-style name: only when clearly abandoned
    try:
        age = time.time() - entry.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > max_age


def clean_stale_temps(
    folder: str | os.PathLike, name: str | None = None, max_age: float = 3600.0
) -> list[Path]:
    """Remove the temporary files and folders that a killed atomic write left in ``folder``.

    Only temacli's own temporary names are touched (see ``TEMP_MARK``): those of a writer on this
    machine whose process is gone, and those of another machine or an older temacli that have not
    changed for ``max_age`` seconds. With ``name`` only the leftovers of that output are removed.
    Returns the paths removed. Every atomic write calls this for its own target first, so a stage
    cleans up after its killed predecessor; a stage may call it for a whole folder.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for e in entries:
        if not e.name.startswith("."):
            continue
        m = _TEMP_RE.match(e.name)
        pid: int | None
        if m:
            pid, host = int(m["pid"]), m["host"]
        else:
            m = _LEGACY_RE.match(e.name)
            if not m:
                continue
            pid, host = None, ""
        if name is not None and m["name"] != name:
            continue
        path = Path(e.path)
        if not _is_stale(path, host, pid, max_age):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError:  # not ours to remove (permissions): leave it
            continue
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the mode ``0666 & ~umask`` before the rename (``mkstemp`` alone would leave 0600).
    Leftover temporary files of a killed earlier write of ``path`` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, name=path.name)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=TEMP_MARK + suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path``.

    With ``replace`` an existing ``path`` is swapped out only after the new folder is complete. The
    folder gets the mode ``0777 & ~umask`` before the rename (``mkdtemp`` alone would leave 0700).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, name=path.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), suffix=TEMP_MARK, dir=path.parent))
    try:
        os.chmod(tmp, dir_mode())
        yield tmp
        os.chmod(tmp, dir_mode())
        if path.exists():
            if not replace:
                raise TemacliError(f"{path} already exists; pass --force to replace it")
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), suffix=OLD_MARK, dir=path.parent))
            old.rmdir()
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- output paths
def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p):
        if p.parent == p:
            break
        p = p.parent
    return p


def _writable_dir(d: Path) -> bool:
    return os.access(d, os.W_OK | os.X_OK)


def check_output(
    path: str | os.PathLike, kind: str = "file", flag: str = "--out", renamed: bool = False
) -> Path:
    """Check an output path before any work: one line (exit 2) when it cannot be written.

    ``kind="file"``: refused when ``path`` is an existing folder, when a part of its parent is a file, or
    when the folder it would be created in is not writable. ``kind="dir"``: refused when ``path`` is an
    existing file (or below one), or when it (or, not yet existing, the folder it would be created in) is
    not writable; ``renamed=True`` for a folder written whole by :func:`atomic_dir`, whose parent must be
    writable too. Nothing is created. Returns ``path`` as a :class:`Path`.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"check_output: kind must be 'file' or 'dir', not {kind!r}")
    path = Path(path)
    where = f"{flag} {path}"
    fix = f"choose another {flag}" if flag else "choose another path"
    if str(path) == "":
        raise TemacliError(f"{flag or 'output path'} is empty; pass a path")
    if os.path.lexists(path) and not path.exists():
        raise TemacliError(f"{where}: is a broken symbolic link; remove it or {fix}")
    if path.exists():
        if kind == "file" and path.is_dir():
            raise TemacliError(f"{where}: is an existing folder, expected a file; {fix} (a file name)")
        if kind == "dir" and not path.is_dir():
            raise TemacliError(f"{where}: is an existing file, expected a folder; remove it or {fix}")
    anc = _nearest_existing(path.parent if kind == "file" or not path.exists() else path)
    if not anc.is_dir():
        raise TemacliError(f"{where}: cannot be created because {anc} is a file, not a folder; {fix}")
    if not _writable_dir(anc):
        raise TemacliError(f"{where}: folder {anc} is not writable (permission denied or read-only); {fix}")
    if kind == "dir" and path.exists() and renamed:
        parent = _nearest_existing(path.absolute().parent)
        if not _writable_dir(parent):
            raise TemacliError(
                f"{where}: folder {parent} is not writable, so {path.name} cannot be replaced; {fix}"
            )
    return path


def write_table(table: pa.Table, path: str | os.PathLike, contract: Contract | None = None) -> Path:
    """Write ``table`` as Parquet atomically (validated against ``contract`` when given)."""
    if contract is not None:
        table = validate_table(table, contract, path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def read_table(
    path: str | os.PathLike, contract: Contract | None = None, columns: list[str] | None = None
) -> pa.Table:
    """Read a Parquet artifact and validate it; errors name the file, the column and the fix."""
    path = Path(path)
    if not path.is_file():
        hint = _fix_hint(contract) if contract else ""
        raise TemacliError(f"{path}: file not found{hint}")
    try:
        # ParquetFile.read, not pq.read_table: the latter imports pyarrow.dataset (~0.4 s of every start)
        pf = pq.ParquetFile(path)
        missing = [c for c in columns or () if c not in pf.schema_arrow.names]
        if missing:
            hint = _fix_hint(contract) if contract else ""
            raise TemacliError(f"{path}: column '{missing[0]}' is missing{hint}")
        table = pf.read(columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise TemacliError(f"{path}: not a readable Parquet file ({e})") from None
    if contract is not None:
        if columns is not None:
            sub = Contract(
                contract.name,
                tuple(c for c in contract.columns if c.name in columns),
                contract.fix,
                tuple(c for c in contract.optional if c.name in columns),
            )
            return validate_table(table, sub, path)
        table = validate_table(table, contract, path)
    return table


def write_npy(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a NumPy array atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    return Path(path)


@contextlib.contextmanager
def npy_writer(path: str | os.PathLike, shape: tuple[int, ...], dtype: Any) -> Iterator[np.ndarray]:
    """Yield a writable memory map of a new NPY file; it appears at ``path`` only on success."""
    with atomic_path(path, suffix=".npy") as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
        try:
            yield mm
            mm.flush()
        finally:
            del mm


def read_npy(
    path: str | os.PathLike,
    mmap: bool = True,
    shape0: int | None = None,
    ndim: int | None = None,
    what: str = "array",
    fix: str = "",
) -> np.ndarray:
    """Read an NPY file (memory-mapped by default) and check its row count and rank."""
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    if not path.is_file():
        raise TemacliError(f"{path}: file not found{hint}")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise TemacliError(f"{path}: not a readable NPY file ({e}){hint}") from None
    if ndim is not None and arr.ndim != ndim:
        raise TemacliError(f"{path}: {what} has {arr.ndim} dimensions, expected {ndim}{hint}")
    if shape0 is not None and arr.shape[0] != shape0:
        raise TemacliError(f"{path}: {what} has {arr.shape[0]} rows, expected {shape0}{hint}")
    return arr


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike, what: str = "JSON file", fix: str = "") -> Any:
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    if not path.is_file():
        raise TemacliError(f"{path}: {what} not found{hint}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TemacliError(f"{path}: {what} is not valid JSON ({e}){hint}") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------- fingerprints
def fingerprint(path: str | os.PathLike) -> str:
    """Content fingerprint ``sha256:<hex>`` of a file, or of a folder's files (manifests excluded)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = f.relative_to(path).as_posix()
            if f.name.endswith("manifest.json") or any(part.startswith(".") for part in f.relative_to(path).parts):
                continue
            h.update(rel.encode() + b"\0" + fingerprint(f).encode() + b"\0")
        return "sha256:" + h.hexdigest()
    if not path.is_file():
        raise TemacliError(f"{path}: file not found")
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def text_fingerprint(text: str | bytes) -> str:
    if isinstance(text, str):
        text = text.encode()
    return "sha256:" + hashlib.sha256(text).hexdigest()


# ----------------------------------------------------------------------------- manifests
def manifest_path(target: str | os.PathLike) -> Path:
    """``target/manifest.json`` for a folder output, ``target.manifest.json`` for a file output."""
    target = Path(target)
    if target.is_dir() or (not target.suffix and not target.exists()):
        return target / MANIFEST_NAME
    return target.with_name(target.name + ".manifest.json")


_VERSION_PACKAGES = ("numpy", "pyarrow", "torch", "torchvision", "open_clip_torch", "litellm", "typer", "rich")


def package_versions() -> dict[str, str]:
    """Versions of the packages that matter, read from metadata (no imports)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0], "temacli": __version__}
    for name in _VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def input_record(path: str | os.PathLike, fingerprint_value: str | None = None) -> dict[str, Any]:
    """How a manifest names one input: its path, content fingerprint and (if any) its manifest's stage."""
    path = Path(path)
    rec: dict[str, Any] = {
        "path": str(path),
        "fingerprint": fingerprint_value or fingerprint(path),
    }
    mp = manifest_path(path)
    if mp.is_file():
        with contextlib.suppress(Exception):
            rec["stage"] = json.loads(mp.read_text()).get("stage")
    return rec


def build_manifest(
    stage: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, Mapping[str, Any]] | None = None,
    outputs: Mapping[str, Mapping[str, Any]] | None = None,
    counts: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble a manifest. ``inputs`` values come from :func:`input_record`."""
    m: dict[str, Any] = {
        "stage": stage,
        "temacli_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "params": dict(params),
        "inputs": {k: dict(v) for k, v in (inputs or {}).items()},
        "outputs": {k: dict(v) for k, v in (outputs or {}).items()},
        "counts": dict(counts or {}),
        "versions": package_versions(),
    }
    m.update(extra)
    return m


def write_manifest(target: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    path = manifest_path(target)
    write_json(dict(manifest), path)
    return path


def read_manifest(target: str | os.PathLike, stage: str | None = None, fix: str = "") -> dict[str, Any]:
    """Read the manifest of an artifact; check it was written by ``stage`` when given."""
    path = manifest_path(target)
    hint = f"; {fix}" if fix else ""
    if not path.is_file():
        raise TemacliError(f"{path}: manifest not found (was {target} written by temacli?){hint}")
    m = read_json(path, what="manifest", fix=fix)
    if stage is not None and m.get("stage") != stage:
        raise TemacliError(
            f"{path}: written by stage '{m.get('stage')}', expected '{stage}'{hint}"
        )
    return m


def check_same(
    what: str, expected: str | None, found: str | None, where: str, fix: str = ""
) -> None:
    """Refuse inputs whose fingerprints don't chain: one line naming both sides and the fix."""
    if expected != found:
        hint = f"; {fix}" if fix else ""
        raise TemacliError(
            f"{where}: {what} does not match (expected {_short(expected)}, found {_short(found)}){hint}"
        )


def _short(fp: str | None) -> str:
    if fp is None:
        return "none"
    return fp.split(":", 1)[-1][:12]
