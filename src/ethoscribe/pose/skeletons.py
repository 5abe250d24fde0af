"""Skeletons for files that bring their own: regions and left/right pairs guessed from keypoint names.

A pose model's file (e.g. a SLEAP ``.slp``) names its nodes but says nothing
about body regions, and often nothing about symmetry. :func:`infer_regions`
groups names by keywords (``head``: nose, ears, eyes, head, neck, snout;
``tail``: anything with "tail"; ``limbs``: paws, feet, hands, wrists,
ankles, legs, claws; ``body``: everything else), and
:func:`infer_symmetry` pairs names that differ only by a left/right token
(``_left``/``_right``, ``_L``/``_R``, ``left_``/``right_``, ``Left``/``Right``).

Examples
--------
>>> infer_symmetry(["Ear_L", "Ear_R", "Nose", "Shoulder_left", "Shoulder_right"])
(('Ear_L', 'Ear_R'), ('Shoulder_left', 'Shoulder_right'))
>>> infer_regions(["Nose", "Ear_L", "Trunk", "Tail_0"])
{'head': ('Nose', 'Ear_L'), 'body': ('Trunk',), 'tail': ('Tail_0',)}
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from ethoscribe.errors import InputError
from ethoscribe.skeleton import Skeleton

_REGION_WORDS = {
    "head": ("nose", "ear", "eye", "head", "neck", "snout", "mouth", "chin", "whisker"),
    "tail": ("tail",),
    "limbs": ("paw", "foot", "feet", "hand", "wrist", "ankle", "leg", "claw", "toe", "finger", "knee", "elbow"),
}
_PAIRS = [("left", "right"), ("Left", "Right"), ("LEFT", "RIGHT"), ("L", "R"), ("l", "r")]


def infer_regions(names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Body regions from keypoint names (see the module docstring); empty regions are left out."""
    out: dict[str, list[str]] = {"head": [], "body": [], "limbs": [], "tail": []}
    for n in names:
        low = n.lower()
        region = "body"
        for r in ("tail", "head", "limbs"):
            if any(w in low for w in _REGION_WORDS[r]):
                region = r
                break
        out[region].append(n)
    return {r: tuple(v) for r, v in out.items() if v}


def _mirror(name: str) -> list[str]:
    outs = []
    for a, b in _PAIRS:
        for x, y in ((a, b), (b, a)):
            pat = rf"(?<![A-Za-z]){x}(?![a-z])" if len(x) > 1 else rf"(?:(?<=[_\-\s])|^){x}(?=[_\-\s]|$)"
            if re.search(pat, name):
                outs.append(re.sub(pat, y, name))
    return outs


def infer_symmetry(names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Left/right pairs among ``names`` (each name in at most one pair, in name order)."""
    known = set(names)
    pairs, used = [], set()
    for n in names:
        if n in used:
            continue
        for m in _mirror(n):
            if m in known and m != n and m not in used:
                pairs.append((n, m))
                used.update((n, m))
                break
    return tuple(pairs)


def skeleton_from_sleap(source: Any, name: str | None = None) -> Skeleton:
    """A :class:`~ethoscribe.skeleton.Skeleton` from a SLEAP file (path) or ``sleap_io.Labels``.

    Keypoints and edges come from the file's first skeleton; its symmetries
    are kept when it has any, otherwise they are inferred from the names;
    regions are inferred from the names.
    """
    import sleap_io as sio

    if isinstance(source, (str, os.PathLike)):
        try:
            labels = sio.load_slp(str(source), open_videos=False)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{source}: not a readable SLEAP file ({type(exc).__name__}: {exc})") from None
    else:
        labels = source
    if not labels.skeletons:
        raise InputError(f"{source}: the file holds no skeleton")
    sk = labels.skeletons[0]
    names = [n.name for n in sk.nodes]
    edges = tuple((e.source.name, e.destination.name) for e in sk.edges)
    sym = []
    for s in getattr(sk, "symmetries", []) or []:
        nodes = [n.name for n in s.nodes]
        if len(nodes) == 2:
            sym.append(tuple(sorted(nodes, key=names.index)))
    symmetry = tuple(sym) if sym else infer_symmetry(names)
    return Skeleton(name=name or sk.name or "skeleton", keypoints=tuple(names), regions=infer_regions(names),
                    edges=edges, symmetry=symmetry)
