"""Ask a trained model about an image in the browser: `python -m vqa.inspection.demo --checkpoint DIR` (a Gradio app).

    python -m vqa.inspection.demo --checkpoint outputs/2026-12-06/10-00-00          # http://127.0.0.1:7860
    python -m vqa.inspection.demo --checkpoint outputs/.../checkpoint --host 0.0.0.0 --port 8080

Pick an easy-VQA example or upload an image, type a question: the answer with its top-k probabilities, the
cross-attention over the image for each answer token (layer, head, or the rollout to the inputs) and the attention
on the question's words. A checkpoint that reads retrieved passages retrieves them as its run did
(`vqa.inspection.run_retrieval`; `--corpus` and `--k` replace the run's) and lists each passage read with its share of
the answer's attention. Offline: Gradio's analytics are off, its fonts and scripts are served by the app itself
(nothing from a CDN), and it listens on 127.0.0.1 unless `--host` says otherwise. `pip install -e ".[demo]"`.
"""

from __future__ import annotations

import errno
import html
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Before gradio is imported: no usage reports, no version check against the network, whatever the environment says.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np
import torch
from PIL import Image

from vqa.data.images import ImageFileError, load_rgb, open_problem, to_rgb
from vqa.errors import ArgumentParser, UserError, exit_on_user_error, one_line
from vqa.inspection.attention import AnswerAttention, Head, Layer, explain, map_refusal
from vqa.inspection.attention_plots import HEAT_MAP, upsample
from vqa.inspection.predict import top_answers
from vqa.inspection.run_retrieval import PassagesRead, QuestionRetriever, passage_retriever, read_passages
from vqa.model.loading import load_checkpoint
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQAProcessor

MEAN, ROLLOUT = "mean", "rollout"
EXAMPLES = 8  # easy-VQA test questions offered as examples


def overlay(image: Image.Image, patch_map: torch.Tensor, alpha: float = 0.55, min_side: int = 256) -> Image.Image:
    """The image with a (rows, cols) patch heat map upsampled over it (the colours of vqa.inspection.attention_plots);
    a small image (easy-VQA's are 64 x 64) is enlarged to `min_side` first, so that the patches can be told apart."""
    import matplotlib

    rgb = to_rgb(image)
    if min(rgb.size) < min_side:
        scale = min_side / min(rgb.size)
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.NEAREST)
    heat = upsample(patch_map, (rgb.height, rgb.width))  # (H, W) in [0, 1]
    colours = matplotlib.colormaps[HEAT_MAP](heat)[..., :3]  # (H, W, 3) in [0, 1]
    blended = (1 - alpha) * np.asarray(rgb, dtype=np.float32) / 255 + alpha * colours
    return Image.fromarray((blended * 255).round().astype(np.uint8))


def attention_views(maps: AnswerAttention, token: int, layer: Layer, head: Head) -> tuple[Image.Image, list]:
    """For answer token `token`: the image overlay, and each question word labelled with its share of the token's
    attention (highlighted in proportion, the most attended word fully)."""
    if layer == ROLLOUT:
        head = MEAN  # the rollout combines every head
    patches = maps.patch_attention(layer, head)[token]  # (rows, cols)
    words = maps.question_attention(layer, head)[token]  # (Lq,)
    strength = (words / words.max().clamp(min=1e-12)).tolist()
    image = maps.image if maps.image is not None else Image.new("RGB", (patches.shape[1], patches.shape[0]))
    labelled = [f"{word} {100 * share:.0f}%" for word, share in zip(maps.question_tokens, words.tolist(), strict=True)]
    return overlay(image, patches), [(text, round(value, 3)) for text, value in zip(labelled, strength, strict=True)]


def parse_choice(text: str) -> Any:
    """A layer or head selector's value: 'mean', 'rollout' or an index."""
    return text if text in (MEAN, ROLLOUT) else int(text)


def easy_vqa_examples(count: int = EXAMPLES) -> list[list[str]]:
    """[image path, question] pairs from easy-VQA's test split: one question for each of its first images."""
    import easy_vqa

    questions, _, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    examples: list[list[str]] = []
    seen: set[int] = set()
    for question, image_id in zip(questions, image_ids, strict=True):
        if image_id not in seen:
            seen.add(image_id)
            examples.append([paths[image_id], question])
        if len(examples) == count:
            break
    return examples


