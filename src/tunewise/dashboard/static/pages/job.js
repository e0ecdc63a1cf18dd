// One job: status, method and hyperparameters, live loss and validation-loss charts (and the reward for DPO and
// reinforcement jobs), events, checkpoints, cancel / pause / resume.
// While the job is active the page polls the job, its new events and its checkpoints every 1.5 s.

import { api, download } from "../api.js";
import { lineChart } from "../chart.js";
import { append, clear, flash, fmt, h, modelName, statusBadge, table } from "../dom.js";
import { ACTIVE } from "./jobs.js";

const POLL_MS = 1500;
const EVENTS_PAGE = 100;
const SHOWN_EVENTS = 300;

export async function render(ctx, id) {
  const el = {
    status: h("span", { id: "job-status" }),
    facts: h("dl", { class: "facts", id: "job-facts" }),
    progress: h("div", { id: "job-progress", class: "muted" }),
    bar: h("progress", { id: "job-progress-bar", max: 1, value: 0 }),
    error: h("p", { id: "job-error", class: "error" }),
    trainChart: h("div", { id: "chart-train-loss", class: "chart-box" }),
    validChart: h("div", { id: "chart-valid-loss", class: "chart-box" }),
    accChart: h("div", { id: "chart-accuracy", class: "chart-box" }),
    // DPO's reward accuracy and margin, reinforcement's mean reward: shown once the job's method is known.
    rewardChart: h("div", { id: "chart-reward", class: "chart-box" }),
    rewardCard: h("div", { class: "card", hidden: true }),
    validCard: h("div", { class: "card" }),
    accCard: h("div", { class: "card" }),
    events: h("ol", { id: "job-events", class: "events" }),
    checkpoints: h("div", { id: "job-checkpoints" }),
    buttons: h("div", { class: "row" }),
    // Step messages ("Step 12/36: training loss=...") are what the charts show; hidden unless asked for.
    showSteps: h("input", { type: "checkbox", id: "job-show-steps" }),
  };
  const actions = {};
  for (const [name, label, cls] of [["cancel", "Cancel", "danger"], ["pause", "Pause", ""], ["resume", "Resume", ""]]) {
    const b = h("button", { type: "button", id: `job-${name}`, class: cls, disabled: true }, label);
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        const job = await api(`/fine_tuning/jobs/${id}/${name}`, { method: "POST" });
        flash(`Job ${id}: ${name} requested (status ${job.status}).`);
        if (!ctx.alive) return;
        await refresh();
        if (ACTIVE.includes(job.status) && !polling) startPolling();
      } catch (e) {
        flash(e.message, "error");
      }
    });
    actions[name] = b;
    el.buttons.append(b, " ");
  }

  clear(ctx.view,
    h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
    h("div", { class: "row spread" }, h("h1", {}, "Job ", h("code", {}, id)), el.status),
    h("section", { class: "card" }, el.facts, el.buttons, h("div", { class: "row" }, el.bar, el.progress), el.error),
    h("section", { class: "grid3" }, h("div", { class: "card" }, el.trainChart), append(el.validCard, [el.validChart]),
      append(el.accCard, [el.accChart]), append(el.rewardCard, [el.rewardChart])),
    // Full width: a checkpoint's name (and, with an eval set, three more columns) fit on one line.
    h("section", { class: "card", id: "job-checkpoints-card" }, h("h2", {}, "Checkpoints"), el.checkpoints),
    h("section", { class: "card" }, h("div", { class: "row spread" }, h("h2", {}, "Events"),
      h("label", {}, el.showSteps, " show step messages")), el.events));
  el.showSteps.addEventListener("change", () => drawEvents(el.events, events, el.showSteps.checked));

  const known = new Set();
  let events = []; // newest first, like the API

  // New events only: page from the newest until one already seen.
  async function newEvents() {
    const fresh = [];
    let after;
    for (;;) {
      const page = await api(`/fine_tuning/jobs/${id}/events`, { query: { limit: EVENTS_PAGE, after } });
      let seen = false;
      for (const e of page.data) {
        if (known.has(e.id)) { seen = true; break; }
        fresh.push(e);
      }
      if (seen || !page.has_more || !page.data.length) break;
      after = page.data[page.data.length - 1].id;
    }
    for (const e of fresh) known.add(e.id);
    events = fresh.concat(events);
    return fresh.length;
  }

  async function refresh() {
    const [job, added, ckpts] = await Promise.all([
      api(`/fine_tuning/jobs/${id}`),
      newEvents(),
      api(`/fine_tuning/jobs/${id}/checkpoints`, { query: { limit: 100 } }),
    ]);
    if (!ctx.alive) return job;
    drawJob(el, actions, job);
    if (added || !el.trainChart.firstChild) drawMetrics(el, events, methodOf(job).type);
    if (added) drawEvents(el.events, events, el.showSteps.checked);
    drawCheckpoints(el.checkpoints, ckpts.data);
    return job;
  }

  let polling = false;
  function startPolling() {
    polling = true;
    ctx.every(POLL_MS, async () => {
      const job = await refresh();
      // One last refresh after the job ends picks up its final events; then the page stops asking.
      if (!ACTIVE.includes(job.status)) { polling = false; return false; }
      return true;
    });
  }
  const first = await refresh();
  if (ACTIVE.includes(first.status)) startPolling();
}

