#!/usr/bin/env python3
"""Regenerate assets/icons/* from assets/icon.svg.

Needs `rsvg-convert` (Debian: librsvg2-bin) and Pillow (`pip install pillow`).
Run from anywhere: python3 assets/make_icons.py
"""
import io
import pathlib
import subprocess

from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
SVG = HERE / "icon.svg"
OUT = HERE / "icons"


def render(size: int) -> Image.Image:
    png = subprocess.run(
        ["rsvg-convert", "-w", str(size), "-h", str(size), str(SVG)],
        check=True,
        capture_output=True,
    ).stdout
    return Image.open(io.BytesIO(png)).convert("RGBA")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, size in [
        ("32x32.png", 32),
        ("128x128.png", 128),
        ("128x128@2x.png", 256),
        ("icon.png", 512),
    ]:
        render(size).save(OUT / name, optimize=True)

    # Windows: one .ico holding the usual sizes, each rendered from the SVG.
    ico_sizes = [16, 24, 32, 48, 64, 128, 256]
    big = render(256)
    big.save(
        OUT / "icon.ico",
        sizes=[(s, s) for s in ico_sizes],
        append_images=[render(s) for s in ico_sizes[:-1]],
    )

    # macOS: .icns from 16 to 1024 (Pillow fills the set from the images given).
    icns_sizes = [16, 32, 64, 128, 256, 512]
    render(1024).save(
        OUT / "icon.icns",
        append_images=[render(s) for s in icns_sizes],
    )


if __name__ == "__main__":
    main()
