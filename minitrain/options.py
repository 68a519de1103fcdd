"""The command-line options every training script shares, and the TrainConfig they become: the run's training
settings, resolved (device, precision) and checked once, frozen, and read by the script and the loop alike."""
import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from minicore.errors import UserError
from minicore.runtime import PRECISIONS, amp_dtype, pick_device, resolve_precision
from minitrain.distributed import local_rank

# The settings that change what a run computes: --resume refuses a checkpoint trained with other values.
# (Intervals, --max-steps, --device, --compile and the like may differ.)
RESULT_SETTINGS = ("model", "epochs", "batch_size", "grad_accum_steps", "lr", "weight_decay", "warmup_ratio",
                   "max_grad_norm", "seed", "precision")
# numpy's legacy seeding (np.random.seed, which set_seed calls) takes 0 <= seed < 2**32; beyond it a seed would
# be folded or fail after the model is loaded
MAX_SEED = 2**32 - 1
DEFAULT_PRECISION = None  # --precision when not given: bf16 on a GPU that has it, else fp32 (None); or "auto"


def number(kind, lo, lo_ok, hi=None, hi_ok=False):
    """An argparse type: `kind` (int or float) at least `lo` (above it unless lo_ok), and below `hi`
    (at most it with hi_ok) when given; an error reads "expected a value >= 1, got '0'"."""
    def parse(s):
        try:
            x = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {s!r}") from None
        if not math.isfinite(x):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
        if (x < lo if lo_ok else x <= lo) or (hi is not None and (x > hi if hi_ok else x >= hi)):
            bound = f"{'>=' if lo_ok else '>'} {lo}" + (f" and {'<=' if hi_ok else '<'} {hi}" if hi is not None else "")
            raise argparse.ArgumentTypeError(f"expected a value {bound}, got {s!r}")
        return x
    parse.__name__ = kind.__name__
    return parse


def add_training_args(parser: argparse.ArgumentParser, evaluation: bool = False, **defaults) -> argparse.ArgumentParser:
    """Add the options every script shares; `defaults` sets the script's own values (e.g. lr=2e-5).
    `evaluation`: the script evaluates during training (fit's `evaluate`), so it gets --eval-every,
    --keep-best and --early-stopping-patience."""
    g = parser.add_argument_group("training")
    g.add_argument("--model", default="google-bert/bert-base-uncased",
                   help="checkpoint folder (HF layout), the alias 'minilm', or a Hub id")
    g.add_argument("--output-dir", default="out", help="log, metrics, samples and checkpoints go here")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --output-dir (its log, metrics and checkpoints)")
    g.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    g.add_argument("--epochs", type=number(int, 1, True), default=1, help="passes over the training data")
    g.add_argument("--batch-size", type=number(int, 1, True), default=32,
                   help="examples per optimizer step, over all processes and accumulation steps together")
    g.add_argument("--grad-accum-steps", type=number(int, 1, True), default=1,
                   help="cut each batch into this many micro-batches, one forward/backward each, then one "
                        "optimizer step: the same result as the whole batch at once, in less memory")
    g.add_argument("--lr", type=number(float, 0, False), default=5e-5, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=number(float, 0, True), default=0.0,
                   help="AdamW weight decay (never on biases and LayerNorm weights)")
    g.add_argument("--warmup-ratio", type=number(float, 0, True, 1), default=0.0,
                   help="fraction of the steps with a linear warmup, then linear decay to 0")
    g.add_argument("--max-grad-norm", type=number(float, 0, True), default=1.0, help="0 = no clipping")
    g.add_argument("--max-steps", type=number(int, 1, True), default=None,
                   help="stop each training stage (train_paraphrase.py: denoising, then fine-tuning) after this many "
                        "optimizer steps, for smoke runs; the learning-rate schedule stays that of the full run, so "
                        "--resume can continue it")
    g.add_argument("--seed", type=number(int, 0, True, MAX_SEED, hi_ok=True), default=42,
                   help=f"seeds the batch order, new heads' initialization and dropout (0 to {MAX_SEED})")
    g.add_argument("--precision", choices=["auto", *PRECISIONS], default=DEFAULT_PRECISION,
                   help="autocast dtype of the forward pass (parameters and optimizer stay fp32; fp16 scales the "
                        "loss); auto: bf16 where the device computes it natively (a GPU that has it, a CPU with "
                        "AVX512-BF16 or AMX), else fp32"
                        + ("" if DEFAULT_PRECISION else "; when not given: bf16 on a GPU that has it, else fp32"))
    g.add_argument("--tf32", action="store_true", help="let fp32 matmuls use TF32 tensor cores (Ampere GPUs and later)")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels where PyTorch has them (bit-stable reruns, somewhat slower)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    g.add_argument("--gradient-checkpointing", action="store_true",
                   help="keep only each layer's input for the backward pass and recompute the rest there: far less "
                        "activation memory (a large model or batch on a small GPU) for about a third more time")
    g.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1; "
                                                     "under torchrun each process takes cuda:LOCAL_RANK")
    g.add_argument("--log-every", type=number(int, 1, True), default=50, help="log every N optimizer steps")
    g.add_argument("--save-every", type=number(int, 0, True), default=0,
                   help="also checkpoint every N steps (0 = at epoch ends and at the end only)")
    g.add_argument("--save-total-limit", type=number(int, 1, True), default=1,
                   help="keep the N most recent checkpoints (<output-dir>/checkpoint, then checkpoint-<step>)")
    g.add_argument("--save-optimizer-state", action=argparse.BooleanOptionalAction, default=True,
                   help="store the optimizer state with each checkpoint (about twice the model's size); "
                        "without it a checkpoint cannot be resumed")
    g.add_argument("--report-to", choices=["none", "tensorboard"], default="none",
                   help="also write the training curves for TensorBoard, to <output-dir>/tensorboard")
    if evaluation:
        g.add_argument("--eval-every", type=number(int, 0, True), default=0,
                       help="evaluate on the validation data every N steps (0 = at epoch ends only)")
        g.add_argument("--keep-best", action="store_true",
                       help="keep the best checkpoint by the validation metric in <output-dir>/best and report "
                            "the final metrics from it")
        g.add_argument("--early-stopping-patience", type=number(int, 1, True), default=None,
                       help="stop after this many evaluations without a better validation metric")
    unknown = set(defaults) - {a.dest for a in g._group_actions}
    if unknown:
        raise ValueError(f"add_training_args: unknown defaults {sorted(unknown)}")
    parser.set_defaults(**defaults)
    return parser


