"""README.md's ```python blocks run as written.

Every block fenced as ```python is executed, in README order, each in a fresh namespace with
the working directory a fresh tmp_path. A block fenced ```python no-run is skipped (there is
none today). The only changes made to a block are these three assignment lines, each of which
must appear exactly once, at the start of a line, in every runnable block:

    root = ...        ->  root = "<tmp>/data"   (write_train_val: train 3 x 32, val 3 x 4
                                                 solid-colour PNGs of 24-89 px)
    epochs = ...      ->  epochs = 3            (the default resize schedule mixes in all 3
                                                 epochs: shares 1, 0.81 and 0.31 of the samples)
    image_size = ...  ->  image_size = 32       (ResNet-50 at 224 px is too slow on a CPU)

The device is whatever the block's own `device = "cuda" if torch.cuda.is_available() else
"cpu"` picks: the CPU here, the GPU on a CUDA machine. A block that raises fails the test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import write_train_val

README = Path(__file__).resolve().parents[1] / "README.md"
RUNNABLE_AT_LEAST = 3  # before (torchvision), after (TrainLoader + ValLoader), with mixing
EPOCHS = 3
IMAGE_SIZE = 32

_FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, info after "python", code) of every ```python block."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2))
            for m in _FENCE.finditer(text)]


def substitute(code: str, values: dict[str, str]) -> str:
    """`code` with each `name = ...` line (at the start of a line) set to `name = value`."""
    for name, value in values.items():
        pattern = re.compile(rf"^{name} = .*$", re.M)
        found = len(pattern.findall(code))
        assert found == 1, f"expected one `{name} = ...` line, found {found}:\n{code}"
        code = pattern.sub(lambda _: f"{name} = {value}", code)
    return code


# the torchvision block asks for 8 DataLoader workers, as on a training machine; 2 cores here
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(README.read_text())
    runnable = [b for b in blocks if "no-run" not in b[1].split()]
    assert len(runnable) >= RUNNABLE_AT_LEAST, (
        f"README.md has {len(runnable)} runnable ```python blocks, expected >= {RUNNABLE_AT_LEAST}")
    data = write_train_val(tmp_path / "data")
    values = {"root": repr(str(data)), "epochs": str(EPOCHS), "image_size": str(IMAGE_SIZE)}
    ran = 0
    for i, (line, _, code) in enumerate(runnable):
        cwd = tmp_path / f"block{i}"
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        source = substitute(code, values)
        try:
            exec(compile(source, f"README.md block at line {line}", "exec"), {"__name__": "__readme__"})
        except Exception as e:  # the traceback stays; say which block, as run
            e.add_note(f"in README.md's python block at line {line}, run as:\n{source}")
            raise
        ran += 1
    with capsys.disabled():
        print(f"\nREADME.md: ran {ran} of {len(blocks)} python blocks "
              f"({len(blocks) - len(runnable)} marked no-run)")
    assert ran == len(runnable) >= RUNNABLE_AT_LEAST


def test_block_extraction_and_substitution():
    text = ("x\n```python\nroot = 'a'  # c\nepochs = 90\nprint(root)\n```\n"
            "```python no-run\nraise SystemExit\n```\n```\nshell\n```\n")
    blocks = python_blocks(text)
    assert [(line, info) for line, info, _ in blocks] == [(2, ""), (7, "no-run")]
    code = substitute(blocks[0][2], {"root": "'b'", "epochs": "3"})
    assert code == "root = 'b'\nepochs = 3\nprint(root)\n"
    with pytest.raises(AssertionError, match="one `image_size = ...` line"):
        substitute(blocks[0][2], {"image_size": "32"})


def test_the_readme_table_names_every_mix_field_and_no_retired_one():
    """One table of every [mix] field (its default, what it does, its measured effect); the
    knobs that measured no gain are gone from the package, the CLI and the table's rows."""
    import dataclasses

    from mixtrain_dali.cli import build_parser
    from mixtrain_dali.config import Config, MixConfig
    from mixtrain_dali.errors import UserError

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    named = {name for line in rows for name in re.findall(r"`(\w+)`", line.split("|")[1])}
    fields = {f.name for f in dataclasses.fields(MixConfig)}
    assert fields <= named, f"not in the README's [mix] table: {sorted(fields - named)}"
    retired = ("tile_aspect", "tile_scale", "loss_norm", "lr_scale", "ladder")
    assert not set(retired) & fields
    for key in retired:
        with pytest.raises(UserError, match=f"unknown key '{key}'"):
            Config.from_dict({"mix": {key: 1}})
    flags = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "--mix-ladder" not in flags and "--mix-tile-scale" not in flags and "--mix-loss-norm" not in flags
