"""Ask a trained model about an image in the browser: `python -m vqa.inspection.demo --checkpoint DIR` (a Gradio app).

    python -m vqa.inspection.demo --checkpoint outputs/2026-12-06/10-00-00          # http://127.0.0.1:7860
    python -m vqa.inspection.demo --checkpoint outputs/.../checkpoint --host 0.0.0.0 --port 8080

Pick an easy-VQA example or upload an image, type a question: the answer with its top-k probabilities, the
cross-attention over the image for each answer token (layer, head, or the rollout to the inputs) and the attention
on the question's words. Offline: Gradio's analytics are off, its fonts and scripts are served by the app itself
(nothing from a CDN), and it listens on 127.0.0.1 unless `--host` says otherwise. `pip install -e ".[demo]"`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Before gradio is imported: no usage reports, no version check against the network, whatever the environment says.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np
import torch
from PIL import Image

from vqa.errors import ArgumentParser, exit_on_user_error
from vqa.inspection.attention import AnswerAttention, Head, Layer, explain, map_refusal
from vqa.inspection.attention_plots import HEAT_MAP, upsample
from vqa.inspection.predict import top_answers
from vqa.model.loading import load_checkpoint
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQAProcessor

MEAN, ROLLOUT = "mean", "rollout"
EXAMPLES = 8  # easy-VQA test questions offered as examples


def overlay(image: Image.Image, patch_map: torch.Tensor, alpha: float = 0.55, min_side: int = 256) -> Image.Image:
    """The image with a (rows, cols) patch heat map upsampled over it (the colours of vqa.inspection.attention_plots);
    a small image (easy-VQA's are 64 x 64) is enlarged to `min_side` first, so that the patches can be told apart."""
    import matplotlib

    rgb = image.convert("RGB")
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


def build_app(model: VQAModel, processor: VQAProcessor, top_k: int = 5) -> Any:
    """The Gradio Blocks app for one model."""
    import gradio as gr

    refusal = map_refusal(model)  # pooled fusion, blind baselines: answers without maps
    layers = [MEAN, ROLLOUT, *map(str, range(model.config.decoder_config.n_layer))]
    heads = [MEAN, *map(str, range(model.config.decoder_config.n_head))]

    def ask(image: Image.Image | None, question: str) -> tuple:
        if image is None or not (question or "").strip():
            raise gr.Error("Pick an example or upload an image, and type a question.")
        ranked = top_answers(model, processor, image, question, k=top_k)
        scores = {answer or "(empty answer)": probability for answer, probability in ranked}
        if refusal is not None:
            return scores, None, gr.update(choices=[], value=None), None, None, f"No attention maps: {refusal}."
        maps = explain(model, processor, image, question)
        tokens = [f"{index}: {token!r}" for index, token in enumerate(maps.answer_tokens)]
        picture, words = attention_views(maps, 0, MEAN, MEAN)
        share = 100 * float(maps.image_share().mean())
        note = f"Greedy answer: **{maps.answer or '(empty)'}**; {share:.0f}% of its attention on the image."
        return scores, maps, gr.update(choices=tokens, value=tokens[0]), picture, words, note

    def redraw(maps: AnswerAttention | None, token: str | None, layer: str, head: str) -> tuple:
        if maps is None or token is None:
            return None, None
        return attention_views(maps, int(token.split(":")[0]), parse_choice(layer), parse_choice(head))

    with gr.Blocks(title="vqa demo", analytics_enabled=False) as app:
        gr.Markdown("## Ask the model about an image\nPick an example below or upload an image, then ask.")
        maps_state = gr.State(None)
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", image_mode="RGB", label="image", height=280, elem_id="image")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m vqa.inspection.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a run folder or its checkpoint/ folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--top-k", type=int, default=5, help="answers shown with their probabilities")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)
    folder = args.checkpoint / "checkpoint" if (args.checkpoint / "checkpoint").is_dir() else args.checkpoint
    with exit_on_user_error():
        model, processor = load_checkpoint(folder, args.device)
    app = build_app(model, processor, args.top_k)
    # No SSR (it needs a Node server), no public share link, no MCP server: a local page served by this process.
    app.launch(server_name=args.host, server_port=args.port, share=False, ssr_mode=False, mcp_server=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
