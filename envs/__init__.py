"""sftrl's Gymnasium environments, registered by id on import.

Entry points are strings, so `import envs` loads no environment module (no Pillow, no tables):
`gymnasium.make("sftrl/GeneralPoints-v0", variant="id", modality="text")` imports the class on
first use. Each environment adds one `register` call below.
"""

from gymnasium.envs.registration import register

register(id="sftrl/GeneralPoints-v0", entry_point="envs.general_points.env:GeneralPointsEnv")
register(id="sftrl/VIRL-v0", entry_point="envs.virl.env:VirlEnv")
