"""Small file helpers: atomic writes (write a temp file in the same folder, fsync, rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and flush; a torn last line (kill mid-write) is skipped by :func:`read_jsonl`."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict]:
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def die_with_parent() -> None:
    """In a worker process: ask Linux to SIGTERM this process when its parent dies, so a killed run (say
    ``kill <pid>`` of the main process) leaves no orphan workers burning the CPU and writing staging files.
    A no-op where prctl is unavailable."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def redact_url(url: str) -> str:
    """``http://user:KEY@host/v1`` -> ``http://***@host/v1``: credentials in a URL are never printed or saved
    (a query-string key such as ``?api_key=...`` is masked too)."""
    import re

    url = re.sub(r"(?<=://)[^/@\s]+@", "***@", url)
    return re.sub(r"(?i)([?&](?:api[_-]?key|key|token|access_token)=)[^&\s]+", r"\1***", url)


class ModelFileError(ValueError):
    """A model file that is missing, truncated, not safetensors, changed since it was saved, or holds NaN/inf."""


def file_sha256(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(state: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Write tensors to ``path`` (safetensors, atomically); returns ``{"sha256", "bytes"}`` for the JSON beside it,
    which :func:`load_weights` checks."""
    from safetensors.torch import save_file

    path = Path(path)
    atomic_write(
        path, lambda p: save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(p))
    )
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def load_weights(path: str | Path, expected: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a safetensors file, refusing - with one line naming the file and the fix - a missing, truncated or
    foreign file, one whose checksum differs from ``expected`` (recorded at save time), and non-finite weights."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    fix = "re-create it (train again, or copy it again from where it was made)"
    if not path.exists():
        raise ModelFileError(f"model file {path} is missing; {fix}")
    if expected and expected.get("sha256"):
        size = path.stat().st_size
        if expected.get("bytes") is not None and size != expected["bytes"]:
            raise ModelFileError(
                f"model file {path} is {size} bytes but was saved as {expected['bytes']}: truncated or replaced; {fix}"
            )
        if file_sha256(path) != expected["sha256"]:
            raise ModelFileError(f"model file {path} changed since it was saved (checksum mismatch); {fix}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ModelFileError(
            f"model file {path} is truncated or not a safetensors file ({first}); {fix}"
        ) from None
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelFileError(f"model file {path} holds non-finite weights (NaN/inf in {name!r}); {fix}")
    return state


# ------------------------------------------------------------------------------------------------------------
# a saved model: <dir>/<kind>.json (config, processor state, training info, checksums) + <kind>.safetensors
# ------------------------------------------------------------------------------------------------------------
def save_model(out: str | Path, kind: str, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``kind.safetensors`` and then ``kind.json`` (``meta`` plus the weights' checksum under ``files``):
    the JSON is written last, so a directory with a JSON holds a complete model. Returns the weights' path."""
    out = Path(out)
    weights = out / f"{kind}.safetensors"
    files = {weights.name: save_weights(state, weights)}
    atomic_write_json(out / f"{kind}.json", {**meta, "files": files})
    return weights


def load_model(path: str | Path, kind: str, how_to_make: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Read a model saved by :func:`save_model` from its directory (or its ``.safetensors`` file): returns
    (directory, meta, state dict), the weights checked against the checksum recorded beside them.
    ``how_to_make`` completes the message when there is none ("train one with `rawdream pretrain-wm`")."""
    import json

    path = Path(path)
    d = path.parent if path.suffix == ".safetensors" else path
    meta_path = d / f"{kind}.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"no {kind.replace('_', ' ')} at {d} ({kind}.json missing); {how_to_make}")
    meta = json.loads(meta_path.read_text())
    name = f"{kind}.safetensors"
    return d, meta, load_weights(d / name, meta.get("files", {}).get(name))
