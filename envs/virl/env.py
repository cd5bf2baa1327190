"""The V-IRL navigation Gymnasium environment (`sftrl/VIRL-v0`); the class docstring is its manual.

import gymnasium, envs
env = gymnasium.make("sftrl/VIRL-v0", variant="rule_ood", modality="text")
obs, info = env.reset(seed=0)
while True:  # the expert walks the route, one action per rail point
    obs, reward, terminated, truncated, info = env.step(env.unwrapped.oracle_action())
    if terminated or truncated:
        break
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs import VIRL_MAX_EPISODE_STEPS, spaces
from envs.arguments import check_common_arguments, check_episode_bound
from envs.spaces import MAX_ANSWER_CHARS, ChatEnv, Modality, Variant
from envs.splits import EVAL_PERCENT, Split, in_split
from envs.virl.city import generate_city
from envs.virl.instructions import numbered
from envs.virl.observation import history_text, picture_observation
from envs.virl.oracle import oracle_answer
from envs.virl.prompt import MAX_PROMPT_CHARS, feedback_prompt, system_prompt, task_prompt
from envs.virl.render import DEFAULT_VIEW_PX, picture_shape, render_point
from envs.virl.route import MAX_INTERMEDIATE, MAX_TURNS, Route, synthetic_route
from envs.virl.styles import OOD_STYLES, TRAINING_STYLE, Style
from envs.virl.verifier import RewardTable, judge

VARIANTS = ("id", "rule_ood", "visual_ood")
#: visual_ood city i has seed OOD_CITY_SEED_BASE + i (never the training city's seed).
OOD_CITY_SEED_BASE = 1_000_000
_MAX_POINTS = 1 + (MAX_TURNS + 1) * (MAX_INTERMEDIATE + 1)


class VirlEnv(ChatEnv):
    """V-IRL navigation: follow route directions through a city, one action per rail point.

    ## Description
    The open-world navigation task of "SFT Memorizes, RL Generalizes" (Chu et al., 2025), after
    V-IRL: the policy gets numbered route directions ("First, turn slightly left to face
    northeast. Move forward until you reach the next intersection where Chase Bank is on your
    right. ...") and, at each point of the route's rail, an observation; it answers with the
    action to take there. V-IRL-L observes landmark sentences; V-IRL-VL a 2x2 street-view
    picture (front, right / back, left). Cities are procedural (seeded street graphs, landmarks,
    styles); `route_file` loads real V-IRL routes instead (`envs.virl.real_data`).

    ## Action Space
    The policy's raw text (`str`); `step` never raises on one. Declared as
    `Text(max_length=4096, min_length=0, charset=string.printable)`. The answer is one JSON object
    with `current observation`, `current instruction` and `action`, e.g.
    `{"current observation": "No landmarks nearby", "current instruction": "Move forward until
    you reach the next intersection.", "action": "forward()"}`. Actions: `forward()`, `stop()`,
    `turn_direction(x)` with x a compass direction (north, northeast, ..., northwest) or, for
    `rule_ood`, left, right, slightly left, slightly right. Whitespace and case are ignored.

    ## Observation Space
    `Dict(messages=ChatMessages)`, plus `image=Box(0, 255, (H, W, 3), uint8)` for
    `modality="image"` (H, W = `render.picture_shape(view_px)`, 702 x 644 by default). Messages:
    a system turn and the task turn for the current rail point (directions, action space, the
    observation-action history "O_1: ... A_1: ..."; with an image the current observation points
    at the picture, adding "You observe an intersection" at one); after a wrong answer, that
    answer and a "You failed this trial because ..." turn follow. With an image, the first user
    content is `[{"type": "image"}, {"type": "text", "text": ...}]`. Texts: ASCII, <= 8192
    characters.

    ## Starting State
    The seed picks the city (the training city for id/rule_ood; one of `ood_cities` other cities,
    each with an OOD style and `routes_per_ood_city` fixed routes, for visual_ood), a route with
    2-5 turns between two places of the env's `split`, the initial heading, and 0-4 intermediate
    points per leg, all with `self.np_random`.

    ## Rewards
    | outcome | reward |
    |---|---|
    | action equals the expert action (agent moves on; `stop()` at the destination ends it) | +1 |
    | wrong action (also: no JSON object, no string `action`) | -1 |
    | wrong action and `current observation` claims/denies an intersection wrongly | -1.5 |

    ## Episode End
    - Termination: a correct `stop()` at the destination (`success=True`).
    - Truncation: the `max_attempts`-th wrong answer at the same rail point.
    The registration's `max_episode_steps` (256) is a safety net: `max_attempts` times the longest
    route's rail points may not exceed it.

    ## Information
    `expected_action`, `observation_text` (full text observation of the current point),
    `instruction_index` (1-based sentence that applies), `point_index`, `n_points`, `attempt`
    (answers given at the current point), `success`, `correct_actions`, `actions` (per-step
    accuracy = correct_actions / actions), `feedback` ("" unless the last answer was wrong),
    `variant`, `city`, and the evaluation counts `eval_hits` / `eval_trials` (metric -> count;
    evaluation reports sum(hits) / sum(trials) over episodes): `step_accuracy`, correct_actions of
    actions, every policy call counted (the one that ends a truncated route included).

    ## Arguments
    - `variant`: "id" (absolute turns, training city), "rule_ood" (relative turns),
      "visual_ood" (image only: other cities and styles).
    - `modality`: "text" or "image".
    - `split` ("all"): the held-out split of routes (`envs.splits`; a route is its city seed,
      start place and destination place, `route.route_split_key`; about 20% are "eval"). "train"
      draws training routes only, "eval" held-out ones only, "all" every route (the paper's
      no-split protocol; the same episodes for the same seed as before splits existed).
      visual_ood cities are never trained on: all their routes are "eval", so visual_ood takes
      "eval" or "all", and split="train" needs `city_seed` below 1,000,000 (the visual_ood city
      seeds). Real routes (`route_file`) split by their start and destination geocodes. Drivers
      pass "train" for RL training and SFT export, "eval" for evaluation.
    - `city_seed` (0), `city_size` (8: intersections per side), `ood_cities` (9),
      `routes_per_ood_city` (4), `view_px` (320: size of one view), `max_attempts` (2; times the
      longest route's rail points at most 256, so at most 8 on synthetic routes), `rewards`
      (`RewardTable`), `route_file` / `pano_dir` (real V-IRL data), `render_mode` (None or
      "rgb_array").

    ## Version History
    - v0: initial version; held-out `split` by route; the VL observation keeps the intersection cue.
    """

    def __init__(
        self,
        variant: Variant = "id",
        modality: Modality = "text",
        *,
        split: Split = "all",
        city_seed: int = 0,
        city_size: int = 8,
        ood_cities: int = 9,
        routes_per_ood_city: int = 4,
        view_px: int = DEFAULT_VIEW_PX,
        max_attempts: int = 2,
        rewards: RewardTable | None = None,
        route_file: str | None = None,
        pano_dir: str | None = None,
        render_mode: str | None = None,
    ):
        _check_arguments(
            variant, modality, split=split, city_seed=city_seed, max_attempts=max_attempts, view_px=view_px,
            render_mode=render_mode, ood_cities=ood_cities, routes_per_ood_city=routes_per_ood_city,
        )  # fmt: skip
        self.variant, self.modality, self.split, self.view_px = variant, modality, split, view_px
        # visual_ood routes are all evaluation routes, so its "eval" split is all of them.
        self._route_split: Split = "all" if variant == "visual_ood" else split
        self.city_seed, self.city_size = city_seed, city_size
        self.ood_cities, self.routes_per_ood_city = ood_cities, routes_per_ood_city
        self.max_attempts, self.rewards, self.render_mode = max_attempts, rewards or RewardTable(), render_mode
        self.real_routes = None
        if route_file is not None:
            if variant == "visual_ood":  # file routes share the training look: nothing visually OOD
                raise ValueError(
                    "variant='visual_ood' draws its own OOD cities; route_file serves id and rule_ood only"
                )
            from envs.virl.real_data import VirlRoutes

            self.real_routes = VirlRoutes.from_virl_files(route_file, pano_dir)
            if modality == "image" and pano_dir is None:
                raise ValueError("modality='image' with route_file needs pano_dir (the panorama folder)")
            self._real_indices = [
                i for i, real in enumerate(self.real_routes.routes) if in_split(real.split_key, self._route_split)
            ]
            if not self._real_indices:
                raise ValueError(
                    f"{route_file} has no route in split={split!r} ({len(self.real_routes)} routes, about "
                    f"{EVAL_PERCENT}% of them 'eval'); use split='all' or a file with more routes"
                )
        points = self.real_routes.max_points if self.real_routes else _MAX_POINTS
        check_episode_bound(max_attempts, points=points, max_episode_steps=VIRL_MAX_EPISODE_STEPS)
        self.action_space = spaces.answer_space()
        self.observation_space = spaces.chat_observation_space(
            max_prompt_chars=MAX_PROMPT_CHARS,
            max_attempts=max_attempts,
            image_shape=picture_shape(view_px) if modality == "image" else None,
        )
        self._route: Route | None = None
        self._style: Style = TRAINING_STYLE
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Draw a route (the seed picks it; no options) and return the first observation and info."""
        super().reset(seed=seed)
        if options:
            raise ValueError(f"VirlEnv.reset takes no options (got {sorted(options)}); the seed picks the route")
        self._route, self._style = self._draw_route()
        self._point, self._attempt, self._correct, self._actions = 0, 0, 0, 0
        self._history: list[tuple[str, str]] = []
        self._done = False
        self._start_point()
        return self._observation(), self._info(success=False, feedback="")

    def _draw_route(self) -> tuple[Route, Style]:
        rng = self.np_random
        if self.real_routes is not None:
            index = self._real_indices[int(rng.integers(len(self._real_indices)))]
            return self.real_routes.route(index, rng), TRAINING_STYLE
        if self.variant != "visual_ood":
            city = generate_city(self.city_seed, cols=self.city_size, rows=self.city_size)
            return synthetic_route(city, rng, rng, split=self._route_split), TRAINING_STYLE
        k, r = int(rng.integers(self.ood_cities)), int(rng.integers(self.routes_per_ood_city))
        city = generate_city(OOD_CITY_SEED_BASE + k, cols=self.city_size, rows=self.city_size)
        # The route is fixed per (city, index), as in VLN-mini; the rail still varies per episode.
        plan_rng = np.random.default_rng([city.seed, r])
        return synthetic_route(city, plan_rng, rng), OOD_STYLES[k % len(OOD_STYLES)]

    def _start_point(self) -> None:
        """Fresh conversation (and picture) for the current rail point."""
        point = self._route.points[self._point]
        picture = self.modality == "image"
        current = picture_observation(point.view.is_intersection) if picture else point.observation_text
        task = task_prompt(
            numbered(self._route.instructions),
            history_text(self._history, current),
            relative_turns=self.variant == "rule_ood",
            picture=picture,
        )
        self._messages = spaces.opening_messages(system_prompt(), task, with_image=picture)
        self._image = self._picture() if picture else None

    def _picture(self) -> np.ndarray:
        point = self._route.points[self._point]
        if self.real_routes is not None:
            return self.real_routes.picture(point, view_px=self.view_px)
        return render_point(point.view, self._style, view_px=self.view_px).image

    def step(self, action: str):
        """Judge the action at the current rail point; a right one moves on, a wrong one gets feedback."""
        if self._done:
            raise RuntimeError("the episode is over (or was never started); call reset() before step()")
        point = self._route.points[self._point]
        expected = self._route.expected_action(self._point, self.variant)
        verdict = judge(action, expected_action=expected, observation_text=point.observation_text, rewards=self.rewards)
        self._actions += 1
        self._attempt += 1
        terminated = truncated = False
        if verdict.correct:
            self._correct += 1
            terminated = point.kind == "stop"
            if terminated:
                self._messages = [*self._messages, {"role": "assistant", "content": action[:MAX_ANSWER_CHARS]}]
            else:
                self._history.append((point.observation_text, expected))
                self._point, self._attempt = self._point + 1, 0
                self._start_point()
        else:
            # The echo is clipped to the space's bound; longer answers were judged wrong unread.
            answer = action[:MAX_ANSWER_CHARS] if isinstance(action, str) else ""
            self._messages = [
                *self._messages,
                {"role": "assistant", "content": answer},
                {"role": "user", "content": feedback_prompt(verdict.feedback)},
            ]
            truncated = self._attempt >= self.max_attempts
        self._done = terminated or truncated
        return (
            self._observation(),
            verdict.reward,
            terminated,
            truncated,
            self._info(success=terminated, feedback=verdict.feedback),
        )

    def _observation(self) -> dict[str, Any]:
        return spaces.chat_observation(self._messages, self._image)

    def _info(self, *, success: bool, feedback: str) -> dict[str, Any]:
        point = self._route.points[self._point]
        return {
            "expected_action": self._route.expected_action(self._point, self.variant),
            "observation_text": point.observation_text, "instruction_index": point.instruction_index,
            "point_index": self._point, "n_points": len(self._route.points), "attempt": self._attempt,
            "success": success, "correct_actions": self._correct, "actions": self._actions,
            "feedback": feedback, "variant": self.variant, "city": self._route.city,
            "eval_hits": {"step_accuracy": self._correct}, "eval_trials": {"step_accuracy": self._actions},
        }  # fmt: skip

    def oracle_action(self) -> str:
        """The correct answer at the current rail point (observation, instruction, action)."""
        if self._route is None:
            raise RuntimeError("no route yet; call reset() before oracle_action()")
        return oracle_answer(self._route, self._point, variant=self.variant)

    def render(self) -> np.ndarray | None:
        """The street-view picture of the current point (`render_mode="rgb_array"`), or None."""
        if self.render_mode != "rgb_array" or self._route is None:
            return None
        return self._image if self._image is not None else self._picture()


def _check_arguments(
    variant, modality, *, split, city_seed, max_attempts, view_px, render_mode, ood_cities, routes_per_ood_city
) -> None:
    """Raise ValueError naming the bad constructor argument and the fix."""
    check_common_arguments(
        variant, modality, variants=VARIANTS, split=split, max_attempts=max_attempts, default_attempts=2,
        render_mode=render_mode,
    )  # fmt: skip
    if split == "train" and variant == "visual_ood":
        raise ValueError("visual_ood cities are never trained on (all their routes are 'eval'); use split='eval'")
    if split == "train" and city_seed >= OOD_CITY_SEED_BASE:
        raise ValueError(
            f"city_seed={city_seed} is a visual_ood city seed (>= {OOD_CITY_SEED_BASE}), never trained on; "
            f"use a city_seed below {OOD_CITY_SEED_BASE} with split='train'"
        )
    if not isinstance(view_px, int) or not 64 <= view_px <= 2048:
        raise ValueError(f"view_px={view_px!r} must be an int in [64, 2048], e.g. 320")
    if ood_cities < 1 or routes_per_ood_city < 1:
        raise ValueError(f"ood_cities={ood_cities} and routes_per_ood_city={routes_per_ood_city} must be >= 1")