def check_not_a_run_folder(model: str) -> None:
    """--model the output folder of a run (it holds checkpoint/ but no config.json) is a common slip: say so."""
    folder = Path(model)
    if folder.is_dir() and not (folder / "config.json").exists() and (folder / "checkpoint").is_dir():
        raise UserError("a run's folder, not a checkpoint", "--model", model,
                        f"did you mean {folder / 'checkpoint'}?")


@dataclass(frozen=True)
class TrainConfig:
    """The training settings of a run. `device` and `precision` are resolved on creation (a name such as "auto"
    becomes the torch.device and the precision this process uses), so every reader sees the same values."""
    output_dir: str
    model: str = ""
    epochs: int = 1
    batch_size: int = 32
    grad_accum_steps: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    max_steps: int | None = None
    seed: int = 42
    precision: str | None = None  # auto, bf16, fp16, fp32; None: bf16 on a GPU that has it, else fp32
    resume: bool = False
    overwrite: bool = False
    compile: bool = False
    gradient_checkpointing: bool = False
    device: str | torch.device = "auto"
    tf32: bool = False
    deterministic: bool = False
    log_every: int = 50
    save_every: int = 0
    save_total_limit: int = 1
    save_optimizer_state: bool = True
    report_to: str = "none"
    eval_every: int = 0
    keep_best: bool = False
    early_stopping_patience: int | None = None

    def __post_init__(self):
        if not isinstance(self.device, torch.device):  # under torchrun cuda:LOCAL_RANK
            object.__setattr__(self, "device", pick_device(self.device, local_rank()))
        object.__setattr__(self, "precision", resolve_precision(self.precision, self.device))

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the forward passes, training's and evaluation's (None: fp32, no autocast)."""
        return amp_dtype(self.precision)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TrainConfig":
        """The script's parsed flags, resolved; --model a run's folder (not its checkpoint) is refused."""
        check_not_a_run_folder(args.model)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in fields})

    def settings(self) -> dict:
        """The settings that change the result (RESULT_SETTINGS) and their values; a model folder by its
        absolute path, however it was spelled."""
        values = {name: getattr(self, name) for name in RESULT_SETTINGS}
        if values["model"] and Path(values["model"]).is_dir():
            values["model"] = str(Path(values["model"]).resolve())
        return values
