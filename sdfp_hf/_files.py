"""Writing files so that nothing a user has is overwritten or lost: the one writer of the package.

Every file sdfp-hf writes (a mask, its model card, a score plot, an exported checkpoint) goes through
here, with three rules:

- **atomic**: the bytes go to a temporary file in the destination's own folder, are flushed to disk
  (`fsync`), and the file is then renamed into place. A crash or an error half-way leaves the old file
  as it was and no partial one (the temporary file is removed);
- **no overwrite unless asked**: an existing file is replaced only with `overwrite=True`; otherwise
  the write raises [`OverwriteError`], naming the file, before anything is written;
- **no symbolic links**: a destination that is a symbolic link is refused ([`UnsafePathError`]), even
  with `overwrite=True`: writing through it would change a file elsewhere (out of the folder, perhaps
  one the user never meant to touch), and replacing it would silently drop the user's link.

`expand_path` is the one way paths given by a user are read (`~` and environment variables expanded),
by the Python API and the command line alike.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "OverwriteError",
    "UnsafePathError",
    "check_destination",
    "expand",
    "expand_path",
    "move_into",
    "staged_files",
    "staging_folder",
    "write_atomic",
]


class OverwriteError(FileExistsError):
    """Raised when a write would replace an existing file and `overwrite=True` was not given.

    Attributes:
        path (`Path`): the file (or folder) that is kept.
    """

    def __init__(self, message: str, path: str | os.PathLike[str]):
        super().__init__(message)
        self.path = Path(path)


class UnsafePathError(OSError):
    """Raised when a write would go through a symbolic link."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once: `os.umask` can only be read by setting it, which is not safe to do while threads write files.
_UMASK = _umask()
_FILE_MODE = 0o666 & ~_UMASK
_FOLDER_MODE = 0o777 & ~_UMASK


def expand(path: str | os.PathLike[str]) -> str:
    """A user's path with environment variables (`$HOME`, `${VAR}`) and `~` expanded, as every entry point does.

    The text is otherwise kept as written (`./user/name` stays a path, never becomes the Hub id `user/name`).

    Args:
        path (`str` or `os.PathLike`): the path as given.

    Returns:
        `str`: the expanded path (not resolved: relative paths stay relative).
    """
    return os.path.expanduser(os.path.expandvars(os.fspath(path)))


def expand_path(path: str | os.PathLike[str]) -> Path:
    """[`expand`], as a `Path`."""
    return Path(expand(path))


def check_destination(path: str | os.PathLike[str], *, overwrite: bool, hint: str = "pass `overwrite=True`") -> None:
    """Raise if writing `path` would go through a symbolic link, or replace a file without `overwrite`.

    Args:
        path (`str` or `os.PathLike`): the file about to be written.
        overwrite (`bool`): whether an existing file may be replaced.
        hint (`str`, *optional*): how the caller asks for an overwrite, used in the message (the command
            line says `--overwrite`).

    Raises:
        [`UnsafePathError`]: `path` is a symbolic link (followed or not: both would surprise).
        [`OverwriteError`]: `path` exists and `overwrite` is `False`.
        `IsADirectoryError`: `path` is a folder.
    """
    path = Path(path)
    if path.is_symlink():
        target = os.readlink(path)
        resolved = path.resolve()
        outside = not resolved.is_relative_to(path.parent.resolve())
        raise UnsafePathError(
            f"`{path}` is a symbolic link to `{target}`{' (outside its folder)' if outside else ''}: sdfp-hf never "
            "writes through a link, which would change the file it points to; remove the link or choose another folder"
        )
    if path.is_dir():
        raise IsADirectoryError(f"cannot write `{path}`: it is a folder; remove it or choose another name")
    if path.exists() and not overwrite:
        raise OverwriteError(f"`{path}` already exists and is kept: {hint} to replace it, or choose another folder", path)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    overwrite: bool = False,
    hint: str = "pass `overwrite=True`",
) -> Path:
    """Write `data` to `path` atomically: a temporary file in the same folder, `fsync`, then a rename.

    The folder must exist. Readers see the old file or the new one, never a part of either; if the write
    fails (a full disk, an interruption) the old file is left untouched and no temporary file remains.

    Args:
        path (`str` or `os.PathLike`): the file to write.
        data (`bytes` or `str`): the content (`str` is written as UTF-8).
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing file.
        hint (`str`, *optional*): how the caller asks for an overwrite, for the error message.

    Returns:
        `Path`: the path written.

    Raises:
        [`OverwriteError`], [`UnsafePathError`]: see [`check_destination`]; nothing is written then.
    """
    path = Path(path)
    check_destination(path, overwrite=overwrite, hint=hint)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), _FILE_MODE)  # mkstemp makes it private; a saved file is not
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        _place(Path(temporary), path, overwrite=overwrite, hint=hint)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(path.parent)
    return path


