"""A view of the run: TensorBoard scalars while it trains (--report-to tensorboard, optional
dependency) and curves.png when it ends (matplotlib, optional: without it there is no plot)."""
import importlib.util
from pathlib import Path

from minicore.errors import UserError
from minicore.files import atomic_write


def require_tensorboard() -> None:
    """Fail before anything is written when --report-to tensorboard cannot work."""
    if importlib.util.find_spec("tensorboard") is None:  # torch.utils.tensorboard needs it
        raise UserError("TensorBoard is not installed", "--report-to", "tensorboard",
                        "pip install tensorboard, or leave out --report-to")


def tensorboard_writer(folder: Path):
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(str(folder))


def add_scalars(writer, prefix: str, step: int, record: dict) -> None:
    """Every number of `record` as the scalar <prefix>/<key> at `step`."""
    for key, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch"):
            writer.add_scalar(f"{prefix}/{key}", value, step)
    writer.flush()


def plot_curves(path: Path, losses: list[list[float]], evals: list[dict], metric: str | None,
                best_step: int | None = None) -> bool:
    """curves.png: the training loss at each logged step and, beside it, the validation `metric` at
    each evaluation (the best one marked) -> False when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend state
    except ImportError:
        return False
    points = [(e["step"], e[metric]) for e in evals if metric and e.get(metric) is not None]
    fig = Figure(figsize=(11 if points else 6, 3.8), layout="constrained")
    ax = fig.add_subplot(1, 2 if points else 1, 1)
    ax.plot([s for s, _ in losses], [v for _, v in losses], color="C0")
    ax.set(xlabel="optimizer step", ylabel="training loss", title="training loss")
    ax.grid(alpha=0.3)
    if points:
        ax = fig.add_subplot(1, 2, 2)
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", color="C1")
        ax.plot([s for s, v in points if s == best_step], [v for s, v in points if s == best_step], marker="*",
                markersize=16, color="C3", linestyle="none", label="best")
        if best_step is not None:
            ax.legend()
        ax.set(xlabel="optimizer step", ylabel=metric, title=f"validation {metric}")
        ax.grid(alpha=0.3)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    return True
