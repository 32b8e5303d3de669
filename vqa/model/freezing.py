"""Freezing by component: a freeze spec from the config becomes `requires_grad` flags and a parameter table.

Components of `VQAModel`:
- `text_encoder`: the question encoder (DistilBERT by default).
- `image_encoder`: the image encoder (ViT by default).
- `projections`: everything the model adds to the three components: the fusion module (its projections into the
  decoder width, their LayerNorms, modality embeddings, any parameters of a custom fusion), BOS conditioning and the
  answer classifier of `head=classifier`.
- `cross_attention`: GPT-2's cross-attention layers and their LayerNorms (`crossattention`, `ln_cross_attn`).
- `decoder`: the rest of GPT-2: embeddings, self-attention, MLPs, final LayerNorm and the (tied) LM head.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

COMPONENTS: tuple[str, ...] = ("text_encoder", "image_encoder", "projections", "cross_attention", "decoder")

# Named presets follow the textbook's freeze values; `decoder` keeps GPT-2's cross-attention trainable, and `all`
# leaves only the new parts (projections and cross-attention) to train.
FREEZE_PRESETS: dict[str, tuple[str, ...]] = {
    "nothing": (),
    "encoders": ("text_encoder", "image_encoder"),
    "text_encoder": ("text_encoder",),
    "image_encoder": ("image_encoder",),
    "decoder": ("decoder",),
    "all": ("text_encoder", "image_encoder", "decoder"),
}

_CROSS_ATTENTION_MARKERS = ("crossattention", "ln_cross_attn")
ADAPTER_MARKER = ".lora_"  # in the names of LoRA adapter parameters (`...c_attn.lora_A.default.weight`, vqa.model.lora)


def resolve_freeze(spec: str | Iterable[str] | None) -> frozenset[str]:
    """Turn a preset name or a list of component names into the set of frozen components.

    Raises:
        ValueError: naming the unknown entry and the accepted names.
    """
    if spec is None:
        return frozenset()
    if isinstance(spec, str):
        if spec in FREEZE_PRESETS:
            return frozenset(FREEZE_PRESETS[spec])
        if spec in COMPONENTS:
            return frozenset([spec])
        raise ValueError(
            f"freeze: unknown name {spec!r}; expected a preset ({', '.join(FREEZE_PRESETS)}) "
            f"or a list of components ({', '.join(COMPONENTS)})"
        )
    frozen: set[str] = set()
    for name in spec:
        if name not in COMPONENTS:
            raise ValueError(f"freeze: unknown component {name!r}; expected some of {', '.join(COMPONENTS)}")
        frozen.add(name)
    return frozenset(frozen)


def component_of(parameter_name: str) -> str:
    """The component a `VQAModel` parameter belongs to, from its qualified name."""
    top = parameter_name.split(".", 1)[0]
    if top in ("text_encoder", "image_encoder"):
        return top
    if top == "decoder":
        if any(marker in parameter_name for marker in _CROSS_ATTENTION_MARKERS):
            return "cross_attention"
        return "decoder"
    return "projections"


def apply_freeze(model: nn.Module, frozen: frozenset[str], adapted: frozenset[str] = frozenset()) -> None:
    """Set `requires_grad` on every parameter of `model` from the set of frozen components; a component with LoRA
    adapters (`adapted`) keeps its own weights frozen and trains its adapters, frozen or not."""
    for name, parameter in model.named_parameters():
        component = component_of(name)
        parameter.requires_grad_(is_adapter(name) or (component not in frozen and component not in adapted))


def is_adapter(parameter_name: str) -> bool:
    return ADAPTER_MARKER in parameter_name


def parameter_counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Per component: (trainable, total) parameter counts. Tied parameters are counted once."""
    counts = {component: [0, 0] for component in COMPONENTS}
    for name, parameter in model.named_parameters():  # named_parameters() skips tied duplicates
        entry = counts[component_of(name)]
        entry[1] += parameter.numel()
        if parameter.requires_grad:
            entry[0] += parameter.numel()
    return {component: (trainable, total) for component, (trainable, total) in counts.items()}


def parameter_table(model: nn.Module) -> str:
    """A plain-text table of trainable and total parameters per component, with a total row."""
    counts = parameter_counts(model)
    rows = [(component, trainable, total) for component, (trainable, total) in counts.items()]
    total = ("total", sum(row[1] for row in rows), sum(row[2] for row in rows))
    adapters = [(name, parameter) for name, parameter in model.named_parameters() if is_adapter(name)]
    if adapters:  # counted in their components' rows too
        rows.append(
            (
                "  of which LoRA",
                sum(parameter.numel() for _, parameter in adapters if parameter.requires_grad),
                sum(parameter.numel() for _, parameter in adapters),
            )
        )
    rows.append(total)
    lines = [f"{'component':<16}{'trainable':>14}{'total':>14}"]
    lines += [f"{name:<16}{trainable:>14,}{total:>14,}" for name, trainable, total in rows]
    return "\n".join(lines)
