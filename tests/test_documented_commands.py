"""Every ``lr-lightning ...`` command the README, docs/*.md and the config headers show is run,
so documented commands cannot rot.

Commands are collected, never listed by hand: fenced code blocks and inline code in the
Markdown files (backslash continuations joined, ``a && b`` split, ``# comments`` dropped) and
the leading comment block of every config (an override line there, ``#   --data...``, runs as
``fit --config <that config> <overrides>``). Each document's commands run in order, in-process
through :func:`lr_lightning.cli.console_main`'s pieces (``main(args)`` / the report), in a fresh
working folder where ``configs/`` points at the repository's, with tiny overrides appended (2
training steps, 1 validation / test batch, small batches, logs in that folder). A ``test`` /
``validate`` / ``predict`` command whose config has not been fitted in that folder yet gets a
tiny ``fit`` first (as a user would have run one). ``<...>`` placeholders are filled:
``--ckpt_path <...>`` by ``last`` (if the placeholder says last) or ``best``, others from
:data:`PLACEHOLDERS`; a new placeholder fails the test until it is added there or the command to
:data:`SKIP`.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from lr_lightning.cli import console_main, main
from tests.conftest import REPO, shared_data_root, write_image_folder
from tests.test_configs import (  # real data if present, else a synthetic stand-in
    TINY_MODEL_ARGS,
    _data_args,
)

PROGRAMS = ("lr-lightning ", "python -m lr_lightning ")

#: Commands that are prose, not runnable as shown (kept short; each says why).
SKIP: dict[str, str] = {
    "lr-lightning fit --config x.yaml": "README: the generic form ('x.yaml' is any config)",
    "python -m lr_lightning fit --config x.yaml": "README: the generic form",
    "lr-lightning report RUN_DIRS... [--out DIR]": "README: the usage synopsis",
    "lr-lightning fit --config ...": "docs/integer_training.md: 'either config'",
    "lr-lightning test ... --ckpt_path=<best transfer .ckpt>": "docs/autoresolution.md: '...' = the transfer command before it",
    "lr-lightning fit --config ... --ckpt_path last": "docs/foundation.md: 'any config' (README runs a real one)",
    "lr-lightning export --ckpt_path RUN/checkpoints/last.ckpt --format onnx|torch_export": "docs/foundation.md: the usage synopsis",
}

#: ``<placeholder>`` in a model argument -> (config whose checkpoint it means, ``best``/``last``).
PLACEHOLDERS: dict[str, tuple[str, str]] = {
    "<hr best.ckpt>": ("configs/patchdrop/cifar10_classifier_hr.yaml", "best"),  # docs/patchdrop.md
    "<pt best.ckpt>": ("configs/patchdrop/cifar10_pt.yaml", "best"),
    "<best .ckpt>": ("configs/autoresolution/pretext_cls_cifar10.yaml", "best"),  # docs/autoresolution.md
    "<SR x2 best.ckpt>": ("configs/darionet/sr_l1_cifar10_x2.yaml", "best"),  # docs/darionet.md
    "<HR-CNN best.ckpt>": ("configs/baselines/cifar10_hr_cnn.yaml", "best"),
    "<pretrain_meta last.ckpt>": ("configs/ondevice_sr/pretrain_meta_x4.yaml", "last"),  # docs/ondevice_sr.md
    "<maml last.ckpt>": ("configs/ondevice_sr/maml_x4.yaml", "last"),
}

TINY = [
    "--trainer.max_steps=2",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.limit_predict_batches=1",
    "--trainer.log_every_n_steps=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@dataclass(frozen=True)
class Documented:
    """One command as a document shows it: ``where`` is ``file:line``."""

    where: str
    text: str


def _program_args(text: str) -> bool:
    return text.startswith(PROGRAMS)


def _split_chain(text: str, where: str) -> list[Documented]:
    """``a && b`` -> the commands ``a`` and ``b``; a bare ``lr-lightning <subcommand>`` is the
    name of a command in prose, not a command to run."""
    parts = (" ".join(part.split()) for part in text.split("&&"))
    return [Documented(where, p) for p in parts if _program_args(p) and len(p.split()) > 2]


def markdown_commands(path: Path) -> list[Documented]:
    """Commands in fenced code blocks and inline code of a Markdown file, in document order."""
    text = path.read_text()
    rel = path.relative_to(REPO)
    found: list[tuple[int, list[Documented]]] = []
    fence = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
    for block in fence.finditer(text):
        first = text[: block.start(1)].count("\n") + 1
        pending, start = "", 0
        for i, line in enumerate(block.group(1).split("\n")):
            stripped = re.sub(r"\s+#\s.*$", "", line).strip()  # a shell comment after the command
            if not pending:
                start = first + i
            pending = f"{pending} {stripped}" if pending else stripped
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            if _program_args(pending):
                found.append((start, _split_chain(pending, f"{rel}:{start}")))
            pending = ""
    rest = fence.sub(lambda m: "\n" * m.group(0).count("\n"), text)  # keep line numbers
    for span in re.finditer(r"`([^`]+)`", rest):
        line = rest[: span.start()].count("\n") + 1
        code = " ".join(span.group(1).split())
        if _program_args(code):
            found.append((line, _split_chain(code, f"{rel}:{line}")))
    return [cmd for _, cmds in sorted(found, key=lambda f: f[0]) for cmd in cmds]


def config_header_commands(path: Path) -> list[Documented]:
    """Commands in a config's leading comment block; an override line (``--key=value``) is run
    as ``lr-lightning fit --config <this config> <overrides>``."""
    rel = path.relative_to(REPO)
    found = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        if _program_args(body):
            found += _split_chain(body, f"{rel}:{i + 1}")
        elif body.startswith("--"):
            found.append(Documented(f"{rel}:{i + 1}", f"lr-lightning fit --config {rel} {body}"))
    return found


def collect() -> dict[str, list[Documented]]:
    """Source file (relative to the repository) -> its commands, for files that show any."""
    sources = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    by_file = {str(p.relative_to(REPO)): markdown_commands(p) for p in sources}
    by_file |= {str(p.relative_to(REPO)): config_header_commands(p) for p in sorted((REPO / "configs").rglob("*.yaml"))}
    return {k: v for k, v in by_file.items() if v}


DOCUMENTS = collect()
#: Documents with at least one command to run.
RUNNABLE = [doc for doc, cmds in DOCUMENTS.items() if any(c.text not in SKIP for c in cmds)]


@dataclass
class Session:
    """The working folder of one document's commands and the checkpoints its fits wrote."""

    cwd: Path
    #: config path (resolved) -> {"best": path, "last": path} of its latest fit here
    fitted: dict[Path, dict[str, str]] = field(default_factory=dict)

    def config_key(self, config: str) -> Path:
        return (self.cwd / config).resolve()

    def tiny(self, config: str) -> list[str]:
        cfg = yaml.safe_load((self.cwd / config).read_text())
        model = TINY_MODEL_ARGS.get(cfg["model"]["class_path"].rsplit(".", 1)[-1], [])
        return [*TINY, f"--trainer.default_root_dir={self.cwd}", *_data_args(cfg, self.cwd / "_data"), *model]

    def test_only(self, config: str) -> bool:
        """A config whose task has no offline training (paper E's OnlineZSSR): never fitted."""
        cfg = yaml.safe_load((self.cwd / config).read_text())
        return cfg["model"]["class_path"].endswith("OnlineZSSR")

    def fit(self, args: list[str]) -> None:
        """``lr-lightning fit <args>`` with the tiny overrides; records its checkpoints."""
        config = config_of(args)
        cli = main(["fit", *args, *self.tiny(config)])
        finish_wandb()
        trained = cli.trainer.global_step > 0 or cfg_class(self.cwd / config).endswith("GradientMasks")  # masks: no step
        assert cli.trainer.state.finished and trained, f"fit of {config} did not train"
        ckpt = cli.trainer.checkpoint_callback
        self.fitted[self.config_key(config)] = {"best": ckpt.best_model_path, "last": ckpt.last_model_path}

    def checkpoint(self, config: str, which: str) -> str:
        """The ``which`` checkpoint of ``config``'s latest fit here (fitting it first if needed)."""
        if self.config_key(config) not in self.fitted:
            self.fit(["--config", config])
        path = self.fitted[self.config_key(config)][which]
        assert path and Path(path).is_file(), f"{config}: no {which} checkpoint"
        return path