def answer(
    model: VQAModel,
    processor: VQAProcessor,
    image_path: str | None,
    question: str,
    top_k: int = 5,
    retriever: QuestionRetriever | None = None,
) -> tuple:
    """The app's answer to a question about the image file at `image_path` (an upload or an example): the top-k
    answers with their probabilities, the attention maps (in the page's state), the answer-token choices, the overlay
    and question words of the first token, and a note (with `retriever`, the passages read and the attention on each).
    A missing, unreadable or over-large file, or a missing question, is a message in the page (`gr.Error`)."""
    import gradio as gr

    # A user's mistake: the page says it; no traceback in the server's log (print_exception).
    if image_path is None or not (question or "").strip():
        raise gr.Error("Pick an example or upload an image, and type a question.", print_exception=False)
    try:
        image = load_rgb(image_path)
    except ImageFileError as error:
        raise gr.Error(unusable_image(image_path, error.reason), print_exception=False) from None
    read = read_passages(model, processor, retriever, image, question) if retriever is not None else None
    ranked = top_answers(model, processor, image, question, top_k, read.inputs if read is not None else None)
    scores = {text or "(empty answer)": probability for text, probability in ranked}
    refusal = map_refusal(model)  # pooled fusion, blind baselines, passage models: answers without maps
    if refusal is not None:
        note = f"No attention maps: {refusal}."
        if read is not None:
            note = passages_note(retriever, read)
        return scores, None, gr.update(choices=[], value=None), None, None, note
    maps = explain(model, processor, image, question)
    tokens = [f"{index}: {token!r}" for index, token in enumerate(maps.answer_tokens)]
    picture, words = attention_views(maps, 0, MEAN, MEAN)
    share = 100 * float(maps.image_share().mean())
    note = f"Greedy answer: **{maps.answer or '(empty)'}**; {share:.0f}% of its attention on the image."
    return scores, maps, gr.update(choices=tokens, value=tokens[0]), picture, words, note


def passages_note(retriever: QuestionRetriever, read: PassagesRead) -> str:
    """The passages read as a Markdown table: rank, the index's score, the share of the answer's attention, the text."""
    question_share, image_share = (100 * read.shares.get(name, 0.0) for name in ("question", "image"))
    rows = [
        f"| {position + 1} | {hit.score:.3f} | {100 * read.passage_share(position):.1f}% | "
        f"{markdown_cell(retriever.text(hit))} |"
        for position, hit in enumerate(read.hits)
    ]
    return "\n".join([
        f"Passages read ({retriever.index.folder.name} over {markdown_cell(retriever.index.corpus.path.name)}); "
        f"attention: question {question_share:.1f}%, image {image_share:.1f}%, "
        f"passages {100 * read.all_passages_share:.1f}%.",
        "",
        "| rank | score | attention | passage |",
        "|---|---|---|---|",
        *rows,
    ])  # fmt: skip


def markdown_cell(text: str) -> str:
    """Text safe inside a Markdown table cell shown as HTML: escaped, pipes and line breaks neutralised."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "&#124;")


def unusable_image(path: str, reason: str) -> str:
    """The page's message for an image file the app cannot read (HTML-escaped: Gradio shows it as HTML)."""
    return html.escape(
        f"{Path(path).name}: {reason}. Upload an image file (PNG, JPEG, WebP, ...) or pick an example.", quote=False
    )