function drawJob(el, actions, job) {
  clear(el.status, statusBadge(job.status));
  el.status.dataset.status = job.status;
  const method = methodOf(job);
  const hp = method.hyperparameters;
  const facts = [
    ["Method", method.type, "method"],
    ["Model", job.model],
    ["Fine-tuned model", job.fine_tuned_model
      ? h("a", { href: `#/models?model=${encodeURIComponent(job.fine_tuned_model)}` }, modelName(job.fine_tuned_model)) : "—"],
    ["Training file", h("code", {}, job.training_file)],
    ["Validation file", job.validation_file ? h("code", {}, job.validation_file) : "—"],
    ["Epochs", hp.n_epochs, "n_epochs"], ["Batch size", hp.batch_size, "batch_size"],
    ["LR multiplier", hp.learning_rate_multiplier, "learning_rate_multiplier"],
    ...(METHOD_FACTS[method.type] || []).map(([label, key]) => [label, hp[key], key]),
    ...(method.grader ? [["Grader", graderText(method.grader), "grader"]] : []),
    ["Seed", job.seed],
    ["Trained tokens", fmt.num(job.trained_tokens)],
    ["Created", fmt.time(job.created_at)],
    ["Finished", job.finished_at ? fmt.time(job.finished_at) : "—"],
    ["Estimated finish", job.estimated_finish && ACTIVE.includes(job.status) ? fmt.ago(job.estimated_finish) : "—"],
  ];
  if (job.result_files && job.result_files.length) {
    facts.push(["Result files", job.result_files.map((f) => h("button", {
      type: "button", class: "link", onclick: () => download(f, `${job.id}-metrics.csv`).catch((e) => flash(e.message, "error")),
    }, `${f} (metrics CSV)`))]);
  }
  clear(el.facts, facts.map(([k, v, key]) => [h("dt", {}, k), h("dd", { dataset: key ? { fact: key } : null }, v ?? "—")]));
  el.error.textContent = job.error && job.error.message ? `Failed: ${job.error.message}${job.error.code ? ` (${job.error.code})` : ""}` : "";
  actions.cancel.disabled = !ACTIVE.includes(job.status);
  actions.pause.disabled = !["queued", "running"].includes(job.status);
  actions.resume.disabled = job.status !== "paused";
}

// Each method's own hyperparameters (method[type].hyperparameters), shown after the three they share.
const METHOD_FACTS = {
  dpo: [["Beta", "beta"]],
  reinforcement: [["Compute multiplier", "compute_multiplier"], ["Eval interval", "eval_interval"],
    ["Eval samples", "eval_samples"], ["Reasoning effort", "reasoning_effort"]],
};

// The job's method as OpenAI echoes it ({type, [type]: {hyperparameters, grader}}); a job without one is
// supervised, its hyperparameters at the top level.
export function methodOf(job) {
  const type = (job.method && job.method.type) || "supervised";
  const section = (job.method && job.method[type]) || {};
  return { type, hyperparameters: section.hyperparameters || job.hyperparameters || {}, grader: section.grader || null };
}

function graderText(g) {
  const what = [g.type, g.name, g.operation || g.evaluation_metric].filter((x) => typeof x === "string").join(" ");
  return h("details", {}, h("summary", {}, what || "grader"), h("pre", { class: "line-text" }, JSON.stringify(g, null, 2)));
}

