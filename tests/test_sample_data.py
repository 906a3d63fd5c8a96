"""The sample-data registry and its verified cache. Nothing here touches the network."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mtlutils.data import sample_data

NAME = "CMU-1-Small-Region.svs"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """A private cache folder, and no network: any download attempt fails loudly."""
    monkeypatch.setenv(sample_data.CACHE_ENV, str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path / "cache"


@pytest.fixture
def shared_data():
    if not (SHARED_DATA / NAME).exists():
        pytest.skip(f"{NAME} not present in ../shared/data; skipping the real-file cache test")
    return SHARED_DATA


def test_registry_entry():
    entry = sample_data.REGISTRY[NAME]
    assert entry.sha256 == "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
    assert entry.url.startswith("https://openslide.cs.cmu.edu/") and entry.url.endswith(NAME)
    assert entry.license == "CC0-1.0"


def test_cache_dir_follows_environment(isolated_cache, monkeypatch):
    assert sample_data.cache_dir() == isolated_cache
    assert sample_data.cached_path(NAME) == isolated_cache / NAME
    monkeypatch.delenv(sample_data.CACHE_ENV)
    assert sample_data.cache_dir() == Path.home() / ".cache" / "mtlutils"


def test_prepopulate_then_fetch_offline(shared_data, isolated_cache):
    path = sample_data.prepopulate(NAME, shared_data)
    assert path == isolated_cache / NAME and sample_data.sha256_of(path) == sample_data.REGISTRY[NAME].sha256
    assert sample_data.fetch(NAME) == path  # verified cache hit: no download attempted
    linked = sample_data.prepopulate(NAME, shared_data, link=True)  # already cached: kept as is
    assert linked == path and not path.is_symlink()


def test_prepopulate_as_link(shared_data, isolated_cache):
    path = sample_data.prepopulate(NAME, shared_data, link=True)
    assert path.is_symlink() and sample_data.fetch(NAME) == path


def test_offline_fetch_says_where_to_put_the_file(isolated_cache):
    with pytest.raises(FileNotFoundError) as info:
        sample_data.fetch(NAME)
    message = str(info.value)
    assert "\n" not in message and str(isolated_cache / NAME) in message and "prepopulate" in message
    assert not any(isolated_cache.iterdir())  # no partial file left


def test_prepopulate_rejects_a_wrong_file(tmp_path, isolated_cache):
    source = tmp_path / "src"
    source.mkdir()
    (source / NAME).write_bytes(b"not the slide")
    with pytest.raises(ValueError, match="SHA-256"):
        sample_data.prepopulate(NAME, source)
    assert not (isolated_cache / NAME).exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sample_data.prepopulate(NAME, tmp_path / "nowhere")


def test_corrupt_cached_file_is_not_used(isolated_cache):
    isolated_cache.mkdir(parents=True)
    (isolated_cache / NAME).write_bytes(b"truncated download")
    with pytest.raises(FileNotFoundError, match="cannot download"):
        sample_data.fetch(NAME)


def test_download_is_verified_before_it_appears(monkeypatch, isolated_cache):
    payload = b"pretend slide bytes"
    fake = sample_data.SampleFile(
        name="fake.bin",
        sha256=hashlib.sha256(payload).hexdigest(),
        url="https://example.invalid/fake.bin",
        license="CC0-1.0",
    )
    monkeypatch.setitem(sample_data.REGISTRY, "fake.bin", fake)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
    path = sample_data.fetch("fake.bin")
    assert path.read_bytes() == payload

    wrong = sample_data.SampleFile(
        name="wrong.bin", sha256="0" * 64, url="https://example.invalid/wrong.bin", license="CC0-1.0"
    )
    monkeypatch.setitem(sample_data.REGISTRY, "wrong.bin", wrong)
    with pytest.raises(ValueError, match="SHA-256"):
        sample_data.fetch("wrong.bin")
    assert sorted(p.name for p in isolated_cache.iterdir()) == ["fake.bin"]  # no unverified file kept


def test_unknown_name():
    with pytest.raises(KeyError, match="registered"):
        sample_data.fetch("nope.svs")
