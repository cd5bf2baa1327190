"""Real V-IRL routes: read the route files of V-IRL / "SFT Memorizes, RL Generalizes".

`VirlRoutes.from_virl_files(route_infos_json, pano_dir=None)` reads `route_infos.json` (a list of
routes, or V-IRL's `[routes, count]` pair). Each route has `start_place` (`relocated_geocode` or
`geocode`, [lat, lng]), an optional `init_heading` (missing or 0 = drawn from the env's RNG, as in
V-IRL's code), `route_results.geocode_list` (one geocode per milestone, the destination last) and
`milestone_info`: one block per milestone, a V-IRL JSON-like string such as

    {"intersection_idx": "1", "landmarks": "Chase Bank is on your right",
     "to_next_intersection_heading": "177 (south)"}

Block j says which way to face when leaving point j (the start for j = 0) and what is seen at
the point reached. Text mode needs only this file. Pictures need `pano_dir` with
`{pano_id}.jpg` equirectangular panoramas and `{pano_id}.metadata.json` (`{"rotation": deg}`),
plus `gps_pano_mapping.pkl` ({(lat, lng): pano_id}, next to the JSON unless given); four
perspective views (90-degree field of view) are cut from each panorama with numpy, in V-IRL's
convention: compass heading h lies at column fraction ((h + rotation) / 360) mod 1.
A route's identity for the held-out split (`envs.splits`) is its start and destination geocode.

    python -c "from envs.virl.real_data import VirlRoutes; print(len(VirlRoutes.from_virl_files('route_infos.json')))"
"""

from __future__ import annotations

import functools
import json
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from envs.virl.geometry import COMPASS, compass_label
from envs.virl.instructions import Leg
from envs.virl.render import compose_grid
from envs.virl.route import MAX_INTERMEDIATE, LegGeometry, PointView, RailPoint, Route, Sighting, assemble_rail

_HEADING = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:\(\s*([a-z]+)\s*\))?\s*$", re.IGNORECASE)
_SIGHTING = re.compile(r"^(.+?) is on your (.+?)\.?$")
_NO_LANDMARK = re.compile(r"^no landmarks? nearby\.?$", re.IGNORECASE)
_EARTH_M = 6_371_000.0


@dataclass(frozen=True)
class RealRoute:
    """One route of the file: start, optional heading, milestone geocodes and blocks."""

    start: tuple[float, float]
    init_heading: float | None
    geocodes: tuple[tuple[float, float], ...]
    blocks: tuple[dict[str, str], ...]

    @property
    def split_key(self) -> str:
        """The route's key for the held-out split (`envs.splits`): its start and destination geocodes."""
        (lat, lng), (dest_lat, dest_lng) = self.start, self.geocodes[-1]
        return f"virl-file:{lat:.6f},{lng:.6f}->{dest_lat:.6f},{dest_lng:.6f}"


class _NoGlobals(pickle.Unpickler):
    """Reads plain dicts, tuples, floats and strings only: a pickle cannot run code through it."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(
            f"{module}.{name} is not allowed in gps_pano_mapping.pkl; "
            "store {(lat, lng): pano_id} with plain floats and strings"
        )


def parse_milestone_blocks(text: str) -> list[dict[str, str]]:
    """V-IRL's `milestone_info` string -> one {key: value} dict per `{...}` block."""
    blocks = []
    for chunk in text.split("}"):
        fields = {}
        for line in chunk.replace("{", "").splitlines():
            key, sep, value = line.strip().rstrip(",").partition(":")
            if sep:
                fields[key.strip().strip("\"'")] = value.strip().strip("\"'")
        if fields:
            blocks.append(fields)
    return blocks


def _geocode(value, where: str) -> tuple[float, float]:
    try:
        lat, lng = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a [lat, lng] pair of numbers, got {value!r}") from None
    return lat, lng


