"""The operations layer (src/dataselect/operations): one operation per command, its options declared
once; the command line and the Python API are faces of it that type no default of their own."""

from __future__ import annotations

import dataclasses
import inspect

import click
import numpy as np
import pytest
import typer

import dataselect as ds
from dataselect import operations as ops
from dataselect.cli import app, app_command_names
from dataselect.errors import DataselectError
from dataselect.selection_run import RunSpec

CLI_NAMES = {("export", "fmt"): "format"}  # a command's parameter named other than its option


def _commands() -> dict[str, click.Command]:
    return typer.main.get_command(app).commands


def test_every_command_has_an_operation_and_a_python_function():
    """Issue 26: the Python API covered embed, select, export and a few others, not every command."""
    names = set(app_command_names())
    assert names == set(ops.COMMANDS) | {"run", "methods"}
    for name in names:  # `run` is select(...).save(out): ds.run would be the module dataselect.selection_run
        assert callable(getattr(ds, "select" if name == "run" else name)), name


@pytest.mark.parametrize("name", sorted(ops.COMMANDS))
def test_command_line_defaults_are_the_options_defaults(name):
    """A default typed twice drifts: the command line reads each default from the options class."""
    _, options, _ = ops.COMMANDS[name]
    fields = {f.name: f for f in dataclasses.fields(options)}
    checked = 0
    for param in _commands()[name].params:
        field = fields.get(CLI_NAMES.get((name, param.name), param.name))
        if field is None or field.default is dataclasses.MISSING:
            continue
        want = field.default
        got = tuple(param.default) if isinstance(want, tuple) and param.default is not None else param.default
        if name == "dedup" and param.name == "eps_sweep":
            continue  # text on the command line ("0.01,0.05"), a sequence in the options
        assert got == want or str(got) == str(want), (name, param.name, got, want)
        checked += 1
    assert checked >= (1 if any(f.default is not dataclasses.MISSING for f in fields.values()) else 0)


@pytest.mark.parametrize("name", sorted(ops.COMMANDS))
def test_python_signatures_are_made_from_the_options(name):
    _, options, positional = ops.COMMANDS[name]
    sig = inspect.signature(getattr(ds, name))
    assert [p for p in sig.parameters][: len(positional)] == list(positional)
    for f in dataclasses.fields(options):
        p = sig.parameters[f.name]
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else inspect.Parameter.empty)
        assert (p.default is inspect.Parameter.empty) == (default is inspect.Parameter.empty), f.name
        if default is not inspect.Parameter.empty:
            assert p.default == default


def test_run_help_states_the_run_spec_defaults():
    helps = {p.name: p.help for p in _commands()["run"].params}
    assert f"Default: {RunSpec.budget}." in helps["budget"] and f"Default: {RunSpec.method}." in helps["method"]


def test_an_unknown_or_missing_option_is_one_line(tmp_path):
    with pytest.raises(DataselectError, match=r"score\(\) has no option bogus \(options: "):
        ds.score(tmp_path, pool="p.jsonl", bogus=1)
    with pytest.raises(DataselectError, match=r"score\(\) needs pool$"):
        ds.score(tmp_path)
    with pytest.raises(DataselectError, match=r"explain\(\) takes 1 positional argument"):
        ds.explain("a", "b")
    with pytest.raises(DataselectError, match=r"compare needs at least two selection folders"):
        ds.compare("a")
    with pytest.raises(DataselectError, match="--k 'x': expected int"):
        ds.neighbors(tmp_path, row=0, k="x")


def test_each_store_and_selection_command_from_python(tmp_path, capsys):
    """The Python faces of inspect, verify, index, neighbors, run, report, compare, explain give what the
    commands print, as typed results."""
    from conftest import run_cli
    from dataselect.store.synthetic import store_from_array, unit_rows

    x = unit_rows(np.random.default_rng(0), 300, 8)
    store_from_array(tmp_path / "pool", x, shard_rows=100)
    summary = ds.inspect(tmp_path / "pool")
    assert summary.manifest.rows_stored == 300 and summary.lines()[0].startswith("store ")
    def printed(*args) -> str:
        capsys.readouterr()
        run_cli(*args)
        return capsys.readouterr().out

    checked = ds.verify(tmp_path / "pool")
    out = printed("verify", tmp_path / "pool")
    assert checked.ok and out.strip() == checked.message()
    assert (ds.index(tmp_path / "pool", kind="flat") / "artefact.json").exists()
    near = ds.neighbors(tmp_path / "pool", row=7, k=3)
    assert len(near.rows) == 3 and 7 not in near.rows and near.scores == sorted(near.scores, reverse=True)
    assert near.rows[0] == int(np.argsort(-(x.astype(np.float32) @ x[7].astype(np.float32)))[1])
    out = printed("neighbors", tmp_path / "pool", "--row", "7", "--k", "3")
    assert out.strip() == near.text()
    a = ds.run(tmp_path / "pool", "random", budget=40, seed=1, out=tmp_path / "a", progress=False)
    run_cli("run", "--store", tmp_path / "pool", "--method", "random", "--budget", "40", "--seed", "2", "--out",
            tmp_path / "b", "-q")
    b = ds.load_selection(tmp_path / "b")
    assert a.path == tmp_path / "a" and ds.load_selection(tmp_path / "a").rows.tolist() == a.rows.tolist()
    cmp = ds.compare(tmp_path / "a", tmp_path / "b")
    out = printed("compare", tmp_path / "a", tmp_path / "b")
    assert out.strip() == cmp.text.strip()
    overlap = len(set(a.rows.tolist()) & set(b.rows.tolist()))
    assert str(overlap) in cmp.text
    why = ds.explain(tmp_path / "a", row=int(a.rows[0]))
    assert why.facts["picked"] and why.facts["rank"] == 0 and "PICKED by random" in why.text
    assert ds.report(tmp_path / "a").is_file()
