"""Synthetic top-down aerial scenes, written as a YOLO dataset: six remote-sensing classes ("aerial", the
default), three large ones ("simple") or the 20 DIOR classes in dense tiles of mostly tiny targets ("dior").

Every scene is a pure function of (seed, split, index): the same seed gives byte-identical PNGs and labels.
A scene is planned first (river, roads, apron, tank farm; then objects; then distractors that avoid the
objects) and rendered afterwards with Pillow polygons, so every label is the tight axis-aligned box of the
rotated polygon that was drawn. Classes are kept distinct by shape and colour, and by context as in real
imagery (ships, bridges and harbors on water; airplanes on aprons; vehicles along roads), while sizes run
from ~8 px vehicles to large harbors so that small targets stay genuinely hard.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from jetson.imageio import encode_png

from ..errors import DataError
from ..fsio import atomic_write_text
from .voc import DIOR_NAMES
from .yolo import label_text

NAMES = ["airplane", "ship", "storage-tank", "vehicle", "bridge", "harbor"]
AIRPLANE, SHIP, TANK, VEHICLE, BRIDGE, HARBOR = range(6)
# Styles: "aerial" (the scenes above, the default) or "simple": 1-3 large airplanes, ships or tanks on plain
# fields. "simple" is learnable in a few hundred steps at 128 px, so smoke runs and end-to-end tests can demand
# a real mAP instead of comparing zeros (tests/pipeline/test_compress_e2e.py). "dior": a second data set unlike
# the first (see the dior section below).
STYLES = {"aerial": NAMES, "simple": NAMES[:3], "dior": DIOR_NAMES}
_STYLE_KEYS = {"simple": 2, "dior": 3}     # part of each scene's seed (aerial has none): fixed, never reordered
# Bump when the drawing changes, so caches made by an older generator are not reused.
GENERATOR_VERSION = 1
_SPLITS = {"train": 0, "val": 1}


@dataclass
class _Shape:
    kind: str                     # "poly" | "ellipse" | "line"
    pts: list                     # polygon points, ellipse bbox [x1, y1, x2, y2], or line points
    fill: tuple
    width: int = 0                # line width
    owner: int = -1               # index of the labelled object this shape belongs to (-1: ground, distractor)


@dataclass
class _Scene:
    size: int
    rng: np.random.Generator
    sun: tuple = (1.0, 1.0)
    river: tuple | None = None    # (cx, cy, ux, uy, half_width): axis point, unit direction, half width
    below: list = field(default_factory=list)     # ground features under everything
    shadows: list = field(default_factory=list)   # polygons (or ("ellipse", 2x2 corners)) darkening what lies below
    above: list = field(default_factory=list)     # distractors + objects, drawn in order
    boxes: list = field(default_factory=list)     # (cls, x1, y1, x2, y2)
    occupied: list = field(default_factory=list)  # boxes nothing else may overlap
    outlines: list = field(default_factory=list)  # per box, the polygons it is tight around (for cropping tiles)
    labels: dict | None = None                    # generator class id -> the style's class id (None: the same)
    cell: float = 0.0                             # dior: the side of the quarters the tile is cut into


def _uni(rng: np.random.Generator, lo: float, hi: float) -> float:
    """uniform(lo, hi) that tolerates hi < lo (small scenes shrink the upper bounds below the lower ones)."""
    return float(rng.uniform(lo, max(lo, hi)))


def _rect(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def _rot(pts: np.ndarray, angle: float, cx: float, cy: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + (cx, cy)


def _circle(cx: float, cy: float, r: float, n: int = 24) -> np.ndarray:
    """A disc as a polygon (n divisible by 4: its extremes are the disc's, so its box is the disc's box)."""
    a = np.arange(n) * (2 * math.pi / n)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def _bbox(polys: list[np.ndarray]) -> tuple[float, float, float, float]:
    allp = np.concatenate(polys)
    return float(allp[:, 0].min()), float(allp[:, 1].min()), float(allp[:, 0].max()), float(allp[:, 1].max())


def _inside(box, size: int, margin: float = 1.0) -> bool:
    return box[0] >= margin and box[1] >= margin and box[2] <= size - margin and box[3] <= size - margin


def _free(sc: _Scene, box, gap: float = 2.0) -> bool:
    for o in sc.occupied:
        if box[0] < o[2] + gap and o[0] < box[2] + gap and box[1] < o[3] + gap and o[1] < box[3] + gap:
            return False
    return True


def _river_offset(sc: _Scene, x: float, y: float) -> float:
    """Signed distance of a point from the river axis (0 when there is no river: callers check sc.river)."""
    cx, cy, ux, uy, _ = sc.river
    return (x - cx) * -uy + (y - cy) * ux


def _on_land(sc: _Scene, box, margin: float = 3.0) -> bool:
    if sc.river is None:
        return True
    hw = sc.river[4]
    corners = [(box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])]
    offs = [_river_offset(sc, x, y) for x, y in corners]
    return min(offs) > hw + margin or max(offs) < -hw - margin


def _on_water(sc: _Scene, polys: list[np.ndarray], margin: float = 3.0) -> bool:
    if sc.river is None:
        return False
    hw = sc.river[4]
    allp = np.concatenate(polys)
    cx, cy, ux, uy, _ = sc.river
    offs = (allp[:, 0] - cx) * -uy + (allp[:, 1] - cy) * ux
    return bool(np.abs(offs).max() < hw - margin)


def _shade(color, k: float) -> tuple:
    return tuple(int(max(0, min(255, c * k))) for c in color)


def _register(sc: _Scene, cls: int, box, outline: list[np.ndarray], occupy: list | None = None) -> None:
    """Label an object (the style's class id for generator id `cls`) and keep others off `occupy` (default:
    its box)."""
    sc.boxes.append((cls if sc.labels is None else sc.labels[cls], *box))
    sc.outlines.append(outline)
    sc.occupied.extend([box] if occupy is None else occupy)


def _add_object(sc: _Scene, cls: int, polys: list[np.ndarray], colors: list[tuple], shadow: float,
                layer: str | list[str] = "above", occupy: list | None = None) -> None:
    """Register an object: shadow under it, its polygons above (or, when flat, with the ground below; `layer`
    may name one per polygon), the tight box of the polygons as its label."""
    box = _bbox(polys)
    layers = [layer] * len(polys) if isinstance(layer, str) else layer
    if shadow > 0:
        dx, dy = sc.sun[0] * shadow, sc.sun[1] * shadow
        for p, lay in zip(polys, layers):
            if lay == "above":      # flat parts cast no shadow
                sc.shadows.append(p + (dx, dy))
    for p, c, lay in zip(polys, colors, layers):
        getattr(sc, lay).append(_Shape("poly", [tuple(q) for q in p], c, owner=len(sc.boxes)))
    _register(sc, cls, box, polys, occupy)


# ----------------------------------------------------------------------------------------------- objects
def _airplane_polys(length: float, angle: float, cx: float, cy: float) -> list[np.ndarray]:
    L = length
    span = L * 0.95
    fus = np.array([[0.5, 0], [0.4, 0.06], [-0.45, 0.05], [-0.5, 0], [-0.45, -0.05], [0.4, -0.06]]) * L
    wing = np.array([[0.12, 0.05], [-0.1, span / L / 2], [-0.22, span / L / 2], [-0.08, 0.05],
                     [-0.08, -0.05], [-0.22, -span / L / 2], [-0.1, -span / L / 2], [0.12, -0.05]]) * L
    tail = np.array([[-0.36, 0.04], [-0.47, 0.19], [-0.52, 0.19], [-0.47, 0.03],
                     [-0.47, -0.03], [-0.52, -0.19], [-0.47, -0.19], [-0.36, -0.04]]) * L
    return [_rot(p, angle, cx, cy) for p in (wing, tail, fus)]


def _place_airplanes(sc: _Scene, n: int, region, lo: float = 12, hi: float = 64) -> None:
    rng = sc.rng
    for _ in range(n):
        for _try in range(12):
            L = _uni(rng, lo, min(hi, sc.size * 0.3))
            cx, cy = rng.uniform(region[0], region[2]), rng.uniform(region[1], region[3])
            polys = _airplane_polys(L, float(rng.uniform(0, 2 * math.pi)), cx, cy)
            box = _bbox(polys)
            if _inside(box, sc.size) and _free(sc, box, 3) and _on_land(sc, box):
                g = int(rng.integers(215, 250))
                body = (g, g, min(255, g + 4))
                _add_object(sc, AIRPLANE, polys, [_shade(body, 0.93), _shade(body, 0.9), body], L * 0.08)
                break


def _ship_polys(length: float, beam: float, angle: float, cx: float, cy: float) -> list[np.ndarray]:
    L, b = length, beam
    hull = np.array([[-0.5 * L, -b / 2], [0.28 * L, -b / 2], [0.5 * L, 0], [0.28 * L, b / 2], [-0.5 * L, b / 2]])
    deck = _rect(-0.42 * L, -b * 0.3, -0.1 * L, b * 0.3)
    return [_rot(p, angle, cx, cy) for p in (hull, deck)]


def _place_ships(sc: _Scene, n: int, lo: float = 12, hi: float = 72) -> None:
    rng = sc.rng
    cx0, cy0, ux, uy, hw = sc.river
    along_angle = math.atan2(uy, ux)
    for _ in range(n):
        for _try in range(15):
            L = _uni(rng, lo, min(hi, hw * 3))
            b = L * float(rng.uniform(0.2, 0.3))
            t = rng.uniform(-sc.size, sc.size)
            off = _uni(rng, -hw + b, hw - b)
            cx, cy = cx0 + t * ux - off * uy, cy0 + t * uy + off * ux
            ang = along_angle + (math.pi if rng.random() < 0.5 else 0) + rng.normal(0, 0.25)
            polys = _ship_polys(L, b, ang, cx, cy)
            box = _bbox(polys)
            if _inside(box, sc.size) and _free(sc, box, 3) and _on_water(sc, polys, 1.0):
                hullc = [(235, 235, 230), (200, 70, 50), (60, 60, 70), (225, 200, 80)][int(rng.integers(4))]
                # a wake behind the stern: lighter water, not part of the object
                back = _rot(np.array([[-0.5 * L, -b * 0.4], [-0.5 * L - L * 0.8, -b * 0.9],
                                      [-0.5 * L - L * 0.8, b * 0.9], [-0.5 * L, b * 0.4]]), ang, cx, cy)
                if rng.random() < 0.5:
                    sc.below.append(_Shape("poly", [tuple(q) for q in back], (70, 100, 122)))
                _add_object(sc, SHIP, polys, [hullc, (245, 245, 245) if hullc[0] < 150 else (120, 120, 125)], L * 0.05)
                break


def _place_tanks(sc: _Scene, n: int, region, grid: bool, lo: float = 4, hi: float = 22) -> None:
    rng = sc.rng
    r = _uni(rng, lo, min(hi, sc.size * 0.07))
    if grid:
        step = 2 * r + float(rng.uniform(3, 8))
        cols = max(1, int(math.ceil(math.sqrt(n))))
        x0, y0 = rng.uniform(region[0], region[2]), rng.uniform(region[1], region[3])
        centres = [(x0 + (i % cols) * step, y0 + (i // cols) * step) for i in range(n)]
    else:
        centres = [(rng.uniform(region[0], region[2]), rng.uniform(region[1], region[3])) for _ in range(n)]
    for cx, cy in centres:
        rr = r * float(rng.uniform(0.85, 1.15))
        box = (cx - rr, cy - rr, cx + rr, cy + rr)
        if not (_inside(box, sc.size) and _free(sc, box, 2) and _on_land(sc, box)):
            continue
        top = (int(rng.integers(225, 250)),) * 2 + (int(rng.integers(220, 245)),)
        sh = rr * 0.35
        corners = np.array([[cx - rr, cy - rr], [cx + rr, cy + rr]])
        sc.shadows.append(("ellipse", corners + (sc.sun[0] * sh, sc.sun[1] * sh)))
        _tank_shapes(sc, cx, cy, rr, top)
        _register(sc, TANK, box, [_circle(cx, cy, rr)])


def _tank_shapes(sc: _Scene, cx: float, cy: float, rr: float, top: tuple) -> None:
    """A storage tank seen from above: a disc with a darker inner ring and centre (owned by the next box)."""
    k = len(sc.boxes)
    sc.above.append(_Shape("ellipse", [cx - rr, cy - rr, cx + rr, cy + rr], top, owner=k))
    ri = rr * 0.62
    sc.above.append(_Shape("ellipse", [cx - ri, cy - ri, cx + ri, cy + ri], _shade(top, 0.82), owner=k))
    rc = rr * 0.18
    sc.above.append(_Shape("ellipse", [cx - rc, cy - rc, cx + rc, cy + rc], _shade(top, 0.7), owner=k))


_VEHICLE_COLORS = [(200, 30, 30), (30, 60, 200), (240, 240, 240), (20, 20, 25), (230, 200, 20), (40, 150, 60)]


def _vehicle(sc: _Scene, cx: float, cy: float, angle: float, lo: float = 9, hi: float = 18) -> bool:
    rng = sc.rng
    L = float(rng.uniform(lo, hi))
    w = L * float(rng.uniform(0.42, 0.5))
    body = _rect(-L / 2, -w / 2, L / 2, w / 2)
    glass = _rect(0.12 * L, -w * 0.4, 0.3 * L, w * 0.4)
    polys = [_rot(p, angle, cx, cy) for p in (body, glass)]
    box = _bbox(polys)
    if not (_inside(box, sc.size) and _free(sc, box, 1.5) and _on_land(sc, box, 1.0)):
        return False
    color = _VEHICLE_COLORS[int(rng.integers(len(_VEHICLE_COLORS)))]
    _add_object(sc, VEHICLE, polys, [color, (35, 45, 60) if color != (20, 20, 25) else (110, 120, 140)], 2.0)
    return True


def _place_bridge(sc: _Scene) -> None:
    rng = sc.rng
    cx0, cy0, ux, uy, hw = sc.river
    for _try in range(10):
        t = rng.uniform(-sc.size * 0.4, sc.size * 0.4)
        cx, cy = cx0 + t * ux, cy0 + t * uy
        ang = math.atan2(uy, ux) + math.pi / 2 + rng.normal(0, 0.15)
        length = 2 * hw / max(0.5, abs(math.cos(ang - math.atan2(uy, ux) - math.pi / 2))) + rng.uniform(10, 24)
        width = float(rng.uniform(7, 15))
        deck = _rot(_rect(-length / 2, -width / 2, length / 2, width / 2), ang, cx, cy)
        rail = width * 0.14
        rails = [_rot(_rect(-length / 2, s * width / 2, length / 2, s * (width / 2 - rail)), ang, cx, cy)
                 for s in (-1, 1)]
        box = _bbox([deck])
        # the box must hold the whole bridge, so it has to fit in the image
        if _inside(box, sc.size, 0.0) and _free(sc, box, 2):
            # the road the bridge carries continues on land beyond the deck
            far = sc.size * 1.5
            dx, dy = far * math.cos(ang), far * math.sin(ang)
            road = [(cx - dx, cy - dy), (cx + dx, cy + dy)]
            sc.below.append(_Shape("line", road, (105, 105, 100), int(width * 0.8)))
            g = int(rng.integers(150, 185))
            _add_object(sc, BRIDGE, [deck] + rails, [(g, g, g - 5), (g - 50,) * 3, (g - 50,) * 3], width * 0.5)
            return


def _place_harbor(sc: _Scene) -> None:
    rng = sc.rng
    cx0, cy0, ux, uy, hw = sc.river
    nx, ny = -uy, ux
    for _try in range(10):
        side = 1 if rng.random() < 0.5 else -1
        t = rng.uniform(-sc.size * 0.45, sc.size * 0.45)
        quay_len = _uni(rng, min(40, sc.size * 0.3), min(110, sc.size * 0.45))
        depth = float(rng.uniform(6, 11))
        n_piers = int(rng.integers(2, 6))
        pier_len = _uni(rng, min(14, hw), min(34, hw * 1.2))
        pier_w = float(rng.uniform(3, 6))
        # local frame: x along the bank, y towards the water (quay sits on the bank, piers reach into the water)
        ang = math.atan2(uy, ux) if side == -1 else math.atan2(-uy, -ux)
        bx, by = cx0 + t * ux + side * hw * nx, cy0 + t * uy + side * hw * ny
        quay = _rect(-quay_len / 2, -depth, quay_len / 2, 1)
        xs = np.linspace(-quay_len / 2 + pier_w, quay_len / 2 - pier_w, n_piers)
        piers = [_rect(x - pier_w / 2, 0, x + pier_w / 2, pier_len) for x in xs]
        polys = [_rot(p, ang, bx, by) for p in [quay] + piers]
        box = _bbox(polys)
        if _inside(box, sc.size) and _free(sc, box, 3):
            g = int(rng.integers(175, 205))
            _add_object(sc, HARBOR, polys, [(g, g - 5, g - 15)] + [(g + 20, g + 18, g + 12)] * n_piers, 2.5)
            return


# ----------------------------------------------------------------------------------------------- scene
_FIELD_COLORS = [(96, 128, 64), (120, 140, 70), (150, 140, 90), (170, 150, 105), (80, 110, 60), (135, 120, 80),
                 (110, 125, 85)]


def _plan(sc: _Scene) -> list[tuple]:
    """Layout, objects, distractors. Returns ground polygons (fields) drawn first."""
    rng, S = sc.rng, sc.size
    sun_angle = rng.uniform(0, 2 * math.pi)
    sc.sun = (math.cos(sun_angle), math.sin(sun_angle))
    fields = []
    for _ in range(int(rng.integers(3, 8))):
        w, h = rng.uniform(0.2, 0.7) * S, rng.uniform(0.2, 0.7) * S
        pts = _rot(_rect(-w / 2, -h / 2, w / 2, h / 2),
                   rng.uniform(0, math.pi), rng.uniform(0, S), rng.uniform(0, S))
        c = np.array(_FIELD_COLORS[int(rng.integers(len(_FIELD_COLORS)))]) + rng.integers(-12, 13, 3)
        fields.append(([tuple(p) for p in pts], tuple(int(v) for v in c)))

    # river: a straight band through the scene
    if rng.random() < 0.6:
        a = rng.uniform(0, math.pi)
        hw = float(rng.uniform(0.08, 0.3) * S)
        cx, cy = float(rng.uniform(0.25, 0.75) * S), float(rng.uniform(0.25, 0.75) * S)
        sc.river = (cx, cy, math.cos(a), math.sin(a), hw)

    # roads
    roads = []
    for _ in range(int(rng.integers(0, 3))):
        a = rng.uniform(0, math.pi)
        px, py = rng.uniform(0.1, 0.9) * S, rng.uniform(0.1, 0.9) * S
        width = float(rng.uniform(8, 14))
        roads.append((px, py, math.cos(a), math.sin(a), width))
        dx, dy = 2 * S * math.cos(a), 2 * S * math.sin(a)
        sc.below.append(_Shape("line", [(px - dx, py - dy), (px + dx, py + dy)], (100, 100, 96), int(width)))

    # objects, big context first
    if sc.river is not None:
        if rng.random() < 0.45:
            _place_harbor(sc)
        if rng.random() < 0.7:
            _place_bridge(sc)
        _place_ships(sc, int(rng.integers(1, 7)))
    if rng.random() < 0.5:
        # apron: concrete area with parked airplanes
        w, h = rng.uniform(0.35, 0.7) * S, rng.uniform(0.3, 0.6) * S
        x0, y0 = rng.uniform(0, S - w), rng.uniform(0, S - h)
        apron = (x0, y0, x0 + w, y0 + h)
        if _on_land(sc, apron, 0):
            g = int(rng.integers(140, 175))
            sc.below.append(_Shape("poly", [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)], (g, g, g - 4)))
            _place_airplanes(sc, int(rng.integers(1, 6)), apron)
    if rng.random() < 0.4:
        w, h = rng.uniform(0.25, 0.5) * S, rng.uniform(0.25, 0.5) * S
        x0, y0 = rng.uniform(0, S - w), rng.uniform(0, S - h)
        area = (x0, y0, x0 + w, y0 + h)
        if _on_land(sc, area, 0):
            sc.below.append(_Shape("poly", [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)], (190, 180, 150)))
            _place_tanks(sc, int(rng.integers(2, 10)), (x0, y0, x0 + w * 0.5, y0 + h * 0.5), grid=True)
    for px, py, ux, uy, width in roads:
        for _ in range(int(rng.integers(0, 8))):
            t = rng.uniform(-S, S)
            off = rng.uniform(-width / 4, width / 4)
            _vehicle(sc, px + t * ux - off * uy, py + t * uy + off * ux,
                     math.atan2(uy, ux) + (math.pi if rng.random() < 0.5 else 0))
    if rng.random() < 0.3:
        # parking lot: rows of vehicles
        x0, y0 = rng.uniform(0, S * 0.7), rng.uniform(0, S * 0.7)
        ang = rng.uniform(0, math.pi)
        for i in range(int(rng.integers(3, 12))):
            dx, dy = (i % 4) * 11.0, (i // 4) * 20.0
            c, s = math.cos(ang), math.sin(ang)
            _vehicle(sc, x0 + dx * c - dy * s, y0 + dx * s + dy * c, ang + math.pi / 2)
    # a few objects anywhere, so context helps but is not required
    if rng.random() < 0.3:
        _place_airplanes(sc, 1, (0, 0, S, S))
    if rng.random() < 0.3:
        _place_tanks(sc, int(rng.integers(1, 3)), (0, 0, S, S), grid=False)
    for _ in range(int(rng.integers(0, 3))):
        _vehicle(sc, rng.uniform(0, S), rng.uniform(0, S), rng.uniform(0, 2 * math.pi))

    _place_distractors(sc)
    return fields


def _plan_simple(sc: _Scene) -> list[tuple]:
    """The "simple" style: two plain fields and 1-3 large, non-overlapping objects of the first three classes."""
    rng, S = sc.rng, sc.size
    sun_angle = rng.uniform(0, 2 * math.pi)
    sc.sun = (math.cos(sun_angle), math.sin(sun_angle))
    fields = []
    for _ in range(2):
        w, h = rng.uniform(0.4, 0.9) * S, rng.uniform(0.4, 0.9) * S
        pts = _rot(_rect(-w / 2, -h / 2, w / 2, h / 2), rng.uniform(0, math.pi), rng.uniform(0, S), rng.uniform(0, S))
        fields.append(([tuple(p) for p in pts], _FIELD_COLORS[int(rng.integers(len(_FIELD_COLORS)))]))
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(3))
        for _try in range(20):
            cx, cy, ang = rng.uniform(0, S), rng.uniform(0, S), float(rng.uniform(0, 2 * math.pi))
            if cls == TANK:
                r = float(rng.uniform(0.12, 0.22) * S)
                polys = [_rect(cx - r, cy - r, cx + r, cy + r)]
            elif cls == AIRPLANE:
                polys = _airplane_polys(float(rng.uniform(0.35, 0.6) * S), ang, cx, cy)
            else:
                L = float(rng.uniform(0.4, 0.65) * S)
                polys = _ship_polys(L, L * 0.28, ang, cx, cy)
            box = _bbox(polys)
            if not (_inside(box, S) and _free(sc, box, 3)):
                continue
            if cls == TANK:
                _tank_shapes(sc, cx, cy, r, (240, 240, 230))
                _register(sc, TANK, box, [_circle(cx, cy, r)])
            elif cls == AIRPLANE:
                _add_object(sc, AIRPLANE, polys, [(225, 225, 230), (215, 215, 220), (240, 240, 245)], S * 0.02)
            else:
                _add_object(sc, SHIP, polys, [(200, 60, 45), (245, 245, 245)], S * 0.02)
            break
    return fields


def _place_distractors(sc: _Scene, buildings: tuple = (2, 14), trees: tuple = (0, 5)) -> None:
    """Buildings (rectangles with roofs and shadows) and trees: clutter that is none of the classes."""
    rng, S = sc.rng, sc.size
    for _ in range(int(rng.integers(*buildings))):
        w, h = rng.uniform(12, 40), rng.uniform(12, 40)
        ang = rng.uniform(0, math.pi)
        cx, cy = rng.uniform(0, S), rng.uniform(0, S)
        roof = _rot(_rect(-w / 2, -h / 2, w / 2, h / 2), ang, cx, cy)
        box = _bbox([roof])
        if not (_free(sc, box, 2) and _on_land(sc, box, 1)):
            continue
        color = [(150, 75, 60), (120, 120, 125), (95, 100, 110), (170, 110, 80), (140, 135, 120)][int(rng.integers(5))]
        ridge = _rot(_rect(-w / 2, -1.0, w / 2, 1.0), ang, cx, cy)
        sc.shadows.append(roof + (sc.sun[0] * 5, sc.sun[1] * 5))
        sc.above.insert(0, _Shape("poly", [tuple(p) for p in ridge], _shade(color, 0.8)))
        sc.above.insert(0, _Shape("poly", [tuple(p) for p in roof], color))
        sc.occupied.append(box)
    for _ in range(int(rng.integers(*trees))):
        cx, cy = rng.uniform(0, S), rng.uniform(0, S)
        for _k in range(int(rng.integers(3, 12))):
            r = rng.uniform(2, 6)
            x, y = cx + rng.normal(0, 10), cy + rng.normal(0, 10)
            box = (x - r, y - r, x + r, y + r)
            if _free(sc, box, 1) and _on_land(sc, box, 1):
                corners = np.array([[x - r, y - r], [x + r, y + r]])
                sc.shadows.append(("ellipse", corners + (sc.sun[0] * 2, sc.sun[1] * 2)))
                g = int(rng.integers(50, 80))
                sc.above.insert(0, _Shape("ellipse", list(box), (g - 15, g + 15, g - 25)))


# ----------------------------------------------------------------------------------------------- dior style
# Modelled on DIOR (20 classes, 800 px images at 0.5-30 m/px): most targets are tiny (vehicles of 5-11 px,
# small ships, tanks, windmills, chimneys, courts), scenes are dense (dozens of objects, urban clutter), and a
# few classes are large areas (airport, golf field, train station, stadium). A tile of twice the training side
# is planned and rendered, then cut into four quarters (_dior_crop), so objects are cut at the edges as in a
# tiled survey. Generator class ids 0-5 are the aerial style's; the DIOR-only classes follow.
(AIRPORT, BASEBALL, BASKETBALL, CHIMNEY, DAM, SERVICE, TOLL, GOLF, TRACK, OVERPASS, STADIUM, TENNIS, TRAIN,
 WINDMILL) = range(6, 20)
_DIOR_LABELS = {AIRPLANE: 0, AIRPORT: 1, BASEBALL: 2, BASKETBALL: 3, BRIDGE: 4, CHIMNEY: 5, DAM: 6, SERVICE: 7,
                TOLL: 8, GOLF: 9, TRACK: 10, HARBOR: 11, OVERPASS: 12, SHIP: 13, STADIUM: 14, TANK: 15, TENNIS: 16,
                TRAIN: 17, VEHICLE: 18, WINDMILL: 19}
_DIOR_GROUND = [(120, 118, 112), (138, 134, 126), (160, 150, 128), (176, 162, 130), (104, 112, 84), (66, 88, 58),
                (128, 124, 96), (150, 140, 116), (92, 100, 92)]
DIOR_TILE_SCALE = 2        # tile side / training side
_GRASS = (88, 168, 70)


def _fits(sc: _Scene, box, gap: float = 2.0, land: bool = True) -> bool:
    """Inside, free, on land, and, when large, within one quarter of the tile (else no quarter would hold
    enough of it to label it)."""
    c = sc.cell
    if c and max(box[2] - box[0], box[3] - box[1]) > 0.3 * c and \
            (box[0] // c != (box[2] - 1e-6) // c or box[1] // c != (box[3] - 1e-6) // c):
        return False
    return _inside(box, sc.size) and _free(sc, box, gap) and (not land or _on_land(sc, box))


def _spot(sc: _Scene, margin: float) -> tuple[float, float]:
    """A random point at least `margin` from the edges of a random quarter (of the scene without quarters)."""
    rng = sc.rng
    c = sc.cell or sc.size
    m = min(margin, c / 2 - 1)
    i, j = (int(rng.integers(round(sc.size / c))) for _ in range(2))
    return float(i * c + rng.uniform(m, c - m)), float(j * c + rng.uniform(m, c - m))


def _axis_angle(rng: np.random.Generator) -> float:
    """Large built areas are mostly laid out along the image axes."""
    return float(rng.integers(2) * math.pi / 2 + rng.normal(0, 0.06))


def _oval(length: float, width: float, n: int = 24) -> np.ndarray:
    """A running-track outline: a rectangle with semicircular ends, centred at 0, long along x."""
    r, half = width / 2, max(length / 2 - width / 2, 0.0)
    a = np.linspace(-math.pi / 2, math.pi / 2, n // 2)
    right = np.stack([half + r * np.cos(a), r * np.sin(a)], 1)
    return np.concatenate([right, -right])


def _place_airport(sc: _Scene) -> None:
    rng = sc.rng
    for _try in range(8):
        L = _uni(rng, min(110, sc.cell * 0.55), min(300, sc.cell * 0.92))
        rw, gap, depth = float(rng.uniform(9, 15)), float(rng.uniform(8, 16)), float(rng.uniform(35, 65))
        ang = _axis_angle(rng)
        cx, cy = _spot(sc, L / 2 + 4)
        runway = _rect(-L / 2, -rw / 2, L / 2, rw / 2)
        taxi = _rect(-L * 0.42, rw / 2 + gap * 0.35, L * 0.42, rw / 2 + gap * 0.35 + 4)
        apron = _rect(-L * 0.3, rw / 2 + gap, L * 0.3, rw / 2 + gap + depth)
        marks = [_rect(x, -0.7, x + 6, 0.7) for x in np.arange(-L / 2 + 8, L / 2 - 12, 12)]
        polys = [_rot(p, ang, cx, cy) for p in [runway, taxi, apron] + marks]
        box = _bbox(polys)
        if not _fits(sc, box, 3):
            continue
        g = int(rng.integers(190, 210))
        a = int(rng.integers(150, 180))
        # airplanes may stand on the apron inside the airport's box: only the runway and taxiway are kept free
        _add_object(sc, AIRPORT, polys, [(g, g, g - 3), (g - 20,) * 3, (a, a, a - 4)] + [(70, 70, 72)] * len(marks),
                    0, layer="below", occupy=[_bbox(polys[:1]), _bbox(polys[1:2])])
        ap = _bbox(polys[2:3])
        inner = (ap[0] + 14, ap[1] + 14, ap[2] - 14, ap[3] - 14)
        if inner[2] > inner[0] and inner[3] > inner[1]:
            _place_airplanes(sc, int(rng.integers(1, 7)), inner, lo=10, hi=34)
        sc.occupied.append(ap)
        return


def _place_baseball(sc: _Scene, cx: float, cy: float) -> bool:
    rng = sc.rng
    r, ang = float(rng.uniform(14, 40)), float(rng.uniform(0, 2 * math.pi))
    a = np.linspace(-math.pi / 4, math.pi / 4, 9)
    fan = np.concatenate([[[0.0, 0.0]], np.stack([r * np.cos(a), r * np.sin(a)], 1)]) - (r * 0.45, 0)
    d = r * 0.26
    infield = np.array([[0, 0], [d, -d], [2 * d, 0], [d, d]]) - (r * 0.45, 0)
    inner = np.array([[d * 0.45, 0], [d, -d * 0.55], [d * 1.55, 0], [d, d * 0.55]]) - (r * 0.45, 0)
    polys = [_rot(p, ang, cx, cy) for p in (fan, infield, inner)]
    if not _fits(sc, _bbox(polys), 3):
        return False
    _add_object(sc, BASEBALL, polys, [_GRASS, (184, 132, 88), (100, 156, 72)], 0, layer="below")
    return True


def _place_courts(sc: _Scene, cls: int, cx: float, cy: float) -> None:
    """A row of 1-6 tennis or 1-3 basketball courts side by side (laid out along the image axes, as blocks
    are), each labelled."""
    rng = sc.rng
    L = float(rng.uniform(11, 20) if cls == TENNIS else rng.uniform(12, 26))
    W = L * (0.5 if cls == TENNIS else 0.56)
    ang = _axis_angle(rng)
    rim = 2 if cls == TENNIS else 1
    n = int(rng.integers(1, 7) if cls == TENNIS else rng.integers(1, 4))
    # tennis: (court, surround) pairs that stand out from any ground; basketball: the court (white rim)
    surface = [((70, 134, 84), (168, 84, 68)), ((62, 104, 164), (64, 142, 96)), ((182, 94, 64), (222, 218, 208))] \
        if cls == TENNIS else [(62, 112, 172), (192, 124, 72), (84, 142, 94), (172, 64, 62)]
    color = surface[int(rng.integers(len(surface)))]
    for i in range(n):
        oy = (i - (n - 1) / 2) * (W + 2 * rim + 3)
        if cls == TENNIS:   # a darker surround, the court, its net across the middle
            shapes = [_rect(-L / 2 - 2, oy - W / 2 - 2, L / 2 + 2, oy + W / 2 + 2), _rect(-L / 2, oy - W / 2, L / 2, oy + W / 2),
                      _rect(-0.5, oy - W / 2, 0.5, oy + W / 2)]
            colors = [color[1], color[0], (238, 238, 238)]
        else:               # a white border, the court, the centre line
            shapes = [_rect(-L / 2 - 1, oy - W / 2 - 1, L / 2 + 1, oy + W / 2 + 1), _rect(-L / 2, oy - W / 2, L / 2, oy + W / 2),
                      _rect(-0.6, oy - W / 2, 0.6, oy + W / 2)]
            colors = [(236, 236, 236), color, (236, 236, 236)]
        polys = [_rot(p, ang, cx, cy) for p in shapes]
        if _fits(sc, _bbox(polys), 1.5):
            _add_object(sc, cls, polys, colors, 0, layer="below")


def _place_chimney(sc: _Scene, cx: float, cy: float) -> bool:
    rng = sc.rng
    r = float(rng.uniform(2.5, 5.5))
    outer, hole = _circle(cx, cy, r), _circle(cx, cy, r * 0.5)
    if not _fits(sc, _bbox([outer]), 2):
        return False
    # the tall stack's long shadow is not part of the target
    ln = float(rng.uniform(14, 30))
    sc.shadows.append(_rot(_rect(0, -r * 0.8, ln, r * 0.8), math.atan2(sc.sun[1], sc.sun[0]), cx, cy))
    brick = [(156, 84, 62), (168, 166, 160), (140, 120, 104)][int(rng.integers(3))]
    _add_object(sc, CHIMNEY, [outer, hole], [brick, (34, 30, 30)], 0)
    return True


def _place_windmill(sc: _Scene, cx: float, cy: float) -> bool:
    rng = sc.rng
    lb, a0 = float(rng.uniform(4, 10)), float(rng.uniform(0, 2 * math.pi))
    blade = np.array([[0, -0.9], [lb, -0.6], [lb, 0.6], [0, 0.9]])     # >= 1 px wide to the tip
    polys = [_rot(blade, a0 + k * 2 * math.pi / 3, cx, cy) for k in range(3)] + [_circle(cx, cy, 1.4, 8)]
    if not _fits(sc, _bbox(polys), 3):
        return False
    ln = float(rng.uniform(12, 26))      # the tower's shadow, not labelled
    sc.shadows.append(_rot(_rect(0, -0.7, ln, 0.7), math.atan2(sc.sun[1], sc.sun[0]), cx, cy))
    _add_object(sc, WINDMILL, polys, [(238, 238, 236)] * 3 + [(214, 214, 212)], 1.0)
    return True


def _place_dam(sc: _Scene) -> None:
    rng = sc.rng
    cx0, cy0, ux, uy, hw = sc.river
    for _try in range(10):
        t = rng.uniform(-sc.size * 0.35, sc.size * 0.35)
        cx, cy = cx0 + t * ux, cy0 + t * uy
        ang = math.atan2(uy, ux) + math.pi / 2 + rng.normal(0, 0.1)
        length = 2 * hw / max(0.5, abs(math.cos(ang - math.atan2(uy, ux) - math.pi / 2))) + rng.uniform(8, 18)
        width = float(rng.uniform(8, 16))
        wall = _rect(-length / 2, -width / 2, length / 2, width / 2)
        gates = [_rect(x - 1.2, -width / 2, x + 1.2, width / 2) for x in np.linspace(-hw * 0.5, hw * 0.5, int(rng.integers(3, 7)))]
        polys = [_rot(p, ang, cx, cy) for p in [wall] + gates]
        if _inside(_bbox(polys), sc.size, 0.0) and _free(sc, _bbox(polys), 2):
            _add_object(sc, DAM, polys, [(206, 204, 194)] + [(120, 124, 126)] * len(gates), width * 0.6)
            return


def _place_service_area(sc: _Scene, road) -> None:
    rng = sc.rng
    px, py, ux, uy, rw = road
    for _try in range(10):
        W, H = _uni(rng, min(50, sc.cell * 0.35), min(110, sc.cell * 0.8)), float(rng.uniform(30, 64))
        t, side = rng.uniform(-sc.size * 0.4, sc.size * 0.4), (1 if rng.random() < 0.5 else -1)
        off = side * (rw / 2 + 3 + H / 2)
        cx, cy = px + t * ux - off * uy, py + t * uy + off * ux
        ang = math.atan2(uy, ux)
        lot = _rect(-W / 2, -H / 2, W / 2, H / 2)
        bw = float(rng.uniform(10, 20))
        hall = _rect(W / 2 - bw - 3, -H / 2 + 3, W / 2 - 3, -H / 2 + 3 + min(H * 0.4, 14))
        stripes = [_rect(x - 0.5, y, x + 0.5, y + 6) for y in (-H / 2 + 20, H / 2 - 12) if y + 6 < H / 2
                   for x in np.arange(-W / 2 + 4, W / 2 - bw - 6, 4.5)]
        polys = [_rot(p, ang, cx, cy) for p in [lot, hall] + stripes]
        box = _bbox(polys)
        if not _fits(sc, box, 3):
            continue
        g = int(rng.integers(188, 206))
        roof = [(170, 80, 62), (82, 110, 168), (90, 96, 104)][int(rng.integers(3))]
        _add_object(sc, SERVICE, polys, [(g, g, g - 2), roof] + [(110, 110, 108)] * len(stripes), 0,
                    layer="below", occupy=[])
        for _ in range(int(rng.integers(3, 14))):     # cars parked on the stalls, each a vehicle
            x, y = float(rng.uniform(-W / 2 + 4, W / 2 - bw - 6)), float(rng.choice([-H / 2 + 23, H / 2 - 9]))
            q = _rot(np.array([[x, y]]), ang, cx, cy)[0]
            _vehicle(sc, q[0], q[1], ang + math.pi / 2, lo=5, hi=7.5)
        sc.occupied.append(box)
        return


def _place_toll(sc: _Scene, road) -> None:
    rng = sc.rng
    px, py, ux, uy, rw = road
    for _try in range(10):
        t = rng.uniform(-sc.size * 0.4, sc.size * 0.4)
        cx, cy = px + t * ux, py + t * uy
        ang = math.atan2(uy, ux)
        L, Wd = float(rng.uniform(24, 46)), rw * float(rng.uniform(2.0, 2.8))
        plaza = _rect(-L / 2, -Wd / 2, L / 2, Wd / 2)
        canopy = _rect(-float(rng.uniform(2.5, 4)), -Wd / 2 - 2, float(rng.uniform(2.5, 4)), Wd / 2 + 2)
        lanes = [_rect(-L / 2 + 2, y - 0.5, L / 2 - 2, y + 0.5) for y in np.linspace(-Wd / 2, Wd / 2, int(rng.integers(4, 8)))[1:-1]]
        polys = [_rot(p, ang, cx, cy) for p in [plaza] + lanes + [canopy]]
        if not _fits(sc, _bbox(polys), 2):
            continue
        roof = [(226, 230, 234), (92, 132, 200), (210, 80, 60)][int(rng.integers(3))]
        _add_object(sc, TOLL, polys, [(52, 52, 56)] + [(224, 224, 220)] * len(lanes) + [roof], 3.0,
                    layer=["below"] * (1 + len(lanes)) + ["above"])
        return


def _place_golf(sc: _Scene) -> None:
    rng = sc.rng
    for _try in range(8):
        R = _uni(rng, min(35, sc.cell * 0.2), min(90, sc.cell * 0.42))
        cx, cy = _spot(sc, R + 4)
        a = np.linspace(0, 2 * math.pi, 18, endpoint=False)
        rad = R * (0.65 + 0.35 * np.abs(np.sin(a * float(rng.uniform(1, 3)) + rng.uniform(0, 6))))
        blob = np.stack([cx + rad * np.cos(a), cy + rad * np.sin(a)], 1)
        green = _circle(cx + rng.uniform(-R, R) * 0.35, cy + rng.uniform(-R, R) * 0.35, R * 0.12, 12)
        bunkers = [_circle(cx + rng.uniform(-R, R) * 0.45, cy + rng.uniform(-R, R) * 0.45, float(rng.uniform(3, 7)), 12)
                   for _ in range(int(rng.integers(2, 5)))]
        polys = [blob, green] + bunkers
        if _fits(sc, _bbox(polys), 3):
            _add_object(sc, GOLF, polys, [(96, 184, 78), (64, 150, 58)] + [(228, 214, 164)] * len(bunkers), 0,
                        layer="below")
            return


def _place_track(sc: _Scene, cx: float, cy: float) -> bool:
    rng = sc.rng
    L = _uni(rng, min(50, sc.cell * 0.35), min(110, sc.cell * 0.7))
    W, ang = L * 0.56, float(rng.uniform(0, math.pi))
    polys = [_rot(_oval(L * k, W * k), ang, cx, cy) for k in (1.0, 0.9, 0.87, 0.74)]
    if not _fits(sc, _bbox(polys[:1]), 3):
        return False
    track = [(178, 86, 66), (70, 112, 162)][int(rng.integers(2))]
    _add_object(sc, TRACK, polys, [track, (236, 236, 236), track, (84, 152, 72)], 0, layer="below")
    return True


def _place_stadium(sc: _Scene, cx: float, cy: float) -> bool:
    rng = sc.rng
    L = _uni(rng, min(60, sc.cell * 0.4), min(130, sc.cell * 0.8))
    W, ang = L * 0.78, _axis_angle(rng)
    a = np.linspace(0, 2 * math.pi, 28, endpoint=False)
    ring = lambda k: np.stack([L / 2 * k * np.cos(a), W / 2 * k * np.sin(a)], 1)  # noqa: E731
    pitch = _rect(-L * 0.3, -W * 0.26, L * 0.3, W * 0.26)
    line = _rect(-0.6, -W * 0.26, 0.6, W * 0.26)
    polys = [_rot(p, ang, cx, cy) for p in (ring(1.0), ring(0.82), pitch, line)]
    if not _fits(sc, _bbox(polys[:1]), 3):
        return False
    g = int(rng.integers(200, 222))
    _add_object(sc, STADIUM, polys, [(g, g - 4, g - 10), (g - 70, g - 74, g - 78), (76, 150, 66), (236, 236, 236)],
                5.0, layer=["above"] * 4)
    return True


def _place_overpass(sc: _Scene, road) -> None:
    rng = sc.rng
    px, py, ux, uy, rw = road
    for _try in range(10):
        t = rng.uniform(-sc.size * 0.4, sc.size * 0.4)
        cx, cy = px + t * ux, py + t * uy
        rel = math.pi / 2 + rng.normal(0, 0.35)
        ang = math.atan2(uy, ux) + rel
        length = rw / max(0.5, abs(math.sin(rel))) + float(rng.uniform(20, 40))
        width = float(rng.uniform(7, 11))
        deck = _rot(_rect(-length / 2, -width / 2, length / 2, width / 2), ang, cx, cy)
        rails = [_rot(_rect(-length / 2, s * width / 2, length / 2, s * (width / 2 - 1.2)), ang, cx, cy) for s in (-1, 1)]
        if not _fits(sc, _bbox([deck]), 2):
            continue
        far = sc.size * 1.5    # the road it carries goes on at ground level
        dx, dy = far * math.cos(ang), far * math.sin(ang)
        sc.below.append(_Shape("line", [(cx - dx, cy - dy), (cx + dx, cy + dy)], (98, 98, 94), int(width * 0.8)))
        g = int(rng.integers(160, 186))
        _add_object(sc, OVERPASS, [deck] + rails, [(g, g, g - 4), (232, 232, 230), (232, 232, 230)], 4.0)
        return


def _place_train_station(sc: _Scene) -> None:
    rng = sc.rng
    for _try in range(8):
        L = _uni(rng, min(70, sc.cell * 0.45), min(170, sc.cell * 0.9))
        n = int(rng.integers(2, 5))
        ang = _axis_angle(rng)
        cx, cy = _spot(sc, L / 2 + 4)
        parts, colors, y = [], [], 0.0
        for _ in range(n):      # track (dark ballast, two light rails), then platform
            parts += [_rect(-L / 2, y, L / 2, y + 5), _rect(-L / 2, y + 1.2, L / 2, y + 1.8), _rect(-L / 2, y + 3.2, L / 2, y + 3.8)]
            colors += [(60, 50, 46), (160, 160, 160), (160, 160, 160)]
            parts.append(_rect(-L * 0.4, y + 5, L * 0.4, y + 9))
            colors.append((196, 192, 182))
            y += 9
        hall = _rect(-L * 0.2, y, L * 0.2, y + float(rng.uniform(9, 14)))
        polys = [_rot(p - (0, y / 2), ang, cx, cy) for p in parts + [hall]]
        if not _fits(sc, _bbox(polys), 3):
            continue
        far = sc.size * 1.5     # the line runs on beyond the station
        dx, dy = far * math.cos(ang), far * math.sin(ang)
        mid = _rot(np.array([[0.0, 2.5 - y / 2]]), ang, cx, cy)[0]
        sc.below.append(_Shape("line", [(mid[0] - dx, mid[1] - dy), (mid[0] + dx, mid[1] + dy)], (84, 74, 66), 4))
        roof = [(150, 80, 62), (70, 90, 140)][int(rng.integers(2))]
        _add_object(sc, TRAIN, polys, colors + [roof], 0, layer="below")
        return


def _plan_dior(sc: _Scene) -> list[tuple]:
    """A dense DIOR-like tile: varied ground, maybe a river, roads with traffic, built areas, tiny targets
    scattered everywhere, urban clutter."""
    rng, S = sc.rng, sc.size
    sc.labels = _DIOR_LABELS
    sun_angle = rng.uniform(0, 2 * math.pi)
    sc.sun = (math.cos(sun_angle), math.sin(sun_angle))
    fields = []
    for _ in range(int(rng.integers(6, 15))):
        w, h = rng.uniform(0.12, 0.5) * S, rng.uniform(0.12, 0.5) * S
        pts = _rot(_rect(-w / 2, -h / 2, w / 2, h / 2), rng.uniform(0, math.pi), rng.uniform(0, S), rng.uniform(0, S))
        c = np.array(_DIOR_GROUND[int(rng.integers(len(_DIOR_GROUND)))]) + rng.integers(-10, 11, 3)
        fields.append(([tuple(p) for p in pts], tuple(int(v) for v in c)))
    if rng.random() < 0.5:
        a = rng.uniform(0, math.pi)
        hw = float(rng.uniform(0.04, 0.11) * S)
        sc.river = (float(rng.uniform(0.25, 0.75) * S), float(rng.uniform(0.25, 0.75) * S), math.cos(a), math.sin(a), hw)
    roads = []
    for _ in range(int(rng.integers(1, 5))):
        a = _axis_angle(rng) if rng.random() < 0.6 else rng.uniform(0, math.pi)
        px, py = rng.uniform(0.1, 0.9) * S, rng.uniform(0.1, 0.9) * S
        width = float(rng.uniform(8, 16))
        roads.append((px, py, math.cos(a), math.sin(a), width))
        dx, dy = 2 * S * math.cos(a), 2 * S * math.sin(a)
        sc.below.append(_Shape("line", [(px - dx, py - dy), (px + dx, py + dy)], (96, 96, 94), int(width)))

    # large areas first, then medium, then the tiny targets into what is left
    if sc.river is not None:
        if rng.random() < 0.4:
            _place_harbor(sc)
        if rng.random() < 0.5:
            _place_dam(sc)
        elif rng.random() < 0.7:
            _place_bridge(sc)
        _place_ships(sc, int(rng.integers(2, 14)), lo=6, hi=40)
    for p, place in ((0.3, _place_airport), (0.25, _place_golf), (0.22, _place_train_station)):
        if rng.random() < p:
            place(sc)
    for p, place in ((0.25, _place_stadium), (0.35, _place_track), (0.4, _place_baseball)):
        if rng.random() < p:
            for _try in range(10):
                if place(sc, *_spot(sc, 20)):
                    break
    for road in roads:
        if rng.random() < 0.3:
            _place_overpass(sc, road)
        if rng.random() < 0.22:
            _place_toll(sc, road)
        if rng.random() < 0.25:
            _place_service_area(sc, road)
    for cls, p in ((TENNIS, 0.55), (BASKETBALL, 0.5)):
        for _ in range(int(rng.integers(1, 4)) if rng.random() < p else 0):
            _place_courts(sc, cls, *_spot(sc, 20))
    if rng.random() < 0.45:         # industry: a tank farm and chimneys
        x, y = _spot(sc, 40)
        _place_tanks(sc, int(rng.integers(4, 17)), (x - 30, y - 30, x + 30, y + 30), grid=True, lo=3, hi=14)
        for _ in range(int(rng.integers(0, 5))):
            _place_chimney(sc, x + rng.normal(0, 40), y + rng.normal(0, 40))
    if rng.random() < 0.3:          # a wind farm: rows of windmills
        x0, y0 = _spot(sc, 30)
        step, ang = float(rng.uniform(20, 34)), float(rng.uniform(0, math.pi))
        for i in range(int(rng.integers(3, 13))):
            dx, dy = (i % 4) * step, (i // 4) * step
            _place_windmill(sc, x0 + dx * math.cos(ang) - dy * math.sin(ang), y0 + dx * math.sin(ang) + dy * math.cos(ang))
    for px, py, ux, uy, width in roads:     # traffic
        for _ in range(int(rng.integers(0, 41))):
            t, off = rng.uniform(-S, S), rng.uniform(-width / 3, width / 3)
            _vehicle(sc, px + t * ux - off * uy, py + t * uy + off * ux,
                     math.atan2(uy, ux) + (math.pi if rng.random() < 0.5 else 0), lo=5, hi=11)
    for _ in range(int(rng.integers(0, 4))):    # parking lots: rows of cars
        x0, y0 = _spot(sc, 20)
        ang = rng.uniform(0, math.pi)
        c, s = math.cos(ang), math.sin(ang)
        for i in range(int(rng.integers(6, 41))):
            dx, dy = (i % 6) * 7.5, (i // 6) * 14.0
            _vehicle(sc, x0 + dx * c - dy * s, y0 + dx * s + dy * c, ang + math.pi / 2, lo=5, hi=9)
    for _ in range(int(rng.integers(0, 12))):   # and a few of the small classes anywhere
        k = int(rng.integers(4))
        x, y = _spot(sc, 10)
        if k == 0:
            _vehicle(sc, x, y, rng.uniform(0, 2 * math.pi), lo=5, hi=11)
        elif k == 1:
            _place_tanks(sc, 1, (x, y, x, y), grid=False, lo=3, hi=10)
        elif k == 2:
            _place_airplanes(sc, 1, (x, y, x, y), lo=10, hi=30)
        else:
            _place_chimney(sc, x, y)
    _place_distractors(sc, buildings=(10, 45), trees=(2, 10))
    return fields


def _clip(poly: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """Sutherland-Hodgman: the part of a convex-or-not polygon inside an axis-aligned rectangle."""
    pts = poly
    for axis, lim, keep_below in ((0, x1, False), (0, x2, True), (1, y1, False), (1, y2, True)):
        if len(pts) == 0:
            break
        out = []
        for i in range(len(pts)):
            p, q = pts[i - 1], pts[i]
            pin = p[axis] <= lim if keep_below else p[axis] >= lim
            qin = q[axis] <= lim if keep_below else q[axis] >= lim
            if qin != pin:
                t = (lim - p[axis]) / (q[axis] - p[axis])
                out.append(p + t * (q - p))
            if qin:
                out.append(q)
        pts = np.array(out).reshape(-1, 2)
    return pts


def _area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# An object cut by a tile's quarter edge keeps its label when at least this share of its area is inside
# (the rest of a cut object stays visible, unlabelled, as when DOTA/DIOR-style tiling drops small remnants).
DIOR_MIN_VISIBLE = 0.5


@functools.lru_cache(maxsize=2)
def _dior_tile(seed: int, split: str, tile: int, side: int, hide: int | None):
    """(image, scene) of one planned and rendered tile; cached because its four quarters are written in turn."""
    sc = _Scene(size=side, rng=_style_rng(seed, split, tile, "dior"), cell=side / DIOR_TILE_SCALE)
    fields = _plan_dior(sc)
    img = _draw(sc, fields, hide, _TEXTURE["dior"])
    img.setflags(write=False)
    return img, sc


def _dior_crop(seed: int, index: int, size: int, split: str, hide: int | None):
    tile, q = divmod(int(index), DIOR_TILE_SCALE ** 2)
    side = size * DIOR_TILE_SCALE
    img, sc = _dior_tile(int(seed), split, tile, side, None)
    x0, y0 = (q % DIOR_TILE_SCALE) * size, (q // DIOR_TILE_SCALE) * size
    boxes, classes, owners = [], [], []
    for k, (bx, outline) in enumerate(zip(sc.boxes, sc.outlines)):
        if bx[1] >= x0 + size or bx[3] <= x0 or bx[2] >= y0 + size or bx[4] <= y0:
            continue
        parts = [_clip(p, x0, y0, x0 + size, y0 + size) for p in outline]
        parts = [p for p in parts if len(p) >= 3]
        if not parts or sum(map(_area, parts)) < DIOR_MIN_VISIBLE * sum(map(_area, outline)):
            continue
        b = np.array(_bbox(parts)) - (x0, y0, x0, y0)
        if min(b[2] - b[0], b[3] - b[1]) < 1.0:
            continue
        boxes.append(b)
        classes.append(bx[0])
        owners.append(k)
    if hide is not None:
        img = _dior_tile(int(seed), split, tile, side, owners[hide])[0]
    out = np.ascontiguousarray(img[y0:y0 + size, x0:x0 + size])
    if not boxes:
        return out, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    return out, np.clip(np.array(boxes, np.float32), 0, size), np.array(classes, np.int64)


def _water_poly(sc: _Scene) -> list[tuple]:
    """The river band with slightly wobbly banks."""
    cx, cy, ux, uy, hw = sc.river
    nx, ny = -uy, ux
    ts = np.linspace(-1.5 * sc.size, 1.5 * sc.size, 24)
    wob = sc.rng.normal(0, 1.2, (2, len(ts)))
    left = [(cx + t * ux + (hw + w) * nx, cy + t * uy + (hw + w) * ny) for t, w in zip(ts, wob[0])]
    right = [(cx + t * ux - (hw + w) * nx, cy + t * uy - (hw + w) * ny) for t, w in zip(ts, wob[1])]
    return left + right[::-1]


def _style_rng(seed: int, split: str, index: int, style: str) -> np.random.Generator:
    key = [int(seed), _SPLITS.get(split, 2), int(index), GENERATOR_VERSION]
    if style != "aerial":
        key.append(_STYLE_KEYS[style])
    return np.random.default_rng(np.random.SeedSequence(key))


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise DataError(f"synthetic style {style!r}: choose one of {sorted(STYLES)} (data.synth_style)")


def render_scene(seed: int, index: int, size: int = 320, split: str = "train", style: str = "aerial",
                 hide: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene → (HxWx3 uint8 RGB, boxes float32 (N,4) xyxy pixels, classes int64 (N,)).

    `hide=k` leaves object k undrawn (its label and shadow stay; every random draw is the same), so the
    pixels an object changes can be compared with its label (tests/data/test_synth.py). The "dior" style's
    scene `index` is quarter `index % 4` of tile `index // 4`, a scene of twice the side (_dior_crop)."""
    _check_style(style)
    if style == "dior":
        return _dior_crop(seed, index, size, split, hide)
    rng = _style_rng(seed, split, index, style)
    sc = _Scene(size=size, rng=rng)
    fields = _plan(sc) if style == "aerial" else _plan_simple(sc)
    out = _draw(sc, fields, hide, _TEXTURE["aerial"])
    if sc.boxes:
        b = np.array([bx[1:] for bx in sc.boxes], dtype=np.float32)
        b = np.clip(b, 0, size)
        c = np.array([bx[0] for bx in sc.boxes], dtype=np.int64)
    else:
        b, c = np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    return out, b, c


