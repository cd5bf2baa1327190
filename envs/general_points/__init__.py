"""GeneralPoints: the arithmetic card game (text and vision-language), its verifier and oracle.

Light on import: the env class, Pillow rendering and the solution tables load from their own
modules (`envs.general_points.env`, `.render`, `.cards`). `oracle_answer` is re-exported here.
"""

from envs.general_points.oracle import oracle_answer

__all__ = ["oracle_answer"]