def _parse_route(raw: dict, index: int) -> RealRoute:
    where = f"route {index}"
    try:
        start_place, geocodes, info = raw["start_place"], raw["route_results"]["geocode_list"], raw["milestone_info"]
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{where} lacks {error}; each route needs start_place, route_results.geocode_list and milestone_info"
        ) from None
    blocks = parse_milestone_blocks(info) if isinstance(info, str) else [dict(b) for b in info]
    if not blocks or len(blocks) != len(geocodes):
        raise ValueError(f"{where}: {len(blocks)} milestone blocks but {len(geocodes)} geocodes; they must match")
    start = _geocode(start_place.get("relocated_geocode") or start_place.get("geocode"), f"{where} start_place")
    heading = raw.get("init_heading")
    return RealRoute(
        start,
        float(heading) if heading else None,
        tuple(_geocode(g, f"{where} geocode") for g in geocodes),
        tuple(blocks),
    )


def _heading(block: dict[str, str], where: str) -> tuple[float, str]:
    match = _HEADING.match(block.get("to_next_intersection_heading", ""))
    if not match:
        raise ValueError(
            f"{where}: to_next_intersection_heading must look like '177 (south)', "
            f"got {block.get('to_next_intersection_heading')!r}"
        )
    degrees = float(match.group(1)) % 360.0
    label = (match.group(2) or "").lower()
    return degrees, label if label in COMPASS else compass_label(degrees)


def _sightings(text: str | None) -> tuple[Sighting, ...]:
    if not text or _NO_LANDMARK.match(text.strip()):
        return ()
    match = _SIGHTING.match(text.strip())
    name, side = (match.group(1), match.group(2)) if match else (text.strip(), "")
    return (Sighting(name, "", (90, 90, 90), side),)


def _lerp(a: tuple[float, float], b: tuple[float, float], f: float) -> tuple[float, float]:
    return a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])


class VirlRoutes:
    """Routes read from V-IRL files; `route(i, rng)` gives the env's `Route`, `picture` the views."""

    def __init__(
        self,
        routes: list[RealRoute],
        *,
        name: str,
        pano_dir: Path | None = None,
        pano_of: dict[tuple[float, float], str] | None = None,
        radius_m: float = 50.0,
    ):
        self.routes, self.name, self.pano_dir = routes, name, pano_dir
        self.pano_of = pano_of or {}
        self.radius_m = radius_m
        self._keys = np.array(list(self.pano_of), dtype=float).reshape(-1, 2)  # (K, 2) lat, lng

    @classmethod
    def from_virl_files(
        cls,
        route_infos_json: str | Path,
        pano_dir: str | Path | None = None,
        *,
        gps_pano_mapping: str | Path | None = None,
    ) -> VirlRoutes:
        """Read `route_infos.json` (and, with `pano_dir`, the panorama mapping)."""
        path = Path(route_infos_json)
        data = json.loads(path.read_text())
        if isinstance(data, list) and len(data) == 2 and isinstance(data[0], list):
            data = data[0]  # V-IRL stores [routes, number of routes]
        if not isinstance(data, list) or not data:
            raise ValueError(f"{path} must hold a non-empty list of routes (or V-IRL's [routes, count])")
        routes = [_parse_route(raw, i) for i, raw in enumerate(data)]
        if pano_dir is None:
            return cls(routes, name=path.parent.name or path.stem)
        mapping_path = Path(gps_pano_mapping) if gps_pano_mapping else path.parent / "gps_pano_mapping.pkl"
        with mapping_path.open("rb") as handle:
            mapping = _NoGlobals(handle).load()
        pano_of = {_geocode(k, f"{mapping_path} key"): str(v) for k, v in mapping.items()}
        return cls(routes, name=path.parent.name or path.stem, pano_dir=Path(pano_dir), pano_of=pano_of)

    def __len__(self) -> int:
        return len(self.routes)

    @property
    def max_points(self) -> int:
        """The most rail points any route can have (for the env's bound on policy calls)."""
        return max(1 + len(r.blocks) * (MAX_INTERMEDIATE + 1) for r in self.routes)

    def route(self, index: int, rng: np.random.Generator) -> Route:
        """Route `index` with its rail.

        `rng` draws a missing initial heading and the 0-4 intermediate points per leg.
        """
        real = self.routes[index]
        heading = real.init_heading if real.init_heading is not None else float(rng.integers(0, 360))
        start = PointView(real.start, heading, (), False)
        legs, previous, origin = [], heading, real.start
        for j, (block, geocode) in enumerate(zip(real.blocks, real.geocodes, strict=True)):
            degrees, label = _heading(block, f"route {index} block {j}")
            last = j == len(real.blocks) - 1
            sightings = _sightings(block.get("landmarks"))
            leg = Leg(previous, degrees, label, sightings[0].sentence if sightings else None, last)
            count = int(rng.integers(0, MAX_INTERMEDIATE + 1))
            intermediates = tuple((_lerp(origin, geocode, (i + 1) / (count + 1)), degrees) for i in range(count))
            legs.append(LegGeometry(leg, intermediates, PointView(geocode, degrees, sightings, not last)))
            previous, origin = degrees, geocode
        return assemble_rail(start, legs, city=f"{self.name}#{index}", split_key=real.split_key)

    def picture(self, point: RailPoint, *, view_px: int) -> np.ndarray:
        """The 2x2 picture at a rail point, cut from the nearest panorama (within 50 m)."""
        if self.pano_dir is None:
            raise ValueError("pictures need pano_dir; pass it to VirlRoutes.from_virl_files")
        pano_id = self._nearest_pano(point.view.position)
        panorama, rotation = _load_panorama(self.pano_dir, pano_id)
        views = {
            name: Image.fromarray(
                perspective_view(panorama, point.view.heading + offset, rotation=rotation, view_px=view_px)
            )
            for name, offset in (("front", 0.0), ("right", 90.0), ("back", 180.0), ("left", 270.0))
        }
        return compose_grid(views, view_px=view_px)

    def _nearest_pano(self, geocode: tuple[float, float]) -> str:
        lat, lng = geocode
        if len(self._keys) == 0:
            raise ValueError("the panorama mapping is empty; check gps_pano_mapping.pkl")
        dy = np.radians(self._keys[:, 0] - lat) * _EARTH_M
        dx = np.radians(self._keys[:, 1] - lng) * _EARTH_M * math.cos(math.radians(lat))
        dist = np.hypot(dx, dy)  # (K,)
        best = int(dist.argmin())
        if dist[best] > self.radius_m:
            raise ValueError(f"no panorama within {self.radius_m} m of {geocode} (nearest {dist[best]:.0f} m)")
        return self.pano_of[tuple(self._keys[best])]


