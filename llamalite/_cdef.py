"""llamalite.h as cffi declarations. No imports beyond `re`: the build step
(csrc/gen_ffi.py) loads this file on its own."""
import re


def cdef_source(header: str) -> str:
    """The header minus comments, preprocessor lines and C++-only blocks."""
    header = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    header = re.sub(r"#ifdef __cplusplus.*?#endif", "", header, flags=re.S)
    return "\n".join(ln for ln in header.splitlines() if not ln.lstrip().startswith("#"))
