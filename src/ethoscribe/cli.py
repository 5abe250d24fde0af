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
