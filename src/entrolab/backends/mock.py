"""A backend with scripted logits, for unit tests and docs that need exact, model-free traces.

The script gives the logits of every step, either as a fixed tensor [T, V] (step t uses row t)
or as a function ``script(prompt_index, step, prefix_ids) -> logits [V]``. Sampling, filters,
seeds and statistics are the same code paths as :class:`~entrolab.backends.hf.HFBackend`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from entrolab.backends.base import Capabilities, ProgressFn
from entrolab.backends.decode import StepHook, StopStrings, call_step_hook
from entrolab.backends.sampling import process_logits, resolve_warper, sample_rows, seed_function
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.signals import token_statistics, truncation_statistics
from entrolab.types import Provenance, Trace, TraceBatch

Script = Callable[[int, int, list[int]], torch.Tensor]


class MockBackend:
    """Scripted-logits backend.

    Args:
        script: logits [T, V] shared by every prompt, or a callable
            ``(prompt_index, step, prefix_ids) -> logits [V]``.
        vocab: V token strings (default ``"<i>"``) used to build token pieces and text.
        eos_id: token id that ends a completion (None: only ``max_new_tokens`` / the script end).
    """

    def __init__(
        self,
        script: torch.Tensor | Script,
        *,
        vocab: Sequence[str] | None = None,
        eos_id: int | None = None,
        name: str = "mock",
    ) -> None:
        if isinstance(script, torch.Tensor):
            if script.dim() != 2:
                raise EntrolabError(f"scripted logits must be [T, V], got {tuple(script.shape)}")
            table = script.float()
            self.vocab_size = table.shape[1]
            self._steps: int | None = table.shape[0]
            self._script: Script = lambda _i, step, _prefix: table[step]
        else:
            if vocab is None:
                raise EntrolabError("a callable script needs `vocab` (its size fixes V)")
            self.vocab_size, self._steps, self._script = len(vocab), None, script
        self.vocab = (
            list(vocab) if vocab is not None else [f"<{i}>" for i in range(self.vocab_size)]
        )
        if len(self.vocab) != self.vocab_size:
            raise EntrolabError(
                f"vocab has {len(self.vocab)} strings but logits have V={self.vocab_size}"
            )
        self.eos_id = eos_id
        self.name = name
        self.capabilities = Capabilities(
            full_logits=True, max_topk=self.vocab_size, step_hooks=True, token_prompts=False
        )

    # ------------------------------------------------------- protocol: tokens
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` by greedy longest match over the vocabulary strings."""
        ids, i = [], 0
        by_len = sorted(range(self.vocab_size), key=lambda t: -len(self.vocab[t]))
        while i < len(text):
            t = next(
                (t for t in by_len if self.vocab[t] and text.startswith(self.vocab[t], i)), None
            )
            if t is None:
                raise EntrolabError(
                    f"text {text[i : i + 12]!r} cannot be spelled with the mock vocabulary"
                )
            ids.append(t)
            i += len(self.vocab[t])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """The concatenated vocabulary strings (the EOS token removed)."""
        return "".join(self.vocab[int(t)] for t in ids if int(t) != self.eos_id)

    def token_pieces(self, ids: Sequence[int]) -> list[str]:
        """Each token's vocabulary string."""
        return [self.vocab[int(t)] for t in ids]

    def prompt_ids(
        self, prompt: str, *, chat_template: bool = True, system_prompt: str | None = None
    ) -> list[int]:
        """Scripts ignore the prompt's tokens; a mock prompt has no token ids."""
        raise EntrolabError("MockBackend scripts logits per prompt index; it has no prompt ids")

    def score(
        self,
        prompts: Sequence[str],
        completions: Sequence[str | Sequence[int]],
        *,
        k: int = 20,
        chat_template: bool = True,
        system_prompt: str | None = None,
    ) -> TraceBatch:
        """Teacher-forced statistics of given completions under the script (step t sees the
        completion's first t tokens as its prefix)."""
        if len(prompts) != len(completions):
            raise EntrolabError(
                f"got {len(prompts)} prompts but {len(completions)} completions; pair them 1:1"
            )
        cfg = GenerationConfig(topk_logprobs=min(k, self.vocab_size))
        traces = []
        for i, (prompt, c) in enumerate(zip(prompts, completions, strict=True)):
            ids = self.encode(c) if isinstance(c, str) else [int(t) for t in c]
            if not ids:
                raise EntrolabError("a completion is empty; there is nothing to score")
            stats = [
                token_statistics(
                    self._script(i, t, ids[:t]).float().reshape(1, -1),
                    torch.tensor([ids[t]]),
                    cfg.topk_logprobs,
                )
                for t in range(len(ids))
            ]
            traces.append(self._trace(prompt, ids, stats, "scored", i, 0, cfg, cfg.seed, {}))
        return TraceBatch(tuple(traces))

    def generate(
        self,
        prompts: Sequence[str] | str,
        config: GenerationConfig | None = None,
        *,
        seeds: Sequence[int] | None = None,
        on_progress: ProgressFn | None = None,
        step_hook: StepHook | None = None,
        sample_offset: int = 0,
    ) -> TraceBatch:
        """One Trace per (prompt, sample), ordered by prompt then sample; ``seeds``,
        ``step_hook`` and ``sample_offset`` as in
        :meth:`HFBackend.generate <entrolab.backends.hf.HFBackend.generate>` (the hook sees one
        row at a time)."""
        config = config or GenerationConfig()
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or any(not p.strip() for p in prompts):
            raise EntrolabError("prompts must be a non-empty list of non-empty strings")
        if config.topk_logprobs > self.vocab_size:
            raise EntrolabError(
                f"topk_logprobs={config.topk_logprobs} exceeds the vocabulary size {self.vocab_size}"
            )
        if seeds is not None and len(seeds) != len(prompts):
            raise EntrolabError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        if sample_offset < 0:
            raise EntrolabError(f"sample_offset must be >= 0, got {sample_offset}")
        base_seed_of = seed_function(config.seed, seeds)
        warper = resolve_warper(config)
        steps = min(config.max_new_tokens, self._steps or config.max_new_tokens)
        traces = []
        stop = StopStrings(
            config.stop, config.stop_ignores_leading_whitespace, self.decode, self.decode
        )
        for i, prompt in enumerate(prompts):
            for s in range(sample_offset, sample_offset + config.num_samples):
                seed = base_seed_of(i, s)
                gen = torch.Generator().manual_seed(seed)
                row = torch.tensor([i * config.num_samples + s - sample_offset])
                ids: list[int] = []
                stats = []
                diag = torch.zeros(3, dtype=torch.float64)
                finish = "length"
                for step in range(steps):
                    raw = self._script(i, step, list(ids)).float().reshape(1, -1)
                    processed = process_logits(raw, config, warper)
                    if config.greedy:
                        chosen = raw.argmax(-1)
                    else:
                        chosen = sample_rows(processed, [gen])
                        kept = truncation_statistics(raw / config.temperature, processed)
                        diag += torch.cat([x.double() for x in kept])
                    source = raw if config.signals_from == "raw" else processed
                    stats.append(token_statistics(source, chosen, config.topk_logprobs))
                    ids.append(int(chosen))
                    if self.eos_id is not None and ids[-1] == self.eos_id:
                        finish = "eos"
                        break
                    if step_hook is not None and call_step_hook(step_hook, row, step, stats[-1]):
                        finish = "stopped"
                        break
                    done = torch.zeros(1, dtype=torch.bool)
                    if stop.hits(
                        torch.zeros(1, dtype=torch.int64), done, torch.tensor([ids]), step
                    ):
                        finish = "stop"
                        break
                extra = {}
                if not config.greedy:
                    m = (diag / max(len(ids), 1)).tolist()
                    extra = {
                        "kept_mean": m[0],
                        "retained_mass_mean": m[1],
                        "entropy_after_mean": m[2],
                    }
                traces.append(
                    self._trace(prompt, ids, stats, finish, i, s, config, seed, extra, stop)
                )
                if on_progress is not None:
                    on_progress(
                        len(traces), len(prompts) * config.num_samples, sum(map(len, traces))
                    )
        return TraceBatch(tuple(traces))

    def _trace(self, prompt, ids, stats, finish, i, s, config, seed, extra, stop=None) -> Trace:
        pieces = [self.vocab[t] for t in ids]
        text = "".join(p for t, p in zip(ids, pieces, strict=True) if t != self.eos_id)
        if finish == "stop" and stop is not None:
            text = stop.cut(text)
        cat = lambda name: torch.cat([getattr(x, name) for x in stats])  # noqa: E731
        return Trace(
            prompt=prompt,
            text=text,
            token_ids=ids,
            tokens=pieces,
            logprob=cat("logprob"),
            entropy=cat("entropy"),
            varentropy=cat("varentropy"),
            self_certainty=cat("self_certainty"),
            rank=cat("rank"),
            topk_ids=cat("topk_ids"),
            topk_logprobs=cat("topk_logprobs"),
            provenance=Provenance(logits=config.signals_from, vocab="full"),
            finish_reason=finish,
            prompt_index=i,
            sample_index=s,
            model=self.name,
            meta={"generation": config.to_dict(), "row_seed": seed, **extra},
        )
