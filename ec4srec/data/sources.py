"""Dataset names -> files: the data directory, the cache, and verified downloads.

Resolution order for a named dataset (beauty, sports, clothing, ml-1m): ``data_dir`` argument,
else ``$EC4SREC_DATA_DIR``, else the per-user cache ``$XDG_CACHE_HOME/ec4srec`` (default
``~/.cache/ec4srec``). In that directory ``<name>.txt.gz`` or ``<name>.txt`` is used. A missing
file is downloaded from its public source into that directory; the SHA-256 of the uncompressed
text is checked before the file is moved into place (atomically), so a failed or corrupt
download leaves nothing behind. A data directory that is a file is a DataError naming it.
Anything else that names an existing file is a custom dataset.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import atomic_write_bytes
from ..paths import expand_path
from ..typed import suggest
from .io import DataError

_S3REC = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/2a81540ae18615d88ef88227b0c066e5b74781e5/data/"


@dataclass(frozen=True)
class Source:
    url: str
    sha256: str | None        # of the uncompressed text; None where it cannot be reproduced
    kind: str = "text"        # text | movielens-zip


DATASETS: dict[str, Source] = {
    "beauty": Source(_S3REC + "Beauty.txt",
                     "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"),
    "sports": Source(_S3REC + "Sports_and_Outdoors.txt",
                     "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2"),
    "clothing": Source("https://raw.githubusercontent.com/recocrea/IDEADLRec/"
                       "4d920ad0221d28a33b7ef381fbce334d50c54e66/data/Clothing.txt",
                       "9f5051aa601de52a922e6ff51fe879960ff3bf48559d81110478f0f5cc63561e"),
    # Built from the raw ratings; ratings sharing a timestamp have no canonical order, so the
    # result cannot be byte-identical to the shipped file (whose SHA-256 is 968d320c...).
    "ml-1m": Source("https://files.grouplens.org/datasets/movielens/ml-1m.zip", None, "movielens-zip"),
}
SYNTHETIC = "synthetic"


def default_data_dir() -> Path:
    env = os.environ.get("EC4SREC_DATA_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ec4srec"


def resolve(dataset: str, data_dir: str | None = None, download: bool = True) -> Path:
    """Return the file for a dataset name or path; download a missing named dataset. ``$VAR``
    and ``~`` in the directory or the path are expanded (configs record them so)."""
    try:
        data_dir = expand_path(data_dir) if data_dir else data_dir
        dataset = expand_path(dataset) if dataset not in DATASETS else dataset
    except ValueError as exc:
        raise DataError(f"data directory or dataset path {exc}") from None
    if dataset in DATASETS:
        directory = Path(data_dir) if data_dir else default_data_dir()
        if directory.is_file():
            raise DataError(f"data directory {directory} is a file, not a directory "
                            f"(--data-dir / EC4SREC_DATA_DIR)")
        for name in (f"{dataset}.txt.gz", f"{dataset}.txt"):
            if (directory / name).is_file():
                return directory / name
        target = directory / f"{dataset}.txt.gz"
        if not download:
            raise DataError(_missing_message(dataset, target, "downloads are disabled"))
        return fetch(dataset, target)
    path = Path(dataset).expanduser()
    if path.is_file():
        return path
    known = [*DATASETS, SYNTHETIC]
    raise DataError(f"unknown dataset {dataset!r}: not one of {', '.join(known)} and no such "
                    f"file{suggest(dataset.lower(), known)}")


def fetch(dataset: str, target: Path) -> Path:
    source = DATASETS[dataset]
    try:
        with urllib.request.urlopen(source.url, timeout=60) as response:
            payload = response.read()
    except OSError as exc:
        raise DataError(_missing_message(dataset, target, f"download from {source.url} failed: {exc}")) from None
    text = payload if source.kind == "text" else movielens_to_sequences(payload)
    digest = hashlib.sha256(text).hexdigest()
    if source.sha256 and digest != source.sha256:
        raise DataError(f"{dataset}: downloaded file from {source.url} has SHA-256 {digest}, "
                        f"expected {source.sha256}; nothing was written")
    atomic_write_bytes(target, gzip.compress(text, mtime=0))
    return target


def movielens_to_sequences(zip_bytes: bytes) -> bytes:
    """ml-1m.zip -> sequence text: per user in time order (ties by movie id), movies with < 5
    ratings dropped, items renumbered 1.. in order of first appearance, user id kept."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        lines = archive.read("ml-1m/ratings.dat").decode("latin-1").splitlines()
    ratings = []
    for line in lines:
        user, movie, _rating, stamp = line.split("::")
        ratings.append((int(user), int(stamp), int(movie)))
    counts: dict[int, int] = {}
    for _, _, movie in ratings:
        counts[movie] = counts.get(movie, 0) + 1
    ratings.sort()
    remap: dict[int, int] = {}
    per_user: dict[int, list[int]] = {}
    for user, _, movie in ratings:
        if counts[movie] < 5:
            continue
        item = remap.setdefault(movie, len(remap) + 1)
        per_user.setdefault(user, []).append(item)
    out = "".join(f"{u} {' '.join(map(str, items))}\n" for u, items in sorted(per_user.items()))
    return out.encode()


def _missing_message(dataset: str, target: Path, why: str) -> str:
    return (f"dataset {dataset!r} is not available: {why}. Put the file at {target} "
            f"(or {target.with_suffix('')} uncompressed), or point --data-dir / EC4SREC_DATA_DIR "
            f"at a directory that holds it; source: {DATASETS[dataset].url}")