@functools.lru_cache(maxsize=8)
def _load_panorama(pano_dir: Path, pano_id: str) -> tuple[np.ndarray, float]:
    image = np.asarray(Image.open(pano_dir / f"{pano_id}.jpg").convert("RGB"))  # (Hp, Wp, 3)
    metadata = json.loads((pano_dir / f"{pano_id}.metadata.json").read_text())
    return image, float(metadata.get("rotation", 0.0))


@functools.lru_cache(maxsize=8)
def _ray_angles(view_px: int, fov_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel yaw offset (degrees, (1, W)) and latitude (radians, (H, W), down positive)."""
    focal = 0.5 * view_px / math.tan(math.radians(fov_deg) / 2)
    centred = (np.arange(view_px) - (view_px - 1) / 2) / focal  # (W,)
    x, y = centred[None, :], centred[:, None]
    yaw = np.degrees(np.arctan2(x, 1.0))  # (1, W)
    lat = np.arcsin(y / np.sqrt(x * x + y * y + 1.0))  # (H, W)
    return yaw, lat


def perspective_view(
    panorama: np.ndarray, heading: float, *, rotation: float, view_px: int, fov_deg: float = 90.0
) -> np.ndarray:
    """A (view_px, view_px, 3) pinhole view at compass `heading` from an equirectangular panorama."""
    height, width, _ = panorama.shape
    yaw, lat = _ray_angles(view_px, fov_deg)
    cols = np.rint(((heading + rotation + yaw) / 360.0 % 1.0) * (width - 1)).astype(np.intp)  # (1, W)
    rows = np.rint((lat / math.pi + 0.5) * (height - 1)).astype(np.intp)  # (H, W)
    return panorama[rows, np.broadcast_to(cols, rows.shape)]
