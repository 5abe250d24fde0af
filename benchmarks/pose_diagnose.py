"""Where do the pose pipeline's wrong labels come from? A breakdown against the synthetic truth.

Run ``python benchmarks/pose_diagnose.py SESSION_DIR [SESSION_DIR ...]`` on
sessions that :mod:`pose_synth` kept (``--keep DIR``). The spots are
detected once and cached as ``SESSION_DIR/candidates_diag.parquet``; the
pipeline runs into ``SESSION_DIR/output/pose_diag``. Progress and the tables
go to stderr; the last stdout line is one JSON object (per session: the
:func:`pose_synth.score` figures and the breakdown).

:func:`breakdown` splits the *swaps* (candidate labels on a spot that
belongs to another keypoint or animal), the *spurious* labels (on a spot of
no marker) and the *off* labels (> 5 px from the truth, any stage) by

- keypoint pair (labelled keypoint -> keypoint whose spot it took),
- what the taken spot is: ``spurious``, ``other_keypoint`` (same animal),
  ``other_animal``,
- the animal's truth behaviour in that frame,
- the number of views agreeing on the keypoint's 3D point,
- for several animals, the distance between the animals (mm, centroids),
- the label's stage,

and counts the visible truth keypoints left without a label by stage of the
other views and by behaviour.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log  # noqa: E402
from pose_synth import OFF_PX, label_owners, score, spot_owner  # noqa: E402


def _top(counter: Counter, n: int = 12) -> dict[str, int]:
    return {str(k): int(v) for k, v in counter.most_common(n)}


def breakdown(result, truth, cands, owner, seed_frames) -> dict:  # type: ignore[no-untyped-def]
    """Counts of wrong labels by cause (see the module docstring)."""
    lab = result.labels
    views, inds = truth.views, truth.individuals
    kps = [str(k) for k in truth.points3d["keypoints"].values]
    V, T, I, K = len(views), truth.n_frames, len(inds), len(kps)
    shape = (T, V, I, K)
    x = lab["x"].to_numpy().reshape(shape)
    y = lab["y"].to_numpy().reshape(shape)
    stage = lab["stage"].to_numpy().reshape(shape)
    cand = lab["candidate"].to_numpy().reshape(shape)
    flag = lab["flag"].to_numpy().reshape(shape)
    reason = lab["reason"].to_numpy().reshape(shape)
    keep = np.ones(T, bool)
    keep[seed_frames] = False
    pos = np.transpose(truth.position2d, (1, 0, 3, 2, 4))
    vis = np.transpose(truth.visible, (1, 0, 3, 2))
    d = np.hypot(x - pos[..., 0], y - pos[..., 1])
    labelled = np.isfinite(x)
    sel = labelled & keep[:, None, None, None]
    nv = np.transpose(result.poses3d["n_views"].values, (0, 2, 1))  # T, I, K
    beh = truth.behaviour.pivot(index="frame", columns="individual", values="behaviour")[inds].to_numpy()  # T, I
    true3 = np.transpose(truth.keypoints3d, (0, 2, 1, 3))  # T, I, K, 3
    cen = np.nanmean(true3[:, :, :5], axis=2)  # ears + back
    if I > 1:
        dd = np.linalg.norm(cen[:, :, None] - cen[:, None], axis=-1)
        dd = np.where(np.eye(I, dtype=bool)[None], np.inf, dd)
        near = dd.min(axis=2)  # T, I: distance to the nearest other animal
    else:
        near = np.full((T, I), np.inf)

    on_cand = sel & (cand >= 0) & (stage != "seed") & (stage != "reprojection")
    tt, vv, ii, kk, o = label_owners(cands, owner, views, cand, on_cand)
    wrong = (o != ii * K + kk)
    out: dict = {"candidate_labels": int(on_cand.sum()), "wrong_candidate_labels": int(wrong.sum())}

    def kind(oo: int, a: int) -> str:
        if oo == -1:
            return "spurious"
        if oo == -2:
            return "unknown"
        return "other_keypoint" if oo // K == a else "other_animal"

    bins = [0, 30, 60, 100, 150, 1e9]

    def dbin(v: float) -> str:
        for lo, hi in zip(bins[:-1], bins[1:]):
            if lo <= v < hi:
                return f"{lo:g}-{hi:g}mm"
        return "inf"

    c_pair, c_kind, c_beh, c_nv, c_dist, c_stage, c_view, c_flag = (Counter() for _ in range(8))
    c_kp = Counter()
    for j in np.flatnonzero(wrong):
        t, v, a, k, oo = tt[j], vv[j], ii[j], kk[j], o[j]
        kd = kind(oo, a)
        c_kind[kd] += 1
        c_kp[kps[k]] += 1
        c_pair[f"{kps[k]}->{kps[oo % K] if oo >= 0 else kd}" + ("(other animal)" if kd == "other_animal" else "")] += 1
        c_beh[beh[t, a]] += 1
        c_nv[int(nv[t, a, k])] += 1
        c_stage[stage[t, v, a, k]] += 1
        c_view[views[v]] += 1
        c_flag[bool(flag[t, v, a, k])] += 1
        if I > 1:
            c_dist[dbin(near[t, a])] += 1
    # totals per behaviour / n_views (denominators)
    tot_beh = Counter(beh[tt, ii].tolist())
    tot_nv = Counter(nv[tt, ii, kk].astype(int).tolist())
    out["wrong_by_kind"] = dict(c_kind)
    out["wrong_by_keypoint"] = _top(c_kp, K)
    out["wrong_by_pair"] = _top(c_pair, 20)
    out["wrong_by_behaviour"] = {b: f"{c_beh[b]}/{tot_beh[b]} = {c_beh[b] / max(tot_beh[b], 1):.3%}" for b in tot_beh}
    out["wrong_by_n_views"] = {n: f"{c_nv[n]}/{tot_nv[n]} = {c_nv[n] / max(tot_nv[n], 1):.3%}" for n in sorted(tot_nv)}
    out["wrong_by_stage"] = dict(c_stage)
    out["wrong_by_view"] = dict(c_view)
    out["wrong_flagged"] = {str(k): v for k, v in c_flag.items()}
    if I > 1:
        tot_d = Counter(dbin(v) for v in near[tt, ii])
        out["wrong_by_animal_distance"] = {b: f"{c_dist[b]}/{tot_d[b]} = {c_dist[b] / max(tot_d[b], 1):.3%}" for b in sorted(tot_d)}
    # runs: how long do wrong identities last (per view, animal, keypoint)
    w = np.zeros(shape, bool)
    w[tt[wrong], vv[wrong], ii[wrong], kk[wrong]] = True
    runs = []
    for v in range(V):
        for a in range(I):
            for k in range(K):
                col = w[:, v, a, k].astype(np.int8)
                e = np.flatnonzero(np.diff(np.r_[0, col, 0]))
                runs += (e[1::2] - e[::2]).tolist()
    runs = np.asarray(runs)
    out["wrong_run_lengths"] = {"n": int(runs.size), "median": float(np.median(runs)) if runs.size else 0,
                                "share_in_runs_ge_10": float(runs[runs >= 10].sum() / max(runs.sum(), 1))}
    # wrong 3D identities (the keypoint wrong in >= 2 views of a frame): the longest runs, where they start
    w3 = w.sum(axis=1) >= 2  # T, I, K
    rows = []
    for a in range(I):
        for k in range(K):
            col = w3[:, a, k].astype(np.int8)
            e = np.flatnonzero(np.diff(np.r_[0, col, 0]))
            for s0, s1 in zip(e[::2], e[1::2]):
                js = np.flatnonzero((tt == s0) & (ii == a) & (kk == k) & wrong)
                to = Counter(int(o[j]) for j in js).most_common(1)
                tgt = to[0][0] if to else -9
                tname = "spurious" if tgt == -1 else (kps[tgt % K] + ("(other)" if tgt // K != a else "")) if tgt >= 0 else "?"
                rows.append((int(s1 - s0), int(s0), inds[a], kps[k], tname, beh[s0, a], f"{near[s0, a]:.0f}"))
    rows.sort(reverse=True)
    out["wrong_3d_runs"] = {"n": len(rows), "frames": int(sum(r[0] for r in rows)),
                            "longest": [" ".join(map(str, r)) for r in rows[:15]],
                            "start_behaviour": dict(Counter(r[5] for r in rows))}
    # frames where the same keypoint is wrong in >= 3 views (a wrong 3D identity) vs one view only
    per_frame = w.sum(axis=1)  # T, I, K
    out["wrong_3d_identity_labels"] = int(w[np.broadcast_to((per_frame >= 3)[:, None], shape)].sum())
    out["wrong_single_view_labels"] = int(w[np.broadcast_to((per_frame == 1)[:, None], shape)].sum())

    # off labels (> 5 px) by stage and reason; flagged or not
    bad = sel & (d > OFF_PX)
    out["off_by_stage"] = dict(Counter(stage[bad].tolist()))
    out["off_unflagged_by_stage"] = dict(Counter(stage[bad & ~flag].tolist()))
    fl = sel & flag
    out["flagged_fine_by_reason"] = _top(Counter(reason[fl & ~bad].tolist()), 12)
    out["flagged_off_by_reason"] = _top(Counter(reason[fl & bad].tolist()), 12)
    # visible keypoints without a label
    visk = vis & keep[:, None, None, None]
    miss = visk & ~labelled
    out["missed_visible"] = int(miss.sum())
    t3 = np.broadcast_to(nv[:, None], shape)
    out["missed_visible_by_n_views"] = dict(Counter(t3[miss].astype(int).tolist()))
    out["missed_visible_by_behaviour"] = dict(Counter(np.broadcast_to(beh[:, None, :, None], shape)[miss].tolist()))
    out["missed_visible_by_reason"] = _top(Counter(reason[miss].tolist()), 8)
    # confidence calibration: P(off) by confidence decile
    conf = lab["confidence"].to_numpy().reshape(shape)
    cs = conf[sel]
    bs = (d > OFF_PX)[sel]
    edges = [0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01]
    cal = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (cs >= lo) & (cs < hi)
        if m.any():
            cal[f"{lo:.2f}-{hi:.2f}"] = f"n={int(m.sum())} off={bs[m].mean():.3f}"
    out["confidence_calibration"] = cal
    return out


def pass_swaps(out_dir: Path, truth, cands, owner, seed_frames) -> dict:  # type: ignore[no-untyped-def]
    """Swap rate of each tracking pass on its own (from the chunk files in ``out_dir/partial``)."""
    import glob

    views = truth.views
    K = truth.keypoints3d.shape[1]
    key = pd.Series(owner, index=pd.MultiIndex.from_arrays([cands["frame"].to_numpy(), cands["view"].astype(str).to_numpy(),
                                                            cands["candidate"].to_numpy()]))
    res: dict = {}
    seeds = set(int(f) for f in seed_frames)
    for f in sorted(glob.glob(str(out_dir / "partial" / "chunk_*.npz"))):
        with np.load(f) as z:
            d = json.loads(str(z["stats"]))["direction"]
            frames, cid, stage = z["frames"], z["cid"], z["stage"]
        keep = np.array([int(t) not in seeds for t in frames])
        if not keep.any():
            continue
        frames, cid, stage = frames[keep], cid[keep], stage[keep]
        tt, vv, ii, kk = np.nonzero((cid >= 0) & (stage != 4))
        o = key.reindex(pd.MultiIndex.from_arrays([frames[tt], np.asarray(views)[vv], cid[tt, vv, ii, kk]])).to_numpy()
        o = np.where(np.isfinite(o), o, -2).astype(np.int64)
        r = res.setdefault(d, [0, 0])
        r[0] += int((o != ii * K + kk).sum())
        r[1] += int(o.size)
    return {d: f"{a}/{b} = {a / max(b, 1):.3%}" for d, (a, b) in res.items()}


def cached_candidates(root: Path, session):  # type: ignore[no-untyped-def]
    from ethoscribe.candidates import detect_session_spots

    path = root / "candidates_diag.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    cands = detect_session_spots(session)
    cands.to_parquet(path)
    return cands


def run(root: Path, config=None) -> dict:  # type: ignore[no-untyped-def]
    from ethoscribe.io.seeds import load_seeds
    from ethoscribe.pose import run_pose
    from ethoscribe.session import load_session
    from ethoscribe.synth.truth import load_truth

    session = load_session(root)
    cands = cached_candidates(root, session)
    truth = load_truth(root)
    seeds = load_seeds(session.seeds_path, session.skeleton, session.config.view_names, session.config.individuals)
    res = run_pose(session, candidates=cands, seeds=seeds, out_dir=root / "output" / "pose_diag", resume=False,
                   config=config)
    owner_path = root / "owner_diag.npy"
    if owner_path.is_file():
        owner = np.load(owner_path)
    else:
        owner = spot_owner(cands, truth, session.config.view_names)
        np.save(owner_path, owner)
    s = score(res, truth, cands, owner, seeds.frames)
    s["timepoints_per_s"] = res.summary["timings_s"]["timepoints_per_s"]
    s["timepoints_per_cpu_s"] = res.summary["timings_s"]["timepoints_per_cpu_s"]
    b = breakdown(res, truth, cands, owner, seeds.frames)
    b["swap_rate_by_pass"] = pass_swaps(root / "output" / "pose_diag", truth, cands, owner, seeds.frames)
    return {"score": s, "breakdown": b}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sessions", nargs="+", type=Path)
    args = ap.parse_args()
    out = {}
    for root in args.sessions:
        r = run(root)
        log(f"== {root}")
        log(json.dumps(r, indent=1, default=str))
        out[str(root)] = r
    emit(out)


if __name__ == "__main__":
    main()
