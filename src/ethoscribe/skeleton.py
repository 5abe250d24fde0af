"""Skeletons: keypoints grouped into body regions, with edges and left/right pairs.

A skeleton is saved as ``skeleton.json`` in a session folder. The built-in
:func:`mouse12` is the 12-keypoint mouse of the synthetic rig (and of
BehaviorVLM's quantum-dot data): ears 2, back 3, paws 4, tail 3.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ethoscribe.errors import SkeletonError
from ethoscribe.io.atomic import write_text

if TYPE_CHECKING:  # pragma: no cover
    import sleap_io


class Skeleton(BaseModel):
    """Keypoint names, body regions, edges and left/right symmetry pairs.

    Examples
    --------
    >>> sk = mouse12()
    >>> sk.n_keypoints, list(sk.regions)
    (12, ['ears', 'back', 'paws', 'tail'])
    >>> sk.index("tail_tip")
    11
    >>> sk.region_of("paw_hind_left")
    'paws'
    """

    model_config = ConfigDict(frozen=True)

    name: str = "skeleton"
    keypoints: tuple[str, ...]
    regions: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    edges: tuple[tuple[str, str], ...] = ()
    symmetry: tuple[tuple[str, str], ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Skeleton:
        kp = list(self.keypoints)
        if len(kp) == 0:
            raise ValueError("a skeleton needs at least one keypoint")
        if len(set(kp)) != len(kp):
            dup = sorted({k for k in kp if kp.count(k) > 1})
            raise ValueError(f"duplicate keypoint names: {dup}")
        known = set(kp)
        if self.regions:
            seen: list[str] = [k for ks in self.regions.values() for k in ks]
            unknown = sorted(set(seen) - known)
            if unknown:
                raise ValueError(f"regions name unknown keypoints: {unknown}")
            twice = sorted({k for k in seen if seen.count(k) > 1})
            if twice:
                raise ValueError(f"keypoints in more than one region: {twice}")
            missing = [k for k in kp if k not in set(seen)]
            if missing:
                raise ValueError(f"keypoints in no region: {missing}")
        for kind, pairs in (("edges", self.edges), ("symmetry", self.symmetry)):
            for a, b in pairs:
                if a not in known or b not in known:
                    raise ValueError(f"{kind} pair ({a!r}, {b!r}) names an unknown keypoint")
        return self

    @property
    def n_keypoints(self) -> int:
        """Number of keypoints."""
        return len(self.keypoints)

    def index(self, keypoint: str) -> int:
        """Position of ``keypoint`` in :attr:`keypoints`."""
        try:
            return self.keypoints.index(keypoint)
        except ValueError:
            raise SkeletonError(f"keypoint {keypoint!r} is not in skeleton {self.name!r} {list(self.keypoints)}") from None

    def region_of(self, keypoint: str) -> str:
        """Name of the region that holds ``keypoint``."""
        for region, kps in self.regions.items():
            if keypoint in kps:
                return region
        raise SkeletonError(f"keypoint {keypoint!r} is in no region of skeleton {self.name!r}")

    def region_indices(self) -> dict[str, list[int]]:
        """Keypoint indices per region, in skeleton order."""
        return {r: [self.index(k) for k in ks] for r, ks in self.regions.items()}

    def edge_indices(self) -> list[tuple[int, int]]:
        """Edges as index pairs."""
        return [(self.index(a), self.index(b)) for a, b in self.edges]

    def symmetry_indices(self) -> list[tuple[int, int]]:
        """Left/right pairs as index pairs."""
        return [(self.index(a), self.index(b)) for a, b in self.symmetry]

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the skeleton as JSON (atomically)."""
        return write_text(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Skeleton:
        """Read a skeleton JSON file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise SkeletonError(f"{path}: skeleton file not found")
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise SkeletonError(f"{path}: not a valid skeleton file: {exc}") from None

    def to_sleap(self) -> sleap_io.Skeleton:
        """The same skeleton as a :class:`sleap_io.Skeleton` (edges and symmetries kept)."""
        import sleap_io as sio

        nodes = [sio.Node(k) for k in self.keypoints]
        by_name = {n.name: n for n in nodes}
        return sio.Skeleton(
            nodes=nodes,
            edges=[sio.Edge(by_name[a], by_name[b]) for a, b in self.edges],
            symmetries=[sio.Symmetry({by_name[a], by_name[b]}) for a, b in self.symmetry],
            name=self.name,
        )

    def check_same(self, keypoints: list[str] | tuple[str, ...], source: str) -> None:
        """Raise :class:`SkeletonError` unless ``keypoints`` equals this skeleton's, naming ``source``."""
        if tuple(keypoints) != self.keypoints:
            extra = sorted(set(keypoints) - set(self.keypoints))
            missing = sorted(set(self.keypoints) - set(keypoints))
            detail = []
            if missing:
                detail.append(f"missing {missing}")
            if extra:
                detail.append(f"unexpected {extra}")
            if not detail:
                detail.append("same names in another order")
            raise SkeletonError(
                f"{source}: keypoints do not match skeleton {self.name!r} ({'; '.join(detail)})"
            )


def mouse12() -> Skeleton:
    """The 12-keypoint mouse: ears, back, paws and tail regions.

    Examples
    --------
    >>> mouse12().regions["tail"]
    ('tail_base', 'tail_mid', 'tail_tip')
    """
    return Skeleton(
        name="mouse12",
        keypoints=(
            "ear_left", "ear_right",
            "back_front", "back_mid", "back_rear",
            "paw_front_left", "paw_front_right", "paw_hind_left", "paw_hind_right",
            "tail_base", "tail_mid", "tail_tip",
        ),
        regions={
            "ears": ("ear_left", "ear_right"),
            "back": ("back_front", "back_mid", "back_rear"),
            "paws": ("paw_front_left", "paw_front_right", "paw_hind_left", "paw_hind_right"),
            "tail": ("tail_base", "tail_mid", "tail_tip"),
        },
        edges=(
            ("ear_left", "ear_right"),
            ("ear_left", "back_front"), ("ear_right", "back_front"),
            ("back_front", "back_mid"), ("back_mid", "back_rear"), ("back_rear", "tail_base"),
            ("tail_base", "tail_mid"), ("tail_mid", "tail_tip"),
            ("back_front", "paw_front_left"), ("back_front", "paw_front_right"),
            ("back_rear", "paw_hind_left"), ("back_rear", "paw_hind_right"),
        ),
        symmetry=(
            ("ear_left", "ear_right"),
            ("paw_front_left", "paw_front_right"),
            ("paw_hind_left", "paw_hind_right"),
        ),
    )
