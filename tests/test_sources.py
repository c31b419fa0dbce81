from __future__ import annotations

import gzip
import hashlib
import io
import os
import urllib.error
import zipfile
from pathlib import Path

import pytest

from ec4srec.config import DataConfig
from ec4srec.data import load_dataset
from ec4srec.data import sources
from ec4srec.data.io import DataError
from ec4srec.data.sources import DATASETS, Source, fetch, movielens_to_sequences, resolve

CONTENT = b"1 1 2 3\n2 2 3 4\n"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Isolated env: no EC4SREC_DATA_DIR, XDG cache under tmp."""
    monkeypatch.delenv("EC4SREC_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def put(directory: Path, name: str = "beauty.txt.gz") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(gzip.compress(CONTENT) if name.endswith(".gz") else CONTENT)
    return path


def test_resolution_order(env, monkeypatch):
    explicit, envdir = env / "explicit", env / "envdir"
    cached = put(env / "xdg" / "ec4srec")
    # With nothing else configured, the per-user cache under $XDG_CACHE_HOME is used.
    assert resolve("beauty", None, download=False) == cached
    env_file = put(envdir)
    monkeypatch.setenv("EC4SREC_DATA_DIR", str(envdir))
    # $EC4SREC_DATA_DIR wins over the cache.
    assert resolve("beauty", None, download=False) == env_file
    explicit_file = put(explicit)
    # An explicit data_dir wins over $EC4SREC_DATA_DIR.
    assert resolve("beauty", str(explicit), download=False) == explicit_file


def test_cache_default_is_home_cache(env, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(env / "home"))
    # Without XDG_CACHE_HOME the cache is ~/.cache/ec4srec.
    assert sources.default_data_dir() == env / "home" / ".cache" / "ec4srec"


def test_gz_preferred_and_plain_accepted(env):
    plain = put(env / "d", "sports.txt")
    # An uncompressed <name>.txt is accepted.
    assert resolve("sports", str(env / "d"), download=False) == plain
    gz = put(env / "d", "sports.txt.gz")
    # When both exist, <name>.txt.gz is used.
    assert resolve("sports", str(env / "d"), download=False) == gz


def test_missing_named_dataset_without_download(env):
    with pytest.raises(DataError) as err:
        resolve("clothing", str(env / "empty"), download=False)
    # The message says where the file should go.
    assert str(env / "empty" / "clothing.txt.gz") in str(err.value)


def test_custom_path(env, tiny_file):
    # Any existing file is a custom dataset, used as given.
    assert resolve(str(tiny_file)) == tiny_file
    ds = load_dataset(DataConfig(dataset=str(tiny_file)))
    # Its name is the file name and it is fully loaded.
    assert ds.name == tiny_file.name and ds.stats()["users"] == 48


def test_named_dataset_with_other_checksum_warns(env):
    put(env / "d", "beauty.txt.gz")
    # A named dataset whose content differs from the published file loads, with a warning.
    with pytest.warns(UserWarning, match="differs from the published"):
        ds = load_dataset(DataConfig(dataset="beauty", data_dir=str(env / "d")), download=False)
    # Its name is the dataset name and its digest is of the uncompressed text.
    assert ds.name == "beauty" and ds.raw.sha256 == hashlib.sha256(CONTENT).hexdigest()


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_data_dir_that_is_a_file_is_one_error(env, monkeypatch, how):
    blocker = env / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setattr(sources, "fetch", lambda *a: pytest.fail("a download was attempted"))
    if how == "environment":
        monkeypatch.setenv("EC4SREC_DATA_DIR", str(blocker))
    with pytest.raises(DataError) as err:
        resolve("beauty", str(blocker) if how == "argument" else None)
    # A --data-dir / EC4SREC_DATA_DIR that is a file is named as such, with no download tried.
    assert str(err.value) == (f"data directory {blocker} is a file, not a directory "
                              f"(--data-dir / EC4SREC_DATA_DIR)")


def test_unknown_name_lists_valid_names(env):
    with pytest.raises(DataError) as err:
        resolve("beuaty")
    # An unknown name that is no file lists every valid dataset name.
    for name in ("beauty", "sports", "clothing", "ml-1m", "synthetic"):
        assert name in str(err.value)
    # ... and suggests the closest one for a typo.
    assert str(err.value).endswith("did you mean 'beauty'?")


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fake_urlopen(payload: bytes, calls: list):
    def urlopen(url, timeout=None):
        calls.append(url)
        return FakeResponse(payload)
    return urlopen


def test_download_good_content_written_gz(env, monkeypatch):
    calls = []
    monkeypatch.setitem(DATASETS, "beauty", Source("https://example.invalid/b.txt",
                                                   hashlib.sha256(CONTENT).hexdigest()))
    monkeypatch.setattr(sources.urllib.request, "urlopen", fake_urlopen(CONTENT, calls))
    path = resolve("beauty", str(env / "dl"))
    # A missing named dataset is fetched once from its URL into <dir>/<name>.txt.gz.
    assert calls == ["https://example.invalid/b.txt"]
    assert path == env / "dl" / "beauty.txt.gz"
    # The written file is gzip of exactly the verified text, and nothing else is left.
    assert gzip.decompress(path.read_bytes()) == CONTENT
    assert sorted(os.listdir(env / "dl")) == ["beauty.txt.gz"]
    # A second resolve uses the file and does not download again.
    assert resolve("beauty", str(env / "dl")) == path and len(calls) == 1


def test_download_sha_mismatch_leaves_nothing(env, monkeypatch):
    monkeypatch.setitem(DATASETS, "beauty", Source("https://example.invalid/b.txt", "0" * 64))
    monkeypatch.setattr(sources.urllib.request, "urlopen", fake_urlopen(CONTENT, []))
    target = env / "dl"
    target.mkdir()
    with pytest.raises(DataError) as err:
        resolve("beauty", str(target))
    # The mismatch is reported with both digests.
    assert hashlib.sha256(CONTENT).hexdigest() in str(err.value) and "0" * 64 in str(err.value)
    # No file (final or temporary) is left behind.
    assert os.listdir(target) == []


def test_download_network_failure_says_where_to_put_file(env, monkeypatch):
    def fail(url, timeout=None):
        raise urllib.error.URLError("no route to host")
    monkeypatch.setattr(sources.urllib.request, "urlopen", fail)
    with pytest.raises(DataError) as err:
        resolve("sports", str(env / "dl"))
    message = str(err.value)
    # The message gives the exact target path, the cause and the source URL.
    assert str(env / "dl" / "sports.txt.gz") in message
    assert "no route to host" in message and DATASETS["sports"].url in message
    # Nothing was written.
    assert not (env / "dl" / "sports.txt.gz").exists()


# ml-1m: movie 99 has < 5 ratings; user 1 rates movies 10 and 20 at the same second.
RATINGS = [
    (1, 20, 5, 100), (1, 10, 3, 100), (1, 30, 4, 50), (1, 99, 2, 75),
    (2, 30, 1, 10), (2, 20, 2, 20), (2, 10, 3, 30), (2, 99, 3, 5),
    (3, 10, 4, 7), (3, 30, 4, 8), (3, 20, 4, 9),
    (10, 40, 4, 1), (10, 20, 4, 2), (10, 10, 4, 3), (10, 30, 4, 3),
    (4, 40, 1, 3), (4, 30, 1, 2), (4, 20, 1, 1), (4, 10, 1, 1),
    (5, 40, 2, 1), (6, 40, 2, 1), (7, 40, 2, 1),
]


def ml1m_zip() -> bytes:
    text = "".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in RATINGS)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-1m/ratings.dat", text)
    return buffer.getvalue()


def test_movielens_to_sequences():
    out = movielens_to_sequences(ml1m_zip()).decode()
    # Time order per user, ties by movie id, movie 99 (2 ratings) dropped, users sorted
    # numerically, movies renumbered in order of first appearance: 30->1 10->2 20->3 40->4.
    assert out == ("1 1 2 3\n"
                   "2 1 3 2\n"
                   "3 2 1 3\n"
                   "4 2 3 1 4\n"
                   "5 4\n6 4\n7 4\n"
                   "10 4 3 2 1\n")


def test_ml1m_download_is_converted(env, monkeypatch):
    monkeypatch.setattr(sources.urllib.request, "urlopen", fake_urlopen(ml1m_zip(), []))
    path = resolve("ml-1m", str(env / "dl"))
    # The ml-1m zip is converted to sequence text before it is stored.
    assert gzip.decompress(path.read_bytes()) == movielens_to_sequences(ml1m_zip())


def test_fetch_atomic_target(env, monkeypatch):
    monkeypatch.setitem(DATASETS, "beauty", Source("u", None))
    monkeypatch.setattr(sources.urllib.request, "urlopen", fake_urlopen(CONTENT, []))
    target = env / "deep" / "dir" / "beauty.txt.gz"
    # fetch creates missing parent directories and returns the target.
    assert fetch("beauty", target) == target and target.is_file()


@pytest.mark.realdata
@pytest.mark.skipif(not os.environ.get("EC4SREC_DATA_DIR"),
                    reason="EC4SREC_DATA_DIR is not set: the real Beauty file is not available")
def test_real_beauty():
    ds = load_dataset(DataConfig(dataset="beauty"), download=False)
    stats = ds.stats()
    # The shipped Beauty matches the paper's Table 2 and the published SHA-256.
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
    assert stats["sha256"] == DATASETS["beauty"].sha256
    assert stats["skipped_short_users"] == 0
