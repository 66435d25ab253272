"""Build step: write the cffi module that declares llamalite.h's API, so that
importing llamalite does not parse the header with pycparser (~60 ms).

    python csrc/gen_ffi.py csrc/llamalite.h OUT/_ffi.py

CMake runs this when the Python it builds for has cffi, and installs the
result beside the library; llamalite/_native.py falls back to parsing the
header when there is no _ffi.py beside the library it loads.
"""
import importlib.util
import sys
from pathlib import Path


def main(header: str, out: str) -> None:
    import cffi

    # the same declarations _native.py would parse (its helper, loaded without
    # importing the llamalite package, which needs the library)
    path = Path(__file__).resolve().parent.parent / "llamalite" / "_cdef.py"
    spec = importlib.util.spec_from_file_location("_llamalite_cdef", path)
    cdef = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cdef)
    ffi = cffi.FFI()
    ffi.cdef(cdef.cdef_source(Path(header).read_text()))
    ffi.set_source("llamalite._ffi", None)
    ffi.emit_python_code(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