def image_input(**options: Any) -> Any:
    """The image upload: a `gr.Image` that hands the app the file's path (the app decodes it with
    `vqa.data.images.load_rgb`, as predict does: 16-bit and transparent images keep their pixels, and the build's
    pixel limit applies).

    Gradio opens an upload's header itself before the app sees it, and a file it cannot open (not an image, a
    decompression bomb) would show as a bare "Error": its preprocessing is wrapped so that the page says why. (On
    the instance: a subclass of a Gradio component makes Gradio write a .pyi stub beside the module defining it.)
    """
    import gradio as gr

    component = gr.Image(type="filepath", image_mode=None, **options)
    preprocess = component.preprocess

    def readable_preprocess(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as error:
            name = getattr(payload, "orig_name", None) or getattr(payload, "path", None) or "the upload"
            raise gr.Error(unusable_image(name, open_problem(error)[1]), print_exception=False) from None

    component.preprocess = readable_preprocess
    return component


def build_app(
    model: VQAModel, processor: VQAProcessor, top_k: int = 5, retriever: QuestionRetriever | None = None
) -> Any:
    """The Gradio Blocks app for one model (with `retriever` for a model that reads passages)."""
    import gradio as gr

    layers = [MEAN, ROLLOUT, *map(str, range(model.config.decoder_config.n_layer))]
    heads = [MEAN, *map(str, range(model.config.decoder_config.n_head))]

    def ask(image_path: str | None, question: str) -> tuple:
        return answer(model, processor, image_path, question, top_k, retriever)

    def redraw(maps: AnswerAttention | None, token: str | None, layer: str, head: str) -> tuple:
        if maps is None or token is None:
            return None, None
        return attention_views(maps, int(token.split(":")[0]), parse_choice(layer), parse_choice(head))

    with gr.Blocks(title="vqa demo", analytics_enabled=False) as app:
        gr.Markdown("## Ask the model about an image\nPick an example below or upload an image, then ask.")
        maps_state = gr.State(None)
        with gr.Row():
            with gr.Column():
                image = image_input(label="image", height=280, elem_id="image")
                question = gr.Textbox(label="question", placeholder="what shape is in the image?", elem_id="question")
                submit = gr.Button("Answer", variant="primary", elem_id="submit")
                gr.Examples(easy_vqa_examples(), inputs=[image, question], label="easy-VQA examples")
            with gr.Column():
                answers = gr.Label(num_top_classes=top_k, label=f"top {top_k} answers", elem_id="answers")
                note = gr.Markdown(elem_id="note")
                with gr.Row():
                    token = gr.Dropdown(choices=[], label="answer token", elem_id="token")
                    layer = gr.Dropdown(choices=layers, value=MEAN, label="decoder layer", elem_id="layer")
                    head = gr.Dropdown(choices=heads, value=MEAN, label="head (rollout: all)", elem_id="head")
                picture = gr.Image(
                    type="pil", label="attention on the image", height=280, interactive=False, elem_id="overlay"
                )
                words = gr.HighlightedText(label="attention on the question", elem_id="words")
        outputs = [answers, maps_state, token, picture, words, note]
        submit.click(ask, inputs=[image, question], outputs=outputs)
        question.submit(ask, inputs=[image, question], outputs=outputs)
        for selector in (token, layer, head):
            selector.change(redraw, inputs=[maps_state, token, layer, head], outputs=[picture, words])
    return app


def port_number(text: str) -> int:
    """argparse type of --port: an integer from 1 to 65535."""
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(text)
    return port


def check_port(host: str, port: int) -> None:
    """Bind `host:port` once and let it go, so that a port in use is said before the model is loaded.

    Raises:
        UserError: the port is in use or not allowed, or the host is not an address of this machine.
    """
    address = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1] -> ::1
    try:
        family, kind, protocol, _, bound = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, protocol) as probe:
            # As uvicorn binds: a port left in TIME_WAIT by a demo that just stopped is free to it.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(bound)
    except OSError as error:
        raise UserError(port_problem(host, port, error)) from None


def port_problem(host: str, port: int, error: OSError) -> str:
    """One line for a port the demo cannot listen on: which, why, and how to choose another."""
    choose = f"choose another port with --port (e.g. --port {port + 1 if port < 65535 else 8080})"
    if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:
        found = one_line(str(error))
        return f"--host {host}: not an address of this machine ({found}); expected 127.0.0.1, 0.0.0.0 or one of its own"
    if error.errno == errno.EADDRINUSE:
        return f"--port {port}: {host}:{port} is already in use by another program; {choose}"
    if error.errno == errno.EACCES:
        return f"--port {port}: not allowed to this user (ports below 1024 need administrator rights); {choose}"
    return f"--port {port}: cannot listen on {host}:{port} ({one_line(str(error))}); {choose}"


def launch(app: Any, host: str, port: int) -> None:
    """Serve `app` on host:port until stopped. No SSR (it needs a Node server), no public share link, no MCP server:
    a local page served by this process.

    Raises:
        UserError: the port was taken between `check_port` and the start (Gradio says so with an OSError).
    """
    try:
        app.launch(server_name=host, server_port=port, share=False, ssr_mode=False, mcp_server=False)
    except OSError as error:
        # Gradio's own "Cannot find empty port" (no errno) advises launch()'s arguments, not this command's.
        busy = error if error.errno is not None else OSError(errno.EADDRINUSE, str(error))
        raise UserError(port_problem(host, port, busy)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m vqa.inspection.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a run folder or its checkpoint/ folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=port_number, default=7860, help="port to listen on (1 to 65535)")
    parser.add_argument("--top-k", type=int, default=5, help="answers shown with their probabilities")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--corpus", help="a checkpoint that reads passages: search this corpus instead of its run's")
    parser.add_argument("--k", type=int, help="a checkpoint that reads passages: passages per question")
    args = parser.parse_args(argv)
    folder = args.checkpoint / "checkpoint" if (args.checkpoint / "checkpoint").is_dir() else args.checkpoint
    with exit_on_user_error():
        check_port(args.host, args.port)
        model, processor = load_checkpoint(folder, args.device)
        retriever = passage_retriever(model, folder, args.corpus, args.k)
        launch(build_app(model, processor, args.top_k, retriever), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
