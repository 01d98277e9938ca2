"""SaySelf stage 1: targets from self-consistency by hand, parsed back by the landed confidence
parser; LoRA SFT lowers the loss on its data, leaves the base weights alone, saves safetensors."""

from __future__ import annotations

import pytest
import torch

from entrolab.backends import HFBackend
from entrolab.errors import EntrolabError
from entrolab.estimators.reflexive import parse_confidence
from entrolab.inference.sayself import SftExample, lora_sft, sayself_examples, sayself_target
from entrolab.models import tiny_model
from entrolab.tasks import load_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_targets_by_hand() -> None:
    chains = ["2+5 is \\boxed{7}", "\\boxed{7}", "\\boxed{9}", "no idea", "\\boxed{8}"]
    ex = sayself_target(chains, ["7", "7", "9", None, "8"])
    # majority 7 in 2 of 5 chains → share 0.4 → k = round(4.0) = 4; the others listed by count
    # then name; the first chain with the majority answer is the body
    assert ex.confidence == pytest.approx(0.4)
    assert ex.target == (
        "2+5 is \\boxed{7}\nConfidence: 4/10\nReason: I also considered 8 (1 of 5) and 9 (1 of 5)."
    )
    assert parse_confidence(ex.target, allow_bare=False) == pytest.approx(0.4)
    # unanimous; a lone answer among failures (1 of 8 → k = max(1, round(1.25)) = 1)
    assert sayself_target(["a 3"] * 2, ["3", "3"]).target.endswith("All 2 of my attempts agree.")
    lone = sayself_target(["x"] * 7 + ["\\boxed{3}"], [None] * 7 + ["3"])
    assert (
        "Confidence: 1/10" in lone.target
        and "7 of my 8 attempts gave no clear answer" in lone.target
    )
    assert sayself_target(["?"], [None]) is None
    with pytest.raises(EntrolabError, match="one answer key per chain"):
        sayself_target(["a"], [])


def test_lora_sft_lowers_the_loss_and_keeps_base_weights(tmp_path) -> None:
    model, tok = tiny_model(seed=1)
    backend = HFBackend(model, tok, name="tiny-sft")
    base = {k: v.clone() for k, v in model.state_dict().items()}
    ex = [SftExample("What is 2+5?", "\\boxed{7}\nConfidence: 9/10\nReason: All agree.", 0.9)]
    losses = lora_sft(backend, ex, steps=30, lr=2e-2, r=4, batch_size=1, out=tmp_path / "ad")
    assert losses[-1] < 0.7 * losses[0]
    peft_model = backend.torch_model()
    for name, p in peft_model.named_parameters():
        if "lora_" not in name:
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if key in base:
                torch.testing.assert_close(p.detach(), base[key])
    assert (tmp_path / "ad" / "adapter_model.safetensors").is_file()
    with pytest.raises(EntrolabError, match="no SFT examples"):
        lora_sft(backend, [])


def test_examples_skip_unparseable_items(tiny_backend) -> None:
    task = load_task("arithmetic", level=1)
    # the random tiny model never writes a number-bearing reply that parses → no examples
    ex = sayself_examples(tiny_backend, task, task.items(2, seed=0), samples=2, max_new_tokens=4)
    assert all(0 < e.confidence <= 1 and "Confidence:" in e.target for e in ex)
