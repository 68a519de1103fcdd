"""A run folder's edges: --overwrite never deletes what the run reads and leaves nothing of the old run, ~ in any
path flag, negative numbers as flag values, a full disk, a file-size limit, a file where a folder should be, and
--resume past a checkpoint without trainer_state.json. Each is refused before anything is written, or named."""
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fit_helpers import Tiny
from test_cola import write_cola
from test_run_faults import cola_run, finished_cola, snapshot  # noqa: F401 (fixtures)

import predict
import train_cola
import train_paraphrase
import train_squad
from minicore.errors import UserError
from minicore.files import write_text
from minitrain.cli import PATH_FLAGS
from minitrain.runs import RunLog, check_output_dir, written_files
from minitrain.saving import checkpoints, load_for_resume, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def write_sentences(path: Path, n: int = 40) -> Path:
    """A CSV of `n` sentences with two labels, for train_cola.py --train-file."""
    rows = [f"the sentence number {i} is {'fine' if i % 2 else 'odd'},{'yes' if i % 2 else 'no'}" for i in range(n)]
    path.write_text("sentence,label\n" + "\n".join(rows) + "\n")
    return path


# ----------------------------------------------------------------------------- --overwrite and what the run reads

@pytest.mark.parametrize("flag,inside", [("--model", "checkpoint"), ("--model", "checkpoint-2"),
                                         ("--train-file", "predictions_in_domain.tsv")])
def test_overwrite_refuses_to_delete_what_the_run_reads(cola_run, tiny_bert_dir, flag, inside):
    """--model or data inside a file or folder that --overwrite would clear: refused before anything is loaded or
    written, naming the flag (the clean-up used to delete the model after loading it, leaving no checkpoint)."""
    argv, out = cola_run
    argv = ["--model", str(tiny_bert_dir), "--output-dir", str(out), "--device", "cpu", "--overwrite"]
    argv += [flag, str(out / inside)] + (["--data-dir", str(ROOT / "missing")] if flag == "--model" else [])
    before = snapshot(out)
    path = re.escape(str(out / inside))
    with pytest.raises(UserError, match=rf"--overwrite would delete what the run reads \({path} is part of the old "
                                        rf"run\) \({flag}, '{path}'\): copy it out of --output-dir"):
        train_cola.main(argv)
    assert snapshot(out) == before


def test_overwrite_may_read_a_file_it_keeps(cola_run):
    """Data that sits in --output-dir but is no file of the run is kept by --overwrite, so it may be read."""
    argv, out = cola_run
    data = write_sentences(out / "sentences.csv")
    argv = argv[:argv.index("--data-dir")] + argv[argv.index("--data-dir") + 2:]
    train_cola.main(argv + ["--train-file", str(data), "--overwrite", "--max-steps", "1"])
    assert data.is_file() and json.loads((out / "metrics.json").read_text())["steps"] == 1


def test_overwrite_inputs_in_a_subrun_are_refused(tmp_path):
    """A subrun's files (train_paraphrase.py's denoise/) are cleared too, so what the run reads there is refused."""
    (tmp_path / "denoise" / "checkpoint").mkdir(parents=True)
    with pytest.raises(UserError, match="--denoise-text"):
        check_output_dir(tmp_path, False, True, ["denoise"],
                         [("--denoise-text", str(tmp_path / "denoise" / "checkpoint" / "squad.json"))])
    check_output_dir(tmp_path, False, True, ["denoise"], [("--denoise-text", str(tmp_path / "denoise" / "a.json"))])


