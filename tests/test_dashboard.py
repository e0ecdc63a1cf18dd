"""The dashboard in a real browser: headless Chromium driven by Selenium against the real server.

Signs in with the key, uploads a file with a broken line and sees the finding on that line, uploads a good one,
starts a job on the tiny model from the form (the estimate shown first), watches the loss chart grow, cancels
it; DPO and reinforcement jobs from the form (bad values and broken grader JSON refused in the page first); the
calculator, reports and models pages. Every page is saved as a screenshot in
``tests/artifacts/dashboard/``. Skipped, with the reason, where no Chromium is installed
(``scripts/install-browser.sh`` installs Debian's ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from tunewise import cost
from tunewise.serve.testing import running_server, wait_for, write_receipts

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts" / "dashboard"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1400"]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"no browser: {CHROMIUM} and {CHROMEDRIVER} are needed (run scripts/install-browser.sh)",
                allow_module_level=True)

EXAMPLES = [{"messages": [
    {"role": "system", "content": "Reply with JSON."},
    {"role": "user", "content": f"Total of receipt {i}?"},
    {"role": "assistant", "content": json.dumps({"total": i * 1.5})},
]} for i in range(12)]
GOOD = "\n".join(json.dumps(e) for e in EXAMPLES) + "\n"
BROKEN_LINE = '{"messages": [{"role": "user", "content": "no closing brackets"'
BROKEN = "\n".join(GOOD.splitlines()[:2] + [BROKEN_LINE] + GOOD.splitlines()[3:]) + "\n"


@pytest.fixture(scope="module")
def server():
    # Reinforcement jobs sample short completions (8 tokens), as tests/test_serve_rft.py's server does.
    with running_server(env={"TUNEWISE_WORKER_POLL_S": "0.05", "TUNEWISE_RFT_MAX_COMPLETION_TOKENS": "8"}) as s:
        yield s


@pytest.fixture(scope="module")
def driver():
    profile = tempfile.mkdtemp(prefix="tunewise-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # The driver path is given, so Selenium never looks for (or downloads) a driver.
    d = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(server, driver):
    """The dashboard, signed in."""
    driver.get(server.base_url.removesuffix("/v1") + "/")
    # The page checks a key it already holds before it shows anything: wait for one outcome or the other.
    wait(driver, lambda d: d.find_element(By.ID, "nav").is_displayed() or d.find_element(By.ID, "login").is_displayed(),
         message="the page to start")
    if not driver.find_element(By.ID, "nav").is_displayed():
        sign_in(driver, server.api_key)
        wait(driver, lambda d: d.find_element(By.ID, "nav").is_displayed(), message="the navigation after sign-in")
    return driver


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-files")
    (root / "good.jsonl").write_text(GOOD)
    (root / "broken.jsonl").write_text(BROKEN)
    return root


def wait(driver, condition, timeout=30, message=""):
    def safe(d):
        try:
            return condition(d)
        except StaleElementReferenceException:  # the page redrew the element between find and read
            return False
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(safe, message)
    except TimeoutException:
        # Leave the evidence: what the page showed when the wait gave up.
        shot(driver, "FAILED-" + "".join(c if c.isalnum() else "-" for c in message)[:60])
        view = driver.execute_script("return document.body.innerText")
        raise AssertionError(f"timed out after {timeout}s waiting for {message}; the page said:\n{view[:2000]}") from None


def shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def go(driver, hash_: str, ready_id: str) -> None:
    driver.execute_script("window.location.hash = arguments[0]", hash_)
    wait(driver, lambda d: d.find_elements(By.ID, ready_id), message=f"#{ready_id} on {hash_}")


@contextmanager
def evidence(driver, server, name: str):
    """On a failed assertion: a screenshot, and the page's text and the server's log in the message."""
    try:
        yield
    except AssertionError as exc:
        shot(driver, f"FAILED-{name}")
        view = driver.execute_script("return document.body.innerText")
        raise AssertionError(f"{exc}\n--- page:\n{view[:1500]}\n--- server log:\n{server.output()[-3000:]}") from None


def sign_in(driver, key: str) -> None:
    wait(driver, lambda d: d.find_element(By.ID, "login").is_displayed(), message="the sign-in form")
    box = driver.find_element(By.ID, "api-key")
    box.clear()
    box.send_keys(key)
    driver.find_element(By.ID, "login-submit").click()


def upload(driver, path: Path) -> None:
    driver.find_element(By.ID, "upload-file").send_keys(str(path))
    driver.find_element(By.ID, "upload-submit").click()


def chart_points(driver, chart_id: str) -> int:
    svgs = driver.find_elements(By.CSS_SELECTOR, f"#{chart_id} svg")
    if not svgs:
        return 0
    return sum(int(n) for n in (svgs[0].get_attribute("data-points") or "0").split(",") if n)


# Where a chart's legend and its data are drawn, measured by the browser: the legend's box (SVG user units,
# transforms applied) against each series' box, the plot area and the drawing's viewBox, and every legend label's
# rendered box against the svg's (a label outside it would be clipped).
CHART_LAYOUT = """
const svg = document.querySelector(`#${arguments[0]} svg`);
if (!svg) return null;
const box = (el) => { const b = el.getBBox(); return { x0: b.x, y0: b.y, x1: b.x + b.width, y1: b.y + b.height }; };
const rect = (el) => { const b = el.getBoundingClientRect(); return { x0: b.left, y0: b.top, x1: b.right, y1: b.bottom }; };
const legend = svg.querySelector('.chart-legend');
const axis = [...svg.querySelectorAll('.chart-axes line.axis')].map(box);
return {
  viewBox: svg.viewBox.baseVal && { x0: 0, y0: 0, x1: svg.viewBox.baseVal.width, y1: svg.viewBox.baseVal.height },
  legend: legend && legend.children.length ? box(legend) : null,
  series: [...svg.querySelectorAll('g.series')].filter((g) => g.children.length).map(box),
  plotBottom: Math.max(...axis.map((a) => a.y1)),
  svg: rect(svg),
  labels: [...svg.querySelectorAll('.chart-legend text')].map((t) => ({ text: t.textContent, ...rect(t) })),
};
"""


def overlaps(a, b) -> bool:
    return a["x0"] < b["x1"] and b["x0"] < a["x1"] and a["y0"] < b["y1"] and b["y0"] < a["y1"]


def inside(a, outer, slack=0.5) -> bool:
    return (a["x0"] >= outer["x0"] - slack and a["y0"] >= outer["y0"] - slack
            and a["x1"] <= outer["x1"] + slack and a["y1"] <= outer["y1"] + slack)


def assert_legend_clear(driver, chart_id: str, n_series: int) -> None:
    """The chart's legend covers no data, sits below the plot area and is not clipped."""
    got = driver.execute_script(CHART_LAYOUT, chart_id)
    assert got and got["legend"], f"#{chart_id} has no legend"
    assert len(got["series"]) == n_series, got["series"]
    for series in got["series"]:
        assert not overlaps(got["legend"], series), f"#{chart_id}: the legend {got['legend']} covers {series}"
    assert got["legend"]["y0"] >= got["plotBottom"], f"#{chart_id}: the legend is not below the plot area"
    assert inside(got["legend"], got["viewBox"]), f"#{chart_id}: the legend {got['legend']} leaves {got['viewBox']}"
    assert len(got["labels"]) == n_series
    for lab in got["labels"]:
        assert inside(lab, got["svg"]), f"#{chart_id}: the legend label {lab['text']!r} is clipped"


