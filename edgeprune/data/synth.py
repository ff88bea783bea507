"""Synthetic top-down aerial scenes with six remote-sensing classes, written as a YOLO dataset.

Every scene is a pure function of (seed, split, index): the same seed gives byte-identical PNGs and labels.
A scene is planned first (river, roads, apron, tank farm; then objects; then distractors that avoid the
objects) and rendered afterwards with Pillow polygons, so every label is the tight axis-aligned box of the
rotated polygon that was drawn. Classes are kept distinct by shape and colour, and by context as in real
imagery (ships, bridges and harbors on water; airplanes on aprons; vehicles along roads), while sizes run
from ~8 px vehicles to large harbors so that small targets stay genuinely hard.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from ..errors import DataError
from ..fsio import atomic_write_text
from .yolo import label_text

NAMES = ["airplane", "ship", "storage-tank", "vehicle", "bridge", "harbor"]
AIRPLANE, SHIP, TANK, VEHICLE, BRIDGE, HARBOR = range(6)
# Styles: "aerial" (the scenes above, the default) or "simple": 1-3 large airplanes, ships or tanks on plain
# fields. "simple" is learnable in a few hundred steps at 128 px, so smoke runs and end-to-end tests can demand
# a real mAP instead of comparing zeros (tests/pipeline/test_compress_e2e.py).
STYLES = {"aerial": NAMES, "simple": NAMES[:3]}
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


def _uni(rng: np.random.Generator, lo: float, hi: float) -> float:
    """uniform(lo, hi) that tolerates hi < lo (small scenes shrink the upper bounds below the lower ones)."""
    return float(rng.uniform(lo, max(lo, hi)))


def _rect(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def _rot(pts: np.ndarray, angle: float, cx: float, cy: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + (cx, cy)


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


def _add_object(sc: _Scene, cls: int, polys: list[np.ndarray], colors: list[tuple], shadow: float) -> None:
    """Register an object: shadow under it, its polygons above, the tight box of the polygons as its label."""
    box = _bbox(polys)
    if shadow > 0:
        dx, dy = sc.sun[0] * shadow, sc.sun[1] * shadow
        for p in polys:
            sc.shadows.append(p + (dx, dy))
    for p, c in zip(polys, colors):
        sc.above.append(_Shape("poly", [tuple(q) for q in p], c, owner=len(sc.boxes)))
    sc.boxes.append((cls, *box))
    sc.occupied.append(box)


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


def _place_airplanes(sc: _Scene, n: int, region) -> None:
    rng = sc.rng
    for _ in range(n):
        for _try in range(12):
            L = _uni(rng, 12, min(64, sc.size * 0.3))
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


def _place_ships(sc: _Scene, n: int) -> None:
    rng = sc.rng
    cx0, cy0, ux, uy, hw = sc.river
    along_angle = math.atan2(uy, ux)
    for _ in range(n):
        for _try in range(15):
            L = _uni(rng, 12, min(72, hw * 3))
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


def _place_tanks(sc: _Scene, n: int, region, grid: bool) -> None:
    rng = sc.rng
    r = _uni(rng, 4, min(22, sc.size * 0.07))
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
        sc.boxes.append((TANK, *box))
        sc.occupied.append(box)


def _tank_shapes(sc: _Scene, cx: float, cy: float, rr: float, top: tuple) -> None:
    """A storage tank seen from above: a disc with a darker inner ring and centre (owned by the next box)."""
    k = len(sc.boxes)
    sc.above.append(_Shape("ellipse", [cx - rr, cy - rr, cx + rr, cy + rr], top, owner=k))
    ri = rr * 0.62
    sc.above.append(_Shape("ellipse", [cx - ri, cy - ri, cx + ri, cy + ri], _shade(top, 0.82), owner=k))
    rc = rr * 0.18
    sc.above.append(_Shape("ellipse", [cx - rc, cy - rc, cx + rc, cy + rc], _shade(top, 0.7), owner=k))


_VEHICLE_COLORS = [(200, 30, 30), (30, 60, 200), (240, 240, 240), (20, 20, 25), (230, 200, 20), (40, 150, 60)]


def _vehicle(sc: _Scene, cx: float, cy: float, angle: float) -> bool:
    rng = sc.rng
    L = float(rng.uniform(9, 18))
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
                sc.boxes.append((TANK, *box))
                sc.occupied.append(box)
            elif cls == AIRPLANE:
                _add_object(sc, AIRPLANE, polys, [(225, 225, 230), (215, 215, 220), (240, 240, 245)], S * 0.02)
            else:
                _add_object(sc, SHIP, polys, [(200, 60, 45), (245, 245, 245)], S * 0.02)
            break
    return fields


def _place_distractors(sc: _Scene) -> None:
    """Buildings (rectangles with roofs and shadows) and trees: clutter that is none of the classes."""
    rng, S = sc.rng, sc.size
    for _ in range(int(rng.integers(2, 14))):
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
    for _ in range(int(rng.integers(0, 5))):
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


def _water_poly(sc: _Scene) -> list[tuple]:
    """The river band with slightly wobbly banks."""
    cx, cy, ux, uy, hw = sc.river
    nx, ny = -uy, ux
    ts = np.linspace(-1.5 * sc.size, 1.5 * sc.size, 24)
    wob = sc.rng.normal(0, 1.2, (2, len(ts)))
    left = [(cx + t * ux + (hw + w) * nx, cy + t * uy + (hw + w) * ny) for t, w in zip(ts, wob[0])]
    right = [(cx + t * ux - (hw + w) * nx, cy + t * uy - (hw + w) * ny) for t, w in zip(ts, wob[1])]
    return left + right[::-1]


def render_scene(seed: int, index: int, size: int = 320, split: str = "train", style: str = "aerial",
                 hide: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene → (HxWx3 uint8 RGB, boxes float32 (N,4) xyxy pixels, classes int64 (N,)).

    `hide=k` leaves object k undrawn (its label and shadow stay; every random draw is the same), so the
    pixels an object changes can be compared with its label (tests/data/test_synth.py)."""
    if style not in STYLES:
        raise DataError(f"synthetic style {style!r}: choose one of {sorted(STYLES)} (data.synth_style)")
    key = [int(seed), _SPLITS.get(split, 2), int(index), GENERATOR_VERSION]
    if style != "aerial":
        key.append(sorted(STYLES).index(style) + 1)
    rng = np.random.default_rng(np.random.SeedSequence(key))
    sc = _Scene(size=size, rng=rng)
    fields = _plan(sc) if style == "aerial" else _plan_simple(sc)

    base = np.array(_FIELD_COLORS[int(rng.integers(len(_FIELD_COLORS)))], dtype=np.float32)
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
        if shp.kind == "line":
            draw.line(shp.pts, fill=shp.fill, width=shp.width)
    if sc.river is not None:
        water = tuple(int(v) for v in np.array((40, 70, 95)) + rng.integers(-10, 11, 3))
        draw.polygon(_water_poly(sc), fill=water)
    for shp in sc.below:
        if shp.kind == "poly":
            draw.polygon(shp.pts, fill=shp.fill)

    # low-frequency lighting / soil variation
    arr = np.asarray(img, dtype=np.float32)
    coarse = rng.normal(0, 9, (size // 32 + 2, size // 32 + 2)).astype(np.float32)
    low = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))
    arr += low[..., None]

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
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-3, 4, (size, size, 1), dtype=np.int16)
    out = np.clip(arr, 0, 255).astype(np.uint8)

    if sc.boxes:
        b = np.array([bx[1:] for bx in sc.boxes], dtype=np.float32)
        b = np.clip(b, 0, size)
        c = np.array([bx[0] for bx in sc.boxes], dtype=np.int64)
    else:
        b, c = np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    return out, b, c


