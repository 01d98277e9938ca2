"""RL training config: YAML recipes, dotted overrides, and clear errors for bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from entrolab.errors import EntrolabError
from entrolab.rl.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_hash,
    config_to_dict,
    load_config,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_defaults_round_trip_through_dict_and_yaml(tmp_path):
    cfg = TrainConfig()
    data = config_to_dict(cfg)
    assert data["optim"]["betas"] == [0.9, 0.999]  # tuples become lists for YAML/JSON
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    again = load_config(path)
    assert config_to_dict(again) == data
    assert again.optim.betas == (0.9, 0.999)
    assert config_hash(data) == config_hash(config_to_dict(again))


def test_overrides_with_dotted_paths_and_yaml_values(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("steps: 5\nalgorithm:\n  loss: ppo_clip\n")
    cfg = load_config(
        path,
        [
            "algorithm.loss=kl_cov",
            "algorithm.loss_params.kl_cov_ratio=0.002",
            "optim.lr=1e-5",  # PyYAML reads "1e-5" as a string; float fields accept it
            "rollout.group_size=4",
            "model.lora.target_modules=[q_proj, v_proj]",
            "model.name=null",
            "task.settings.level=1",
        ],
    )
    assert cfg.steps == 5
    assert cfg.algorithm.loss == "kl_cov"
    assert cfg.algorithm.loss_params == {"kl_cov_ratio": 0.002}
    assert cfg.optim.lr == pytest.approx(1e-5, rel=0, abs=0)
    assert cfg.rollout.group_size == 4
    assert cfg.model.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.model.name is None
    assert cfg.task.settings == {"level": 1}


def test_apply_overrides_does_not_mutate_its_input():
    data = {"algorithm": {"loss": "ppo_clip"}}
    out = apply_overrides(data, ["algorithm.loss=kl_cov"])
    assert data == {"algorithm": {"loss": "ppo_clip"}}
    assert out == {"algorithm": {"loss": "kl_cov"}}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"stepz": 3}, "unknown setting stepz. Did you mean 'steps'?"),
        ({"algorithm": {"los": "x"}}, "unknown setting algorithm.los. Did you mean 'loss'?"),
        ({"model": {"lora": {"rank": 4}}}, "unknown setting model.lora.rank"),
        ({"steps": "ten"}, "steps must be an integer"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"steps": True}, "steps must be an integer"),
        ({"tensorboard": "yes"}, "tensorboard must be true or false"),
        ({"optim": {"lr": "fast"}}, "optim.lr must be a number"),
        ({"optim": {"lr": float("nan")}}, "optim.lr must be finite"),
        ({"optim": {"lr": 0}}, "lr must be > 0"),
        ({"optim": {"betas": [0.9]}}, "optim.betas must have 2 entries"),
        ({"algorithm": {"selection_scope": "global"}}, "'batch' | 'micro_batch'"),
        ({"algorithm": {"kl_estimator": "k4"}}, "kl_estimator must be one of"),
        ({"rollout": {"group_size": 1}}, "group_size must be >= 2"),
        # a tree of 1 root with no branch point: 1 × (1 + 0·2) = 1 row per group
        (
            {"rollout": {"group_size": 1}, "explore": {"mode": "tree", "points": 0}},
            "a tree rollout may use 1 root",
        ),
        ({"rollout": {"temperature": 0}}, "temperature must be > 0"),
        ({"rollout": "fast"}, "rollout must be a mapping"),
        ({"model": {"dtype": "int8"}}, "model.dtype must be one of"),
        ({"task": {"settings": [1]}}, "task.settings must be a mapping"),
        ({"eval": {"samples": 0}}, "samples must be >= 1"),
        ({"sft": {"hidden_size": 50, "num_heads": 4}}, "hidden_size % num_heads"),
        # 16 prompts x 8 completions = 128 sequences cannot be cut into 3 mini-batches
        ({"algorithm": {"mini_batches": 3}}, "mini_batches=3 must divide the 128 sequences"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(data, needle):
    with pytest.raises(EntrolabError) as err:
        config_from_dict(data)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("steps", "must look like section.key=value"),
        ("=3", "must look like section.key=value"),
        ("algorithm..loss=x", "must look like section.key=value"),
        ("steps.sub=3", "steps is a value, not a section"),
    ],
)
def test_malformed_overrides(override, needle):
    with pytest.raises(EntrolabError, match=needle):
        load_config({"steps": 3}, [override])


def test_recipe_errors(tmp_path):
    with pytest.raises(EntrolabError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(EntrolabError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(EntrolabError, match="mapping of settings at the top level"):
        load_config(listy)


@pytest.mark.parametrize("name", ["proxy_grpo.yaml", "smollm_grpo.yaml"])
def test_shipped_recipes_validate(name):
    cfg = load_config(RECIPES / name)
    assert cfg.steps >= 100
    assert cfg.rollout.group_size >= 2


def test_a_tree_rollout_may_branch_one_root():
    # ECHO's official group shape: 1 root per prompt, its branches and fresh fills make the
    # group: 1 × (1 + 1·7) = 8 rows
    cfg = config_from_dict(
        {"rollout": {"group_size": 1}, "explore": {"mode": "tree", "points": 1, "branches": 7}}
    )
    assert (cfg.rollout.group_size, cfg.explore.branches) == (1, 7)