def assert_names_wrap_only_at_colons(driver, selector: str, names: list[str], min_lines: int = 1,
                                     max_lines: int = 99) -> None:
    """Each model name under ``selector`` reads as itself, and no part between ':' is split over two lines;
    each name takes ``min_lines`` to ``max_lines`` lines."""
    got = driver.execute_script("""
        return [...document.querySelectorAll(arguments[0])].map((code) => ({
          text: code.textContent,
          parts: [...code.querySelectorAll(':scope > span')].map((s) => ({
            text: s.textContent, lines: s.getClientRects().length, ws: getComputedStyle(s).whiteSpace })),
          lines: new Set([...code.getClientRects()].map((r) => Math.round(r.top))).size,
        }));""", selector)
    assert [g["text"] for g in got] == names
    for name in got:
        assert "".join(p["text"] for p in name["parts"]) == name["text"]
        for part in name["parts"]:
            assert part["ws"] == "nowrap", part
            assert part["lines"] == 1, f"{part['text']!r} of {name['text']} is split over {part['lines']} lines"
            assert part["text"].count(":") <= 1 and (":" not in part["text"] or part["text"].endswith(":"))
        assert min_lines <= name["lines"] <= max_lines, f"{name['text']} takes {name['lines']} lines"


def test_sign_in_asks_for_the_key_once_and_keeps_it_in_the_tab(server, driver):
    driver.get(server.base_url.removesuffix("/v1") + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    sign_in(driver, "sk-tw-not-a-key")
    wait(driver, lambda d: "refused" in d.find_element(By.ID, "login-error").text, message="the refusal")
    shot(driver, "login")
    sign_in(driver, server.api_key)
    wait(driver, lambda d: d.find_element(By.ID, "nav").is_displayed(), message="the navigation after sign-in")
    assert driver.execute_script("return sessionStorage.getItem('tunewise.apiKey')") == server.api_key
    assert driver.execute_script("return localStorage.length") == 0
    assert "project default" in driver.find_element(By.ID, "who").text
    # A reload keeps the key (same tab): no second prompt.
    driver.refresh()
    wait(driver, lambda d: d.find_element(By.ID, "nav").is_displayed(), message="signed in after reload")
    assert not driver.find_element(By.ID, "login").is_displayed()


def test_upload_shows_the_broken_line_and_stores_only_the_good_file(page, files):
    go(page, "#/files", "upload-file")
    upload(page, files / "broken.jsonl")
    row = wait(page, lambda d: d.find_element(By.CSS_SELECTOR, '#findings-table tr.finding.error[data-line="3"]'),
               message="the finding on line 3")
    assert "invalid_json" in row.text
    assert row.find_element(By.CSS_SELECTOR, "pre.line-text").text == BROKEN_LINE
    assert "Not uploaded" in page.find_element(By.ID, "upload-status").text
    assert "broken.jsonl" not in page.find_element(By.ID, "files-list").text
    shot(page, "files-findings")

    upload(page, files / "good.jsonl")
    wait(page, lambda d: "0 errors" in d.find_element(By.ID, "findings-summary").text, message="a clean report")
    assert "good.jsonl" in page.find_element(By.ID, "files-table").text
    assert page.find_element(By.ID, "upload-progress").get_attribute("value") == "100"
    shot(page, "files")


def test_delete_a_file_takes_two_clicks(page, server, files):
    spare = server.client().files.create(file=(files / "good.jsonl").open("rb"), purpose="fine-tune")
    go(page, "#/jobs", "jobs-list")  # leave and come back: the list is read when the page opens
    go(page, "#/files", "files-table")
    button = wait(page, lambda d: d.find_element(
        By.CSS_SELECTOR, f'#files-table tr[data-file-id="{spare.id}"] button[data-action="delete"]'))
    button.click()
    assert "again" in button.text  # armed, nothing deleted yet
    assert spare.id in [f.id for f in server.client().files.list().data]
    button.click()
    wait(page, lambda d: not d.find_elements(By.CSS_SELECTOR, f'#files-table tr[data-file-id="{spare.id}"]'),
         message="the deleted file to leave the list")
    assert spare.id not in [f.id for f in server.client().files.list().data]


def test_new_job_shows_the_estimate_then_the_chart_updates_pause_resume_and_cancel(page, server, files):
    with evidence(page, server, "job"):
        # 60 examples x 25 epochs: a job long enough to pause, resume and cancel even on an idle machine.
        longer = files / "longer.jsonl"
        write_receipts(longer, [(f"Item {i}", 1.0 + i / 4) for i in range(60)])
        file_id = server.client().files.create(file=longer.open("rb"), purpose="fine-tune").id
        go(page, f"#/new?file={file_id}", "new-model")
        # The form opens on the guide's model and says what OpenAI would charge for it, as `tunewise jobs
        # create` does, and that this server trains it for free on its local stand-in.
        model = page.find_element(By.ID, "new-model")
        assert model.get_attribute("value") == "gpt-4o-mini-2024-07-18"
        local_note = wait(page, lambda d: d.find_element(By.ID, "new-estimate-local"), timeout=90,
                          message="the estimate for the default model")
        assert "free" in local_note.text and "tunewise-tiny" in local_note.text, local_note.text
        openai = cost.estimate_training(str(longer), "gpt-4o-mini-2024-07-18")
        shown = page.find_element(By.ID, "new-estimate-cost").text
        assert "on OpenAI" in shown, shown
        assert float(shown.split()[0].lstrip("$").replace(",", "")) == pytest.approx(openai.cost_usd, abs=5e-5)
        assert openai.cost_usd > 0
        shot(page, "new-job-openai")

        model.clear()
        model.send_keys("tunewise-tiny")
        page.find_element(By.ID, "new-epochs").send_keys("25")
        page.find_element(By.ID, "new-suffix").send_keys("dash")
        epochs = "//div[@id='new-estimate']//dt[text()='Epochs']/following-sibling::dd[1]"
        wait(page, lambda d: d.find_element(By.XPATH, epochs).text == "25"
             and d.find_element(By.ID, "new-estimate-cost").text.startswith("$0.00"), timeout=90,
             message="the estimate for 25 epochs of the local model")
        # A local model is free here; the estimate still says what OpenAI would charge for its counterpart.
        there = cost.estimate_training(str(longer), "gpt-4o-mini-2024-07-18", epochs=25)
        note = page.find_element(By.ID, "new-estimate-openai").text
        assert "OpenAI would charge" in note and "gpt-4o-mini-2024-07-18" in note, note
        assert f"{there.billed_tokens:,} tokens" in note, note
        shot(page, "new-job")
        page.find_element(By.ID, "new-submit").click()
        wait(page, lambda d: "#/jobs/ftjob-" in d.current_url, message="the job page")
        job_id = page.current_url.split("#/jobs/")[1]

        # The chart grows while the job runs: two different point counts seen with the status running.
        counts = set()

        def growing(d):
            status = d.find_element(By.ID, "job-status").get_attribute("data-status")
            # (None: the page has not drawn the job yet)
            assert status in (None, "validating_files", "queued", "running"), f"job ended early: {status}"
            if status == "running" and chart_points(d, "chart-train-loss"):
                counts.add(chart_points(d, "chart-train-loss"))
            return len(counts) >= 2
        wait(page, growing, timeout=120, message="the training-loss chart to update")
        assert "step" in page.find_element(By.ID, "job-progress").text
        assert_legend_clear(page, "chart-train-loss", 1)
        assert_legend_clear(page, "chart-accuracy", 1)
        # No validation file: the validation chart says so, in lines that fit its (narrow) card.
        lines = page.execute_script("""
            const svg = document.querySelector('#chart-valid-loss svg'), r = svg.getBoundingClientRect();
            return [...svg.querySelectorAll('.chart-empty tspan')].map((t) => {
              const b = t.getBoundingClientRect();
              return [t.textContent, b.left >= r.left - 0.5 && b.right <= r.right + 0.5]; });""")
        assert " ".join(t for t, _ in lines) == "No validation loss (yet): add a validation file to see it"
        assert all(fits for _, fits in lines), lines
        shot(page, "job-running")

        # Pause and resume through the buttons; the buttons follow the status.
        page.find_element(By.ID, "job-pause").click()
        wait(page, lambda d: d.find_element(By.ID, "job-status").get_attribute("data-status") == "paused",
             timeout=60, message="the paused status")
        assert page.find_element(By.ID, "job-resume").is_enabled()
        assert not page.find_element(By.ID, "job-pause").is_enabled()
        shot(page, "job-paused")
        page.find_element(By.ID, "job-resume").click()
        wait(page, lambda d: d.find_element(By.ID, "job-status").get_attribute("data-status") in ("queued", "running"),
             timeout=60, message="the job to run again")
        assert not page.find_element(By.ID, "job-resume").is_enabled()

        page.find_element(By.ID, "job-cancel").click()
        wait(page, lambda d: d.find_element(By.ID, "job-status").get_attribute("data-status") == "cancelled",
             timeout=60, message="the cancelled status")
        assert not page.find_element(By.ID, "job-cancel").is_enabled()
        assert server.client().fine_tuning.jobs.retrieve(job_id).status == "cancelled"
        shot(page, "job-cancelled")
        events = page.find_element(By.ID, "job-events")
        assert "cancelled" in events.text.lower()
        assert "training loss=" not in events.text  # step messages are in the charts...
        page.find_element(By.ID, "job-show-steps").click()
        wait(page, lambda d: "training loss=" in d.find_element(By.ID, "job-events").text,
             message="the step messages")  # ...and in the list on request

        go(page, "#/jobs", "jobs-list")
        row = wait(page, lambda d: d.find_element(By.CSS_SELECTOR, f'#jobs-table tr[data-job-id="{job_id}"]'))
        assert "cancelled" in row.text
        shot(page, "jobs")


def flashed_error(driver, words: str):
    """The page's error message, once it says ``words``."""
    return wait(driver, lambda d: words in d.find_element(By.ID, "flash").text
                and d.find_elements(By.CSS_SELECTOR, "#flash .flash.error"), message=f"the message {words!r}")


def fact(driver, key: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f'#job-facts dd[data-fact="{key}"]').text


def retype(driver, field_id: str, text: str) -> None:
    box = driver.find_element(By.ID, field_id)
    box.clear()
    box.send_keys(text)


def cancel_from_the_page(driver) -> str:
    """Cancel the job the page shows (if it still runs); its final status."""
    if driver.find_element(By.ID, "job-cancel").is_enabled():
        driver.find_element(By.ID, "job-cancel").click()
    wait(driver, lambda d: d.find_element(By.ID, "job-status").get_attribute("data-status")
         in ("cancelled", "succeeded", "failed"), timeout=60, message="the job to stop")
    return driver.find_element(By.ID, "job-status").get_attribute("data-status")


def test_a_dpo_job_from_the_form_shows_its_method_beta_and_reward(page, server, files):
    from test_serve_dpo import preference_file

    with evidence(page, server, "job-dpo"):
        client = server.client()
        prefs = preference_file(files / "prefs.jsonl")
        file_id = client.files.create(file=prefs.open("rb"), purpose="fine-tune").id
        go(page, f"#/new?file={file_id}", "new-method")
        assert not page.find_element(By.ID, "new-dpo").is_displayed()
        Select(page.find_element(By.ID, "new-method")).select_by_value("dpo")
        assert page.find_element(By.ID, "new-beta").is_displayed()
        assert not page.find_element(By.ID, "new-grader").is_displayed()
        # Priced as `tunewise estimate FILE --method dpo` prices it: the input's and both outputs' tokens.
        want = cost.estimate_training(str(prefs), "gpt-4o-mini-2024-07-18", method="dpo")
        billed = "//div[@id='new-estimate']//dt[text()='Billed tokens']/following-sibling::dd[1]"
        wait(page, lambda d: d.find_element(By.XPATH, billed).text == f"{want.billed_tokens:,}", timeout=90,
             message="the DPO estimate")
        shown = page.find_element(By.ID, "new-estimate-cost").text
        assert float(shown.split()[0].lstrip("$")) == pytest.approx(want.cost_usd, abs=5e-5)

        before = len(client.fine_tuning.jobs.list().data)
        retype(page, "new-beta", "strong")  # not a number: refused in the page, nothing sent
        page.find_element(By.ID, "new-submit").click()
        flashed_error(page, 'beta must be "auto" or a number, not "strong"')
        retype(page, "new-beta", "3")  # a number the server refuses: its 400 shown as it says it
        page.find_element(By.ID, "new-submit").click()
        flashed_error(page, "Invalid beta 3")
        assert "(0, 2]" in page.find_element(By.ID, "flash").text
        assert len(client.fine_tuning.jobs.list().data) == before

        retype(page, "new-beta", "0.2")
        retype(page, "new-epochs", "25")  # long enough to watch it run, then cancel
        retype(page, "new-batch-size", "1")
        shot(page, "new-job-dpo")
        page.find_element(By.ID, "new-submit").click()
        wait(page, lambda d: "#/jobs/ftjob-" in d.current_url, message="the job page")
        job_id = page.current_url.split("#/jobs/")[1]
        wait(page, lambda d: fact(d, "method") == "dpo", message="the method on the job page")
        assert fact(page, "beta") == "0.2" and fact(page, "n_epochs") == "25" and fact(page, "batch_size") == "1"
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
        # DPO's reward accuracy (and margin) are charted beside the loss, from the metrics events.
        wait(page, lambda d: chart_points(d, "chart-reward") >= 2, timeout=120, message="the reward chart")
        assert page.find_element(By.ID, "chart-accuracy").is_displayed()  # token accuracy on the preferred answers
        labels = [t.text for t in page.find_elements(By.CSS_SELECTOR, "#chart-reward .chart-legend text")]
        assert [t.split(" (")[0] for t in labels[:2]] == ["train reward accuracy", "train reward margin"], labels
        assert_legend_clear(page, "chart-reward", len(labels))
        shot(page, "job-dpo")
        assert cancel_from_the_page(page) in ("cancelled", "succeeded")


def test_a_reinforcement_job_from_the_form_checks_its_grader_first(page, server, files):
    from test_serve_rft import GRADER, _rft_file

    with evidence(page, server, "job-rft"):
        client = server.client()
        data = _rft_file(files / "rft.jsonl")
        file_id = client.files.create(file=data.open("rb"), purpose="fine-tune").id
        go(page, f"#/new?file={file_id}&method=reinforcement", "new-grader")
        assert page.find_element(By.ID, "new-grader").is_displayed()
        assert not page.find_element(By.ID, "new-beta").is_displayed()
        # No token price: billed per training hour, as `tunewise estimate --method reinforcement` says.
        wait(page, lambda d: d.find_element(By.ID, "new-estimate-billing").text == cost.RFT_BILLING, timeout=90,
             message="the reinforcement billing note")
        assert page.find_element(By.ID, "new-estimate-cost").text.startswith("Billed per training hour")
        # The form opens on the string_check preset.
        assert json.loads(page.find_element(By.ID, "new-grader").get_attribute("value")) == GRADER

        before = len(client.fine_tuning.jobs.list().data)
        retype(page, "new-grader", '{"type": "string_check", "name": "exact",')
        page.find_element(By.ID, "new-grader-check").click()
        wait(page, lambda d: "not valid JSON" in d.find_element(By.ID, "new-grader-result").text,
             message="the broken JSON said in the page")
        page.find_element(By.ID, "new-submit").click()
        flashed_error(page, "The grader is not valid JSON")
        retype(page, "new-grader", json.dumps({**GRADER, "operation": "equals"}))  # JSON, but not a grader
        page.find_element(By.ID, "new-grader-check").click()
        result = wait(page, lambda d: d.find_element(By.ID, "new-grader-result") if "refuses" in d.find_element(
            By.ID, "new-grader-result").text else None, message="the server's word on the grader")
        assert "operation" in result.text, result.text
        shot(page, "new-job-rft-grader")
        assert len(client.fine_tuning.jobs.list().data) == before

        # Each preset is a grader the server accepts; picking one replaces the text.
        for preset in ("text_similarity", "string_check"):
            Select(page.find_element(By.ID, "new-grader-preset")).select_by_value(preset)
            assert json.loads(page.find_element(By.ID, "new-grader").get_attribute("value"))["type"] == preset
            page.find_element(By.ID, "new-grader-check").click()
            wait(page, lambda d, p=preset: f"accepts this {p} grader" in d.find_element(By.ID, "new-grader-result").text,
                 message=f"the {preset} preset accepted")
        retype(page, "new-compute-multiplier", "lots")
        page.find_element(By.ID, "new-submit").click()
        flashed_error(page, 'compute_multiplier must be "auto" or a number, not "lots"')
        retype(page, "new-compute-multiplier", "11")
        page.find_element(By.ID, "new-submit").click()
        flashed_error(page, "(0, 10]")
        assert len(client.fine_tuning.jobs.list().data) == before

        retype(page, "new-compute-multiplier", "0.5")
        retype(page, "new-eval-samples", "2")
        retype(page, "new-epochs", "25")
        retype(page, "new-batch-size", "5")
        shot(page, "new-job-rft")
        page.find_element(By.ID, "new-submit").click()
        wait(page, lambda d: "#/jobs/ftjob-" in d.current_url, message="the job page")
        job_id = page.current_url.split("#/jobs/")[1]
        wait(page, lambda d: fact(d, "method") == "reinforcement", message="the method on the job page")
        assert fact(page, "compute_multiplier") == "0.5" and fact(page, "eval_samples") == "2"
        assert fact(page, "grader").startswith("string_check exact eq")
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.method.type == "reinforcement"
        assert job.method.reinforcement.grader.model_dump(exclude_none=True) == GRADER
        hyper = job.method.reinforcement.hyperparameters
        assert (hyper.compute_multiplier, hyper.eval_samples, hyper.n_epochs) == (0.5, 2, 25)
        # The mean reward is charted from the metrics events.
        wait(page, lambda d: chart_points(d, "chart-reward") >= 1, timeout=120, message="the mean-reward chart")
        # No target tokens: no validation-loss nor token-accuracy chart, the reward beside the loss instead.
        assert not page.find_element(By.ID, "chart-valid-loss").is_displayed()
        assert not page.find_element(By.ID, "chart-accuracy").is_displayed()
        assert page.find_element(By.ID, "chart-reward").is_displayed()
        shot(page, "job-rft")
        assert cancel_from_the_page(page) in ("cancelled", "succeeded")


def test_calculator_opens_on_the_guide_s_model(page):
    go(page, "#/calculator", "calc-model")
    assert Select(page.find_element(By.ID, "calc-model")).first_selected_option.get_attribute("value") \
        == "gpt-4o-mini-2024-07-18"
    want = cost.breakeven("gpt-4o-mini-2024-07-18", 1500, 200, 150, 100000)
    wait(page, lambda d: d.find_element(By.ID, "calc-base-monthly").text == f"${want.base_monthly:,.2f}",
         message="the base monthly cost of gpt-4o-mini")
    assert page.find_element(By.ID, "calc-ft-monthly").text == f"${want.ft_monthly:,.2f}"


def test_calculator_shows_the_library_s_numbers(page):
    go(page, "#/calculator", "calc-model")
    Select(page.find_element(By.ID, "calc-model")).select_by_value("gpt-4o-mini-2024-07-18")
    for field_id, value in (("calc-prompt", "1500"), ("calc-ft-prompt", "200"), ("calc-output", "150"),
                            ("calc-calls", "100000"), ("calc-training-cost", "2.5")):
        box = page.find_element(By.ID, field_id)
        box.clear()
        box.send_keys(value)
    page.find_element(By.ID, "calc-run").click()
    want = cost.breakeven("gpt-4o-mini-2024-07-18", 1500, 200, 150, 100000, training_cost=2.5)
    # The page opened on these same inputs without a training cost: wait for the answer that includes it.
    wait(page, lambda d: d.find_element(By.ID, "calc-base-monthly").text == f"${want.base_monthly:,.2f}"
         and d.find_element(By.ID, "calc-breakeven-calls").text == f"{want.breakeven_calls_per_month:,}",
         message="the monthly costs and break-even with the training cost")
    assert page.find_element(By.ID, "calc-ft-monthly").text == f"${want.ft_monthly:,.2f}"
    assert page.find_element(By.ID, "calc-breakeven-calls").text == f"{want.breakeven_calls_per_month:,}"
    assert chart_points(page, "calc-chart") > 0
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#calc-chart .chart-legend"), message="the chart")
    assert_legend_clear(page, "calc-chart", 2)
    shot(page, "calculator")


def test_reports_page_shows_a_report_in_a_sandboxed_frame(page, server):
    folder = Path(server.data_dir) / "reports" / "receipts-v1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.html").write_text(
        "<html><body><h1>Fine-tune</h1><p>Exact match 0.91 vs 0.62 (95% intervals apart).</p>"
        "<script>document.body.dataset.ran = 'yes'</script></body></html>")
    (folder / "decision.json").write_text(json.dumps({"verdict": "fine-tune", "summary": "Fine-tune: +29 points."}))
    go(page, "#/reports", "reports-list")
    link = wait(page, lambda d: d.find_element(By.LINK_TEXT, "receipts-v1"), message="the report link")
    assert "fine-tune" in page.find_element(By.ID, "reports-table").text
    shot(page, "reports")
    link.click()
    frame = wait(page, lambda d: d.find_element(By.ID, "report-frame"), message="the report frame")
    assert frame.get_attribute("sandbox") == ""
    page.switch_to.frame(frame)
    try:
        assert page.find_element(By.TAG_NAME, "h1").text == "Fine-tune"
        # sandbox without allow-scripts: the report's own script never runs
        assert page.find_element(By.TAG_NAME, "body").get_attribute("data-ran") is None
    finally:
        page.switch_to.default_content()
    shot(page, "report")


