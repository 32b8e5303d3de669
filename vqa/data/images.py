"""Checking image files before a dataset is written, so that a bad file fails the build, not a training run.

Two depths:
- header (always): the file exists, PIL identifies it, and its size is within PIL's decompression-bomb limit;
- full decode (`verify=True`, the default): every pixel is read once, as training will, which finds truncated
  and corrupt files whose header is fine. It runs in worker processes, and each file verified ok is remembered by
  its signature (path, size, mtime) in a small JSON record per image folder under the cache folder, so another
  split, an option change or a rebuild decodes only files not verified before.

`ImageFile.LOAD_TRUNCATED_IMAGES` is left as PIL ships it (False): with it, a truncated file decodes "fine".

Every reader of an image file (the build's check, the collator, predict, the demo, the report) turns it into RGB
with `to_rgb`, which keeps the pixels of 16-bit, float and transparent images; predict and the demo read files
with `load_rgb`, under the same pixel limit as the build.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import uuid
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from vqa.errors import UserError

# vqa.data.cache and vqa.data.schema (for `fingerprint` and `DataError`) are imported where used: they import
# `datasets`, and `to_rgb` is imported by the model's processor, predict and the demo, which otherwise never load it.

logger = logging.getLogger(__name__)

MissingImagePolicy = Literal["error", "skip"]
POLICIES: tuple[str, ...] = ("error", "skip")

OK, MISSING, UNREADABLE, UNDECODABLE, OVERSIZED = "ok", "missing", "unreadable", "undecodable", "oversized"
PROBLEMS: dict[str, str] = {  # status -> how the counts name it
    MISSING: "missing",
    UNREADABLE: "unreadable",
    UNDECODABLE: "truncated or corrupt",
    OVERSIZED: "too large",
}
RECORD_FOLDER = "image_checks"
BACKGROUND = (255, 255, 255)  # what transparent pixels are composited on: white, as a page shows them
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "PA")
MIN_FILES_PER_WORKER = 64  # below this a worker process costs more than it saves
MAX_CHUNK = 64


@dataclass
class ImageCheck:
    """Image ids whose file is bad, by reason, in id order; and how much work the check did."""

    missing: list[int] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)  # not an image: the header cannot be parsed
    undecodable: list[int] = field(default_factory=list)  # the header is fine, the pixel data truncated or corrupt
    oversized: list[int] = field(default_factory=list)  # over PIL.Image.MAX_IMAGE_PIXELS
    checked: int = 0  # image files looked at
    decoded: int = 0  # files this check opened to decode fully; not those remembered as verified, nor header-only

    @property
    def bad(self) -> set[int]:
        return {image_id for ids in self.by_status().values() for image_id in ids}

    def by_status(self) -> dict[str, list[int]]:
        """The id lists by status (the lists themselves, so appending to one fills this check)."""
        return {
            MISSING: self.missing,
            UNREADABLE: self.unreadable,
            UNDECODABLE: self.undecodable,
            OVERSIZED: self.oversized,
        }

    def counts(self) -> dict[str, int]:
        """Bad files by reason, under the report names (`missing_image_files`, ...)."""
        return {
            "missing_image_files": len(self.missing),
            "unreadable_image_files": len(self.unreadable),
            "undecodable_image_files": len(self.undecodable),
            "oversized_image_files": len(self.oversized),
        }

    def summary(self) -> str:
        """'1 missing, 2 truncated or corrupt': the non-zero counts in words."""
        parts = [f"{len(ids)} {PROBLEMS[status]}" for status, ids in self.by_status().items() if ids]
        return ", ".join(parts) or "none bad"


def validate_policy(policy: str) -> None:
    """Raises DataError unless `policy` is one of POLICIES (checked before any file is read)."""
    from vqa.data.schema import DataError

    if policy not in POLICIES:
        raise DataError(f"missing_images: got {policy!r}, expected one of {', '.join(POLICIES)}")


def check_images(
    paths: Mapping[int, Path],
    policy: MissingImagePolicy,
    verify: bool = True,
    record_dir: Path | None = None,
    workers: int | None = None,
) -> ImageCheck:
    """Check each image's header and, with `verify`, decode it fully once.

    Args:
        paths: image id -> file.
        verify: decode all pixel data (in worker processes); False reads headers only.
        record_dir: where the verified files are remembered (the cache folder); None remembers nothing.
        workers: worker processes for the decode; None: one per CPU, fewer for few files, none for a handful.

    Raises:
        DataError: under policy `error`, naming the first bad file (by image id), its reason and the counts.
    """
    validate_policy(policy)
    results: dict[int, tuple[str, str]] = {}
    signatures: dict[int, list[Any]] = {}
    for image_id in sorted(paths):
        try:
            signatures[image_id] = image_signature(paths[image_id])
        except FileNotFoundError:
            results[image_id] = (MISSING, "image file not found")
        except OSError as error:  # e.g. a folder on the way that cannot be read
            results[image_id] = (UNREADABLE, f"not a readable image ({error.strerror or error})")
    record = VerifiedImages()
    if record_dir is not None:
        record = VerifiedImages.load(record_dir, {Path(signature[0]).parent for signature in signatures.values()})
    todo: list[tuple[int, list[Any]]] = []
    for image_id, signature in signatures.items():
        if record.verified(signature):
            results[image_id] = (OK, "")
        else:
            todo.append((image_id, signature))
    outcomes = inspect_images([paths[image_id] for image_id, _ in todo], verify, workers)
    for (image_id, signature), (status, detail, pixels) in zip(todo, outcomes, strict=True):
        results[image_id] = (status, detail)
        if verify and status == OK:
            record.add(signature, pixels)
    if record_dir is not None and record.added:
        record.save(record_dir)
    check = _collect(results, decoded=len(todo) if verify else 0)
    logger.info(
        "image files: %d checked (%s), %d decoded now, %d remembered as verified",
        check.checked,
        "headers and pixels" if verify else "headers only",
        check.decoded,
        len(signatures) - len(todo),
    )
    if policy == "error" and check.bad:
        from vqa.data.schema import DataError

        first = min(check.bad)
        raise DataError(
            f"{paths[first]}: {results[first][1]} ({len(check.bad)} of {check.checked} images bad: "
            f"{check.summary()}; set missing_images='skip' to drop their questions)"
        )
    return check


def image_signature(path: Path) -> list[Any]:
    """(path, size, mtime_ns) of an image file as the builder names it. Unlike `cache.file_signature` the path is not
    resolved: the builders pass absolute paths, and resolving each of VQA v2's 82,783 files took seconds."""
    stat = os.stat(path)
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _collect(results: Mapping[int, tuple[str, str]], decoded: int) -> ImageCheck:
    check = ImageCheck(checked=len(results), decoded=decoded)
    lists = check.by_status()
    for image_id in sorted(results):
        status = results[image_id][0]
        if status != OK:
            lists[status].append(image_id)
    return check