def finish_wandb() -> None:
    """End the W&B run a command started (``WandbLogger`` would reuse it for the next one)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def fill_placeholders(text: str, session: Session) -> list[str]:
    """The command's arguments (after the program name) with ``<...>`` placeholders filled."""
    holes = re.findall(r"<[^<>]+>", text)
    for i, hole in enumerate(holes):
        text = text.replace(hole, f"__HOLE{i}__", 1)
    words = shlex.split(text, comments=True)
    words = words[1:] if words[0] == "lr-lightning" else words[3:]
    args = []
    for j, word in enumerate(words):
        for i, hole in enumerate(holes):
            token = f"__HOLE{i}__"
            if token not in word:
                continue
            if word.startswith("--ckpt_path") or (j > 0 and words[j - 1] == "--ckpt_path"):
                value = "last" if "last" in hole else "best"
            elif hole in PLACEHOLDERS:
                value = session.checkpoint(*PLACEHOLDERS[hole])
            else:
                raise AssertionError(f"unknown placeholder {hole}: add it to PLACEHOLDERS (or the command to SKIP)")
            word = word.replace(token, value)
        args.append(word)
    return args


def cfg_class(path: Path) -> str:
    """The model class path of a config file."""
    return yaml.safe_load(path.read_text())["model"]["class_path"]


