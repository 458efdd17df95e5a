"""Reading and writing 2D images (png, jpg, tif, mha, nii) through SimpleITK, with clear errors."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from eyegc.common.errors import DataError, EyegcError

__all__ = [
    "READABLE_SUFFIXES",
    "atomic_output_dir",
    "atomic_output_file",
    "check_output_free",
    "current_umask",
    "read_image_array",
    "read_mask",
    "split_image_suffix",
    "write_mha",
    "write_png",
    "write_sitk_image",
]

READABLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".mha", ".mhd", ".nii", ".nii.gz", ".gif")


def split_image_suffix(name: str) -> tuple[str, str]:
    """``"086.nii.gz"`` -> ``("086", ".nii.gz")``: the longest readable suffix, matched case-insensitively."""
    for suffix in sorted(READABLE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if dot else (name, "")


#: Formats whose 2- and 4-channel files are grey or colour plus alpha (a .mha vector image is not).
_ALPHA_SUFFIXES = (".png", ".tif", ".tiff")


def read_image_array(path: Path) -> np.ndarray:
    """Read a 2D image as ``(channels, H, W)`` in its stored dtype, without an alpha channel.

    Transparency carries no image information in these challenges: a grey+alpha or RGBA PNG/TIFF
    is read as its grey or RGB channels.

    Raises:
        DataError: the file is missing, unreadable (corrupt or truncated) or not 2D.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    if path.suffix.lower() == ".gif":
        return _read_with_pillow(path)  # SimpleITK has no GIF reader (DRIVE's masks are GIFs)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        if path.suffix.lower() not in _ALPHA_SUFFIXES:
            raise DataError(
                f"cannot read {path}: the file is corrupt, truncated or not an image ({_first_line(exc)})"
            ) from None
        return _read_with_pillow(path)  # SimpleITK refuses 2-channel (grey+alpha) PNGs; Pillow reads them
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        array = array[0]
    elif image.GetDimension() != 2:
        raise DataError(f"{path} is a {image.GetDimension()}D image with size {image.GetSize()}; expected a 2D image")
    if array.ndim == 2:
        return array[None]
    array = np.moveaxis(array, -1, 0)
    if array.shape[0] in (2, 4) and path.suffix.lower() in _ALPHA_SUFFIXES:
        array = array[:-1]
    return array


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            mode = "RGB" if handle.mode in ("RGB", "RGBA") else "L"
            array = np.asarray(handle.convert(mode))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read {path}: the file is corrupt, truncated or not an image ({exc})") from None
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def read_mask(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary mask as ``(H, W)`` uint8 0/1; any value above zero is foreground.

    Raises:
        DataError: unreadable file, or a size other than ``shape``.
    """
    array = read_image_array(path)
    if array.shape[0] > 1:
        array = array.max(axis=0, keepdims=True)
    mask = (array[0] > 0).astype(np.uint8)
    if shape is not None and mask.shape != tuple(shape):
        raise DataError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} (W x H); its image is {shape[1]}x{shape[0]}")
    return mask


#: strerror -> errno of the write failures a user's disk causes; ITK reports only the text.
_WRITE_ERRNOS = {os.strerror(code): code for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)}


def write_sitk_image(image: sitk.Image, path: Path, compress: bool = False) -> None:
    """``sitk.WriteImage`` whose failures are ``OSError``\\ s naming ``path``, as Python's own writes are.

    Raises:
        OSError: the file cannot be written (disk full, read-only, permissions, ...).
    """
    try:
        sitk.WriteImage(image, str(path), useCompression=compress)
    except RuntimeError as exc:
        reason = next(
            (line.split(":", 1)[1].strip() for line in str(exc).splitlines() if line.startswith("Reason:")), ""
        )
        code = _WRITE_ERRNOS.get(reason, errno.EIO)
        raise OSError(code, reason or _first_line(exc), str(path)) from None


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a 2D uint8 array as an 8-bit grayscale PNG."""
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"write_png expects a 2D uint8 array, got {array.dtype} {array.shape}")
    write_sitk_image(sitk.GetImageFromArray(array), path)


def write_mha(path: Path, array: np.ndarray) -> None:
    """Write a 2D array as a compressed MetaImage (``.mha``), spacing 1."""
    write_sitk_image(sitk.GetImageFromArray(array), path, compress=True)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def current_umask() -> int:
    """The process's file-mode creation mask (read by setting and restoring it: POSIX has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_umask(path: Path, mode: int) -> None:
    # mkstemp/mkdtemp create 0600/0700 whatever the umask; a finished output gets the mode any
    # ordinary file or folder of the user's would have (0644/0755 under the usual umask 022).
    path.chmod(mode & ~current_umask())


def check_output_free(target: Path, overwrite: bool = False) -> None:
    """Refuse an existing file or non-empty folder at ``target`` unless ``overwrite``: before long work, too."""
    if target.exists() and not overwrite:
        is_empty_dir = target.is_dir() and not any(target.iterdir())
        if not is_empty_dir:
            raise EyegcError(f"{target} already exists; choose another path or pass --overwrite")


def _named_for_target(exc: OSError, tmp: Path | None, target: Path) -> OSError:
    """The same error naming the user's path rather than the hidden temporary one being written."""
    name = Path(exc.filename) if exc.filename is not None else None
    if name is None or tmp is None:
        name = target
    elif name == tmp or tmp in name.parents:
        name = target / name.relative_to(tmp)
    return OSError(exc.errno, exc.strerror, str(name))  # the errno picks the subclass (PermissionError, ...)


@contextlib.contextmanager
def atomic_output_dir(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` that replaces it only if the block succeeds.

    Nothing half-written is ever left at ``target``: on any error the temporary folder is removed.
    An ``OSError`` (disk full, read-only, ...) names the path below ``target``, not the temporary one.
    """
    target = Path(target)
    check_output_free(target, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    except OSError as exc:
        raise _named_for_target(exc, None, target) from None
    try:
        try:
            yield tmp
        except OSError as exc:
            raise _named_for_target(exc, tmp, target) from None
        _apply_umask(tmp, 0o777)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_file(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside ``target``, moved onto ``target`` only on success.

    An ``OSError`` (disk full, read-only, ...) names ``target``, not the temporary file.
    """
    target = Path(target)
    check_output_free(target, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{target.name}.partial-", dir=target.parent, suffix="".join(target.suffixes)
        )
    except OSError as exc:
        raise _named_for_target(exc, None, target) from None
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            yield tmp
        except OSError as exc:
            raise _named_for_target(exc, tmp, target) from None
        if tmp.exists():  # the block may have moved or replaced it itself
            _apply_umask(tmp, 0o666)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
