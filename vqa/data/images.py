"""Checking image files before a dataset is written, so that a bad file fails the build, not a training run.

Two depths:
- header (always): the file exists, PIL identifies it, and its size is within PIL's decompression-bomb limit;
- full decode (`verify=True`, the default): every pixel is read once, as training will, which finds truncated
  and corrupt files whose header is fine. It runs in worker processes, and each file verified ok is remembered by
  its signature (path, size, mtime) in a small JSON record per image folder under the cache folder, so another
  split, an option change or a rebuild decodes only files not verified before.

`ImageFile.LOAD_TRUNCATED_IMAGES` is left as PIL ships it (False): with it, a truncated file decodes "fine".
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

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from vqa.data.cache import fingerprint
from vqa.data.schema import DataError

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
    """(status, reason, pixels) of one file: its header, and with `decode` every pixel.

    Runs in worker processes. Every exception PIL raises on malformed input means a bad file (it raises many
    types, not only OSError); pixels is 0 unless the header was read.
    """
    try:
        with warnings.catch_warnings():
            # Between PIL's limit and twice it, open() only warns; the file is as much a bomb either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        return MISSING, "image file not found", 0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return OVERSIZED, _too_large(error), 0
    except UnidentifiedImageError:
        return UNREADABLE, "not a readable image", 0
    except Exception as error:
        return UNREADABLE, f"not a readable image ({_one_line(error)})", 0
    with image:
        pixels = image.width * image.height
        if not decode:
            return OK, "", pixels
        try:
            image.load()
            if image.mode != "RGB":
                image.convert("RGB")  # what training does to greyscale, palette and CMYK files
        except Exception as error:
            return UNDECODABLE, f"truncated or corrupt image data ({_one_line(error)})", pixels
    return OK, "", pixels


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
        """Merge the additions into each folder's record (re-read now: another process may have written it)."""
        by_folder: dict[Path, dict[str, list[int]]] = {}
        for path, entry in self.added.items():
            by_folder.setdefault(Path(path).parent, {})[path] = entry
        for folder, additions in by_folder.items():
            record_path = _record_path(record_dir, folder)
            files = {**_read_record(record_path), **additions}
            record_path.parent.mkdir(parents=True, exist_ok=True)
            temporary = record_path.with_name(f".{record_path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
            temporary.write_text(json.dumps({"folder": str(folder), "files": files}))
            os.replace(temporary, record_path)
        self.files.update(self.added)
        self.added = {}


def _record_path(record_dir: Path, folder: Path) -> Path:
    return Path(record_dir) / RECORD_FOLDER / f"{folder.name}-{fingerprint({'folder': str(folder)})}.json"


def _read_record(path: Path) -> dict[str, list[int]]:
    """A record's files; an unreadable record (torn by a crash, edited) counts as empty: its files are re-decoded."""
    try:
        files = json.loads(path.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}
