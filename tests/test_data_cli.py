"""`tunewise validate` and `tunewise tokens` through the real command line entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tunewise import tokens
from tunewise.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
GUIDE = FIXTURES / "guide_example.jsonl"
REPO = Path(__file__).resolve().parents[1]


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def dataset(path: Path, n: int = 100) -> Path:
    rows = [{"messages": [{"role": "system", "content": "Return JSON only."},
                          {"role": "user", "content": f"Tea {i} - $2.{i:02d}"},
                          {"role": "assistant", "content": json.dumps({"items": [{"name": f"Tea {i}"}]})}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_validate_clean_file_exits_0_with_stats_table(capsys, tmp_path):
    path = dataset(tmp_path / "train.jsonl")
    code, out, err = run(capsys, "validate", path)
    assert code == 0 and err == ""
    assert "100 examples for gpt-4o-mini-2024-07-18 (o200k_base" in out
    for row in ("messages", "total tokens", "assistant tokens", "billed training tokens per epoch"):
        assert row in out
    assert out.strip().endswith("ok: 0 error(s), 0 warning(s)")


def test_validate_guide_example_exits_1_with_one_line_per_finding(capsys):
    code, out, _ = run(capsys, "validate", GUIDE)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{GUIDE}:1: error unescaped_nested_json: ")
    assert lines[1].startswith(f"{GUIDE}:2: error unescaped_nested_json: ")
    assert lines[0].endswith(")") and "--fix OUT" in lines[0]
    assert f"{GUIDE}: error too_few_examples: " in out
    assert "FAILED: 3 error(s), 1 warning(s)" in out


def test_validate_warnings_only_exit_0(capsys, tmp_path):
    path = dataset(tmp_path / "train.jsonl", n=30)
    code, out, _ = run(capsys, "validate", path)
    assert code == 0 and "warning small_dataset" in out


def test_validate_json_output(capsys, tmp_path):
    code, out, _ = run(capsys, "validate", GUIDE, "--json", "--model", "gpt-3.5-turbo")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and report["n_errors"] == 3
    assert [f["code"] for f in report["findings"]][:2] == ["unescaped_nested_json"] * 2
    assert report["stats"]["encoding"] == "cl100k_base" and report["stats"]["n_examples"] == 2


def test_validate_fix_writes_repaired_copy(capsys, tmp_path):
    before = GUIDE.read_bytes()
    out_path = tmp_path / "fixed.jsonl"
    code, out, _ = run(capsys, "validate", GUIDE, "--fix", out_path)
    assert GUIDE.read_bytes() == before
    assert f"wrote {out_path}: repaired line(s) 1, 2 of {GUIDE}" in out
    assert "unescaped_nested_json" not in out
    assert code == 1  # the two-line repaired copy is still under OpenAI's 10-example minimum
    for line in out_path.read_text().splitlines():
        json.loads(line)
    code, out, _ = run(capsys, "validate", GUIDE, "--fix", tmp_path / "fixed2.jsonl", "--json")
    assert json.loads(out)["fixed"]["changed_lines"] == [1, 2]


def test_validate_fix_refuses_to_overwrite_input(capsys, tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_bytes(GUIDE.read_bytes())
    code, _, err = run(capsys, "validate", path, "--fix", path)
    assert code == 2 and "overwrite" in err
    assert path.read_bytes() == GUIDE.read_bytes()


def test_validate_usage_errors_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "validate", tmp_path / "missing.jsonl")
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "validate", GUIDE, "--model", "gpt-9")
    assert code == 2 and err.startswith("error: Model 'gpt-9' is not in the catalog.")
    assert "Traceback" not in err


def test_validate_prices_option(capsys, tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."gpt-4o-mini-2024-07-18"]\ncontext_limit = 20\n')
    code, out, _ = run(capsys, "validate", dataset(tmp_path / "t.jsonl"), "--prices", prices)
    assert code == 1 and "error too_long" in out and "context limit 20 tokens" in out


def test_validate_not_jsonl(capsys, tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"messages": []}] * 3, indent=2))
    code, out, _ = run(capsys, "validate", path)
    assert code == 1
    assert [line for line in out.splitlines() if " error " in line] == [
        line for line in out.splitlines() if "error not_jsonl" in line]


def test_tokens_command(capsys, tmp_path):
    text = "Grüße, 世界! 🚀 def f(x): return x"
    code, out, _ = run(capsys, "tokens", text)
    assert code == 0 and int(out) == len(tokens.reference_encoding("o200k_base").encode(text))
    code, out, _ = run(capsys, "tokens", text, "--model", "gpt-3.5-turbo")
    assert int(out) == len(tokens.reference_encoding("cl100k_base").encode(text))
    code, out, _ = run(capsys, "tokens", text, "--encoding", "cl100k_base")
    assert int(out) == len(tokens.reference_encoding("cl100k_base").encode(text))
    f = tmp_path / "t.txt"
    f.write_text(text * 10, encoding="utf-8")
    code, out, _ = run(capsys, "tokens", "-f", f, "--model", "ft:gpt-4.1-mini-2025-04-14:acme::x1")
    assert int(out) == len(tokens.reference_encoding("o200k_base").encode(text * 10))


def test_tokens_usage_errors(capsys, tmp_path):
    assert run(capsys, "tokens")[0] == 2
    assert run(capsys, "tokens", "hi", "-f", GUIDE)[0] == 2
    assert run(capsys, "tokens", "hi", "--model", "gpt-4o", "--encoding", "o200k_base")[0] == 2
    code, _, err = run(capsys, "tokens", "hi", "--encoding", "p50k")
    assert code == 2 and "Unknown encoding" in err
    code, _, err = run(capsys, "tokens", "-f", tmp_path / "none.txt")
    assert code == 2 and "does not exist" in err


def test_console_script_reads_stdin():
    exe = REPO / ".venv" / "bin" / "tunewise"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tunewise"]
    done = subprocess.run(cmd + ["tokens", "-f", "-"], input="hello world", capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "2"


def test_hostile_lines_exit_1_and_a_crash_exits_3(capsys, tmp_path, monkeypatch):
    path = dataset(tmp_path / "d.jsonl", 20)
    with open(path, "a") as f:
        f.write("[" * 1500 + "]" * 1500 + "\n")
        f.write('{"messages": [], "n": ' + "9" * 5000 + "}\n")
    code, out, err = run(capsys, "validate", path)
    assert code == 1 and "Traceback" not in out + err
    assert "json_too_deep" in out and "number_too_long" in out
    # A bug in tunewise (here: the validator made to fail) is not "the file has errors".
    import tunewise.data

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(tunewise.data, "validate", broken)
    code, out, err = run(capsys, "validate", path)
    assert code == 3 and "internal error" in err and "ZeroDivisionError" in err and "Traceback" not in err
