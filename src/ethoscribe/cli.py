"""The ``ethoscribe`` command line: one subcommand per pipeline step, plus the demo.

Every command is a thin wrapper over the Python API; errors caused by input
print one clear message (no traceback) and exit with status 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from ethoscribe.errors import EthoscribeError

app = typer.Typer(
    name="ethoscribe",
    help="Video of freely moving animals to checked pose labels, 3D kinematics and named behaviours.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _friendly_errors(func: F) -> F:
    """Turn ethoscribe's own errors into one red line and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EthoscribeError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


class Noise(str, Enum):
    clean = "clean"
    default = "default"
    hard = "hard"


@app.callback()
def _main(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    from ethoscribe.progress import set_progress

    set_progress(False if quiet else None)


@app.command()
@_friendly_errors
def version() -> None:
    """Print the ethoscribe version."""
    from ethoscribe import __version__

    print(__version__)


@app.command()
@_friendly_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic session into.")],
    cameras: Annotated[int, typer.Option(min=1, help="Number of cameras.")] = 6,
    animals: Annotated[int, typer.Option(min=1, help="Number of animals.")] = 1,
    frames: Annotated[int, typer.Option(min=1, help="Number of frames.")] = 500,
    fps: Annotated[float, typer.Option(min=1, help="Frame rate.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 0,
    noise: Annotated[Noise, typer.Option(help="Noise level (see the README for what each means).")] = Noise.default,
    render: Annotated[str, typer.Option(help="Videos to render: all, markers, body or none.")] = "all",
) -> None:
    """Write a synthetic multi-camera session with ground truth (the demo's and benchmarks' referee)."""
    from ethoscribe.synth.rig import synthesize

    session = synthesize(out, cameras=cameras, animals=animals, frames=frames, fps=fps, seed=seed, noise=noise.value, render=render)
    console.print(f"[green]wrote[/] {session.root}")


@app.command("detect-spots")
@_friendly_errors
def detect_spots_cmd(
    session: Annotated[Path, typer.Argument(help="Session folder (with session.toml).")],
    out: Annotated[Path | None, typer.Option(help="Candidates table to write (default SESSION/output/candidates.parquet).")] = None,
) -> None:
    """Detect bright marker spots in every view's marker video: a candidates table."""
    from ethoscribe.candidates.spots import detect_session_spots
    from ethoscribe.candidates.table import save_candidates
    from ethoscribe.session import load_session

    s = load_session(session)
    table = detect_session_spots(s)
    target = out or s.root / "output" / "candidates.parquet"
    save_candidates(table, target)
    console.print(f"[green]{len(table)} candidates[/] in {table['frame'].nunique()} frames x {table['view'].nunique()} views -> {target}")


@app.command()
@_friendly_errors
def pose(
    session: Annotated[Path, typer.Argument(help="Session folder (with session.toml).")],
    seeds: Annotated[str | None, typer.Option(help="Seed labels (.slp with >= 3 user-labelled frames), or 'pseudo' to pick them from predictions. Default: the session's.")] = None,
    candidates: Annotated[list[str] | None, typer.Option(help="'markers' (spots in the marker videos) or pose-model prediction files (.slp, DLC .h5/.csv, LP .csv), one per view or one multi-view .slp.")] = None,
    reasoner: Annotated[str, typer.Option(help="Reasoner for stages 1-3: geometric, or vlm (a vision-language model; see --config).")] = "geometric",
    config: Annotated[Path | None, typer.Option(help="ethoscribe.toml with a [reasoner] table (default ./ethoscribe.toml or ETHOSCRIBE_* variables).")] = None,
    vlm_budget: Annotated[int, typer.Option(min=0, help="At most this many model questions per run (vlm).")] = 100,
    vlm_consult: Annotated[str, typer.Option(help="When to ask the model: ambiguous (where geometry is unsure) or always.")] = "ambiguous",
    out: Annotated[Path | None, typer.Option(help="Output folder (default SESSION/output/pose).")] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Frames per saved chunk (an interrupted run resumes from the last).")] = 100,
    resume: Annotated[bool, typer.Option(help="Resume an interrupted run with the same inputs.")] = True,
    min_score: Annotated[float, typer.Option(help="Drop predictions scoring below this.")] = 0.0,
    export: Annotated[str, typer.Option(help="Export formats after labelling: any of slp,dlc,nwb,movement, or 'none'.")] = "slp,dlc,nwb,movement",
) -> None:
    """Label keypoints in every view from candidates and seed frames; checked 3D poses, QC flags, review list, exports."""
    import pandas as pd

    from ethoscribe.io.exports import export_all
    from ethoscribe.pose import PoseConfig, run_pose
    from ethoscribe.reasoning.config import load_config
    from ethoscribe.reasoning.factory import ReasonerRun, make_pose_reasoner
    from ethoscribe.session import load_session

    s = load_session(session)
    sources = candidates or ["markers"]
    if sources == ["markers"]:
        cand: Any = "markers"
    else:
        from ethoscribe.candidates.predictions import read_predictions

        cand = read_predictions([Path(p) for p in sources], s.config.view_names, n_frames=s.config.n_frames, min_score=min_score)
    out_dir = out or s.root / "output" / "pose"
    run = ReasonerRun(load_config(config) if reasoner != "geometric" else None, out_dir=out_dir)
    try:
        r = make_pose_reasoner(reasoner, run, session=s, candidates=cand if isinstance(cand, pd.DataFrame) else None,
                               max_questions=vlm_budget, consult=vlm_consult)
        result = run_pose(s, candidates=cand, seeds=seeds, reasoner=r, out_dir=out_dir, config=PoseConfig(chunk_size=chunk_size), resume=resume)
        if hasattr(r, "verify"):
            r.verify(result)
    finally:
        run.finish()
    summary = result.summary
    labels = result.labels
    flagged = int(labels["flag"].sum())
    console.print(f"[green]{int(labels['x'].notna().sum())} labels[/], {flagged} flagged ({100 * flagged / max(len(labels), 1):.1f} %) -> {result.paths['labels'].parent}")
    for cam in summary.get("suspect_cameras", []) or []:
        console.print(f"[yellow]suspect camera:[/] {cam}", highlight=False)
    for pair in summary.get("duplicate_cameras", []) or []:
        console.print(f"[yellow]identical calibrations:[/] {pair}", highlight=False)
    formats = [f for f in export.split(",") if f and f != "none"]
    if formats:
        paths = export_all(result.paths["labels"].parent, s, formats=formats)
        for name, path in paths.items():
            console.print(f"  export {name:<12} {path}")


@app.command()
@_friendly_errors
def export(
    pose_out: Annotated[Path, typer.Argument(help="A pose output folder (labels.parquet, poses3d.nc).")],
    session: Annotated[Path, typer.Option(help="The session the labels belong to.")],
    format: Annotated[str, typer.Option("--format", help="Comma-separated: slp, dlc, nwb, movement.")] = "slp,dlc,nwb,movement",
    out: Annotated[Path | None, typer.Option(help="Folder for the exports (default POSE_OUT/exports).")] = None,
) -> None:
    """Export pose labels to SLEAP, DeepLabCut, NWB (ndx-pose) and movement files."""
    from ethoscribe.io.exports import export_all
    from ethoscribe.session import load_session

    paths = export_all(pose_out, load_session(session), formats=[f for f in format.split(",") if f], out_dir=out)
    for name, path in paths.items():
        console.print(f"  {name:<12} {path}")


class Clusterer(str, Enum):
    dec = "dec"
    kmeans = "kmeans"
    gmm = "gmm"
    umap_hdbscan = "umap_hdbscan"


class VideoFeatures(str, Enum):
    motion_svd = "motion_svd"
    cnn = "cnn"
    both = "both"


@app.command()
@_friendly_errors
def behavior(
    input: Annotated[Path | None, typer.Argument(help="A pose file (.slp, DLC .h5/.csv, LP .csv, movement .nc) or a session folder with pose outputs.")] = None,
    pose: Annotated[Path | None, typer.Option(help="Pose file (overrides INPUT).")] = None,
    video: Annotated[list[Path] | None, typer.Option(help="Video file(s) for video features; repeat for several.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: beside the input, behavior/).")] = None,
    clusters: Annotated[int, typer.Option(min=2, help="Clusters (deliberate over-segmentation).")] = 10,
    captioner: Annotated[str, typer.Option(help="Snippet captioner: kinematic, or vlm (a vision-language model; see --config).")] = "kinematic",
    merger: Annotated[str, typer.Option(help="Cluster merger and namer: embedding, or llm (a language model; see --config).")] = "embedding",
    config: Annotated[Path | None, typer.Option(help="ethoscribe.toml with a [reasoner] table (default ./ethoscribe.toml or ETHOSCRIBE_* variables).")] = None,
    caption_view: Annotated[str | None, typer.Option(help="View whose body video the vlm captioner sees (default: the most overhead).")] = None,
    caption_budget: Annotated[int | None, typer.Option(help="At most this many captioning questions (vlm).")] = None,
    clusterer: Annotated[Clusterer, typer.Option(help="Clustering: DEC or a baseline.")] = Clusterer.dec,
    video_features: Annotated[VideoFeatures, typer.Option(help="Video features.")] = VideoFeatures.motion_svd,
    fps: Annotated[float | None, typer.Option(help="Frame rate, when the pose file has none.")] = None,
    head_tip: Annotated[str | None, typer.Option(help="Keypoint at the front of the head (default: guessed from names).")] = None,
    neck: Annotated[str | None, typer.Option(help="Keypoint at the neck / front of the body (default: guessed).")] = None,
    rear: Annotated[str | None, typer.Option(help="Keypoint at the rear of the body (default: guessed).")] = None,
    max_gap: Annotated[float, typer.Option(help="Longest pose gap (s) to interpolate; longer gaps are 'untracked'.")] = 0.5,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Discover behaviours: features, deep embedded clustering, snippets, captions, merged and named labels."""
    from ethoscribe.behavior.pipeline import run_behavior
    from ethoscribe.errors import InputError
    from ethoscribe.reasoning.config import load_config
    from ethoscribe.reasoning.factory import ReasonerRun, make_captioner, make_merger
    from ethoscribe.session import load_session

    source = pose or input
    if source is None and not video:
        raise InputError("give a pose file (INPUT or --pose) and/or --video")
    session = None
    if source is not None and source.is_dir():
        if (source / "session.toml").is_file():
            session = load_session(source)
        candidate = source / "output" / "pose" / "poses3d.nc"
        if not candidate.is_file():
            raise InputError(f"{source}: no pose outputs found (expected {candidate}); run `ethoscribe pose` first or pass a pose file")
        source = candidate
    if source is not None and source.name == "poses3d.nc" and session is None and (source.parents[2] / "session.toml").is_file():
        session = load_session(source.parents[2])
    target = out or ((source.parent.parent if source is not None and source.name == "poses3d.nc" else
                      source.parent if source is not None else video[0].parent) / "behavior")
    models_used = (captioner, merger) != ("kinematic", "embedding")
    run = ReasonerRun(load_config(config) if models_used else None, out_dir=target)
    try:
        cap = make_captioner(captioner, run, session, pose=source, videos=video or None, view=caption_view, max_questions=caption_budget)
        mer = make_merger(merger, run)
        result = run_behavior(
            pose=source, videos=video or None, out_dir=target, n_clusters=clusters, captioner=cap, merger=mer,
            clusterer=clusterer.value, video_features=video_features.value, fps=fps, head_tip=head_tip, neck=neck, rear=rear,
            max_gap_s=max_gap, seed=seed,
        )
    finally:
        run.finish()
    frames = result.time_budgets.groupby("label")["n_frames"].sum()
    budget = (frames / frames.sum()).sort_values(ascending=False)  # over all animals
    console.print(f"[green]{len(result.label_dictionary)} behaviours[/], {len(result.segments)} segments -> {target}")
    for label, frac in budget.items():
        console.print(f"  {label:<24} {100 * frac:5.1f} %")


@app.command("evaluate-behavior")
@_friendly_errors
def evaluate_behavior_cmd(
    pred: Annotated[Path, typer.Argument(help="Predicted labels: a behaviour output folder or a labels table (frame, individual, label).")],
    truth: Annotated[Path, typer.Argument(help="True labels table (frame, individual, label or behaviour), or a synthetic session.")],
    tolerance: Annotated[int, typer.Option(help="Boundary tolerance in frames.")] = 5,
) -> None:
    """Score discovered behaviours against true labels: NMI, ARI, F1 after matching, boundary F1."""
    import json

    from ethoscribe.behavior.evaluate import evaluate_behavior

    if truth.is_dir() and (truth / "truth" / "behaviour.parquet").is_file():
        truth = truth / "truth" / "behaviour.parquet"
    scores = evaluate_behavior(pred, truth, tolerance=tolerance)
    print(json.dumps(scores, indent=2, default=float))


@app.command()
@_friendly_errors
def report(
    project: Annotated[Path, typer.Argument(help="A session folder whose outputs are in PROJECT/output/.")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default PROJECT/output/report.html).")] = None,
    examples: Annotated[int, typer.Option(min=0, help="Example frames per behaviour.")] = 4,
    clips: Annotated[bool, typer.Option(help="Short looping clips per behaviour.")] = True,
) -> None:
    """Write one self-contained HTML report from a project's saved outputs (nothing is recomputed)."""
    from ethoscribe.report.project import build_report

    path = build_report(project, out, max_examples=examples, clips=clips)
    console.print(f"[bold green]report:[/] {path.resolve()}")


@app.command("export-behavior")
@_friendly_errors
def export_behavior_cmd(
    result: Annotated[Path, typer.Argument(help="A behaviour output folder (from `ethoscribe behavior`).")],
    out: Annotated[Path | None, typer.Option(help="Folder for the exports (default RESULT/exports).")] = None,
    video: Annotated[Path | None, typer.Option(help="The video the labels belong to (named in BORIS and NWB files).")] = None,
) -> None:
    """Export behaviour segments: CSV/Parquet, per-frame labels, BORIS files and NWB intervals."""
    from ethoscribe.io.exports.behavior import export_behavior

    paths = export_behavior(result, out or result / "exports", media_file=video)
    for name, path in paths.items():
        console.print(f"  {name:<18} {path}")


@app.command("serve-llm")
@_friendly_errors
def serve_llm_cmd(
    port: Annotated[int, typer.Option(help="Loopback port to serve on.")] = 8080,
    host: Annotated[str, typer.Option(help="Interface (keep 127.0.0.1 unless you mean to share it).")] = "127.0.0.1",
    ctx_size: Annotated[int, typer.Option(help="Context tokens per slot.")] = 4096,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: half the cores).")] = None,
    parallel: Annotated[int, typer.Option(help="Requests served at once.")] = 2,
    model: Annotated[Path | None, typer.Option(help="A GGUF file (default: the packaged Gemma 3 270M).")] = None,
    measure: Annotated[bool, typer.Option(help="Measure tokens/s at start-up.")] = True,
) -> None:
    """Serve the packaged local LLM (llama.cpp) as an OpenAI-compatible API until Ctrl-C (needs the optional llm extra)."""
    from ethoscribe.reasoning.local import serve_llm

    serve_llm(port=port, ctx_size=ctx_size, threads=threads, parallel=parallel, host=host, model_path=model, measure=measure,
              echo=lambda msg: console.print(msg, highlight=False, markup=False))


@app.command()
@_friendly_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo session and its outputs.")] = Path("ethoscribe-demo"),
    cameras: Annotated[int, typer.Option(min=2, help="Cameras in the synthetic rig.")] = 4,
    frames: Annotated[int, typer.Option(min=150, help="Frames (at 30 fps).")] = 450,
    animals: Annotated[int, typer.Option(min=1, max=3, help="Animals.")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Run the main job on built-in synthetic data: synthesise, label poses, discover behaviours, report."""
    from ethoscribe.demo import run_demo

    report = run_demo(out, cameras=cameras, frames=frames, animals=animals, seed=seed)
    _print_demo_summary(out / "session" / "output")
    console.print(f"[bold green]report:[/] {report.resolve()}")


def _print_demo_summary(output: Path) -> None:
    """One line each for the pose and behaviour results the demo saved."""
    import pandas as pd

    s = json.loads((output / "pose" / "summary.json").read_text(encoding="utf-8"))
    p3 = s.get("poses3d") or {}
    console.print(f"[bold]pose:[/] 3D points for {p3.get('points', 0) / max(p3.get('of') or 1, 1):.0%} of keypoint-frames, "
                  f"{s['labels']['flagged_labelled_fraction']:.1%} of labels flagged, "
                  f"{len(s.get('suspect_cameras') or [])} suspect camera(s); review list {output / 'pose' / 'review.csv'}",
                  soft_wrap=True)
    names = pd.read_csv(output / "behavior" / "label_dictionary.csv")["label"].tolist()
    console.print(f"[bold]behaviour:[/] {', '.join(map(str, names))}; segments {output / 'behavior' / 'segments.csv'}", soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="ethoscribe")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
