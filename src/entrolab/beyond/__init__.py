"""Entropy and confidence beyond language models, on entrolab's shared primitives.

Submodules (imported on demand; importing this package loads nothing heavy):

* :mod:`~entrolab.beyond.stopping` — stopping rules over (prediction, confidence) streams and
  the Pareto-calibrated threshold (registry ``stopping_rules``);
* :mod:`~entrolab.beyond.alpharank` / :mod:`~entrolab.beyond.rgucb` — α-Rank and
  ResponseGraphUCB (Rowland et al. 2019) and an adapter that ranks strategies from noisy
  pairwise outcomes;
* :mod:`~entrolab.beyond.policy_cliff` — soft policies, their sensitivity and tie mass;
* :mod:`~entrolab.beyond.snn` — Dynamic Confidence for converted spiking networks.

Test-time adaptation lives in :mod:`entrolab.tta`.
"""
