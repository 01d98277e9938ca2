"""Tiny random-initialised causal LMs with a byte-level tokenizer, for fast tests.

The tokenizer maps each UTF-8 byte to one token (256 ids) plus three specials and a ChatML
chat template, so prompts, chat formatting, EOS and decoding behave like a real model's.
"""

from __future__ import annotations

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """A byte-level tokenizer: 256 byte tokens, then ``<|im_start|>``, ``<|im_end|>`` (EOS), ``<pad>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<pad>"]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_model(
    *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, seed: int = 0
):  # -> (LlamaForCausalLM, PreTrainedTokenizerFast)
    """A random-initialised Llama (about 0.1M parameters) and its byte tokenizer, in eval mode.

    The same ``seed`` gives the same weights. Vocabulary: 259 tokens.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        model = LlamaForCausalLM(config)
    # Scaled so step entropies spread over ~1-4 nats (default init: all near log V).
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(5.0)
    return model.eval(), tokenizer
