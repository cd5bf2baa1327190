"""sftrl's Gymnasium environments, registered by id on import.

Entry points are strings, so `import envs` loads no environment module (no Pillow, no tables):
`gymnasium.make("sftrl/GeneralPoints-v0", variant="id", modality="text")` imports the class on
first use. Each environment adds one `register` call below.

Each registration declares `max_episode_steps`, a hard bound on policy calls per episode (the
`TimeLimit` wrapper truncates there). It is a safety net, not the attempt budget: the envs
truncate themselves after their `max_attempts`, and their constructors reject argument sets
that could reach more calls than the bound.
"""

from gymnasium.envs.registration import register

#: GeneralPoints: one policy call per attempt, so `max_attempts` may be at most this.
GENERAL_POINTS_MAX_EPISODE_STEPS = 32
#: V-IRL: up to `max_attempts` calls per rail point (a synthetic route has at most 31 points).
VIRL_MAX_EPISODE_STEPS = 256

register(
    id="sftrl/GeneralPoints-v0",
    entry_point="envs.general_points.env:GeneralPointsEnv",
    max_episode_steps=GENERAL_POINTS_MAX_EPISODE_STEPS,
)
register(id="sftrl/VIRL-v0", entry_point="envs.virl.env:VirlEnv", max_episode_steps=VIRL_MAX_EPISODE_STEPS)
