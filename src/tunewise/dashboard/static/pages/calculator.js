// Cost and break-even: a long prompt on the base model against a short one on the fine-tuned model.
// The numbers come from tunewise.cost on the server (GET /v1/dashboard/breakeven), priced from the catalog.

import { api, listAll } from "../api.js";
import { lineChart } from "../chart.js";
import { clear, field, flash, fmt, h, table } from "../dom.js";

export async function render(ctx) {
  const [catalog, files] = await Promise.all([api("/dashboard/catalog"), listAll("/files", { purpose: "fine-tune" })]);
  const priced = catalog.data.filter((m) => m.provider !== "local");
  const usd = (x) => fmt.usd(x ?? 0);
  const model = h("select", { id: "calc-model" },
    [...priced, ...catalog.data.filter((m) => m.provider === "local")].map((m) =>
      h("option", { value: m.name }, `${m.name} (in ${usd(m.input)}/out ${usd(m.output)}; ft in ${usd(m.ft_input)}/out ${usd(m.ft_output)}; training ${usd(m.training)} per 1M)`)));
  // The guide's model, as `tunewise breakeven` assumes; the first priced model where a catalog lacks it.
  const start = priced.find((m) => m.name === catalog.default_model) || priced[0] || catalog.data[0];
  if (start) model.value = start.name;
  const num = (id, value) => h("input", { id, type: "number", min: 0, step: "any", value: String(value) });
  const prompt = num("calc-prompt", 1500);
  const ftPrompt = num("calc-ft-prompt", 200);
  const output = num("calc-output", 150);
  const calls = num("calc-calls", 100000);
  const training = h("input", { id: "calc-training-cost", type: "number", min: 0, step: "any", placeholder: "0" });
  const file = h("select", { id: "calc-file" }, h("option", { value: "" }, "(none)"),
    files.map((f) => h("option", { value: f.id }, `${f.filename} (${f.id})`)));
  const fromFile = h("button", { id: "calc-from-file", type: "button", class: "small" }, "Price training from this file");
  const go = h("button", { id: "calc-run", type: "submit" }, "Compute");
  const result = h("div", { id: "calc-result" });
  const chart = h("div", { id: "calc-chart", class: "chart-box" });

  const form = h("form", { class: "card", id: "calc-form" },
    field("Model", model),
    h("div", { class: "grid4" },
      field("Base prompt tokens per call", prompt, "system prompt + examples + input"),
      field("Fine-tuned prompt tokens per call", ftPrompt, "the short prompt a fine-tuned model needs"),
      field("Output tokens per call", output), field("Calls per month", calls)),
    h("div", { class: "grid2" },
      field("Training cost (USD)", training, "one-off; leave empty for $0"),
      field("…or from an uploaded training file", h("div", { class: "row" }, file, fromFile))),
    h("div", { class: "row" }, go));
  clear(ctx.view, h("h1", {}, "Cost and break-even"), form, result, h("section", { class: "card" }, chart));

  fromFile.addEventListener("click", async () => {
    if (!file.value) return flash("Choose a training file.", "error");
    fromFile.disabled = true;
    try {
      const e = await api(`/dashboard/files/${file.value}/estimate`, { query: { model: model.value } });
      training.value = String(Number(e.cost_usd.toFixed(6)));
      flash(`${fmt.num(e.billed_tokens)} billed tokens (${e.n_epochs} epochs) at ${fmt.usd(e.price_per_1m)}/1M = ${fmt.usd(e.cost_usd)}.`);
      await compute();
    } catch (err) {
      flash(err.message, "error");
    } finally {
      fromFile.disabled = false;
    }
  });

  async function compute() {
    const b = await api("/dashboard/breakeven", { query: {
      model: model.value, prompt_tokens: prompt.value, ft_prompt_tokens: ftPrompt.value,
      output_tokens: output.value, calls_per_month: calls.value, training_cost: training.value || undefined,
    } });
    if (!ctx.alive) return;
    drawResult(result, b);
    drawChart(chart, b);
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    compute().catch((e) => flash(e.message, "error"));
  });
  await compute();
}

function drawResult(el, b) {
  const recover = b.never_pays ? "never" : b.months_to_recover === null ? "never at this volume"
    : `${fmt.num(b.months_to_recover, 3)} months`;
  clear(el, h("section", { class: "card" },
    h("p", { class: "big", id: "calc-verdict" }, b.never_pays
      ? "Fine-tuning never pays for itself at these prices."
      : `Saves ${fmt.usd(b.monthly_saving)} a month; training is paid back in ${recover}.`),
    table(["", "Base model, long prompt", "Fine-tuned, short prompt"], [
      h("tr", {}, h("th", {}, "Per call"), h("td", { class: "num" }, fmt.usd(b.base_per_call)), h("td", { class: "num" }, fmt.usd(b.ft_per_call))),
      h("tr", {}, h("th", {}, "Per 1,000 calls"), h("td", { class: "num" }, fmt.usd(b.base_per_1k)), h("td", { class: "num" }, fmt.usd(b.ft_per_1k))),
      h("tr", {}, h("th", {}, "Per month"), h("td", { class: "num", id: "calc-base-monthly" }, fmt.usd(b.base_monthly)),
        h("td", { class: "num", id: "calc-ft-monthly" }, fmt.usd(b.ft_monthly))),
    ], { id: "calc-table" }),
    h("dl", { class: "facts" },
      h("dt", {}, "Training cost"), h("dd", {}, fmt.usd(b.training_cost)),
      h("dt", {}, "Monthly saving"), h("dd", { id: "calc-saving" }, fmt.usd(b.monthly_saving)),
      h("dt", {}, "Months to recover training"), h("dd", { id: "calc-months" }, recover),
      h("dt", {}, `Calls/month to recover within ${fmt.num(b.horizon_months)} months`),
      h("dd", { id: "calc-breakeven-calls" }, b.breakeven_calls_per_month === null ? "never" : fmt.num(b.breakeven_calls_per_month))),
    (b.notes || []).length ? h("ul", { class: "notes" }, b.notes.map((n) => h("li", {}, n))) : null));
}

// Cumulative spend by month: the fine-tuned line starts at the training cost; where the lines cross, training
// has paid for itself.
function drawChart(el, b) {
  const horizon = Math.min(60, Math.max(12, b.months_to_recover ? Math.ceil(b.months_to_recover * 1.5) : 12));
  const months = Array.from({ length: horizon + 1 }, (_, m) => m);
  lineChart(el, {
    title: "Cumulative cost (USD) by month", xLabel: "months", integerX: true,
    series: [
      { name: "base", label: "base, long prompt", points: months.map((m) => [m, b.base_monthly * m]) },
      { name: "fine-tuned", label: "fine-tuned + training", points: months.map((m) => [m, b.training_cost + b.ft_monthly * m]), color: "#dc2626" },
    ],
    marks: !b.never_pays && b.months_to_recover ? [{ x: b.months_to_recover, label: "break-even" }] : [],
  });
}
