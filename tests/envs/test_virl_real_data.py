"""Real V-IRL route files: text routes and perspective views cut from panoramas (envs.virl.real_data).

The fixture is generated here in V-IRL's format: route_infos.json ([routes, count]),
gps_pano_mapping.pkl ({(lat, lng): pano_id}) and street_views/{pano_id}.jpg + .metadata.json.
"""

import json
import pickle

import gymnasium
import numpy as np
import pytest
from PIL import Image

import envs  # noqa: F401
from envs.splits import split_of
from envs.virl.real_data import VirlRoutes, parse_milestone_blocks, perspective_view
from envs.virl.render import DEFAULT_VIEW_PX, GAP_PX, picture_shape

COLOURS = {"north": (220, 30, 30), "east": (30, 200, 30), "south": (30, 30, 220), "west": (230, 220, 30)}
START = (40.7000, -74.0000)
MILESTONES = [(40.7006, -74.0000), (40.7006, -73.9992), (40.7000, -73.9992)]
BLOCKS = [
    ("0 (north)", "Chase Bank is on your right"),
    ("90 (east)", "Starbucks is on your front left"),
    ("180 (south)", "CVS Pharmacy is on your left"),
]
ROTATIONS = {"pano_a": 30.0, "pano_b": 0.0}


def _panorama(rotation: float, width=720, height=360) -> np.ndarray:
    """Each column coloured by the compass quarter it looks at, in V-IRL's column convention."""
    headings = (np.arange(width) / (width - 1) * 360.0 - rotation) % 360.0  # (W,)
    quarter = (((headings + 45.0) % 360.0) // 90.0).astype(int)
    palette = np.array([COLOURS[c] for c in ("north", "east", "south", "west")], np.uint8)
    return np.repeat(palette[quarter][None], height, axis=0)  # (H, W, 3)


def _milestone_info() -> str:
    return "".join(
        f'\n{{\n"intersection_idx": "{i + 1}",\n"landmarks": "{landmark}",\n"distance": "60 meters",\n'
        f'"human_heading": "",\n"to_next_intersection_heading": "{heading}",\n}}\n'
        for i, (heading, landmark) in enumerate(BLOCKS)
    )


def _route_record(shift: float = 0.0) -> dict:
    """The fixture's route in V-IRL's format, moved north by ``shift`` degrees of latitude."""
    start = [START[0] + shift, START[1]]
    milestones = [[lat + shift, lng] for lat, lng in MILESTONES]
    return {
        "start_place": {"name": "Times Square", "geocode": start, "relocated_geocode": start},
        "dest_place": {"name": "CVS Pharmacy", "geocode": milestones[-1]},
        "init_heading": 90,
        "route_results": {"geocode_list": milestones, "landmark_list": []},
        "milestone_info": _milestone_info(),
    }


@pytest.fixture(scope="module")
def virl_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyc_mini")
    (root / "route_infos.json").write_text(json.dumps([[_route_record()], 1]))
    views = root / "street_views"
    views.mkdir()
    for pano_id, rotation in ROTATIONS.items():
        Image.fromarray(_panorama(rotation)).save(views / f"{pano_id}.jpg", quality=95)
        (views / f"{pano_id}.metadata.json").write_text(json.dumps({"rotation": rotation}))
    mapping = {START: "pano_a", MILESTONES[0]: "pano_b", MILESTONES[1]: "pano_a", MILESTONES[2]: "pano_b"}
    (root / "gps_pano_mapping.pkl").write_bytes(pickle.dumps(mapping))
    return root


def test_milestone_blocks_parse_like_virl():
    blocks = parse_milestone_blocks(_milestone_info())
    assert [b["to_next_intersection_heading"] for b in blocks] == ["0 (north)", "90 (east)", "180 (south)"]
    assert blocks[1]["landmarks"] == "Starbucks is on your front left"


def test_text_routes_from_the_json_alone(virl_files):
    routes = VirlRoutes.from_virl_files(virl_files / "route_infos.json")
    assert len(routes) == 1
    route = routes.route(0, np.random.default_rng(0))
    assert route.instructions == (
        "First, turn left to face north.",
        "Move forward until you reach the next intersection where Chase Bank is on your right.",
        "Turn right to face east.",
        "Move forward until you reach the next intersection where Starbucks is on your front left.",
        "Turn right to face south.",
        "Move forward until you reach the destination where CVS Pharmacy is on your left.",
    )
    kinds = [p.kind for p in route.points]
    assert kinds[0] == "start" and kinds[-1] == "stop" and kinds.count("turn") == 2
    assert [p.absolute_action for p in route.points if p.kind in ("start", "turn")] == [
        "turn_direction(north)",
        "turn_direction(east)",
        "turn_direction(south)",
    ]
    assert route.points[-1].observation_text == "CVS Pharmacy is on your left"
    assert route == routes.route(0, np.random.default_rng(0))


@pytest.mark.parametrize("variant", ["id", "rule_ood"])
def test_env_runs_real_routes_with_the_oracle(virl_files, variant):
    env = gymnasium.make(
        "sftrl/VIRL-v0", variant=variant, modality="text", route_file=str(virl_files / "route_infos.json")
    )
    for seed in range(5):
        _, info = env.reset(seed=seed)
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(env.unwrapped.oracle_action())
            done = terminated or truncated
        assert info["success"] and info["city"] == "nyc_mini0#0"


def test_perspective_views_face_the_right_compass_direction(virl_files):
    for rotation in (0.0, 30.0, 200.0):
        panorama = _panorama(rotation)
        for heading, name in ((0, "north"), (90, "east"), (180, "south"), (270, "west"), (450, "east")):
            view = perspective_view(panorama, heading, rotation=rotation, view_px=64)
            assert view.shape == (64, 64, 3)
            assert tuple(view[32, 32]) == COLOURS[name], (rotation, heading)


def test_pictures_are_cut_from_the_nearest_panorama(virl_files):
    routes = VirlRoutes.from_virl_files(virl_files / "route_infos.json", virl_files / "street_views")
    route = routes.route(0, np.random.default_rng(0))
    picture = routes.picture(route.points[0], view_px=DEFAULT_VIEW_PX)  # start, heading 90 (east)
    assert picture.shape == picture_shape()
    bar = picture_shape()[0] // 2 - DEFAULT_VIEW_PX - GAP_PX // 2
    centre = DEFAULT_VIEW_PX // 2
    for (col, row), name in (((0, 0), "east"), ((1, 0), "south"), ((0, 1), "west"), ((1, 1), "north")):
        x = col * (DEFAULT_VIEW_PX + GAP_PX) + centre
        y = row * (DEFAULT_VIEW_PX + bar + GAP_PX) + bar + centre
        assert np.abs(picture[y, x].astype(int) - COLOURS[name]).max() < 40, name  # JPEG tolerance
    env = gymnasium.make(
        "sftrl/VIRL-v0",
        modality="image",
        route_file=str(virl_files / "route_infos.json"),
        pano_dir=str(virl_files / "street_views"),
    )
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_bad_files_fail_with_clear_errors(virl_files, tmp_path):
    (tmp_path / "route_infos.json").write_text(json.dumps([{"start_place": {}}]))
    with pytest.raises(ValueError, match="route 0 lacks"):
        VirlRoutes.from_virl_files(tmp_path / "route_infos.json")
    (tmp_path / "gps_pano_mapping.pkl").write_bytes(pickle.dumps({START: np.float64(1.0)}))
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        VirlRoutes.from_virl_files(
            virl_files / "route_infos.json",
            virl_files / "street_views",
            gps_pano_mapping=tmp_path / "gps_pano_mapping.pkl",
        )
    with pytest.raises(ValueError, match="pano_dir"):
        gymnasium.make("sftrl/VIRL-v0", modality="image", route_file=str(virl_files / "route_infos.json"))


def test_real_routes_split_by_start_and_destination(tmp_path):
    path = tmp_path / "route_infos.json"
    path.write_text(json.dumps([_route_record(0.01 * i) for i in range(40)]))
    drawn = {}
    for split in ("train", "eval", "all"):
        env = gymnasium.make("sftrl/VIRL-v0", route_file=str(path), split=split)
        drawn[split] = {env.reset(seed=seed)[1]["city"] for seed in range(300)}
    assert drawn["train"].isdisjoint(drawn["eval"]) and drawn["train"] | drawn["eval"] == drawn["all"]
    assert len(drawn["all"]) == 40 and 4 <= len(drawn["eval"]) <= 14  # about 20% of 40
    keys = {route.split_key for route in VirlRoutes.from_virl_files(path).routes}
    assert len(keys) == 40 and all(key.startswith("virl-file:") for key in keys)
    lone = tmp_path / "lone" / "route_infos.json"
    lone.parent.mkdir()
    lone.write_text(json.dumps([_route_record()]))
    home = VirlRoutes.from_virl_files(lone).routes[0].split_key
    other = "eval" if split_of(home) == "train" else "train"
    with pytest.raises(ValueError, match=f"no route in split={other!r}"):
        gymnasium.make("sftrl/VIRL-v0", route_file=str(lone), split=other)


def test_visual_ood_refuses_real_routes(virl_files):
    # File routes have the training look and are split like id routes: none is visually out of distribution.
    with pytest.raises(ValueError, match="route_file serves id and rule_ood only"):
        gymnasium.make(
            "sftrl/VIRL-v0",
            variant="visual_ood",
            modality="image",
            split="eval",
            route_file=str(virl_files / "route_infos.json"),
            pano_dir=str(virl_files / "street_views"),
        )