def test_overwrite_clears_every_file_of_the_old_run(cola_run, tmp_path):
    """--overwrite clears the old run's results too: a run without a test set leaves no old predictions_*.tsv
    beside its metrics.json that says "test: none"."""
    argv, out = cola_run
    assert {p.name for p in written_files(out)} == {p.name for p in out.iterdir()} - {"run.lock"}
    assert sorted(p.name for p in out.glob("predictions_*.tsv")) == ["predictions_in_domain.tsv",
                                                                      "predictions_out_of_domain.tsv"]
    argv = argv[:argv.index("--data-dir")] + argv[argv.index("--data-dir") + 2:]
    train_cola.main(argv + ["--train-file", str(write_sentences(tmp_path / "own.csv")), "--overwrite",
                            "--max-steps", "1"])
    assert json.loads((out / "metrics.json").read_text())["data"]["test"] == "none (no --test-file)"
    assert not list(out.glob("predictions_*.tsv"))
    assert "validation" in (out / "samples.md").read_text()  # the new run's samples, of its validation set


def test_written_files_holds_every_scripts_results(tmp_path):
    """Each script's result files are among what --overwrite clears (train_squad.py, train_paraphrase.py)."""
    names = ["samples.md", "predictions.json", "null_odds.json", "generations.jsonl", "predictions_test.tsv"]
    for name in names + ["notes.txt", "data.jsonl"]:
        (tmp_path / name).write_text("x")
    assert sorted(p.name for p in written_files(tmp_path)) == sorted(names)


# ----------------------------------------------------------------------------- ~ in path flags

@pytest.mark.parametrize("parse,argv", [
    (train_cola.parse_args, ["--model=~/m", "--output-dir=~/o", "--data-dir=~/d"]),
    (train_cola.parse_args, ["--train-file=~/t", "--validation-file=~/v", "--test-file=~/s"]),
    (train_squad.parse_args, ["--data-dir=~/d", "--train-file=~/t", "--dev-file=~/e", "--output-dir=~"]),
    (train_paraphrase.parse_args, ["--train-file=~/t", "--validation-file=~/v", "--test-file=~/s",
                                   "--denoise-text", "~/a.json", "~/b.json"]),
    (train_paraphrase.parse_args, ["--data-dir=~/d"]),
    (predict.parse_args, ["cola", "--model=~/m", "--input=~/i", "--output=~/o"]),
])
def test_tilde_is_expanded_in_every_path_flag(monkeypatch, tmp_path, parse, argv):
    """The shell leaves ~ after "=" (--output-dir=~/x): each path flag expands it, so a run never writes into a
    folder named "~"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    args = vars(parse(argv))
    given = dict(a[2:].split("=~") for a in argv if "=~" in a)  # dest-like flag name -> the path after ~
    assert {f"--{flag}" for flag in given} <= set(PATH_FLAGS)
    assert {flag: args[flag.replace("-", "_")] for flag in given} == {f: str(tmp_path) + rest for f, rest in
                                                                      given.items()}
    if "--denoise-text" in argv:
        assert args["denoise_text"] == [str(tmp_path / "a.json"), str(tmp_path / "b.json")]


def test_a_run_with_a_tilde_output_dir_writes_under_home(monkeypatch, tmp_path, tiny_bert_dir):
    """--output-dir=~/run writes to $HOME/run, not to a folder named "~" in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    data = write_cola(tmp_path / "cola")
    train_cola.main(["--model", str(tiny_bert_dir), "--data-dir", str(data), "--output-dir=~/run", "--device", "cpu",
                     "--batch-size", "8", "--max-steps", "1"])
    assert (tmp_path / "home" / "run" / "metrics.json").is_file() and not (tmp_path / "~").exists()


# ----------------------------------------------------------------------------- negative numbers

@pytest.mark.parametrize("parse,argv,error", [
    (train_cola.parse_args, ["--lr", "-1e-5"], "argument --lr: expected a value > 0, got '-1e-5'"),
    (train_cola.parse_args, ["--weight-decay", "-1E-2"], "argument --weight-decay: expected a value >= 0, got '-1E-2'"),
    (train_cola.parse_args, ["--lr", "-inf"], "argument --lr: expected a finite number, got '-inf'"),
    (train_cola.parse_args, ["--lr", "-x"], "argument --lr: expected one argument"),  # not a number: an option
    (train_paraphrase.parse_args, ["--denoise-lr", "-2.5e-5"], "argument --denoise-lr: expected a value > 0"),
])
def test_a_negative_number_reaches_the_flags_own_check(capsys, parse, argv, error):
    """argparse alone reads -1e-5 as an option ("expected one argument"); each number form is a value that the
    flag's own check then judges, in one line."""
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(f"error: {error}") and err.count("\n") == 1