def test_reports_page_shows_a_written_report_with_its_plots(page, server, tmp_path):
    # A report as `tunewise decide` writes it (tunewise.eval.report), shown in the frame with its three plots.
    from test_decide import BASE, FT, METRICS_CSV, build_run, kinds
    from tunewise.eval import decide, write_report

    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": kinds(n, 0.45, 0.35, seed=1)},
                               "ft": {**FT, "kinds": ["right"] * 38 + ["content"] * 2}}, n)
    (tmp_path / "m.csv").write_text(METRICS_CSV)
    decision = decide(run, calls_per_month=50_000, training_cost=3.0, metrics_csv=tmp_path / "m.csv")
    write_report(decision, Path(server.data_dir) / "reports" / "receipts-decided")
    go(page, "#/reports", "reports-list")
    wait(page, lambda d: d.find_element(By.LINK_TEXT, "receipts-decided"), message="the report link").click()
    frame = wait(page, lambda d: d.find_element(By.ID, "report-frame"), message="the report frame")
    page.switch_to.frame(frame)
    try:
        images = wait(page, lambda d: [i for i in d.find_elements(By.TAG_NAME, "img")
                                       if d.execute_script("return arguments[0].naturalWidth", i)],
                      message="the report's plots")
        assert len(images) == 3
        # Each plot fits the frame's width: nothing of it (its legend included) is cut off at the side.
        width = page.execute_script("return document.documentElement.clientWidth")
        for img in images:
            assert page.execute_script("return arguments[0].getBoundingClientRect().right", img) <= width
        page.execute_script("arguments[0].scrollIntoView()", images[1])
    finally:
        page.switch_to.default_content()
    shot(page, "report-decided")