# Ground and sensor per style: palette, water colour, low- and mid-frequency lighting (std of the grey-level
# offset), per-pixel noise (uniform +-). "dior": more varied ground (urban greys, dry soil, dark vegetation),
# a mid-frequency mottle and stronger sensor noise.
_TEXTURE = {
    "aerial": {"palette": _FIELD_COLORS, "water": (40, 70, 95), "low": 9.0, "mid": 0.0, "noise": 3},
    "dior": {"palette": _DIOR_GROUND, "water": (38, 62, 72), "low": 12.0, "mid": 7.0, "noise": 6},
}


def _draw(sc: _Scene, fields: list[tuple], hide: int | None, tex: dict) -> np.ndarray:
    """Render a planned scene: ground, roads, water, flat objects, low/mid-frequency lighting, shadows, raised
    objects, blur and noise. `hide`: the owner whose shapes are left out."""
    rng, size = sc.rng, sc.size
    base = np.array(tex["palette"][int(rng.integers(len(tex["palette"])))], dtype=np.float32)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in base))
    draw = ImageDraw.Draw(img)
    for pts, color in fields:
        draw.polygon(pts, fill=color)
        # plough furrows: faint parallel lines clipped later by the next field
        if rng.random() < 0.5:
            p = np.array(pts)
            for k in np.linspace(0.1, 0.9, int(rng.integers(3, 8))):
                a, b = p[0] + (p[3] - p[0]) * k, p[1] + (p[2] - p[1]) * k
                draw.line([tuple(a), tuple(b)], fill=_shade(color, 0.88), width=1)
    for shp in sc.below:
        if shp.kind == "line" and not (hide is not None and shp.owner == hide):
            draw.line(shp.pts, fill=shp.fill, width=shp.width)
    if sc.river is not None:
        water = tuple(int(v) for v in np.array(tex["water"]) + rng.integers(-10, 11, 3))
        draw.polygon(_water_poly(sc), fill=water)
    for shp in sc.below:
        if shp.kind == "poly" and not (hide is not None and shp.owner == hide):
            draw.polygon(shp.pts, fill=shp.fill)

    # low-frequency lighting / soil variation (and, for some styles, a mid-frequency mottle)
    arr = np.asarray(img, dtype=np.float32)
    coarse = rng.normal(0, tex["low"], (size // 32 + 2, size // 32 + 2)).astype(np.float32)
    arr += np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))[..., None]
    if tex["mid"] > 0:
        mid = rng.normal(0, tex["mid"], (size // 6 + 2, size // 6 + 2)).astype(np.float32)
        arr += np.asarray(Image.fromarray(mid, mode="F").resize((size, size), Image.BICUBIC))[..., None]

    # shadows: darken what lies below, before the objects are drawn on top
    if sc.shadows:
        mask = Image.new("L", (size, size), 0)
        md = ImageDraw.Draw(mask)
        for s in sc.shadows:
            if isinstance(s, tuple):
                md.ellipse([float(v) for v in s[1].ravel()], fill=255)
            else:
                md.polygon([tuple(p) for p in s], fill=255)
        arr *= 1.0 - 0.5 * (np.asarray(mask, dtype=np.float32)[..., None] / 255.0)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for shp in sc.above:
        if hide is not None and shp.owner == hide:
            continue
        if shp.kind == "poly":
            draw.polygon(shp.pts, fill=shp.fill)
        elif shp.kind == "ellipse":
            draw.ellipse(shp.pts, fill=shp.fill)
    # sensor blur and noise
    img = img.filter(ImageFilter.BoxBlur(0.7))
    n = tex["noise"]
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-n, n + 1, (size, size, 1), dtype=np.int16)
    return np.clip(arr, 0, 255).astype(np.uint8)


def write_synthetic(out: str | Path, n_train: int, n_val: int, size: int = 320, seed: int = 0,
                    progress: bool = True, style: str = "aerial") -> Path:
    """Generate a YOLO dataset into `out` (images/{train,val}, labels/{train,val}, data.yaml)."""
    out = Path(out)
    if size < 64:
        raise DataError(f"synthetic size {size}: scenes must be at least 64 px (data.synth_size)")
    if n_train < 0 or n_val < 0:
        raise DataError(f"synthetic image counts must be >= 0, got train={n_train} val={n_val}")
    for split, n in (("train", n_train), ("val", n_val)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in tqdm(range(n), desc=f"synth {split}", disable=not progress, leave=False):
            img, boxes, classes = render_scene(seed, i, size, split, style)
            stem = f"{split}_{i:06d}"
            (out / "images" / split / f"{stem}.png").write_bytes(encode_png(img))
            (out / "labels" / split / f"{stem}.txt").write_text(label_text(boxes, classes, size, size))
    names = STYLES[style]
    meta = {"path": ".", "train": "images/train", "val": "images/val", "nc": len(names), "names": list(names)}
    atomic_write_text(out / "data.yaml", yaml.safe_dump(meta, sort_keys=False))
    return out


def cache_key(n_train: int, n_val: int, size: int, seed: int, style: str = "aerial") -> str:
    key = {"gen": GENERATOR_VERSION, "train": n_train, "val": n_val, "size": size, "seed": seed}
    if style != "aerial":       # aerial keys stay what they were, so existing caches remain valid
        key["style"] = style
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


DONE_MARKER = ".done"


def cache_dir() -> Path:
    """Where generated sets are cached unless a command names a folder: $EDGEPRUNE_CACHE/synthetic, by default
    ~/.cache/edgeprune/synthetic (the one place this is decided; under torchrun it must be shared storage)."""
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune")) / "synthetic"


def ensure_synthetic(root: str | Path, n_train: int, n_val: int, size: int = 320, seed: int = 0,
                     progress: bool = True, style: str = "aerial") -> Path:
    """Return the folder of a cached synthetic dataset (its data.yaml inside), generating it if needed.

    The folder is named by a hash of the parameters. Generation happens in a staging folder that is renamed
    into place after the done-marker is written, so a crash never leaves a cache that looks complete, and a
    folder without the marker (from an older, interrupted run) is regenerated.
    """
    root = Path(root)
    _check_style(style)
    tag = "" if style == "aerial" else f"-{style}"
    final = root / f"synth{tag}-{size}px-{n_train}+{n_val}-s{seed}-{cache_key(n_train, n_val, size, seed, style)}"
    if final.exists() and not (final / DONE_MARKER).is_file():
        # the marker goes in before the rename, so only an interrupted older run leaves a folder without it
        shutil.rmtree(final)
    if (final / DONE_MARKER).is_file():
        return final
    staging = root / f".staging-{final.name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        write_synthetic(staging, n_train, n_val, size, seed, progress, style)
        os.sync()  # the images are plain writes: make them durable before the marker says "complete"
        atomic_write_text(staging / DONE_MARKER, json.dumps({"train": n_train, "val": n_val, "size": size,
                                                             "seed": seed, "generator": GENERATOR_VERSION,
                                                             "style": style}) + "\n")
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / DONE_MARKER).is_file():  # not a concurrent run that finished first
                raise
    except OSError as exc:
        raise DataError(f"cannot write the synthetic dataset under {root}: {exc}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final
