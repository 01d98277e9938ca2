"""The preallocated KV cache behaves exactly like transformers' DynamicCache."""

import torch
from transformers import DynamicCache

from entrolab.backends.decode import pad_batch, preallocated_cache
from entrolab.models import tiny_model


def test_preallocated_cache_matches_dynamic_cache_through_growth_and_row_selection():
    model, _ = tiny_model(seed=0)
    ours = preallocated_cache(model.config, capacity=3)  # forces two re-allocations below
    ref = DynamicCache(config=model.config)
    g = torch.Generator().manual_seed(0)
    layers, kv_heads, head_dim = model.config.num_hidden_layers, 2, 16
    for step, (rows, new) in enumerate([(4, 2), (4, 1), (4, 5), (4, 1)]):
        for layer in range(layers):
            k = torch.randn(rows, kv_heads, new, head_dim, generator=g)
            v = torch.randn(rows, kv_heads, new, head_dim, generator=g)
            a = ours.update(k, v, layer)
            b = ref.update(k, v, layer)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), (step, layer)
    keep = torch.tensor([2, 0])
    ours.reorder_cache(keep)
    ref.reorder_cache(keep)
    k = torch.randn(2, kv_heads, 1, head_dim, generator=g)
    for layer in range(layers):
        a, b = ours.update(k, k, layer), ref.update(k, k, layer)
        assert torch.equal(a[0], b[0]) and a[0].shape == (2, kv_heads, 10, head_dim)
    assert ours.get_seq_length() == ref.get_seq_length() == 10


def test_left_padding_puts_every_row_last_token_in_the_last_column():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_right_padding_keeps_positions_from_zero():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=9, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
