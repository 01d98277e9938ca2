"""The policy to train: loaded from ``config.model`` (or given), optionally with LoRA adapters,
and the context in which it stands in for the frozen reference model.
"""

from __future__ import annotations

from contextlib import nullcontext

from entrolab.errors import EntrolabError
from entrolab.rl.config import TrainConfig

__all__ = ["build_policy", "reference_context"]


def build_policy(
    config: TrainConfig, task, model=None, tokenizer=None, log=None, sft_dir=None, on_sft_step=None
):
    """(policy module, tokenizer, peft model or None) for ``config.model``.

    ``sft_dir``/``on_sft_step``: where the proxy SFT checkpoints (it resumes from there) and a
    ``(done, steps)`` progress callback (see :func:`entrolab.rl.proxy.sft_model`).

    ``model.name``: ``"tiny"`` → :func:`entrolab.models.tiny_model` (seed = ``config.seed``);
    ``"proxy"`` → the SFT'd proxy model (:func:`entrolab.rl.proxy.sft_model`); anything else →
    :func:`entrolab.models.load_model`. With LoRA the adapters are injected with ``peft`` and the
    returned policy is the injected base model (adapters active, only they trainable).
    """
    if model is None:
        name = config.model.name
        if name == "tiny":
            from entrolab.models import tiny_model

            model, tokenizer = tiny_model(seed=config.seed)
        elif name == "proxy":
            from entrolab.rl.proxy import ProxySumTask, sft_model

            if not isinstance(task, ProxySumTask):
                raise EntrolabError(
                    "model.name 'proxy' is trained on the proxy task: set task.spec: proxy"
                )
            model, tokenizer, _info = sft_model(
                config.sft, task, log=log, state_dir=sft_dir, on_step=on_sft_step
            )
        else:
            from entrolab.models import load_model

            loaded = load_model(name, dtype=config.model.dtype)
            model, tokenizer = loaded.model, loaded.tokenizer
    elif tokenizer is None:
        raise EntrolabError("pass the tokenizer together with the model")
    lora = config.model.lora
    if not lora.enabled:
        return model.eval(), tokenizer, None
    try:
        import peft
    except ImportError:
        raise EntrolabError(
            "model.lora.enabled needs the peft package: pip install peft (or disable LoRA)"
        ) from None
    peft_model = peft.get_peft_model(
        model,
        peft.LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=0.0,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    return peft_model.get_base_model().eval(), tokenizer, peft_model


def reference_context(peft_model):
    """Context in which the policy computes the *reference* log-probs: adapters disabled for a
    LoRA policy (the frozen base model is the reference); a no-op otherwise."""
    return peft_model.disable_adapter() if peft_model is not None else nullcontext()
