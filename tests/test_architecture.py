"""The layers of the code base and who may import whom (README, "Architecture"), read from the imports themselves.

    scripts     train_*.py, predict.py, bench.py, experiments/   may import anything below
    minitrain   the training loop, runs, saving, distributed      minicore, the models, data, minitasks
    minitasks   running a model on a task                          minicore, the models, data
    data        readers, featurization, metrics                    minicore
    minibart    BART (BERT only for the warm start)                minicore, minibert.config, minibert.checkpoint
    minibert    BERT                                               minicore
    minicore    attention, fused ops, layers, checkpoints, errors  nothing of the project
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("minicore", "minibert", "minibart", "data", "minitasks", "minitrain")
ALLOWED = {
    "minicore": {"minicore"},
    "minibert": {"minicore", "minibert"},
    "minibart": {"minicore", "minibart", "minibert.config", "minibert.checkpoint"},
    "data": {"minicore", "data"},
    "minitasks": {"minicore", "minibert", "minibart", "data", "minitasks"},
    "minitrain": {"minicore", "minibert", "minibart", "data", "minitasks", "minitrain"},
}
SCRIPTS = {"train_squad", "train_cola", "train_paraphrase", "predict", "bench"}


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import of a project module in the file, relative ones resolved."""
    package = path.parent.name
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package if node.level else (node.module or "")
            module = f"{base}.{node.module}" if node.level and node.module else base
            names = [module] if node.module or not node.level else [f"{package}.{a.name}" for a in node.names]
            if node.level == 0 and node.module in PACKAGES:  # from minibert import config
                names = [f"{node.module}.{a.name}" if (ROOT / node.module / f"{a.name}.py").exists()
                         else node.module for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in {*PACKAGES, *SCRIPTS}]
    return found


def allowed(importer: str, module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ALLOWED[importer])


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below_it(package):
    broken = [f"{path.relative_to(ROOT)}:{line} imports {module}"
              for path in sorted((ROOT / package).glob("*.py"))
              for line, module in project_imports(path) if not allowed(package, module)]
    assert not broken, "\n".join(broken)


def test_the_rule_reader_sees_a_broken_rule(tmp_path):
    """Guards the test above: a model importing the trainer, written the three ways Python allows, is seen."""
    (tmp_path / "minibert").mkdir()
    bad = tmp_path / "minibert" / "bad.py"
    bad.write_text("import minitrain.training\nfrom minitrain import runs\nfrom minitrain.saving import x\n"
                   "from .model import BertModel\n")
    modules = [m for _, m in project_imports(bad)]
    assert modules == ["minitrain.training", "minitrain.runs", "minitrain.saving", "minibert.model"]
    assert [m for m in modules if not allowed("minibert", m)] == modules[:3]


def test_every_library_file_is_in_a_layer():
    """A new top-level package must be given its place (and its rule) here and in the README."""
    top = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert top == set(PACKAGES)
