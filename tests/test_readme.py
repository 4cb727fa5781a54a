"""Every `dataselect` command in the README's bash blocks runs, in order, on the bundled data (issue 16).

Paths and sizes are adapted to the bundled sample pool (1,600 rows): the pool and query files become
the bundled ones, the hub model a tiny local Llama (no downloads here), budgets of thousands 100 rows,
``--device cuda`` auto. A command that fails fails the test, naming the README line.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from conftest import run_cli
from dataselect.bundled_demo import bundled_data

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[tuple[int, str]]:
    """(line number, command) of every line of a ```bash block that starts with ``dataselect``."""
    text = (ROOT / "README.md").read_text()
    out = []
    for m in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
        first = text[:m.start(1)].count("\n") + 1
        block = m.group(1).replace("\\\n", " \\\n")
        lines = block.split("\n")
        i = 0
        while i < len(lines):
            start, cmd = i, lines[i]
            while cmd.rstrip().endswith("\\"):
                i += 1
                cmd = cmd.rstrip()[:-1] + " " + lines[i]
            if cmd.strip().startswith("dataselect "):
                out.append((first + start, cmd.strip()))
            i += 1
    return out


def adapt(cmd: str, model: str) -> list[str]:
    pool, queries = str(bundled_data("sample_pool.jsonl")), str(bundled_data("sample_queries.jsonl"))
    args = shlex.split(cmd, comments=True)[1:]
    swap = {"pool.jsonl": pool, "gsm8k_dev.jsonl": queries, "code_dev.jsonl": queries,
            "meta-llama/Llama-3.1-8B": model, "some-record-id": "sample-00003", "cuda": "auto"}
    args = [swap.get(a, a) for a in args]
    return [("100" if re.fullmatch(r"\d+(\.\d+)?[kM]", a) else a) for a in args]


def test_readme_blocks_found():
    cmds = [c for _, c in readme_commands()]
    assert any(c.startswith("dataselect embed pool.jsonl") for c in cmds)
    assert any("--queries stores/q_gsm8k stores/q_code" in c for c in cmds)
    assert len(cmds) >= 12


def test_every_readme_command_runs(tmp_path, monkeypatch, tiny_llama):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    for line, cmd in readme_commands():
        args = adapt(cmd, tiny_llama)
        try:
            run_cli(*args, *(["-q"] if args[0] in ("embed", "run") else []))
        except AssertionError as exc:
            raise AssertionError(f"README.md:{line}: `{cmd}` failed: {exc}") from None
    assert (tmp_path / "selected.jsonl").is_file() and (tmp_path / "sel" / "rds" / "report.html").is_file()
