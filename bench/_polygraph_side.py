"""LM-Polygraph side of bench/eval.py. Runs in its own environment (.venv-polygraph); imports no
entrolab code. Reads a JSON job, writes estimator values, greedy texts and the wall time."""

import json
import sys
import time

import torch
from lm_polygraph.defaults.register_default_stat_calculators import (
    register_default_stat_calculators,
)
from lm_polygraph.estimators import (
    LexicalSimilarity,
    MaximumSequenceProbability,
    MeanTokenEntropy,
    MonteCarloSequenceEntropy,
    Perplexity,
)
from lm_polygraph.utils.builder_enviroment_stat_calculator import (
    BuilderEnvironmentStatCalculator,
)
from lm_polygraph.utils.dataset import Dataset
from lm_polygraph.utils.generation_parameters import GenerationParameters
from lm_polygraph.utils.manager import UEManager
from lm_polygraph.utils.model import WhiteboxModel
from transformers import AutoModelForCausalLM, AutoTokenizer

job = json.load(open(sys.argv[1]))
torch.set_num_threads(job["threads"])
torch.manual_seed(job["seed"])
tok = AutoTokenizer.from_pretrained(job["model"])
base = AutoModelForCausalLM.from_pretrained(job["model"], attn_implementation="eager")
params = GenerationParameters(max_new_tokens=job["max_new_tokens"])
model = WhiteboxModel(base, tok, model_path=job["model"], generation_parameters=params)
estimators = {
    "msp": MaximumSequenceProbability(),
    "perplexity": Perplexity(),
    "mean_token_entropy": MeanTokenEntropy(),
    "lexical_similarity": LexicalSimilarity("rougeL"),
    "mc_sequence_entropy": MonteCarloSequenceEntropy(),
}
t0 = time.perf_counter()
man = UEManager(
    Dataset(job["prompts"], [""] * len(job["prompts"]), batch_size=job["batch_size"]),
    model,
    list(estimators.values()),
    builder_env_stat_calc=BuilderEnvironmentStatCalculator(model),
    available_stat_calculators=register_default_stat_calculators("Whitebox"),
    generation_metrics=[],
    ue_metrics=[],
    processors=[],
    ignore_exceptions=False,
    verbose=False,
    max_new_tokens=job["max_new_tokens"],
)
man()
seconds = time.perf_counter() - t0
values = {
    name: [float(v) for v in man.estimations[est.level, str(est)]]
    for name, est in estimators.items()
}
json.dump(
    {"seconds": seconds, "values": values, "greedy_texts": list(man.stats["greedy_texts"])},
    open(sys.argv[2], "w"),
)