// The metrics events, one per step (a resumed job may repeat a step: the later one wins).
export function metricsByStep(events) {
  const byStep = new Map();
  for (const e of [...events].reverse()) {
    if (e.type === "metrics" && e.data && Number.isFinite(e.data.step)) byStep.set(e.data.step, e.data);
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

function drawMetrics(el, events, kind) {
  const rows = metricsByStep(events);
  const pts = (key) => rows.filter((r) => Number.isFinite(r[key])).map((r) => [r.step, r[key]]);
  // Reinforcement fine-tuning has no target tokens, so no validation loss nor token accuracy: its reward chart
  // (train and validation reward) takes their place.
  const rft = kind === "reinforcement";
  el.validCard.hidden = rft;
  el.accCard.hidden = rft;
  lineChart(el.trainChart, { title: "Training loss", xLabel: "step", integerX: true, series: [{ name: "train_loss", label: "train loss", points: pts("train_loss") }] });
  lineChart(el.validChart, {
    title: "Validation loss", xLabel: "step", integerX: true,
    empty: "No validation loss (yet): add a validation file to see it",
    series: [{ name: "valid_loss", label: "valid loss", points: pts("valid_loss"), color: "#dc2626" },
      { name: "full_valid_loss", label: "full valid loss", points: pts("full_valid_loss"), color: "#7c3aed", dashed: true }]
      .filter((s, i) => i === 0 || s.points.length),
  });
  lineChart(el.accChart, {
    title: "Mean token accuracy", xLabel: "step", integerX: true,
    series: [{ name: "train_mean_token_accuracy", label: "train", points: pts("train_mean_token_accuracy") },
      { name: "valid_mean_token_accuracy", label: "valid", points: pts("valid_mean_token_accuracy"), color: "#dc2626" }]
      .filter((s, i) => i === 0 || s.points.length),
  });
  // What DPO and GRPO report beside the loss (docs/methods.md): the first series always, the others once they
  // have points.
  const reward = REWARD_SERIES[kind];
  el.rewardCard.hidden = !reward;
  if (reward) {
    lineChart(el.rewardChart, {
      title: reward.title, xLabel: "step", integerX: true,
      series: reward.series.map(([name, label, color, dashed]) => ({ name, label, color, dashed, points: pts(name) }))
        .filter((s, i) => i === 0 || s.points.length),
    });
  }
  const last = rows[rows.length - 1];
  if (last) {
    const total = last.total_steps || null;
    el.bar.max = total || 1;
    el.bar.value = total ? last.step : 0;
    el.progress.textContent = `step ${last.step}${total ? ` of ${total}` : ""}` +
      (Number.isFinite(last.train_loss) ? `, training loss ${fmt.num(last.train_loss)}` : "") +
      (Number.isFinite(last.valid_loss) ? `, validation loss ${fmt.num(last.valid_loss)}` : "");
  }
}

const REWARD_SERIES = {
  dpo: { title: "Reward accuracy and margin", series: [
    ["train_reward_accuracy", "train reward accuracy", "#2563eb"],
    ["train_reward_margin", "train reward margin", "#059669"],
    ["valid_reward_accuracy", "valid reward accuracy", "#dc2626", true],
    ["valid_reward_margin", "valid reward margin", "#d97706", true]] },
  reinforcement: { title: "Mean reward", series: [
    ["train_reward_mean", "train reward", "#2563eb"],
    ["valid_reward_mean", "valid reward", "#dc2626"]] },
};

function drawEvents(ol, events, withSteps) {
  // Step messages are in the charts; a checkpoint's eval-set score (data.eval_n) is news, so it always shows.
  const shown = events.filter((e) => withSteps || e.type !== "metrics" || (e.data && e.data.eval_n != null))
    .slice(0, SHOWN_EVENTS);
  clear(ol, shown.map((e) => h("li", { class: `event level-${e.level}` },
    h("time", {}, fmt.time(e.created_at)), " ", e.message)));
}

const pct = (v) => (typeof v === "number" ? `${Math.round(v * 100)}%` : "—");

function drawCheckpoints(el, ckpts) {
  if (!ckpts.length) return clear(el, h("p", { class: "muted" }, "No checkpoints yet."));
  // Jobs created with an eval set score each checkpoint on it: show those scores beside the losses.
  const scored = ckpts.some((c) => c.metrics && c.metrics.eval_n != null);
  const head = ["Step", "Checkpoint model", "Train loss", "Valid loss"]
    .concat(scored ? ["Valid JSON", "Schema", "Exact match"] : [], [""]);
  clear(el, table(head,
    ckpts.map((c) => {
      const m = c.metrics || {};
      const evalCells = scored ? [
        h("td", { class: "num eval-valid-json" }, pct(m.eval_valid_json)),
        h("td", { class: "num eval-schema" }, pct(m.eval_schema_adherence)),
        h("td", { class: "num eval-exact" }, pct(m.eval_exact_match))] : [];
      return h("tr", { "data-step": c.step_number },
        h("td", { class: "num" }, c.step_number),
        h("td", {}, modelName(c.fine_tuned_model_checkpoint)),
        h("td", { class: "num" }, fmt.num(m.train_loss)),
        h("td", { class: "num" }, fmt.num(m.valid_loss)),
        ...evalCells,
        h("td", {}, h("a", { class: "button small", href: `#/models?model=${encodeURIComponent(c.fine_tuned_model_checkpoint)}` }, "Try")));
    }),
    { id: "checkpoints-table" }));
}
