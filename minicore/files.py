"""Writing a run's files: atomically, as strict JSON, and with errors that name the path and the cause."""
import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path



def io_error(path: str | os.PathLike, error: Exception) -> OSError:
    """An OSError that names `path` and the cause (a full disk is said so even when the writer's own
    message does not, as torch.save's does not)."""
    cause = getattr(error, "strerror", None) or (str(error).splitlines() or [type(error).__name__])[0]
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if shutil.disk_usage(folder).free < 1 << 20:
        cause += "; the disk is full"
    return OSError(getattr(error, "errno", None) or errno.EIO, cause, str(path))


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
    """Call write(tmp_path), then rename tmp_path to path: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it open()'s mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
