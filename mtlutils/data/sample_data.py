"""One registry for the (few, optional) sample data files, with a verified local cache.

Everything in the course runs on the embedded synthetic cohort; sample files are extras (e.g. one real
Aperio slide to show that the tiling works on a real scan). A file is used only after its SHA-256 has
been checked. :func:`fetch` downloads on demand (never during tests); offline, put the file in
:func:`cache_dir` yourself or call :func:`prepopulate` with a folder that holds it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mtlutils.core.io import atomic_path, ensure_writable_dir

__all__ = [
    "SampleFile",
    "REGISTRY",
    "CACHE_ENV",
    "cache_dir",
    "cached_path",
    "fetch",
    "prepopulate",
    "sha256_of",
]

CACHE_ENV = "MTLUTILS_DATA_CACHE"


@dataclass(frozen=True)
class SampleFile:
    """A registered file: name in the cache, SHA-256, public address, licence, size in bytes."""

    name: str
    sha256: str
    url: str
    license: str
    size: int | None = None
    description: str = ""


REGISTRY: dict[str, SampleFile] = {
    f.name: f
    for f in [
        SampleFile(
            name="CMU-1-Small-Region.svs",
            sha256="ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7",
            url="https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/CMU-1-Small-Region.svs",
            license="CC0-1.0",
            description="Aperio SVS, 2220 x 2967 px at 0.499 µm/px, one level, H&E skin (OpenSlide test data)",
        )
    ]
}


def cache_dir() -> Path:
    """The sample-data cache: ``$MTLUTILS_DATA_CACHE`` or ``~/.cache/mtlutils`` (not created here)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "mtlutils"


def _entry(name: str) -> SampleFile:
    if name not in REGISTRY:
        raise KeyError(f"unknown sample file {name!r}; registered: {sorted(REGISTRY)}")
    return REGISTRY[name]


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_path(name: str) -> Path:
    """Where ``name`` lives (or would live) in the cache."""
    return cache_dir() / _entry(name).name


def _verified(path: Path, entry: SampleFile) -> bool:
    return path.is_file() and sha256_of(path) == entry.sha256


def fetch(name: str, timeout: float = 60.0) -> Path:
    """Path of the verified cached file ``name``, downloading it first if needed.

    The download goes to a temporary file in the cache folder, is checked against the registered
    SHA-256 and only then renamed. A cached file with a wrong checksum is replaced. Offline or on a
    checksum mismatch: a one-line error saying where to put the file by hand.
    """
    entry = _entry(name)
    target = cached_path(name)
    if _verified(target, entry):
        return target
    folder = ensure_writable_dir(target.parent)
    manual = f"download {entry.url} yourself and save it as {target} (or call sample_data.prepopulate({name!r}, folder))"
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(entry.url, timeout=timeout) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
            actual = sha256_of(tmp)
            if actual != entry.sha256:
                raise ValueError(
                    f"downloaded {name} has SHA-256 {actual[:12]}…, expected {entry.sha256[:12]}…; {manual}"
                )
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FileNotFoundError(
            f"cannot download sample file {name} into {folder} ({reason}); {manual}"
        ) from None
    return target


def prepopulate(name: str, source_dir: str | os.PathLike, link: bool = False) -> Path:
    """Put ``source_dir/name`` into the cache after checking its SHA-256; return the cached path.

    ``link=True`` makes a symbolic link instead of a copy (no extra disk space; the source must stay).
    Nothing is done when the cache already holds a verified copy.
    """
    entry = _entry(name)
    source = Path(source_dir).expanduser() / entry.name
    target = cached_path(name)
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist; give the folder that holds {entry.name}")
    actual = sha256_of(source)
    if actual != entry.sha256:
        raise ValueError(
            f"{source} has SHA-256 {actual[:12]}…, expected {entry.sha256[:12]}… for {name}; download it again from {entry.url}"
        )
    if _verified(target, entry):
        return target
    ensure_writable_dir(target.parent)
    with atomic_path(target) as tmp:
        if link:
            tmp.symlink_to(source.resolve())
        else:
            shutil.copyfile(source, tmp)
    return target
