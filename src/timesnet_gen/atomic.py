"""One atomic writer for every output folder and file of the project.

    with staged_dir(out, sources=[raw]) as tmp:   # refused before anything is touched when
        ...write into tmp...                      # out is a file, or is / contains a source
    # tmp renamed over out; the previous out is removed only after the rename succeeded

    with staged_file("metrics.json") as tmp:
        tmp.write_text(...)

Staging folders are siblings named `.NAME.tmp-PID-XXXX`; one left by a killed run (its PID no
longer alive) is removed by the next run that writes NAME. Folders get the umask's permissions
(mkdtemp alone would leave them 0700). Nothing outside the staging folder and the previous
version of `out` is ever deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from timesnet_gen.errors import UserError


class OutputError(UserError):
    """An output path that cannot be written safely."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale(out: Path) -> list[Path]:
    """Remove `.NAME.tmp-PID-*` / `.NAME.old-PID` siblings of out whose PID is dead."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for kind in ("tmp", "old"):
        for path in out.parent.glob(f".{out.name}.{kind}-*"):
            pid_text = path.name[len(f".{out.name}.{kind}-"):].split("-")[0]
            if not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_out(out: str | Path, sources: Iterable[str | Path] = (), kind: str = "folder") -> Path:
    """Refuse an output that would destroy an input or overwrite something of another kind."""
    out = Path(out)
    if kind == "folder" and (out.is_file() or out.is_symlink() and not out.is_dir()):
        raise OutputError(f"{out}: is an existing file, expected an output folder")
    if kind == "file" and out.is_dir():
        raise OutputError(f"{out}: is an existing folder, expected an output file")
    resolved = out.resolve()
    for source in sources:
        src = Path(source).resolve()
        if resolved == src or resolved in src.parents:
            raise OutputError(f"{out}: output would replace the input {source}; "
                              "choose another --out")
    return out


def _rename_over(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def write_failure(exc: OSError, out: Path, tmp: Path | None = None) -> OutputError | None:
    """An OutputError naming `out` and the system's reason when `exc` came from writing it (a
    full or read-only disk, a place no folder can be made in): the error names no file, or
    names `out`, a folder above it, its staging or previous version (`.NAME.*` beside it), or a
    path in the staging `tmp`. None for any other path: an input that could not be read keeps
    its own error."""
    def ours(name: Path) -> bool:
        return (name == out or name in out.parents
                or name.parent == out.parent and name.name.startswith(f".{out.name}.")
                or tmp is not None and (name == tmp or tmp in name.parents))

    names = [Path(n) for n in (exc.filename, exc.filename2) if n is not None]
    if names and not any(ours(n) for n in names):
        return None
    return OutputError(f"{out}: cannot write there ({exc.strerror or exc})")


@contextlib.contextmanager
def staged(out: Path, make: Callable[[], Path], remove: Callable[[Path], None],
           publish: Callable[[Path, Path], None]) -> Iterator[Path]:
    """Yield the staging path `make` creates beside `out` (after removing a killed run's);
    `publish` moves it over `out` on success, `remove` deletes it on any error. A failure to
    write (`write_failure`) is an OutputError, one line."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out)
        tmp = make()
    except OSError as exc:
        raise write_failure(exc, out) or exc
    try:
        yield tmp
        publish(tmp, out)
    except OSError as exc:
        remove(tmp)
        raise write_failure(exc, out, tmp) or exc
    except BaseException:
        remove(tmp)
        raise


def staged_dir(out: str | Path, sources: Iterable[str | Path] = ()
               ) -> contextlib.AbstractContextManager[Path]:
    """Yield a fresh staging folder; on success it replaces `out` whole, on error it is removed."""
    out = check_out(out, sources, "folder")

    def make() -> Path:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
        tmp.chmod(0o777 & ~_umask())
        return tmp

    return staged(out, make, lambda tmp: shutil.rmtree(tmp, ignore_errors=True), _rename_over)


def staged_file(out: str | Path, sources: Iterable[str | Path] = ()
                ) -> contextlib.AbstractContextManager[Path]:
    """Yield a staging path beside `out`; on success it is renamed over `out`."""
    out = check_out(out, sources, "file")

    def make() -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o666 & ~_umask())
        return tmp

    return staged(out, make, lambda tmp: tmp.unlink(missing_ok=True), os.replace)
