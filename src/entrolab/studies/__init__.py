"""Measurement studies: small, self-contained experiments that reproduce (or fail to reproduce)
a paper's qualitative claim with error bars.

``studies`` sits above ``inference`` / ``rl`` and below ``cli`` in the layering; importing it has
no side effects, and each study module is imported on its own (``entrolab.studies.mutual_info``).
"""
