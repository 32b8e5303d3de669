"""Benchmark: building the VQA v2 index at full train2014 scale, and the image verification pass.

Writes official-format files for 443,757 questions with 10 human answers each over 82,783 images (the sizes of
train2014), then times `build_vqa_v2` in a fresh process and reports its peak memory: first with
`verify_images=False` (the index alone: JSON, joins, each image's header), then with the verification pass (each
image decoded once, in parallel), then a rebuild with another option, where the remembered verification decodes
nothing, and the cached reload. Image files are copies of one small JPEG.

    python benchmarks/data_index.py [--questions N] [--images N] [--out results.json]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from vqa.provenance import provenance

ANSWER_WORDS = ["yes", "no", "2", "1", "white", "red", "blue", "dog", "tennis", "kitchen", "frisbee", "3", "black"]
QUESTION_STARTS = ["What color is the", "Is there a", "How many", "What is the man holding", "Is this a"]
NOUNS = ["cat", "dog", "bus", "plate", "sky", "table", "shirt", "umbrella", "train", "pizza"]

BUILD_SCRIPT = """
import json, sys, time
from vqa.data import BuildOptions, build_vqa_v2
options = BuildOptions(verify_images=sys.argv[3] == "verify", min_agreement=int(sys.argv[4]) or None)
start = time.perf_counter()
dataset, report = build_vqa_v2(sys.argv[1], "train2014", sys.argv[2], options)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: after fork+exec ru_maxrss still counts the parent's memory at the fork.
status = open("/proc/self/status").read()
peak_kib = int(status.split("VmHWM:")[1].split()[0])
print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_kib / 1024, "rows": len(dataset), "images": report.images,
                  "images_decoded": report.images_decoded}))
"""


def write_inputs(root: Path, num_questions: int, num_images: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    image_ids = sorted(rng.sample(range(1, 600_000), num_images))
    folder = root / "train2014"
    folder.mkdir(parents=True)
    encoded = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 200)).save(encoded, format="JPEG")
    for image_id in image_ids:  # copies, not hard links: ext4 allows 65,000 links to one file
        (folder / f"COCO_train2014_{image_id:012d}.jpg").write_bytes(encoded.getvalue())
    questions, annotations = [], []
    for index in range(num_questions):
        image_id = image_ids[index % num_images]
        question_id = image_id * 1000 + index // num_images
        text = f"{rng.choice(QUESTION_STARTS)} {rng.choice(NOUNS)}?"
        consensus = rng.choice(ANSWER_WORDS)
        answers = [consensus if rng.random() < 0.7 else rng.choice(ANSWER_WORDS) for _ in range(10)]
        questions.append({"image_id": image_id, "question": text, "question_id": question_id})
        annotations.append(
            {
                "question_type": " ".join(text.lower().split()[:2]),
                "multiple_choice_answer": consensus,
                "answers": [
                    {"answer": answer, "answer_confidence": rng.choice(["yes", "maybe"]), "answer_id": k + 1}
                    for k, answer in enumerate(answers)
                ],
                "image_id": image_id,
                "answer_type": "yes/no" if consensus in ("yes", "no") else "other",
                "question_id": question_id,
            }
        )
    header = {"info": {}, "license": {}, "data_type": "mscoco", "data_subtype": "train2014"}
    with (root / "v2_OpenEnded_mscoco_train2014_questions.json").open("w") as file:
        json.dump({**header, "task_type": "Open-Ended", "questions": questions}, file)
    with (root / "v2_mscoco_train2014_annotations.json").open("w") as file:
        json.dump({**header, "annotations": annotations}, file)


def run_build(root: Path, cache: Path, verify: bool, min_agreement: int = 0) -> dict:
    """One build in a fresh process (its own peak memory); `min_agreement` > 0 changes the options (a rebuild)."""
    arguments = [str(root), str(cache), "verify" if verify else "no-verify", str(min_agreement)]
    result = subprocess.run(
        [sys.executable, "-c", BUILD_SCRIPT, *arguments], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=443_757)
    parser.add_argument("--images", type=int, default=82_783)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        root, cache = Path(workdir) / "vqa", Path(workdir) / "cache"
        start = time.perf_counter()
        write_inputs(root, args.questions, args.images)
        generate_seconds = time.perf_counter() - start
        annotations_mib = (root / "v2_mscoco_train2014_annotations.json").stat().st_size / 2**20
        first = run_build(root, cache, verify=False)
        second = run_build(root, cache, verify=False)
        verified = run_build(root, Path(workdir) / "cache-verified", verify=True)
        rebuilt = run_build(root, Path(workdir) / "cache-verified", verify=True, min_agreement=1)
    result = {
        "benchmark": "vqa_v2_index_build",
        "questions": args.questions,
        "images": args.images,
        "annotations_file_mib": round(annotations_mib, 1),
        "generate_inputs_seconds": round(generate_seconds, 1),
        "build_seconds": round(first["seconds"], 1),
        "build_peak_rss_mib": round(first["peak_rss_mib"]),
        "cached_load_seconds": round(second["seconds"], 2),
        "cached_load_peak_rss_mib": round(second["peak_rss_mib"]),
        "verified_build_seconds": round(verified["seconds"], 1),
        "images_decoded": verified["images_decoded"],
        "verification_images_per_second": round(
            verified["images_decoded"] / max(verified["seconds"] - first["seconds"], 1e-9)
        ),
        "rebuild_with_remembered_verification_seconds": round(rebuilt["seconds"], 1),
        "rebuild_images_decoded": rebuilt["images_decoded"],
        "rows": first["rows"],
        "command": "python benchmarks/data_index.py",
        "provenance": provenance(Path(__file__).resolve().parents[1], device="cpu"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