def png_bytes(img: np.ndarray) -> bytes:
    """Encode HxWx3 uint8 as PNG with the "sub" filter on every row and zlib level 1.

    Pillow's encoder (adaptive filters) costs ~15 ms for a noisy 320 px scene, three times the rest of the
    scene; this fixed-filter writer is ~4 ms, byte-for-byte deterministic, and any PNG decoder reads it.
    """
    h, w = img.shape[:2]
    rows = np.ascontiguousarray(img, dtype=np.uint8).reshape(h, w * 3)
    raw = np.empty((h, w * 3 + 1), np.uint8)
    raw[:, 0] = 1  # filter type 1 = sub: each byte minus the same channel of the pixel to its left
    raw[:, 1:4] = rows[:, :3]
    raw[:, 4:] = rows[:, 3:] - rows[:, :-3]  # uint8 arithmetic wraps modulo 256, as PNG specifies

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1))
            + chunk(b"IEND", b""))


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
            (out / "images" / split / f"{stem}.png").write_bytes(png_bytes(img))
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


def ensure_synthetic(root: str | Path, n_train: int, n_val: int, size: int = 320, seed: int = 0,
                     progress: bool = True, style: str = "aerial") -> Path:
    """Return the folder of a cached synthetic dataset (its data.yaml inside), generating it if needed.

    The folder is named by a hash of the parameters. Generation happens in a staging folder that is renamed
    into place after the done-marker is written, so a crash never leaves a cache that looks complete, and a
    folder without the marker (from an older, interrupted run) is regenerated.
    """
    root = Path(root)
    if style not in STYLES:
        raise DataError(f"synthetic style {style!r}: choose one of {sorted(STYLES)} (data.synth_style)")
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
