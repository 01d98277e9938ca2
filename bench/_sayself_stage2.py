"""SaySelf stage 2 for ``bench/learned_sayself.py``: RL with the Brier confidence reward from the
merged stage-1 model, through the landed trainer (:class:`entrolab.rl.trainer.Trainer`, the one
``entrolab train`` runs) configured from ``recipes/smollm_confidence.yaml``.

What the recipe is changed to (:func:`stage2_config`):

* policy: the merged stage-1 model directory, LoRA (the recipe's r = 16, α = 32);
* task: arithmetic at the bench's level with the stage-1 prompt (:data:`~entrolab.inference.
  sayself.INSTRUCTIONS`; the recipe's own wording asks for k from 0 to 10 and no "Reason" line);
  the training pool is exactly the stage-1 fit items (seed 0, the first ``fit_n``); no held-out
  items inside the trainer (``eval_items: 0``): the bench evaluates the held-out items itself;
* reward: correctness (1/0) + ``confidence_reward`` {kind: brier, form: sayself} = 1 − 2(y − c)²
  (a reply without a stated confidence gets the minimum, −1), as in the recipe;
* grading: on the reply cut before its first "confidence"
  (:class:`entrolab.tasks.AnswerBeforeConfidence`, which the trainer applies by itself whenever a
  ``confidence_reward`` term is configured), as the bench and the stage-1 targets grade; uncut,
  ``extract`` would read "Confidence: 9/10" or a number of the "Reason" line as the answer;
* cost: one optimizer step per rollout batch (``mini_batches: 1``, so the PPO ratio is 1 and the
  clip inactive: on-policy GRPO), no entropy probe, no TensorBoard, a checkpoint every step.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "smollm_confidence.yaml"


def stage2_config(
    model_dir: str | Path, *, level: int, fit_n: int, steps: int, prompts_per_step: int = 8,
    group_size: int = 4, max_new_tokens: int = 96, lr: float = 1e-4, threads: int = 1,
    seed: int = 0,
):  # fmt: skip
    """The stage-2 :class:`~entrolab.rl.config.TrainConfig`: the recipe with the changes listed
    in the module docstring (``model_dir`` resolved to an absolute path, so a resumed run from
    another working directory compares equal)."""
    from entrolab.inference.sayself import INSTRUCTIONS
    from entrolab.rl.config import config_from_dict
    from entrolab.rl.config_io import read_recipe

    d = read_recipe(RECIPE)
    d.update(seed=seed, steps=steps, threads=threads, checkpoint_every=1, keep_checkpoints=1,
             tensorboard=False)  # fmt: skip
    d["model"]["name"] = str(Path(model_dir).resolve())
    d["task"].update(settings={"level": level, "instructions": INSTRUCTIONS}, train_items=fit_n,
                     eval_items=0, seed=0)  # fmt: skip
    d["rollout"].update(prompts_per_step=prompts_per_step, group_size=group_size,
                        max_new_tokens=max_new_tokens)  # fmt: skip
    d["algorithm"]["mini_batches"] = 1
    d["optim"]["lr"] = lr
    d["eval"]["every"] = 0
    d["calibration"]["every"] = 0
    d["monitor"]["probe_prompts"] = 0
    return config_from_dict(d)


def run_stage2(config, run_dir: Path, model_out: Path, log=print) -> dict[str, Any]:
    """Train (resuming from ``run_dir``'s checkpoint), merge the LoRA adapters and save the model
    to ``model_out`` (written under a temporary name, then renamed); returns the run's summary
    (also ``model_out/stage2.json``): steps, mean step seconds, first/last train reward,
    accuracy and mean stated confidence."""
    from entrolab.rl.checkpoint import read_metrics
    from entrolab.rl.trainer import Trainer

    trainer = Trainer(config, run_dir, log=log)  # grades the answer part (confidence_reward set)
    trainer.train()
    merged = trainer.peft_model.merge_and_unload()
    tmp = model_out.with_name(model_out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    trainer.tokenizer.save_pretrained(tmp)
    recs = [r for r in read_metrics(run_dir) if r.get("step", 0) >= 1]

    def ends(key: str) -> list[float | None]:
        vals = [r.get(key) for r in recs]
        return [vals[0], vals[-1]] if vals else [None, None]

    summary = {
        "format": "entrolab-sayself", "stage": 2, "steps": config.steps,
        "prompts_per_step": config.rollout.prompts_per_step,
        "group_size": config.rollout.group_size, "max_new_tokens": config.rollout.max_new_tokens,
        "lr": config.optim.lr, "threads": config.threads,
        "mean_step_s": statistics.fmean(r["time/step_s"] for r in recs) if recs else None,
        "reward": ends("train/reward"), "accuracy": ends("train/accuracy"),
        "stated_confidence": ends("reward/confidence_mean"),
        "confidence_parsed": ends("reward/confidence_parsed"),
    }  # fmt: skip
    (tmp / "stage2.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(model_out, ignore_errors=True)
    tmp.rename(model_out)
    return summary