def test_models_page_lists_the_served_models(page):
    go(page, "#/models", "models-table")
    table = page.find_element(By.ID, "models-table").text
    assert "tunewise-tiny" in table and "gpt-4o-mini" in table
    shot(page, "models")


def test_chart_ticks_and_number_formats(page):
    # The page's own helpers, run in the browser as the page runs them.
    got = page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all([import('/dashboard/chart.js'), import('/dashboard/dom.js')]).then(([chart, dom]) => done({
          steps: chart.ticks(1, 36, 6, true), losses: chart.ticks(9.9, 10.8, 5),
          usd: [dom.fmt.usd(31.5), dom.fmt.usd(0.000315), dom.fmt.usd(0), dom.fmt.usd(-7.5)],
          num: [dom.fmt.num(1500), dom.fmt.num(0.5), dom.fmt.num(1000.2), dom.fmt.num(9.909274)],
        }));""")
    assert got["steps"] == [10, 20, 30]  # whole steps only
    assert got["losses"] == [10, 10.2, 10.4, 10.6, 10.8]
    assert got["usd"] == ["$31.50", "$0.000315", "$0.00", "-$7.50"]
    assert got["num"] == ["1,500", "0.5", "1000", "9.909"]


@pytest.mark.slow
def test_finished_job_charts_checkpoints_and_side_by_side_chat(page, server, files):
    client = server.client()
    training = client.files.create(file=(files / "good.jsonl").open("rb"), purpose="fine-tune")
    validation = client.files.create(file=(files / "good.jsonl").open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=training.id,
                                         validation_file=validation.id, suffix="side",
                                         hyperparameters={"n_epochs": 2})
    go(page, f"#/jobs/{job.id}", "chart-train-loss")
    wait(page, lambda d: d.find_element(By.ID, "job-status").get_attribute("data-status") == "succeeded",
         timeout=300, message="the job to succeed")
    done = client.fine_tuning.jobs.retrieve(job.id)
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#checkpoints-table tbody tr"), message="checkpoints")
    steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data
             if e.type == "metrics"]
    assert chart_points(page, "chart-train-loss") == len(set(steps))
    assert chart_points(page, "chart-valid-loss") > 0
    assert done.fine_tuned_model in page.find_element(By.ID, "job-facts").text
    shot(page, "job-succeeded")

    go(page, "#/models?model=" + done.fine_tuned_model, "try-user")
    wait(page, lambda d: d.find_element(By.ID, "try-model").get_attribute("value") == done.fine_tuned_model,
         message="the fine-tuned model chosen from the link")
    assert page.find_element(By.ID, "try-base").get_attribute("value") == "gpt-4o-mini-2024-07-18"
    page.find_element(By.ID, "try-user").send_keys("Total of receipt 3?")
    page.find_element(By.ID, "try-run").click()
    page.execute_script("document.getElementById('try-out-ft').scrollIntoView()")
    for out in ("try-out-ft", "try-out-base"):
        wait(page, lambda d, out=out: d.find_element(By.ID, out).get_attribute("data-done") == "1", timeout=180,
             message=f"the answer in #{out}")
        assert not page.find_elements(By.CSS_SELECTOR, f"#{out} .error"), page.find_element(By.ID, out).text
        assert "completion tokens" in page.find_element(By.ID, out).text
        # However long the answer, its box stays a readable height and the token counts show beneath it.
        box = page.find_element(By.CSS_SELECTOR, f"#{out} pre.answer-text")
        assert box.size["height"] <= 0.5 * page.get_window_size()["height"], box.size
    shot(page, "models-chat")

    delete = page.find_element(By.CSS_SELECTOR, f'#models-table tr[data-model="{done.fine_tuned_model}"] '
                                                'button[data-action="delete"]')
    delete.click()
    delete.click()
    wait(page, lambda d: not d.find_elements(By.CSS_SELECTOR, f'#models-table tr[data-model="{done.fine_tuned_model}"]'),
         message="the deleted model to leave the list")
    assert done.fine_tuned_model not in [m.id for m in client.models.list().data]


def test_a_job_with_an_eval_set_shows_each_checkpoints_scores(page, server, files):
    with evidence(page, server, "job-eval"):
        client = server.client()
        train = client.files.create(file=(files / "good.jsonl").open("rb"), purpose="fine-tune").id
        held_out = client.files.create(file=(files / "good.jsonl").open("rb"), purpose="evals").id
        job = client.fine_tuning.jobs.create(
            model="tunewise-tiny", training_file=train,
            hyperparameters={"n_epochs": 1, "batch_size": 4},
            extra_body={"eval": {"file": held_out, "limit": 2, "max_tokens": 8}})
        wait_for(client, job.id, timeout=120)
        go(page, f"#/jobs/{job.id}", "job-checkpoints")
        wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#checkpoints-table .eval-valid-json"),
             timeout=60, message="the eval columns of the checkpoints")
        heads = [th.text for th in page.find_elements(By.CSS_SELECTOR, "#checkpoints-table th")]
        assert {"Valid JSON", "Schema", "Exact match"} <= set(heads)
        cell = page.find_element(By.CSS_SELECTOR, "#checkpoints-table .eval-valid-json").text
        assert cell.endswith("%"), cell
        # Checkpoint names break only after a ':', never mid-word: on a wide page they fit on one line, and in
        # a narrow window, where the cell is narrower than the name, they wrap at the colons.
        names = [c.fine_tuned_model_checkpoint for c in client.fine_tuning.jobs.checkpoints.list(job.id).data]
        tuned = [client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model]
        assert_names_wrap_only_at_colons(page, "#checkpoints-table code.model-name", names, max_lines=1)
        assert_names_wrap_only_at_colons(page, "#job-facts code.model-name", tuned, max_lines=1)
        size = page.get_window_size()
        page.set_window_size(600, size["height"])
        try:
            wait(page, lambda d: d.execute_script("return document.documentElement.clientWidth") <= 600,
                 message="the narrow window")
            assert_names_wrap_only_at_colons(page, "#checkpoints-table code.model-name", names, min_lines=2)
            assert_names_wrap_only_at_colons(page, "#job-facts code.model-name", tuned)
            # The charts are drawn again at their new width (their text keeps its size), legends still clear.
            wait(page, lambda d: d.execute_script("""
                const box = document.getElementById('chart-train-loss');
                const svg = box.querySelector('svg');
                return Math.abs(svg.viewBox.baseVal.width - Math.min(760, box.clientWidth)) < 24;"""),
                 message="the charts drawn at the narrow width")
            assert_legend_clear(page, "chart-train-loss", 1)
            shot(page, "job-eval-narrow")
            # Nothing spills sideways: the page itself does not scroll horizontally (wide tables scroll in
            # their cards).
            widths = page.execute_script(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert widths[0] <= widths[1], f"the page is {widths[0]}px wide in a {widths[1]}px window"
        finally:
            page.set_window_size(size["width"], size["height"])
        # The scoring event shows although step messages are hidden.
        assert "scored on the eval set" in page.find_element(By.ID, "job-events").text
        shot(page, "job-eval")


def test_a_refused_key_brings_back_the_sign_in_form(page):
    # Last: it signs the page out. A key the server no longer accepts brings the sign-in form back.
    page.execute_script("sessionStorage.setItem('tunewise.apiKey', 'sk-tw-revoked')")
    page.refresh()
    wait(page, lambda d: d.find_element(By.ID, "login").is_displayed(), message="the sign-in form")
    assert "refused" in page.find_element(By.ID, "login-error").text
    assert page.execute_script("return sessionStorage.getItem('tunewise.apiKey')") is None
    assert not page.find_element(By.ID, "nav").is_displayed()