def _place(source: Path, destination: Path, *, overwrite: bool, hint: str) -> None:
    """Rename `source` to `destination`; without `overwrite`, never over a file that appeared meanwhile."""
    if overwrite:
        os.replace(source, destination)
        return
    try:
        os.link(source, destination)  # fails if `destination` exists: no window between check and write
    except FileExistsError:
        raise OverwriteError(
            f"`{destination}` already exists and is kept: {hint} to replace it, or choose another folder", destination
        ) from None
    except OSError:  # a file system without hard links: the check just made is the best there is
        os.replace(source, destination)
        return
    os.unlink(source)


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk, where the platform allows it."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def staging_folder(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary folder next to `destination` (same file system, so a rename moves it), removed afterwards.

    Write a whole set of files there, then move them into `destination` with [`move_into`].
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def staged_files(folder: Path) -> list[Path]:
    """The files under a staging folder, relative to it, sorted."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if not p.is_dir())


def move_into(
    staged: Path,
    destination: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    hint: str = "pass `overwrite=True`",
    keep: Iterable[str] = (),
) -> list[Path]:
    """Move every file of the staging folder `staged` into `destination`, each with an atomic rename.

    Every destination is checked first (no link, no existing file without `overwrite`), so a refusal
    leaves `destination` as it was. A `destination` that does not exist yet is created by renaming the
    staging folder itself: all the files appear at once.

    Args:
        staged (`Path`): a folder from [`staging_folder`], holding the new files.
        destination (`str` or `os.PathLike`): the folder to fill.
        overwrite (`bool`, *optional*, defaults to `False`): replace existing files.
        hint (`str`, *optional*): how the caller asks for an overwrite, for the error message.
        keep (`Iterable[str]`, *optional*): relative paths not to move when `destination` already has
            them, even as a link (e.g. a `README.md`, never replaced); left out whatever `overwrite` says.

    Returns:
        `list[Path]`: the files written, in `destination`.
    """
    destination = Path(destination)
    keep = {str(Path(name)) for name in keep}
    files = staged_files(staged)
    if not destination.exists() and not destination.is_symlink():
        _sync_files(staged, files)
        os.chmod(staged, _FOLDER_MODE)  # mkdtemp makes it private; a saved folder is not
        try:
            os.rename(staged, destination)
        except OSError:  # the folder appeared meanwhile: fill it file by file below
            pass
        else:
            _sync_folder(destination.parent)
            return [destination / name for name in files]
    if not destination.is_dir():
        raise NotADirectoryError(f"cannot write into `{destination}`: it is a file, not a folder")
    moving = [name for name in files if not (str(name) in keep and _present(destination / name))]
    for name in moving:
        check_destination(destination / name, overwrite=overwrite, hint=hint)
    _sync_files(staged, moving)
    for name in moving:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        _place(staged / name, destination / name, overwrite=overwrite, hint=hint)
    _sync_folder(destination)
    return [destination / name for name in moving]


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _sync_files(folder: Path, names: Iterable[Path]) -> None:
    for name in names:
        with open(folder / name, "rb") as handle:
            os.fsync(handle.fileno())
