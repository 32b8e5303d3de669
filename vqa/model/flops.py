"""FLOPs of a training step by model component, forward and backward, from torch's FLOP counter formulas.

`torch.utils.flop_counter.FlopCounterMode` counts FLOPs per module, but in backward its module tracker attributes
an op to every module whose backward might be running, so the per-module counts add up to more than the total
(and `torch.distributed._tools.mod_tracker.ModTracker` loses track when a module's inputs need no gradient).
`flops_by_component` counts with the same per-op formulas (`flop_registry`) and attributes backward ops through
the autograd graph instead: every autograd node made in a component's forward is tagged with that component, and a
pre-hook on the node names the component whose backward ops follow. The components add up to FlopCounterMode's
total exactly (tested).

Components: `text_encoder`, `image_encoder`, `fusion` (projections, fusion, BOS conditioning), `decoder` (GPT-2's
embeddings, self-attention and MLP), `cross_attention` (GPT-2's cross-attention and its LayerNorm), `lm_head`, and
`other` (ops outside any submodule, such as the loss).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry
from torch.utils.module_tracker import ModuleTracker

from vqa.model.freezing import component_of

COMPONENTS = ("text_encoder", "image_encoder", "fusion", "decoder", "cross_attention", "lm_head", "other")
PHASES = ("forward", "backward")


def component_of_module(qualified_name: str) -> str:
    """`VQAModel.decoder.transformer.h.0.crossattention.c_attn` -> `cross_attention` (the root is the class): the
    parameter-name rules of `vqa.model.freezing.component_of`, with GPT-2's LM head apart and `projections` named
    `fusion`."""
    _, _, path = qualified_name.partition(".")
    if not path:
        return "other"
    if path == "decoder.lm_head" or path.startswith("decoder.lm_head."):
        return "lm_head"
    component = component_of(path)
    return "fusion" if component == "projections" else component


class _Attribution:
    """Which component the ops running now belong to: in forward the deepest running module (ModuleTracker is
    exact in forward), in backward the component of the autograd node being run."""

    def __init__(self, tracker: ModuleTracker) -> None:
        self.tracker = tracker
        self.phase = "forward"
        self.backward_component = "other"
        self.tagged: set[int] = set()

    def forward_component(self) -> str:
        modules = [name for name in self.tracker.parents if name != "Global"]
        return component_of_module(max(modules, key=lambda name: name.count("."), default="Global"))

    def current(self) -> str:
        return self.forward_component() if self.phase == "forward" else self.backward_component

    def tag(self, outputs: Any) -> None:
        """Give the autograd nodes of `outputs` the forward component, once per node."""
        component = self.forward_component()
        for value in tree_flatten(outputs)[0]:
            node = value.grad_fn if isinstance(value, torch.Tensor) else None
            if node is not None and id(node) not in self.tagged:
                self.tagged.add(id(node))
                node.register_prehook(lambda grad_outputs, component=component: self._enter(component))

    def _enter(self, component: str) -> None:
        self.backward_component = component


class _NodeTagger(TorchFunctionMode):
    """Above autograd: sees each op's outputs with their autograd nodes."""

    def __init__(self, attribution: _Attribution) -> None:
        super().__init__()
        self.attribution = attribution

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        outputs = func(*args, **(kwargs or {}))
        if self.attribution.phase == "forward":
            self.attribution.tag(outputs)
        return outputs


class _FlopCounter(TorchDispatchMode):
    """Below autograd: adds each op's FLOPs (torch's formulas) to (current component, phase)."""

    def __init__(self, attribution: _Attribution) -> None:
        super().__init__()
        self.attribution = attribution
        self.counts: dict[tuple[str, str], int] = defaultdict(int)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            key = (self.attribution.current(), self.attribution.phase)
            self.counts[key] += formula(*args, **kwargs, out_val=out)
        return out


def flops_by_component(forward: Callable[[], torch.Tensor]) -> dict[str, dict[str, int]]:
    """Run `forward` (returning a scalar loss) and its backward; return {component: {"forward", "backward"}} FLOPs,
    every component of COMPONENTS present (0 where nothing ran)."""
    with ModuleTracker() as tracker:
        attribution = _Attribution(tracker)
        with _FlopCounter(attribution) as counter:
            with _NodeTagger(attribution):
                loss = forward()
            attribution.phase = "backward"
            loss.backward()
    return {
        component: {phase: counter.counts.get((component, phase), 0) for phase in PHASES} for component in COMPONENTS
    }
