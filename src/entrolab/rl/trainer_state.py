"""A :class:`~entrolab.rl.trainer.Trainer`'s data, probe set, checkpoints and resume (a mixin):
the training pool and held-out split, the batch order (seeded epochs or a prompt selector),
the generation settings, the monitor's fixed probe set, and saving / restoring every piece of
state a resumed run needs to give the same metrics as an uninterrupted one."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text
from entrolab.rl import checkpoint as ckpt
from entrolab.rl.calibration_track import CalibrationTracker
from entrolab.rl.config import config_from_dict, config_to_dict
from entrolab.rl.config_io import config_diff
from entrolab.rl.rollout import Rollout, prompt_seeds, response_logprobs, sample_rollout
from entrolab.rl.selection import PromptSelector

__all__ = ["RESUMABLE_KEYS", "TrainerState"]

#: config keys that may change when a run is resumed (everything else must match).
RESUMABLE_KEYS = (
    "steps",
    "progress",
    "tensorboard",
    "threads",
    "checkpoint_every",
    "checkpoint_at_end",
    "keep_checkpoints",
)


class TrainerState:
    """Set-up and persistence of a Trainer (uses the attributes ``Trainer.__init__`` sets:
    ``config``, ``task``, ``run_dir``, ``policy``, ``optimizer``, ``backend``, ``monitor``,
    ``metrics``, ``explorer``, ``loss``, ``loss_state``, ``pad_id``, ``step``, ``log``)."""

    # ----------------------------------------------------------------------------- set-up
    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _make_data(self) -> None:
        c = self.config.task
        self.eval_items = self.task.items(c.eval_items, seed=c.eval_seed) if c.eval_items else []
        held_out = {it.prompt for it in self.eval_items}
        pool = [
            it for it in self.task.items(c.train_items, seed=c.seed) if it.prompt not in held_out
        ]
        if not pool:
            raise EntrolabError("every training item also appears in the held-out set")
        self.train_items = pool
        self._perms: dict[int, list[int]] = {}
        self.selector = PromptSelector(
            self.config.selection,
            len(pool),
            seed=self.config.seed,
            group_size=self.config.rollout.group_size,
        )
        self._batch_index: list[int] = []
        r = self.config.rollout
        self.calibration = CalibrationTracker(
            self.config.calibration,
            self.task,
            self.eval_items,
            {
                "max_new_tokens": r.max_new_tokens,
                "chat_template": r.chat_template,
                "system_prompt": r.system_prompt,
                "batch_size": r.batch_size,
            },
            seed=self.config.seed,
        )

    def _batch_items(self, step: int) -> list:
        n = self.config.rollout.prompts_per_step
        chosen = self.selector.choose(n, step)  # None: uniform, the shuffled epochs below
        if chosen is None:
            chosen = []
            for pos in range((step - 1) * n, step * n):
                epoch, idx = divmod(pos, len(self.train_items))
                if epoch not in self._perms:
                    perm = list(range(len(self.train_items)))
                    random.Random(f"{self.config.seed}|data|{epoch}").shuffle(perm)
                    self._perms = {epoch: perm}
                chosen.append(self._perms[epoch][idx])
        self._batch_index = chosen
        return [self.train_items[i] for i in chosen]

    def _gen_config(self, samples: int, temperature: float) -> GenerationConfig:
        r = self.config.rollout
        return GenerationConfig(
            num_samples=samples,
            max_new_tokens=r.max_new_tokens,
            temperature=temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            topk_logprobs=0,
            chat_template=r.chat_template,
            system_prompt=r.system_prompt,
            batch_size=r.batch_size,
        )

    def _config_dict(self) -> dict[str, Any]:
        return config_to_dict(self.config)

    def _resume_or_start(self) -> None:
        import yaml

        saved_cfg = self.run_dir / "config.yaml"
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is not None:
            old = config_to_dict(config_from_dict(yaml.safe_load(saved_cfg.read_text())))
            new = self._config_dict()
            diff = [k for k in config_diff(old, new) if k not in RESUMABLE_KEYS]
            if diff:
                raise EntrolabError(
                    f"{self.run_dir} holds a run with other settings ({', '.join(diff)}); "
                    "resume with the same recipe, or use another run directory"
                )
            state = ckpt.load_checkpoint(latest, model=self.policy, optimizer=self.optimizer)
            self.explorer.load(latest)
            self.step = int(state["step"])
            self.monitor.load_state_dict(state["monitor"])
            if state.get("selection") is not None:
                self.selector.load_state_dict(state["selection"])
            self.calibration.load_state_dict(state.get("calibration") or {})
            self.loss.pipeline.load_state_dict(state.get("advantage") or {})
            self.loss_state.load_state_dict(state.get("loss_state") or {})
            self.metrics.truncate_after(self.step)
            self.log(f"resumed from {latest.name} (step {self.step})")
        else:
            self.metrics.truncate_after(-1)
        atomic_write_text(saved_cfg, yaml.safe_dump(self._config_dict(), sort_keys=False))
        if self.config.monitor.probe_prompts:
            self.probe = self._load_or_make_probe()
            self._probe_h = self.probe_entropy()
            if self.step == 0:
                self.monitor.set_reference(self._probe_h)

    # -------------------------------------------------------------------------- the probe
    def _load_or_make_probe(self) -> Rollout:
        path = self.run_dir / "probe.json"
        if path.is_file() and self.step > 0:
            return Rollout.from_dict(json.loads(path.read_text()))
        m = self.config.monitor
        items = self.task.items(m.probe_prompts, seed=m.probe_seed)
        seeds = prompt_seeds(self.config.seed, 0, len(items), stream="probe")
        cfg = self._gen_config(m.probe_samples, self.config.rollout.temperature)
        probe = sample_rollout(self.backend, [it.prompt for it in items], cfg, seeds)
        atomic_write_text(path, json.dumps(probe.to_dict()))
        return probe

    def probe_entropy(self) -> torch.Tensor:
        """Token entropies [P, T] (nats) of the fixed probe responses under the current policy."""
        assert self.probe is not None
        out = response_logprobs(
            self.policy,
            self.probe,
            pad_id=self.pad_id,
            temperature=self.config.rollout.temperature,
            micro_batch_size=self.config.algorithm.micro_batch_size,
        )
        assert out.entropy is not None
        return out.entropy

    def save_checkpoint(self) -> Path:
        """Checkpoint the current step (weights, optimizer, RNG, data position, monitor)."""
        state = {
            "data_position": self.step * self.config.rollout.prompts_per_step,
            "monitor": self.monitor.state_dict(),
            "selection": self.selector.state_dict(),
            "calibration": self.calibration.state_dict(),
            "advantage": self.loss.pipeline.state_dict(),
            "loss_state": self.loss_state.state_dict(),
        }
        folder = ckpt.save_checkpoint(
            self.run_dir,
            self.step,
            model=self.policy,
            optimizer=self.optimizer,
            state=state,
            keep=self.config.keep_checkpoints,
        )
        self.explorer.save(folder)  # SPEAR replay buffer (safetensors + JSON)
        return folder