def inspect_images(paths: list[Path], decode: bool, workers: int | None = None) -> list[tuple[str, str, int]]:
    """`inspect_image` for each path, in order: in worker processes when decoding many files, with a progress bar."""
    if workers is None:
        workers = _default_workers(len(paths)) if decode else 1
    bar: dict[str, Any] = {
        "total": len(paths),
        "desc": "verifying images" if decode else "checking images",
        "unit": "img",
        "mininterval": 2.0,
        "disable": None,  # no bar without a terminal
    }
    names = [str(path) for path in paths]
    if workers <= 1 or len(names) <= 1:
        return [inspect_image(name, decode) for name in tqdm(names, **bar)]
    chunk = max(1, min(MAX_CHUNK, len(names) // (workers * 4)))
    with ProcessPoolExecutor(
        workers, mp_context=_context(), initializer=_use_pixel_limit, initargs=(Image.MAX_IMAGE_PIXELS,)
    ) as pool:
        return list(tqdm(pool.map(inspect_image, names, repeat(decode), chunksize=chunk), **bar))


def inspect_image(path: str, decode: bool) -> tuple[str, str, int]:
    """(status, reason, pixels) of one file: its header, and with `decode` every pixel and the RGB conversion that
    training does. Runs in worker processes; pixels is 0 unless the header was read."""
    try:
        image = open_checked(path)
    except ImageFileError as error:
        return error.status, error.reason, 0
    with image:
        pixels = image.width * image.height
        if not decode:
            return OK, "", pixels
        try:
            decode_rgb(image)
        except ImageFileError as error:
            return error.status, error.reason, pixels
    return OK, "", pixels


class ImageFileError(UserError):
    """An image file that cannot be used: `status` (MISSING, UNREADABLE, UNDECODABLE, OVERSIZED) and `reason` (the
    words the build's counts and messages use); the message is `<path>: <reason>`."""

    def __init__(self, path: str | Path, status: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.status, self.reason = str(path), status, reason


def load_rgb(path: str | Path) -> Image.Image:
    """The image file at `path`, decoded fully and closed, as 8-bit RGB (`to_rgb`), under the pixel limit the
    build applies (`open_checked`). What predict and the demo read a user's file with.

    Raises:
        ImageFileError: missing, not an image, over the pixel limit, or truncated or corrupt.
    """
    with open_checked(path) as image:
        return decode_rgb(image)


def open_checked(path: str | Path) -> Image.Image:
    """`PIL.Image.open` (the header only) with the decompression-bomb limit applied at PIL.Image.MAX_IMAGE_PIXELS.

    PIL itself only warns between its limit and twice it; the file is as much a bomb either way, so that is refused
    too (the same limit for the build, predict and the demo).

    Raises:
        ImageFileError: MISSING, OVERSIZED or UNREADABLE, with the reason.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except Exception as error:
        raise ImageFileError(path, *open_problem(error)) from None


def open_problem(error: Exception) -> tuple[str, str]:
    """(status, reason) for what `PIL.Image.open` raised. Every exception PIL raises on malformed input means a bad
    file (it raises many types, not only OSError; DecompressionBombError is not an OSError)."""
    if isinstance(error, FileNotFoundError):
        return MISSING, "image file not found"
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return OVERSIZED, _too_large(error)
    if isinstance(error, UnidentifiedImageError):
        return UNREADABLE, "not a readable image"
    return UNREADABLE, f"not a readable image ({_one_line(error)})"


def decode_rgb(image: Image.Image) -> Image.Image:
    """Every pixel of an opened file read, then `to_rgb`.

    Raises:
        ImageFileError: UNDECODABLE (truncated or corrupt pixel data, or a mode with no RGB conversion).
    """
    try:
        image.load()
    except Exception as error:  # PIL raises many types on corrupt data
        raise ImageFileError(
            _name(image), UNDECODABLE, f"truncated or corrupt image data ({_one_line(error)})"
        ) from None
    try:
        return to_rgb(image)
    except ValueError as error:  # PIL's "conversion from <mode> to RGB not supported"
        raise ImageFileError(_name(image), UNDECODABLE, f"no RGB conversion ({_one_line(error)})") from None


def _name(image: Image.Image) -> str:
    return str(getattr(image, "filename", "") or "image")


def to_rgb(image: Image.Image) -> Image.Image:
    """A faithful 8-bit RGB version of an image of any mode PIL opens; an RGB image without transparency is returned
    as it is. `Image.convert("RGB")` clips deeper modes at 255 (a mid-grey 16-bit PNG becomes white); here:

    - 16-bit greyscale (I;16, I;16L, I;16B, I;16N): scaled by the bit depth, round(v * 255 / 65535), so 65535 -> 255;
      never by the image's own min/max, which would change the pixels of every image differently.
    - 32-bit integer greyscale (I): PIL uses this mode for several depths. A TIFF says its depth (BitsPerSample 32:
      scaled by 2**32 - 1, or by 2**31 - 1 for signed samples, negatives black); any other I image is read as 16-bit
      data (what PIL gives for 16-bit PGM/PPM files, whose values it scales to 0..65535, and for `convert("I")` of a
      16-bit image), values outside 0..65535 clipped.
    - float (F): values all in [0, 1] (the float-image convention of most tools) are scaled by 255; otherwise they
      are read on PIL's 0..255 scale (what `convert("F")` of an 8-bit image gives) and clipped to it. NaN is black.
    - transparency (RGBA, RGBa, LA, PA, and P, L or RGB with a `transparency` entry, i.e. a palette index or colour
      key): composited on BACKGROUND (white), round(c * a / 255 + 255 * (1 - a / 255)). The transparency key of a
      16-bit greyscale PNG is not applied.
    - 1, L, P, CMYK, YCbCr, LAB, HSV: PIL's own conversion (exact for 1, L, P; PIL's formulas for the colour spaces).

    Args:
        image: any PIL image (loaded or not).

    Returns:
        An RGB image of the same size, (H, W, 3) uint8 as an array.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        return _grey(_scaled_integers(image))
    if mode == "F":
        return _grey(_scaled_floats(np.asarray(image)))
    if mode in ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        return _composited(image.convert("RGBA"))
    return image if mode == "RGB" else image.convert("RGB")


def _scaled_integers(image: Image.Image) -> np.ndarray:
    """(H, W) uint8 from integer greyscale by its bit depth (see `to_rgb`)."""
    values = np.asarray(image)
    bits, signed = _integer_depth(image)
    if bits == 32 and not signed:
        values = values.view(np.uint32)  # PIL holds unsigned 32-bit samples in its signed I mode
    maximum = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    clipped = np.clip(values.astype(np.int64), 0, maximum)
    # round(v * 255 / maximum) in integers: maximum is odd, so v * 255 / maximum never ends in exactly .5.
    return ((clipped * 255 + maximum // 2) // maximum).astype(np.uint8)


def _integer_depth(image: Image.Image) -> tuple[int, bool]:
    """(bits, signed) of an integer greyscale image: a 16-bit mode's own, a TIFF's BitsPerSample and SampleFormat
    for mode I, else 16 bits unsigned (see `to_rgb`)."""
    if image.mode != "I":
        return 16, False  # PIL's I;16 modes are unsigned
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return 16, False
    bits, sample_format = tags.get(258), tags.get(339)  # BitsPerSample, SampleFormat (2: signed integer)
    bits = bits[0] if isinstance(bits, tuple) else bits
    sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
    return (32, sample_format == 2) if bits == 32 else (16, False)


def _scaled_floats(values: np.ndarray) -> np.ndarray:
    """(H, W) uint8 from float greyscale (see `to_rgb`)."""
    finite = values[np.isfinite(values)]
    unit_range = finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1)
    scaled = np.nan_to_num(values.astype(np.float64), nan=0.0) * (255 if unit_range else 1)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _grey(values: np.ndarray) -> Image.Image:
    """(H, W) uint8 -> an RGB image with that value in every channel."""
    return Image.fromarray(np.repeat(values[..., None], 3, axis=2), "RGB")


def _composited(rgba: Image.Image) -> Image.Image:
    """An RGBA image over BACKGROUND -> RGB."""
    pixels = np.asarray(rgba).astype(np.int64)  # (H, W, 4)
    colour, alpha = pixels[..., :3], pixels[..., 3:]
    mixed = colour * alpha + np.array(BACKGROUND) * (255 - alpha)
    # round(mixed / 255) in integers: 255 is odd, so no value ends in exactly .5.
    return Image.fromarray(((mixed + 127) // 255).astype(np.uint8), "RGB")


def _too_large(error: Exception) -> str:
    # PIL's message is "Image size (N pixels) exceeds limit of M pixels, ..."; M is twice the limit for the error.
    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = found.group(1) if found else "?"
    return f"too large: {pixels} pixels, over PIL's limit of {Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS)"


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _default_workers(files: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Under torchrun every rank of a machine may build at once: share the CPUs rather than oversubscribe them.
    cpus //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(cpus, files // MIN_FILES_PER_WORKER))


def _context() -> multiprocessing.context.BaseContext:
    # fork starts a worker in milliseconds; spawn would re-import the `vqa` package (torch, transformers) in each.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _use_pixel_limit(limit: int | None) -> None:
    """Worker initializer: the parent's decompression-bomb limit (a spawned worker would start with PIL's own)."""
    Image.MAX_IMAGE_PIXELS = limit


class VerifiedImages:
    """Files that decoded fully, by signature: `{path: [size, mtime_ns, pixels]}`, one JSON file per image folder.

    Only successes are remembered: a bad file is looked at again by every build, so a repaired file is noticed.
    The pixel count is kept because "ok" depends on PIL's limit: a file over today's limit is inspected again.
    Concurrent builds (DDP ranks) each replace the file atomically; at worst one's additions are lost and
    decoded again later.
    """

    def __init__(self, files: dict[str, list[int]] | None = None) -> None:
        self.files: dict[str, list[int]] = files or {}
        self.added: dict[str, list[int]] = {}

    @classmethod
    def load(cls, record_dir: Path, folders: Iterable[Path]) -> VerifiedImages:
        """The records of these image folders (resolved paths, as in file signatures)."""
        files: dict[str, list[int]] = {}
        for folder in folders:
            files.update(_read_record(_record_path(record_dir, folder)))
        return cls(files)

    def verified(self, signature: list[Any]) -> bool:
        path, size, mtime_ns = signature
        entry = self.files.get(path)
        limit = Image.MAX_IMAGE_PIXELS
        return entry is not None and entry[:2] == [size, mtime_ns] and (limit is None or entry[2] <= limit)

    def add(self, signature: list[Any], pixels: int) -> None:
        path, size, mtime_ns = signature
        self.added[path] = [size, mtime_ns, pixels]

    def save(self, record_dir: Path) -> None:
        """Merge the additions into each folder's record (re-read now: another process may have written it).

        Raises:
            vqa.data.cache.DiskFullError: the cache folder's disk is full.
        """
        from vqa.data.cache import CACHE_ADVICE, DISK_FULL, disk_full

        by_folder: dict[Path, dict[str, list[int]]] = {}
        for path, entry in self.added.items():
            by_folder.setdefault(Path(path).parent, {})[path] = entry
        for folder, additions in by_folder.items():
            record_path = _record_path(record_dir, folder)
            files = {**_read_record(record_path), **additions}
            record_path.parent.mkdir(parents=True, exist_ok=True)
            temporary = record_path.with_name(f".{record_path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                temporary.write_text(json.dumps({"folder": str(folder), "files": files}))
                os.replace(temporary, record_path)
            except OSError as error:
                temporary.unlink(missing_ok=True)
                if error.errno in DISK_FULL:  # the cache folder's disk: the dataset could not be written either
                    raise disk_full(record_path, None, CACHE_ADVICE) from None
                raise
        self.files.update(self.added)
        self.added = {}


def _record_path(record_dir: Path, folder: Path) -> Path:
    from vqa.data.cache import fingerprint

    return Path(record_dir) / RECORD_FOLDER / f"{folder.name}-{fingerprint({'folder': str(folder)})}.json"


def _read_record(path: Path) -> dict[str, list[int]]:
    """A record's files; an unreadable record (torn by a crash, edited) counts as empty: its files are re-decoded."""
    try:
        files = json.loads(path.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}
