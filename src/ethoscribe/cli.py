"""The ``ethoscribe`` command line: one subcommand per pipeline step, plus the demo.

Every command is a thin wrapper over the Python API; errors caused by input
print one clear message (no traceback) and exit with status 2.
"""

from __future__ import annotations

import functools
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
    captioner: Annotated[str, typer.Option(help="Snippet captioner: kinematic.")] = "kinematic",
    merger: Annotated[str, typer.Option(help="Cluster merger and namer: embedding.")] = "embedding",
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

    source = pose or input
    if source is None and not video:
        raise InputError("give a pose file (INPUT or --pose) and/or --video")
    if source is not None and source.is_dir():
        candidate = source / "output" / "pose" / "poses3d.nc"
        if not candidate.is_file():
            raise InputError(f"{source}: no pose outputs found (expected {candidate}); run `ethoscribe pose` first or pass a pose file")
        source = candidate
    target = out or ((source.parent if source is not None else video[0].parent) / "behavior")
    result = run_behavior(
        pose=source, videos=video or None, out_dir=target, n_clusters=clusters, captioner=captioner, merger=merger,
        clusterer=clusterer.value, video_features=video_features.value, fps=fps, head_tip=head_tip, neck=neck, rear=rear,
        max_gap_s=max_gap, seed=seed,
    )
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
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo session and its outputs.")] = Path("ethoscribe-demo"),
    cameras: Annotated[int, typer.Option(min=2)] = 4,
    frames: Annotated[int, typer.Option(min=30)] = 300,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Run the main job on built-in synthetic data and write an HTML report."""
    from ethoscribe.demo import run_demo

    report = run_demo(out, cameras=cameras, frames=frames, seed=seed)
    console.print(f"[bold green]report:[/] {report.resolve()}")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="ethoscribe")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
