"""A fast proxy task for RL on a laptop CPU, and the SFT warm-up of a tiny model on it.

**Task** (:class:`ProxySumTask`): "write the target as a sum of two numbers from the list".
Prompt ``"3 7 1 9 5 6:12="``; the valid replies are exactly ``"3+9"``, ``"9+3"``, ``"7+5"`` and
``"5+7"`` (two different list numbers whose sum is the target, either order; ``"6+6"`` is wrong:
6 is listed once). Targets are drawn among sums reachable by at least ``min_pairs`` different
pairs, so every prompt has several valid answers (≥ 2·min_pairs strings): RL has a choice to
sharpen and entropy something to lose. The decisive token is the first number (a "forking"
choice); the rest is arithmetic.

**SFT** (:func:`train_sft`, :func:`sft_model`): a tiny Llama with the byte tokenizer
(:func:`entrolab.models.tiny_model`) learns the task from sampled valid solutions, a fraction
``noise`` of them replaced by a random pair of list numbers (mostly invalid), so that its
accuracy is imperfect. Trained weights are cached by a hash of the settings.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text
from entrolab.tasks import Grade, Task, TaskItem

__all__ = [
    "ProxySumTask",
    "proxy_task",
    "sft_cache_key",
    "sft_examples",
    "sft_model",
    "solutions",
    "train_sft",
]

_REPLY_RE = re.compile(r"\s*(\d+)\s*\+\s*(\d+)\s*")
#: bump when the task or SFT procedure changes, so cached models are not reused.
_VERSION = 1
#: SFT steps between two resume checkpoints (a tiny model: a save takes milliseconds).
SFT_CHECKPOINT_EVERY = 100


def solutions(numbers: list[int], target: int) -> list[tuple[int, int]]:
    """All unordered pairs (a < b) of distinct list numbers with a + b == target."""
    return sorted(
        (min(a, b), max(a, b)) for a, b in itertools.combinations(numbers, 2) if a + b == target
    )


class ProxySumTask(Task):
    """Write a target as the sum of two numbers from a list (several valid answers).

    Args:
        list_size: how many distinct numbers each prompt lists (>= 4).
        max_value: numbers are drawn from 1..max_value.
        min_pairs: a target must be reachable by at least this many pairs (when some sum of
            the list is; otherwise the most-reachable sum is used).
    """

    name = "proxy"
    spec = "proxy"
    answer_kind = "text"

    def __init__(self, *, list_size: int = 6, max_value: int = 9, min_pairs: int = 2) -> None:
        super().__init__()
        if isinstance(list_size, bool) or not isinstance(list_size, int) or list_size < 4:
            raise EntrolabError(f"proxy list_size must be an integer >= 4, got {list_size!r}")
        if not isinstance(max_value, int) or max_value < list_size:
            raise EntrolabError(
                f"proxy max_value must be an integer >= list_size, got {max_value!r}"
            )
        if not isinstance(min_pairs, int) or min_pairs < 1:
            raise EntrolabError(f"proxy min_pairs must be an integer >= 1, got {min_pairs!r}")
        self.list_size, self.max_value, self.min_pairs = list_size, max_value, min_pairs
        self.settings = {"list_size": list_size, "max_value": max_value, "min_pairs": min_pairs}

    def make_item(self, index: int, seed: int) -> TaskItem:
        """Item ``index`` of ``seed`` (independent of how many items are drawn)."""
        rng = random.Random(f"proxy|{seed}|{index}|{self.list_size}|{self.max_value}")
        numbers = rng.sample(range(1, self.max_value + 1), self.list_size)
        counts = Counter(a + b for a, b in itertools.combinations(numbers, 2))
        need = min(self.min_pairs, max(counts.values()))
        target = rng.choice(sorted(s for s, c in counts.items() if c >= need))
        sols = solutions(numbers, target)
        prompt = " ".join(map(str, numbers)) + f":{target}="
        return TaskItem(
            id=f"proxy-s{seed}-{index:06d}",
            prompt=prompt,
            answer=f"{sols[0][0]}+{sols[0][1]}",
            meta={"numbers": numbers, "target": target, "solutions": [list(p) for p in sols]},
        )

    def _make_items(self, n: int, seed: int) -> list[TaskItem]:
        return [self.make_item(i, seed) for i in range(n)]

    def sft_examples(self, n: int, seed: int, noise: float) -> list[tuple[str, str]]:
        """SFT pairs for this task (:func:`sft_examples`)."""
        return sft_examples(self, n, seed, noise)

    def extract(self, item: TaskItem, response_text: str | None) -> str | None:
        """The pair in a reply of exactly the form ``a+b`` (spaces allowed), as ``"a+b"`` with
        a <= b (order-free, so equivalent replies share one answer key); None otherwise."""
        m = _REPLY_RE.fullmatch(response_text or "")
        if m is None:
            return None
        a, b = sorted((int(m.group(1)), int(m.group(2))))
        return f"{a}+{b}"

    def grade(self, item: TaskItem, response_text: str | None) -> Grade:
        """Correct iff the reply is ``a+b`` with a ≠ b, both in the list and a + b = target."""
        parsed = self.extract(item, response_text)
        if parsed is None:
            return Grade(False, None, "unparseable", 0.0)
        a, b = (int(x) for x in parsed.split("+"))
        numbers, target = item.meta["numbers"], int(item.meta["target"])
        ok = a != b and a in numbers and b in numbers and a + b == target
        return Grade(ok, parsed, "correct" if ok else "wrong", 1.0 if ok else 0.0)


def sft_examples(task: ProxySumTask, n: int, seed: int, noise: float) -> list[tuple[str, str]]:
    """``n`` (prompt, target reply) pairs: a uniformly chosen valid pair in random order, or,
    with probability ``noise``, two random distinct list numbers (usually invalid)."""
    rng = random.Random(f"proxy-sft|{seed}|{noise}")
    out = []
    for item in task.items(n, seed=10_000 + seed):
        if rng.random() < noise:
            a, b = rng.sample(item.meta["numbers"], 2)
        else:
            a, b = rng.choice(item.meta["solutions"])
            if rng.random() < 0.5:
                a, b = b, a
        out.append((item.prompt, f"{a}+{b}"))
    return out


def _encode(tokenizer, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, attention mask, and loss mask (True on reply tokens incl. EOS)."""
    eos = int(tokenizer.eos_token_id)
    seqs, masks = [], []
    for prompt, reply in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = [*tokenizer(reply, add_special_tokens=False)["input_ids"], eos]
        seqs.append(p + r)
        masks.append([False] * len(p) + [True] * len(r))
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(tokenizer.pad_token_id), dtype=torch.int64)
    attn = torch.zeros(len(seqs), width, dtype=torch.int64)
    loss_mask = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, (s, m) in enumerate(zip(seqs, masks, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
        loss_mask[i, : len(m)] = torch.tensor(m)
    return ids, attn, loss_mask


def train_sft(
    model,
    tokenizer,
    pairs: list[tuple[str, str]],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    loss: str = "ce",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = SFT_CHECKPOINT_EVERY,
    on_step: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Next-token cross-entropy on the reply tokens (prompt tokens masked), AdamW with a cosine
    schedule; batches drawn with a seeded generator. Returns the per-step mean loss (nats/token).
    The model is left in eval mode with no gradients (``.grad`` None), as a model loaded from
    the SFT cache.

    With ``checkpoint_dir``, the state (weights, AdamW moments, schedule, batch generator, losses
    so far) is saved there every ``checkpoint_every`` steps, and a call that finds a checkpoint
    there resumes from it: an interrupted SFT continues where it was saved and ends with the
    same weights and losses, bit for bit, as an uninterrupted one (safetensors + JSON, no
    pickle). ``on_step(steps_done, steps)`` is called after every step (a progress display).

    ``loss="entropy_sft"``: Light-IF's Entropy-SFT form, each token's cross-entropy weighted by
    the clamped entropy ratio of the model's own prediction
    (:func:`entrolab.rl.losses.tea_rl.entropy_sft_token_loss`; the returned loss is that
    weighted token-mean)."""
    if loss not in ("ce", "entropy_sft"):
        raise EntrolabError(f"sft loss must be 'ce' or 'entropy_sft', got {loss!r}")
    ids, attn, loss_mask = _encode(tokenizer, pairs)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / steps)).item())
    )
    model.train()
    losses: list[float] = []
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        losses = _load_sft_state(folder, model, opt, sched, gen, steps)
    for step in range(len(losses), steps):
        rows = torch.randint(0, len(pairs), (batch_size,), generator=gen)
        width = int(attn[rows].sum(-1).max())
        x, a, m = ids[rows, :width], attn[rows, :width], loss_mask[rows, :width]
        logits = model(input_ids=x, attention_mask=a, use_cache=False).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
        )
        mm = m[:, 1:].reshape(-1)
        if loss == "entropy_sft":
            from entrolab.rl.losses.tea_rl import entropy_sft_token_loss

            value, _ = entropy_sft_token_loss(logits, x[:, 1:], m[:, 1:])
        else:
            value = (nll * mm).sum() / mm.sum()
        opt.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(value.detach()))
        if folder is not None and checkpoint_every > 0 and (step + 1) % checkpoint_every == 0:
            _save_sft_state(folder, model, opt, sched, gen, losses)
        if on_step is not None:
            on_step(step + 1, steps)
    # no gradient may outlive SFT: the RL update accumulates into .grad (zeroed after each step),
    # so a leftover last-SFT-step gradient would make the first run differ from cached ones
    model.zero_grad(set_to_none=True)
    model.eval()
    return losses


def _save_sft_state(folder: Path, model, opt, sched, gen: torch.Generator, losses) -> None:
    """Write the SFT state after ``len(losses)`` steps to ``folder`` (built under a temporary
    name, then swapped in: a kill mid-save leaves the previous state)."""
    import shutil

    from safetensors.torch import save_file

    from entrolab.rl.checkpoint import optimizer_to_parts, trainable_state

    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / "model.safetensors"))
    tensors, meta = optimizer_to_parts(opt)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    save_file({"generator": gen.get_state()}, str(tmp / "rng.safetensors"))
    state = {"step": len(losses), "losses": losses, "scheduler": sched.state_dict()}
    (tmp / "state.json").write_text(json.dumps(state, allow_nan=False))
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _load_sft_state(folder: Path, model, opt, sched, gen: torch.Generator, steps: int):
    """Load the state :func:`_save_sft_state` wrote (or the previous one, if a save was cut
    between its two renames) into the objects; return the losses so far ([] when none)."""
    from safetensors.torch import load_file

    from entrolab.rl.checkpoint import load_trainable, optimizer_from_parts

    old = folder.with_name(folder.name + ".old")
    found = next((f for f in (folder, old) if (f / "state.json").is_file()), None)
    if found is None:
        return []
    state = json.loads((found / "state.json").read_text())
    if not 0 < state["step"] <= steps:
        raise EntrolabError(
            f"SFT checkpoint {found} is at step {state['step']} of a {steps}-step SFT; "
            f"delete {found} to start the SFT over"
        )
    load_trainable(model, load_file(str(found / "model.safetensors")))
    optimizer_from_parts(
        opt,
        load_file(str(found / "optimizer.safetensors")),
        json.loads((found / "optimizer.json").read_text()),
    )
    sched.load_state_dict(state["scheduler"])
    gen.set_state(load_file(str(found / "rng.safetensors"))["generator"])
    return [float(x) for x in state["losses"]]


def sft_cache_key(sft: dict[str, Any], task_settings: dict[str, Any]) -> str:
    """Hash of everything that determines the SFT weights."""
    from entrolab.rl.config import config_hash

    keep = {k: v for k, v in sft.items() if k != "cache"}
    if keep.get("loss", "ce") == "ce":  # the default: keys of models cached before the option
        keep.pop("loss", None)
    return config_hash(
        {"v": _VERSION, "sft": keep, "task": task_settings, "torch": torch.__version__}
    )


def sft_model(
    sft,
    task: ProxySumTask,
    *,
    cache_dir: Path | None = None,
    log=None,
    state_dir: str | Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
):
    """The tiny proxy model after SFT: loaded from the cache when present, else trained (and
    cached when ``sft.cache``). ``sft`` is an :class:`entrolab.rl.config.SFTConfig`.

    Training checkpoints every :data:`SFT_CHECKPOINT_EVERY` steps to ``state_dir/<key>``
    (default: ``<cache>/<key>/partial`` when ``sft.cache``, else none) and resumes from there, so
    an interrupted SFT loses at most that many steps and ends with the same weights; the
    checkpoint is deleted once the SFT is done. ``on_step(done, steps)``: progress.

    Returns ``(model, tokenizer, info)`` with ``info`` = {"key", "cached", "final_loss", …}.
    """
    from dataclasses import asdict

    from safetensors.torch import load_file, save_file

    from entrolab.models import cache_dir as default_cache
    from entrolab.models import tiny_model

    model, tok = tiny_model(
        hidden_size=sft.hidden_size,
        num_layers=sft.num_layers,
        num_heads=sft.num_heads,
        seed=sft.seed,
    )
    key = sft_cache_key(asdict(sft), task.settings)
    folder = (cache_dir or default_cache() / "rl-proxy") / key
    weights = folder / "model.safetensors"
    if sft.cache and weights.is_file():
        state = load_file(str(weights))
        params = dict(model.named_parameters())
        missing = sorted(set(params) - set(state))
        if missing:
            raise EntrolabError(
                f"cached proxy model {weights} lacks {missing[:3]}; delete {folder}"
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state[name])
        info = json.loads((folder / "info.json").read_text())
        return model.eval(), tok, {**info, "cached": True}
    if log is not None:
        log(f"SFT of the proxy model ({sft.steps} steps; cached afterwards under {folder})")
    pairs = task.sft_examples(sft.examples, sft.seed, sft.noise)
    partial = None
    if state_dir is not None:
        partial = Path(state_dir) / key
    elif sft.cache:
        partial = folder / "partial"
    losses = train_sft(
        model, tok, pairs, steps=sft.steps, batch_size=sft.batch_size, lr=sft.lr, seed=sft.seed,
        loss=getattr(sft, "loss", "ce"), checkpoint_dir=partial, on_step=on_step,
    )  # fmt: skip
    info = {"key": key, "final_loss": sum(losses[-20:]) / len(losses[-20:]), "steps": sft.steps}
    if sft.cache:
        folder.mkdir(parents=True, exist_ok=True)
        state = {n: p.detach().contiguous() for n, p in model.named_parameters()}
        tmp = folder / f".model.{id(model)}.tmp"
        save_file(state, str(tmp))
        tmp.replace(weights)
        atomic_write_text(folder / "info.json", json.dumps(info))
    if partial is not None:  # the SFT is done: its resume state is no longer needed
        import shutil

        shutil.rmtree(partial, ignore_errors=True)
    return model.eval(), tok, {**info, "cached": False}


def proxy_task(spec: str, settings: dict[str, Any] | None = None) -> Task:
    """The RL proxy task for ``spec``: ``"proxy"`` (:class:`ProxySumTask`) or
    ``"proxy_reasoning"`` (:class:`entrolab.rl.proxy_reasoning.ProxyReasoningTask`)."""
    settings = dict(settings or {})
    if spec == "proxy_reasoning":
        from entrolab.rl.proxy_reasoning import ProxyReasoningTask

        cls: type[ProxySumTask] = ProxyReasoningTask
    elif spec == "proxy":
        cls = ProxySumTask
    else:
        raise EntrolabError(f"unknown proxy task {spec!r}; known: proxy, proxy_reasoning")
    try:
        return cls(**settings)
    except TypeError as e:
        raise EntrolabError(f"bad {spec} task settings {settings}: {e}") from None
