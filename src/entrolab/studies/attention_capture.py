"""Attention entropy captured with hooks, and the layers × heads heatmap of ``entrolab analyze
--attention`` (spec B20; the maths is in :mod:`entrolab.studies.attention`).

:class:`AttentionEntropyWatch` registers a forward hook on every decoder block's self-attention
module and reduces each attention map to its per-query entropy as soon as the block has run, so
only ``[B, heads, T]`` per layer is kept (not the ``[B, heads, T, T]`` maps of every layer that
``output_attentions=True`` holds at once). Attention weights exist only with the eager attention
implementation; the watch switches the model to it and restores the previous one on exit.

:func:`sequence_attention_entropy` runs one sequence through a backend's model and returns the
per-query entropies; :func:`attention_heatmap_svg` draws the mean per (layer, head) in nats with
labelled axes; :func:`attention_summary` gives the per-layer means and the lowest-entropy heads
for the terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from entrolab.errors import EntrolabError
from entrolab.studies.attention import attention_entropy, position_normalized_entropy

__all__ = [
    "AttentionEntropyWatch",
    "attention_heatmap_svg",
    "attention_summary",
    "sequence_attention_entropy",
]


def _attention_modules(model: Any) -> list[Any]:
    from entrolab.decoding.steering import decoder_layers

    mods = [getattr(block, "self_attn", None) for block in decoder_layers(model)]
    if not mods or any(m is None for m in mods):
        raise EntrolabError(
            "attention entropy needs decoder blocks with a 'self_attn' module (Llama, Qwen, "
            "Mistral, … in transformers); this model has none"
        )
    return mods


class AttentionEntropyWatch:
    """Context manager: per-query attention entropy of every layer on each forward pass.

    Attributes (after a forward pass inside the ``with``):
        entropy: list of L float32 tensors [B, heads, T] (nats; the last pass's values);
        first_mass: list of L float32 tensors [B, heads, T], the attention each query puts on
            the first key (an "attention sink" puts ≈ 1 there).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.modules = _attention_modules(model)
        self.entropy: list[torch.Tensor | None] = [None] * len(self.modules)
        self.first_mass: list[torch.Tensor | None] = [None] * len(self.modules)
        self._handles: list[Any] = []
        self._previous: str | None = None

    def __enter__(self) -> AttentionEntropyWatch:
        config = getattr(self.model, "config", None)
        self._previous = getattr(config, "_attn_implementation", None)
        if self._previous != "eager":
            self.model.set_attn_implementation("eager")

        def hook(index: int):
            def on_attention(_module, _inputs, output):
                weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if weights is None:
                    raise EntrolabError(
                        "the attention module returned no weights; attention entropy needs the "
                        "eager attention implementation"
                    )
                w = weights.detach()
                self.entropy[index] = attention_entropy(w).float()
                self.first_mass[index] = w[..., 0].float()

            return on_attention

        self._handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._previous not in (None, "eager"):
            self.model.set_attn_implementation(self._previous)

    def stacked(self) -> dict[str, torch.Tensor]:
        """``{"entropy": [L, B, heads, T], "first_mass": [L, B, heads, T]}`` of the last pass."""
        if any(e is None for e in self.entropy):
            raise EntrolabError("no forward pass ran inside the watch")
        return {
            "entropy": torch.stack(self.entropy),  # type: ignore[arg-type]
            "first_mass": torch.stack(self.first_mass),  # type: ignore[arg-type]
        }


def sequence_attention_entropy(backend: Any, ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-query attention entropy of one token sequence on a backend's torch model.

    Args:
        backend: a backend with capability ``torch_module`` (``HFBackend``).
        ids: the T token ids (e.g. the chat-formatted prompt followed by the reply).
    Returns:
        ``{"entropy": [L, heads, T] nats, "normalized": [L, heads, T] H_i / log(i + 1) (NaN at
        i = 0), "first_mass": [L, heads, T]}`` as float64 numpy arrays.
    """
    from entrolab.backends.base import torch_model

    if len(ids) < 2:
        raise EntrolabError("attention entropy needs a sequence of at least 2 tokens")
    model = torch_model(backend, "attention entropy")
    device = next(model.parameters()).device
    x = torch.tensor([list(ids)], device=device)
    with AttentionEntropyWatch(model) as watch, torch.no_grad():
        model(input_ids=x)
    s = watch.stacked()
    ent = s["entropy"][:, 0].cpu().double()
    return {
        "entropy": ent.numpy(),
        "normalized": position_normalized_entropy(ent).numpy(),
        "first_mass": s["first_mass"][:, 0].cpu().double().numpy(),
    }


def attention_summary(captured: dict[str, np.ndarray], lowest: int = 5) -> dict[str, Any]:
    """Means over queries per (layer, head), per-layer means and the ``lowest`` heads.

    Returns ``{"table": [L, H] mean entropy (nats), "table_normalized": [L, H] (queries ≥ 1),
    "layers": [{"layer", "entropy", "normalized", "lowest_head"}], "lowest_heads": [{"layer",
    "head", "entropy", "normalized", "first_mass"}]}`` (heads ranked by normalised entropy).
    """
    ent, norm, first = captured["entropy"], captured["normalized"], captured["first_mass"]
    table = ent.mean(-1)
    table_n = (
        np.nanmean(norm[..., 1:], axis=-1) if norm.shape[-1] > 1 else np.full(table.shape, np.nan)
    )
    sink = first[..., 1:].mean(-1) if first.shape[-1] > 1 else first.mean(-1)
    layers = [
        {"layer": i, "entropy": float(table[i].mean()), "normalized": float(table_n[i].mean()),
         "lowest_head": int(np.argmin(table_n[i]))}
        for i in range(table.shape[0])
    ]  # fmt: skip
    order = np.argsort(table_n, axis=None)[:lowest]
    heads = []
    for flat in order:
        layer, head = divmod(int(flat), table.shape[1])
        heads.append(
            {"layer": layer, "head": head, "entropy": float(table[layer, head]),
             "normalized": float(table_n[layer, head]), "first_mass": float(sink[layer, head])}
        )  # fmt: skip
    return {"table": table, "table_normalized": table_n, "layers": layers, "lowest_heads": heads}


def attention_heatmap_svg(
    table: np.ndarray,
    *,
    title: str,
    unit: str = "mean attention entropy (nats)",
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
) -> str:
    """A layers × heads heatmap (layer 0 at the bottom) with a labelled colour bar, as SVG.

    Args:
        table: [L, H] values (e.g. mean entropy per head in nats).
        title: figure title; unit: colour-bar label; vmin, vmax: colour range (default: data);
        cmap: matplotlib colour map (a diverging one such as ``"RdBu_r"`` for differences).
    """
    from entrolab.report.figures import new_figure, to_svg

    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.size == 0:
        raise EntrolabError(f"heatmap table must be [layers, heads], got shape {t.shape}")
    n_layers, n_heads = t.shape
    fig = new_figure(min(max(5.5, 2.0 + 0.28 * n_heads), 9.0), min(1.6 + 0.17 * n_layers, 8.0))
    ax = fig.add_subplot()
    im = ax.imshow(t, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(0, n_heads, max(1, n_heads // 8)))
    ax.set_yticks(range(0, n_layers, max(1, n_layers // 10)))
    ax.set_title(title)
    bar = fig.colorbar(im, ax=ax)
    bar.set_label(unit)
    return to_svg(fig)


def attention_svg_path(outputs: Sequence[Any]) -> Any:
    """Where ``analyze --attention`` writes its SVG: next to the first given output file
    (``<stem>.attention.svg``), else ``attention_entropy.svg`` in the working directory."""
    from pathlib import Path

    for out in outputs:
        if out is not None:
            p = Path(out)
            return p.with_name(p.stem + ".attention.svg")
    return Path("attention_entropy.svg")


def report_attention(
    backend: Any, prompt: str, trace: Any, config: Any, console: Any, svg_path: Any
) -> dict[str, Any]:
    """``entrolab analyze --attention``: the attention entropy of prompt + reply, as a heatmap
    SVG at ``svg_path`` and a terminal summary (per-layer means, the lowest-entropy heads).

    Args:
        backend: an in-process backend (capability ``torch_module``).
        prompt: the user prompt; trace: the reply (:class:`~entrolab.types.Trace`).
        config: the :class:`~entrolab.config.GenerationConfig` the reply was made with (its chat
            template and system prompt decide the prompt tokens).
    Returns:
        the :func:`attention_summary` dict plus ``"svg"`` (the path) and ``"tokens"`` (T).
    """
    from pathlib import Path

    from rich.table import Table

    ids = list(
        backend.prompt_ids(
            prompt, chat_template=config.chat_template, system_prompt=config.system_prompt
        )
    ) + [int(i) for i in trace.token_ids.tolist()]
    captured = sequence_attention_entropy(backend, ids)
    summary = attention_summary(captured)
    n_layers, n_heads = summary["table"].shape
    path = Path(svg_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    title = f"attention entropy per head, {backend.name}\n{len(ids)} tokens (prompt + reply)"
    path.write_text(attention_heatmap_svg(summary["table"], title=title), encoding="utf-8")
    table = Table(
        "layer", "mean entropy (nats)", "mean H / log(i+1)", "lowest head",
        title=f"attention entropy: {n_layers} layers × {n_heads} heads, {len(ids)} tokens; "
        "means over heads and queries",
    )  # fmt: skip
    for row in summary["layers"]:
        table.add_row(
            str(row["layer"]), f"{row['entropy']:.3f}", f"{row['normalized']:.3f}",
            str(row["lowest_head"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        "lowest normalised entropy: "
        + "; ".join(
            f"L{h['layer']} H{h['head']} {h['normalized']:.3f} ({h['entropy']:.2f} nats, "
            f"{h['first_mass']:.0%} of attention on the first token)"
            for h in summary["lowest_heads"]
        ),
        soft_wrap=True,
    )
    console.print(f"attention heatmap written to [bold]{path}[/bold]")
    return {**summary, "svg": path, "tokens": len(ids)}
