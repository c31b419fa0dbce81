"""Atomic writes for checkpoints and result files, and RNG capture/restore."""
from __future__ import annotations

import io
import json
import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()      # what open() would give a new file (mkstemp gives 0600)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.
    The file gets the mode a plain ``open`` would give it (0666 minus the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_torch(path: str | Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def os_error_line(exc: OSError) -> str:
    """``error: PATH: reason`` for an OSError (an output path that is a file, a read-only place,
    a full disk): the one line the command-line tools print before exiting."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"error: {where}{exc.strerror or exc}"


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupt or not a checkpoint; the message names the file."""


def load_torch(path: str | Path) -> Any:
    """Load a file written by :func:`save_torch`. A missing file is FileNotFoundError; a
    truncated, corrupt or foreign file is one :class:`CheckpointError` naming the file (torch
    itself raises RuntimeError, EOFError or UnpicklingError with miniz/pickle internals)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            AttributeError, ImportError, IndexError, KeyError, UnicodeDecodeError, OSError) as exc:
        # OSError: torch's zip reader on a file cut off mid-archive (EINVAL)
        size = Path(path).stat().st_size if Path(path).exists() else 0
        first = " ".join(str(exc).split())[:120]
        raise CheckpointError(f"{path}: not a readable checkpoint ({size} bytes; truncated or "
                              f"corrupt?): {type(exc).__name__}: {first}") from None


def capture_rng(np_rng: np.random.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state,
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
