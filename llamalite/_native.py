"""Loads llamalite's C core with cffi. The only module that touches ffi.

The cdef is csrc/llamalite.h itself (preprocessor lines dropped), so the
Python side can never drift from the C API. The build compiles it ahead into
_ffi.py beside the library (csrc/gen_ffi.py), which imports without parsing
anything; without one (or when it does not load) the header beside the
library is parsed. The shared library is looked up in LLAMALITE_LIB (a path,
for development builds), then beside this file (where `pip install` puts it).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import InvalidArgumentError, LlamaliteError, UnsupportedModelError

_HERE = Path(__file__).resolve().parent


def _package_dirs() -> list[Path]:
    """Where the package's files are: an editable install splits them between
    the source tree and site-packages, and __path__ lists both."""
    pkg = sys.modules.get(__package__)
    dirs = [Path(d) for d in getattr(pkg, "__path__", [])]
    return dirs + [_HERE] if _HERE not in dirs else dirs
_LIB_NAMES = ("libllamalite.so", "libllamalite.dylib", "llamalite.dll")


def _header_text(library: str) -> str:
    """The header installed with the library (so the two always match), else
    the source tree's (a development build named by LLAMALITE_LIB)."""
    candidates = [Path(library).parent / "llamalite.h"] + [d / "llamalite.h" for d in _package_dirs()]
    for candidate in candidates + [_HERE.parent / "csrc" / "llamalite.h"]:
        if candidate.is_file():
            return candidate.read_text()
    raise LlamaliteError("llamalite.h not found beside the package: the installation is incomplete")


def _installed_library() -> str | None:
    """The library of the installed llamalite distribution. Python imports the
    source tree instead of the installed package when run from a checkout's
    root (the current directory comes first on sys.path): use the build that
    `pip install .` made from that same checkout."""
    import importlib.metadata   # only here: it costs a sixtieth of a second to import

    try:
        dist = importlib.metadata.distribution("llamalite")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name in _LIB_NAMES:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return str(path)
    return None


def _find_library() -> str:
    override = os.environ.get("LLAMALITE_LIB")
    if override:
        if not Path(override).is_file():
            raise LlamaliteError(f"LLAMALITE_LIB={override} is not a file")
        return override
    for d in _package_dirs():
        for name in _LIB_NAMES:
            if (d / name).is_file():
                return str(d / name)
    installed = _installed_library()
    if installed:
        return installed
    raise LlamaliteError(
        "llamalite's C library was not found beside the package; install with "
        "`pip install .` (or set LLAMALITE_LIB to a development build)")


def _compiled_ffi(library: str):
    """The FFI that the build compiled beside `library`, or None."""
    path = Path(library).parent / "_ffi.py"
    if not path.is_file():
        return None
    import importlib.util

    try:
        spec = importlib.util.spec_from_file_location("llamalite._ffi", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.ffi
    except Exception:   # made by another cffi version, say: parse the header instead
        return None


def _ffi(library: str):
    compiled = _compiled_ffi(library)
    if compiled is not None:
        return compiled
    import cffi

    from ._cdef import cdef_source

    parsed = cffi.FFI()
    parsed.cdef(cdef_source(_header_text(library)))
    return parsed


_library = _find_library()
ffi = _ffi(_library)
lib = ffi.dlopen(_library)


def last_error() -> str:
    return ffi.string(lib.ll_last_error()).decode("utf-8", "replace")


def check(rc: int) -> None:
    """Turn a C status code into the matching Python exception."""
    if rc == 0:
        return
    msg = last_error()
    if rc == lib.LL_ERR_UNSUPPORTED:
        raise UnsupportedModelError(msg)
    if rc == lib.LL_ERR_NOMEM:
        raise MemoryError(msg)
    raise InvalidArgumentError(msg)


def set_isa(name: str | None) -> str:
    """Select the kernels: 'scalar', 'avx2', 'avxvnni', 'avx512', 'neon', or None for the best available."""
    check(lib.ll_set_isa(name.encode() if name else ffi.NULL))
    return get_isa()


def get_isa() -> str:
    return ffi.string(lib.ll_get_isa()).decode()


def isa_available(name: str) -> bool:
    return bool(lib.ll_isa_available(name.encode()))


def trim_heap() -> None:
    """Return the C heap's free pages to the system (glibc; elsewhere nothing)."""
    lib.ll_trim_heap()


def ptr(array, ctype: str = "void *"):
    """A C pointer into a numpy array's (C-contiguous) buffer, no copy."""
    return ffi.cast(ctype, ffi.from_buffer(array))


_isa = os.environ.get("LLAMALITE_ISA")
if _isa:
    try:
        set_isa(_isa)
    except (ValueError, UnsupportedModelError) as e:
        raise LlamaliteError(f"LLAMALITE_ISA={_isa}: {e}") from None