@pytest.mark.parametrize("value", ["-1e-3", "-2E-3", "-.5e+1", "-3"])
def test_a_negative_null_threshold_in_scientific_notation_is_a_value(value):
    """A negative --null-threshold in any notation is a value of train_squad.py and predict.py."""
    assert train_squad.parse_args(["--null-threshold", value]).null_threshold == float(value)
    assert predict.parse_args(["squad", "--model", "m", "--null-threshold", value]).null_threshold == float(value)


# ----------------------------------------------------------------------------- disks and files

def test_a_full_disk_is_named_though_removing_the_partial_checkpoint_frees_it(tmp_path, monkeypatch):
    """torch.save reports a full disk as "unexpected pos": the free space is measured before the partial
    checkpoint.tmp is removed (whose removal frees the disk), so the error says the disk is full."""
    real = shutil.disk_usage

    def usage(path):  # the disk is full while the partial checkpoint is there
        return real(path)._replace(free=0) if (tmp_path / "checkpoint.tmp").exists() else real(path)

    def save_on_a_full_disk(obj, f):
        Path(f).write_bytes(b"\0" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 27456 vs 27348")
    monkeypatch.setattr(shutil, "disk_usage", usage)
    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    with pytest.raises(OSError) as error:
        save_checkpoint(tmp_path, Tiny(), {"step": 1}, {"optimizer": {}})
    assert error.value.strerror == ("[enforce fail at inline_container.cc:672] . unexpected pos 27456 vs 27348; "
                                    "the disk is full")
    assert error.value.filename == str(tmp_path / "checkpoint.tmp") and not list(tmp_path.iterdir())


def test_a_failed_write_names_a_full_disk_its_clean_up_frees(tmp_path, monkeypatch):
    """write_text's partial temp file fills the disk: the error says so, though the file is removed."""
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=0) if any(tmp_path.glob(".*.tmp"))
                        else real(p))

    def short_write(self, text, **kw):
        open(self, "w").write(text[:3])
        raise OSError("write failed")
    monkeypatch.setattr(Path, "write_text", short_write)
    with pytest.raises(OSError) as error:
        write_text(tmp_path / "metrics.json", "{}")
    assert error.value.strerror == "write failed; the disk is full" and not list(tmp_path.iterdir())


CHILD = """
import resource, sys, torch
sys.path.insert(0, "tests")
from fit_helpers import Tiny
from minitrain.cli import run
from minitrain.saving import save_checkpoint
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
run(lambda argv: save_checkpoint(sys.argv[1], Tiny(), {"step": 1}, {"state": torch.zeros(int(sys.argv[3]))}), [])
"""


