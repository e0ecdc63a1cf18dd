"""The dashboard's HTTP side against the real server: the page and its assets, and ``/v1/dashboard/...``.

No browser needed: these run everywhere. The browser-driven tests are in ``test_dashboard.py``.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path

import httpx
import pytest

from tunewise import cost
from tunewise.dashboard import STATIC
from tunewise.serve.testing import running_server

GOOD = "\n".join(json.dumps({"messages": [
    {"role": "system", "content": "Reply with JSON."},
    {"role": "user", "content": f"Total of receipt {i}?"},
    {"role": "assistant", "content": json.dumps({"total": i * 1.5})},
]}) for i in range(12)) + "\n"
BROKEN_LINE = '{"messages": [{"role": "user", "content": "no closing brackets"'
BROKEN = "\n".join(GOOD.splitlines()[:2] + [BROKEN_LINE] + GOOD.splitlines()[3:]) + "\n"


@pytest.fixture(scope="module")
def server():
    with running_server() as s:
        yield s


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=120,
                      headers={"Authorization": f"Bearer {server.api_key}"}) as client:
        yield client


@pytest.fixture(scope="module")
def good_file(http) -> str:
    r = http.post("/files", files={"file": ("good.jsonl", GOOD.encode())}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def root(server) -> str:
    return server.base_url.removesuffix("/v1")


def test_page_and_assets_are_served_without_a_key(server):
    page = httpx.get(root(server) + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/dashboard/app.js">' in page.text
    app = httpx.get(root(server) + "/dashboard/app.js")
    assert app.status_code == 200 and "javascript" in app.headers["content-type"]
    assert httpx.get(root(server) + "/dashboard/missing.js").status_code == 404


def test_every_module_is_local_and_served(server):
    # Walk the import graph from app.js: every import is a relative path the server serves, nothing from a CDN.
    seen, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        text = httpx.get(f"{root(server)}/dashboard/{name}").text
        for spec in re.findall(r'^import .* from "([^"]+)";$', text, flags=re.M):
            assert spec.startswith("."), f"{name} imports {spec}, which is not a file of the package"
            todo.append(posixpath.normpath(posixpath.join(posixpath.dirname(name), spec)))
    assert {"app.js", "api.js", "chart.js", "dom.js", "pages/job.js", "pages/files.js"} <= seen
    for path in STATIC.rglob("*"):
        if path.is_file():
            urls = re.findall(r"https?://[^\s\"')]+", path.read_text())
            # The SVG namespace is a name, not something fetched.
            assert all(u == "http://www.w3.org/2000/svg" for u in urls), (path.name, urls)


@pytest.mark.parametrize("method,path", [
    ("GET", "/dashboard/whoami"), ("GET", "/dashboard/catalog"), ("POST", "/dashboard/validate"),
    ("GET", "/dashboard/files/file-x/validation"), ("GET", "/dashboard/files/file-x/estimate?model=gpt-4o-mini"),
    ("GET", "/dashboard/breakeven?model=gpt-4o-mini&prompt_tokens=1&ft_prompt_tokens=1&output_tokens=1"
            "&calls_per_month=1"),
    ("GET", "/dashboard/reports"), ("GET", "/dashboard/reports/x"),
])
def test_every_endpoint_needs_a_key(server, method, path):
    r = httpx.request(method, server.base_url + path, content=b"{}" if method == "POST" else None)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"
    r = httpx.request(method, server.base_url + path, headers={"Authorization": "Bearer sk-tw-wrong"})
    assert r.status_code == 401


def test_whoami_names_the_project(http):
    body = http.get("/dashboard/whoami").json()
    assert body["project"] == "default" and body["key_id"].startswith("key-")


def test_validate_quotes_the_broken_line_and_stores_nothing(http):
    before = http.get("/files").json()["data"]
    r = http.post("/dashboard/validate", content=BROKEN.encode(),
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] is False and report["n_errors"] >= 1
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert errors[0]["line"] == 3
    assert report["lines"]["3"] == BROKEN_LINE
    assert "path" not in report  # the server's file layout is not shown
    assert "example_tokens" not in report["stats"]
    assert http.get("/files").json()["data"] == before


def test_validate_refuses_an_empty_body(http):
    r = http.post("/dashboard/validate", content=b"")
    assert r.status_code == 400
    assert "empty" in r.json()["error"]["message"]


def test_stored_file_validation_and_estimate(http, good_file, tmp_path):
    report = http.get(f"/dashboard/files/{good_file}/validation").json()
    assert report["ok"] is True and report["n_errors"] == 0
    assert report["stats"]["n_examples"] == 12 and report["filename"] == "good.jsonl"

    local = tmp_path / "good.jsonl"
    local.write_text(GOOD)
    expected = cost.estimate_training(str(local), "gpt-4o-mini", epochs=4)
    got = http.get(f"/dashboard/files/{good_file}/estimate", params={"model": "gpt-4o-mini", "n_epochs": "4"}).json()
    assert got["billed_tokens"] == expected.billed_tokens
    assert got["cost_usd"] == pytest.approx(expected.cost_usd)
    assert got["n_epochs"] == 4 and got["local_model"] == "tunewise-tiny"

    bad = http.get(f"/dashboard/files/{good_file}/estimate", params={"model": "gpt-4o-mini", "n_epochs": "many"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "n_epochs"
    assert got["openai"] is None  # an OpenAI name is priced at OpenAI's rate already


def test_a_local_model_s_estimate_says_what_openai_would_charge(http, good_file, tmp_path):
    # tunewise-tiny trains here for nothing; the estimate also prices the OpenAI model it stands in for.
    local = tmp_path / "good.jsonl"
    local.write_text(GOOD)
    got = http.get(f"/dashboard/files/{good_file}/estimate", params={"model": "tunewise-tiny"}).json()
    assert got["provider"] == "local" and got["cost_usd"] == 0
    there = cost.estimate_training(str(local), "gpt-4o-mini-2024-07-18")
    assert got["openai"]["model"] == "gpt-4o-mini-2024-07-18"
    assert got["openai"]["billed_tokens"] == there.billed_tokens and got["openai"]["n_epochs"] == there.n_epochs
    assert got["openai"]["cost_usd"] == pytest.approx(there.cost_usd) and there.cost_usd > 0


def test_the_estimate_prices_each_method_as_tunewise_estimate_does(http, tmp_path):
    # DPO: billed like supervised, by the preference file's tokens (input and both outputs) times the epochs;
    # reinforcement: billed by training time, so no price, only what `tunewise estimate --method
    # reinforcement` says.
    from test_serve_dpo import preference_file
    from test_serve_rft import _rft_file

    def upload(path: Path) -> str:
        r = http.post("/files", files={"file": (path.name, path.read_bytes())}, data={"purpose": "fine-tune"})
        assert r.status_code == 200, r.text
        return r.json()["id"]

    prefs = preference_file(tmp_path / "prefs.jsonl")
    prefs_id = upload(prefs)
    want = cost.estimate_training(str(prefs), "gpt-4o-mini-2024-07-18", epochs=2, method="dpo")
    got = http.get(f"/dashboard/files/{prefs_id}/estimate",
                   params={"model": "gpt-4o-mini-2024-07-18", "n_epochs": "2", "method": "dpo"}).json()
    assert got["method"] == "dpo" and got["n_examples"] == 10
    assert got["billed_tokens"] == want.billed_tokens and got["cost_usd"] == pytest.approx(want.cost_usd)
    assert got["billed_tokens"] == 2 * got["billed_tokens_per_epoch"]
    # A local model's DPO estimate prices its OpenAI counterpart as DPO too.
    local = http.get(f"/dashboard/files/{prefs_id}/estimate",
                     params={"model": "tunewise-tiny", "method": "dpo"}).json()
    there = cost.estimate_training(str(prefs), "gpt-4o-mini-2024-07-18", method="dpo")
    assert local["openai"]["billed_tokens"] == there.billed_tokens
    # The same file priced as supervised is not chat data: the library's refusal, as a 400.
    wrong = http.get(f"/dashboard/files/{prefs_id}/estimate", params={"model": "gpt-4o-mini-2024-07-18"})
    assert wrong.status_code == 400, wrong.text
    error = wrong.json()["error"]
    assert "preference format (DPO)" in error["message"] and error["code"] == "invalid_training_file"
    assert "prefs.jsonl" in error["message"] and "/files/" not in error["message"]  # the server's path stays its own

    rft_id = upload(_rft_file(tmp_path / "rft.jsonl"))
    got = http.get(f"/dashboard/files/{rft_id}/estimate",
                   params={"model": "gpt-4o-mini-2024-07-18", "method": "reinforcement"}).json()
    assert got["method"] == "reinforcement" and got["cost_usd"] is None and got["billing"] == cost.RFT_BILLING
    assert "per hour" in got["billing"]
    assert got["n_examples"] == 10 and got["prompt_tokens_per_epoch"] > 0 and got["n_errors"] == 0
    assert got["local_model"] == "tunewise-tiny"

    bad = http.get(f"/dashboard/files/{rft_id}/estimate", params={"model": "gpt-4o-mini", "method": "ppo"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "method", bad.text


def test_another_project_cannot_see_the_file(server, http, good_file):
    other = {"Authorization": f"Bearer {server.create_key('other-project')}"}
    for path in (f"/dashboard/files/{good_file}/validation",
                 f"/dashboard/files/{good_file}/estimate?model=gpt-4o-mini"):
        r = httpx.get(server.base_url + path, headers=other, timeout=60)
        assert r.status_code == 404, r.text
    # ... exactly as /v1/files hides it.
    assert httpx.get(f"{server.base_url}/files/{good_file}", headers=other).status_code == 404


def test_breakeven_is_the_library_s(http):
    args = dict(model="gpt-4o-mini", prompt_tokens=1500, ft_prompt_tokens=200, output_tokens=150,
                calls_per_month=100000, training_cost=2.5)
    got = http.get("/dashboard/breakeven", params=args).json()
    want = cost.breakeven("gpt-4o-mini", 1500, 200, 150, 100000, training_cost=2.5).to_dict()
    for key in ("base_monthly", "ft_monthly", "monthly_saving", "months_to_recover", "training_cost"):
        assert got[key] == pytest.approx(want[key]), key
    assert got["breakeven_calls_per_month"] == want["breakeven_calls_per_month"]
    r = http.get("/dashboard/breakeven", params={**args, "prompt_tokens": -1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt_tokens"


def test_catalog_lists_models_and_aliases(http):
    body = http.get("/dashboard/catalog").json()
    names = {m["name"] for m in body["data"]}
    assert {"gpt-4o-mini-2024-07-18", "tunewise-tiny"} <= names
    assert body["aliases"]["gpt-4o-mini"] == "tunewise-tiny"
    assert body["default_local_model"] == "tunewise-tiny"
    assert body["default_model"] == "gpt-4o-mini-2024-07-18"  # the guide's model: the pages open on it


def test_reports_are_listed_and_read(server, http):
    reports = Path(server.data_dir) / "reports"
    (reports / "receipts-v1").mkdir(parents=True)
    (reports / "receipts-v1" / "report.html").write_text("<html><body><h1>Decision</h1></body></html>")
    (reports / "receipts-v1" / "report.md").write_text("# Decision\n")
    (reports / "receipts-v1" / "decision.json").write_text(json.dumps({"verdict": "fine-tune",
                                                                        "summary": "Fine-tune: +30 points."}))
    (reports / "not-a-report").mkdir()  # no report files: not listed
    listed = http.get("/dashboard/reports").json()["data"]
    assert [r["name"] for r in listed] == ["receipts-v1"]
    assert listed[0]["verdict"] == "fine-tune" and listed[0]["summary"] == "Fine-tune: +30 points."
    one = http.get("/dashboard/reports/receipts-v1").json()
    assert "<h1>Decision</h1>" in one["html"] and one["markdown"] == "# Decision\n"
    for name in ("not-a-report", "..", ".hidden", "nope"):
        assert http.get(f"/dashboard/reports/{name}").status_code == 404, name
