"""Writing a run's files: atomically, as strict JSON, and with errors that name the path and the cause."""
import errno
import json
import math
import os
import resource
import shutil
import tempfile
from pathlib import Path


def io_error(path: str | os.PathLike, error: Exception) -> OSError:
    """An OSError that names `path` and the cause, with what the writer's own message may not say (torch.save
    reports a full disk or a file-size limit as "unexpected pos 27456 vs 27348"): see write_hints. Call it
    before removing a partial write, whose removal frees the disk and hides the size it reached."""
    cause = getattr(error, "strerror", None) or (str(error).splitlines() or [type(error).__name__])[0]
    for hint in dict.fromkeys([*getattr(error, "write_hints", ()), *write_hints(path, error)]):
        if hint not in cause:
            cause += f"; {hint}"
    return OSError(getattr(error, "errno", None) or errno.EIO, cause, str(path))


def write_hints(path: str | os.PathLike, error: Exception) -> list[str]:
    """What may have made a write at `path` (a file or a folder of them) fail: the disk is full, a file reached
    the file-size limit (ulimit -f), a part of the path is a file. From the error's errno, the "(os error N)"
    of safetensors' messages, the free space, and the size of what was written."""
    code, text = getattr(error, "errno", None), str(error)
    hints = []
    if code == errno.ENOSPC or f"(os error {errno.ENOSPC})" in text or _free_bytes(path) < 1 << 20:
        hints.append("the disk is full")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and (code == errno.EFBIG or f"(os error {errno.EFBIG})" in text
                                            or _largest_file(path) >= limit):
        hints.append(f"a file reached the file-size limit of {limit} bytes (ulimit -f)")
    if code == errno.ENOTDIR:
        hints.append("a part of the path is a file, not a folder")
    return hints


def _free_bytes(path: str | os.PathLike) -> int:
    """Free space on the file system of `path` (of its nearest existing folder)."""
    folder = Path(path).parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _largest_file(path: str | os.PathLike) -> int:
    """The size of the file `path`, or of the largest file in the folder `path` (0: none)."""
    path = Path(path)
    files = [path] if path.is_file() else list(path.rglob("*")) if path.is_dir() else []
    return max((f.stat().st_size for f in files if f.is_file()), default=0)


def json_safe(obj):
    """`obj` with every NaN or infinite float replaced by None, so it serializes as strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_json(obj, **kw) -> str:
    """Strict JSON (no NaN / Infinity tokens, which strict readers reject): non-finite floats become null."""
    return json.dumps(json_safe(obj), allow_nan=False, ensure_ascii=False, **kw)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (temp file, then rename)."""
    try:
        atomic_write(Path(path), lambda p: Path(p).write_text(text, encoding="utf-8"))
    except OSError as e:
        raise io_error(path, e) from None


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, to_json(obj, indent=2) + "\n")


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path to path: readers never see a half-written file. A failed
    write carries `write_hints` (what io_error adds to its message), found before the partial file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it open()'s mode
        os.replace(tmp, path)
    except Exception as e:
        e.write_hints = write_hints(tmp, e)
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