@pytest.mark.parametrize("limit,writer", [(100_000, "unexpected pos"), (600, "File too large")])
def test_a_file_size_limit_is_named(tmp_path, limit, writer):
    """A file-size limit (ulimit -f) stops torch.save ("unexpected pos") or safetensors (the weights, over 600
    bytes): one line that names the limit, and no partial checkpoint left."""
    out = tmp_path / "out"
    child = subprocess.run([sys.executable, "-c", CHILD, str(out), str(limit), "50000"], cwd=ROOT, text=True,
                           capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode == 1 and child.stderr.count("\n") == 1, child.stderr
    assert child.stderr.startswith("error: ") and writer in child.stderr
    assert child.stderr.endswith(f"; a file reached the file-size limit of {limit} bytes (ulimit -f) "
                                 f"({out / 'checkpoint.tmp'})\n")
    assert not (out / "checkpoint.tmp").exists() and not checkpoints(out)


def test_an_output_dir_under_a_file_says_so(tmp_path, tiny_bert_dir):
    """A path component that is a regular file is named as such (it was "permission denied"), before anything."""
    (tmp_path / "notes").write_text("mine")
    notes = re.escape(str(tmp_path / "notes"))
    with pytest.raises(UserError, match=rf"a part of the path is a file, not a folder \({notes}\) "
                                        rf"\(--output-dir, '{notes}/run'\)"):
        train_cola.main(["--model", str(tiny_bert_dir), "--output-dir", str(tmp_path / "notes" / "run"),
                         "--data-dir", str(tmp_path / "missing"), "--device", "cpu"])
    assert [p.name for p in tmp_path.iterdir()] == ["notes"]
    with pytest.raises(OSError, match="a part of the path is a file, not a folder") as error:
        RunLog(tmp_path / "notes" / "run")  # the same cause, met while writing
    assert error.value.errno == errno.ENOTDIR


# ----------------------------------------------------------------------------- checkpoints without trainer_state.json

def test_resume_without_a_whole_checkpoint_says_how_to_keep_it(cola_run):
    """The only checkpoints lack trainer_state.json: --resume names one and says to move it away before
    --overwrite (which would delete it), instead of a bare "pass --overwrite"; nothing is written."""
    argv, out = cola_run
    for ckpt in checkpoints(out):
        (ckpt / "trainer_state.json").unlink()
    before = snapshot(out)
    with pytest.raises(UserError) as error:
        train_cola.main(argv + ["--resume"])
    assert str(error.value) == (
        f"no checkpoint to resume: {out / 'checkpoint'} has no trainer_state.json (damaged or unfinished) "
        f"(--output-dir, '{out}'): to keep {out / 'checkpoint'} and {out / 'checkpoint-2'}, move them out of "
        "--output-dir (a new run can start from its weights with --model); then pass --overwrite to start again there")
    assert snapshot(out) == before


def test_resume_without_a_checkpoint_but_with_a_best_model_says_how_to_keep_it(tmp_path):
    """A run that saved its best model but no checkpoint: the advice to --overwrite says to move best/ first."""
    (tmp_path / "log.jsonl").write_text("")
    (tmp_path / "best").mkdir()
    best = re.escape(str(tmp_path / "best"))
    with pytest.raises(UserError, match=r"no checkpoint to resume \(the run there saved none\) .*: to keep "
                                        rf"{best}, move it out of --output-dir .*; then pass --overwrite"):
        check_output_dir(tmp_path, True, False)
    (tmp_path / "best").rmdir()
    with pytest.raises(UserError, match=r"saved none\) \(--output-dir, '.*'\): pass --overwrite to start again there$"):
        check_output_dir(tmp_path, True, False)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_resume_passes_a_latest_checkpoint_without_a_readable_trainer_state(cola_run, damage):
    """The latest checkpoint's trainer_state.json is missing or cut short: --resume goes on from the previous
    whole checkpoint and the log says why (a cut one was a JSONDecodeError traceback before the model loaded)."""
    argv, out = cola_run
    state = out / "checkpoint" / "trainer_state.json"
    if damage == "missing":
        state.unlink()
    else:
        state.write_text(state.read_text()[:20])
    metrics = train_cola.main(argv + ["--resume", "--max-steps", "3"])
    log = (out / "train.log").read_text()
    note = f"{out / 'checkpoint'} has no trainer_state.json" if damage == "missing" else f"{state} is unreadable"
    assert note in log and f"resuming from {out / 'checkpoint-2'} at step 2" in log and metrics["steps"] == 3


def test_no_readable_checkpoint_is_never_advised_to_be_deleted(tmp_path):
    """When no checkpoint reads, the advice keeps the user's data: move it away, then --overwrite."""
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "trainer_state.json").write_text("{")
    with pytest.raises(UserError) as error:
        load_for_resume(tmp_path)
    assert "unreadable" in str(error.value) and "delete" not in str(error.value)
    assert "move the damaged checkpoints out of --output-dir" in str(error.value)