def config_of(args: list[str]) -> str:
    """The first ``--config`` / ``-c`` value."""
    for j, word in enumerate(args):
        if word in ("--config", "-c"):
            return args[j + 1]
        if word.startswith("--config="):
            return word.split("=", 1)[1]
    raise AssertionError(f"no --config in {args}")


def run_documented(cmd: Documented, session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    """Run one documented command in ``session`` and check it did what it says."""
    args = fill_placeholders(cmd.text, session)
    subcommand = args[0]
    if subcommand == "report":
        out = Path(args[args.index("--out") + 1]) if "--out" in args else Path("report")
        assert console_main(args) == 0
        md = (session.cwd / out / "report.md").read_text()
        for run in (a for a in args[1:] if not a.startswith("--") and a != str(out)):
            assert f"| {Path(run)}" in md, f"no row for {run} in the report"
        return
    if subcommand == "export":  # the checkpoint path it names was written by an earlier fit here
        assert console_main(args) == 0
        assert list(session.cwd.rglob("export_report.json")), "export wrote no report"
        return
    config = config_of(args)
    if "--print_config" in args:
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 0 and "class_path:" in capsys.readouterr().out
        return
    if subcommand == "fit":
        session.fit(args[1:])
        return
    if session.config_key(config) not in session.fitted and not session.test_only(config):
        session.fit(["--config", config])  # the documented command presupposes a trained model
    cli = main([*args, *session.tiny(config)])
    finish_wandb()
    prefix = {"test": "test/", "validate": "val/"}.get(subcommand)
    if prefix:
        keys = list(cli.trainer.callback_metrics)
        assert any(k.startswith(prefix) for k in keys), f"no {prefix}* metric after {subcommand}: {keys}"
    assert cli.trainer.state.finished


@pytest.mark.slow
@pytest.mark.parametrize("document", RUNNABLE, ids=RUNNABLE)
def test_documented_commands_run(
    document: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = shared_data_root()
    if root is None or not (root / "cifar10").is_dir():
        # no real CIFAR-10: a stand-in large enough for MAML's meta-test protocol (k = 32 support images)
        for split, n in (("train", 6), ("test", 2)):
            write_image_folder(tmp_path / "_cifar" / "cifar10" / split, classes=10, per_class=n, size=32)
        root = tmp_path / "_cifar"
    monkeypatch.setenv("LR_LIGHTNING_DATA", str(root))
    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    session = Session(tmp_path)
    failures = []
    for cmd in DOCUMENTS[document]:
        if cmd.text in SKIP:
            continue
        capsys.readouterr()
        try:
            run_documented(cmd, session, capsys)
        except (Exception, SystemExit) as err:  # report every failing command, not only the first
            finish_wandb()
            stderr = capsys.readouterr().err.strip().splitlines()[-12:]
            failures.append(f"{cmd.where}: {cmd.text}\n    {type(err).__name__}: {err}\n    " + "\n    ".join(stderr))
    assert not failures, f"{len(failures)} documented command(s) failed:\n" + "\n".join(failures)


def test_collects_the_documented_commands() -> None:
    """The collector sees what the documents show (a guard against silently collecting nothing)."""
    texts = {c.text for cmds in DOCUMENTS.values() for c in cmds}
    assert "lr-lightning test --config configs/quickstart.yaml --ckpt_path best" in texts  # config header
    assert any(t.startswith("lr-lightning report ") for t in texts)  # README / docs/logging.md
    assert "README.md" in DOCUMENTS and "docs/logging.md" in DOCUMENTS
    multiline = [t for t in texts if "degradation.init_args.mode=avg" in t and t.startswith("lr-lightning fit")]
    assert multiline, "backslash-continued README command not joined"
    unused = set(SKIP) - texts
    assert not unused, f"SKIP lists commands no document shows any more: {unused}"


def test_a_broken_command_or_new_placeholder_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The runner does not swallow errors: a rotted option or an unknown placeholder fails."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    session = Session(tmp_path)
    with pytest.raises(SystemExit):
        run_documented(Documented("x:1", "lr-lightning fit --config configs/quickstart.yaml --model.init_args.no_such=1"), session, capsys)
    assert "no_such" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="unknown placeholder <new.ckpt>"):
        run_documented(Documented("x:2", "lr-lightning fit --config configs/quickstart.yaml --model.init_args.init_checkpoint=<new.ckpt>"), session, capsys)
