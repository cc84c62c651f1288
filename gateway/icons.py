"""The dashboard's icon, drawn from code: one flame, written as SVG and rasterised to PNG (no binary files in git)."""

from __future__ import annotations

import math
import struct
import zlib
from functools import cache

# The drawing lives in a 100 x 100 box: a rounded square, an outer flame and an inner flame.
# Each flame is a closed path of cubic Bézier segments: start point, then (c1, c2, end) triples.
Point = tuple[float, float]
OUTER: list[Point] = [(50, 10), (58, 28), (79, 40), (77, 62), (75, 80), (63, 90), (50, 90), (37, 90), (25, 80),
                      (23, 62), (22, 48), (31, 38), (37, 27), (39, 35), (42, 40), (45, 42), (45, 30), (46, 20),
                      (50, 10)]
INNER: list[Point] = [(51, 44), (57, 54), (65, 60), (64, 71), (63, 81), (57, 86), (50, 86), (43, 86), (36, 81),
                      (36, 71), (36, 61), (46, 57), (51, 44)]
BACKGROUND = (0x1C, 0x21, 0x29)
OUTER_COLOR = (0xF9, 0x73, 0x16)
INNER_COLOR = (0xFD, 0xD3, 0x4D)
SUBSAMPLES = 4  # sub-scanlines per pixel row: enough anti-aliasing for an icon
PNG_ICONS = {"icon-192.png": (192, False), "icon-512.png": (512, False), "maskable-512.png": (512, True),
             "apple-touch-icon.png": (180, True)}


def _hex(color: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in color)


def _path(points: list[Point]) -> str:
    head, rest = points[0], points[1:]
    parts = [f"M{head[0]:g} {head[1]:g}"]
    for i in range(0, len(rest), 3):
        (ax, ay), (bx, by), (cx, cy) = rest[i:i + 3]
        parts.append(f"C{ax:g} {ay:g} {bx:g} {by:g} {cx:g} {cy:g}")
    return "".join(parts) + "Z"


@cache
def svg_icon() -> bytes:
    """The icon as SVG (favicon and the manifest's scalable icon)."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">'
            f'<rect width="100" height="100" rx="22" fill="{_hex(BACKGROUND)}"/>'
            f'<path d="{_path(OUTER)}" fill="{_hex(OUTER_COLOR)}"/>'
            f'<path d="{_path(INNER)}" fill="{_hex(INNER_COLOR)}"/></svg>').encode()


def _flatten(points: list[Point], steps: int = 24) -> list[Point]:
    """The Bézier path as a polygon."""
    out = [points[0]]
    for i in range(1, len(points) - 1, 3):
        p0, p1, p2, p3 = points[i - 1], points[i], points[i + 1], points[i + 2]
        for k in range(1, steps + 1):
            t = k / steps
            u = 1 - t
            out.append((u**3 * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t**3 * p3[0],
                        u**3 * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t**3 * p3[1]))
    return out


def _rounded_square(radius: float) -> list[Point]:
    if radius <= 0:
        return [(0, 0), (100, 0), (100, 100), (0, 100)]
    out = []
    for cx, cy, start in ((100 - radius, radius, -90), (100 - radius, 100 - radius, 0),
                          (radius, 100 - radius, 90), (radius, radius, 180)):
        for k in range(13):
            angle = math.radians(start + 90 * k / 12)
            out.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return out


def _coverage(polygon: list[Point], size: int, scale: float, offset: float) -> list[list[float]]:
    """Per-pixel coverage (0..1) of a polygon, by sub-scanlines with exact horizontal span ends."""
    pts = [(offset + x * scale, offset + y * scale) for x, y in polygon]
    edges = list(zip(pts, pts[1:] + pts[:1], strict=True))
    rows = []
    weight = 1.0 / SUBSAMPLES
    for y in range(size):
        diff = [0.0] * (size + 2)
        for sub in range(SUBSAMPLES):
            sy = y + (sub + 0.5) / SUBSAMPLES
            xs = sorted(x0 + (sy - y0) * (x1 - x0) / (y1 - y0)
                        for (x0, y0), (x1, y1) in edges if (y0 <= sy < y1) or (y1 <= sy < y0))
            for a, b in zip(xs[::2], xs[1::2], strict=False):
                _span(diff, max(0.0, a), min(float(size), b), weight)
        acc, row = 0.0, []
        for x in range(size):
            acc += diff[x]
            row.append(min(1.0, max(0.0, acc)))
        rows.append(row)
    return rows


def _span(diff: list[float], a: float, b: float, weight: float) -> None:
    """Add coverage `weight` over [a, b) into a difference array whose prefix sums are pixel coverages."""
    if b <= a:
        return
    ia, ib = int(a), int(b)
    if ia == ib:
        diff[ia] += weight * (b - a)
        diff[ia + 1] -= weight * (b - a)
        return
    first = weight * (ia + 1 - a)  # the partly covered first pixel
    diff[ia] += first
    diff[ia + 1] += weight - first  # from the next pixel on, fully covered
    last = weight * (b - ib)  # the partly covered last pixel
    diff[ib] -= weight - last
    diff[ib + 1] -= last


def _png(size: int, pixels: bytearray) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    stride = size * 4
    raw = b"".join(b"\x00" + bytes(pixels[y * stride:(y + 1) * stride]) for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


@cache
def png_icon(size: int, full_bleed: bool) -> bytes:
    """The icon as a PNG; `full_bleed` (maskable, Apple) fills the square and keeps the flame in the safe zone."""
    pixels = bytearray(size * size * 4)
    scale, offset = size / 100, 0.0
    layers = [(_rounded_square(0 if full_bleed else 22), BACKGROUND)]
    flame_scale = scale * (0.72 if full_bleed else 1.0)
    flame_offset = size * (0.14 if full_bleed else 0.0)
    layers += [(_flatten(OUTER), OUTER_COLOR), (_flatten(INNER), INNER_COLOR)]
    for index, (polygon, color) in enumerate(layers):
        s, o = (scale, offset) if index == 0 else (flame_scale, flame_offset)
        opaque = bytes((*color, 255))
        for y, row in enumerate(_coverage(polygon, size, s, o)):
            base = y * size * 4
            for x, alpha in enumerate(row):
                if alpha <= 0:
                    continue
                i = base + x * 4
                if alpha >= 1.0:  # most pixels: plain overwrite
                    pixels[i:i + 4] = opaque
                    continue
                old = pixels[i + 3] / 255
                out = alpha + old * (1 - alpha)
                for c in range(3):
                    pixels[i + c] = round((color[c] * alpha + pixels[i + c] * old * (1 - alpha)) / out)
                pixels[i + 3] = round(out * 255)
    return _png(size, pixels)


def icon(name: str) -> tuple[bytes, str] | None:
    """A generated icon by file name (`icon.svg`, `icon-192.png`, …) with its media type; None if unknown."""
    if name == "icon.svg":
        return svg_icon(), "image/svg+xml"
    if name in PNG_ICONS:
        size, full_bleed = PNG_ICONS[name]
        return png_icon(size, full_bleed), "image/png"
    return None
