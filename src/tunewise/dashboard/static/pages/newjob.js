// New job: file, model, hyperparameters, suffix; the cost estimate is shown before anything is submitted.

import { api, listAll } from "../api.js";
import { clear, field, flash, fmt, h } from "../dom.js";

export async function render(ctx) {
  const [files, models, catalog] = await Promise.all([
    listAll("/files", { purpose: "fine-tune" }),
    api("/models"),
    api("/dashboard/catalog").catch(() => ({ data: [], aliases: {} })),
  ]);
  if (!files.length) {
    clear(ctx.view, h("h1", {}, "New fine-tuning job"),
      h("p", {}, "Upload a training file first: ", h("a", { href: "#/files" }, "Files"), "."));
    return;
  }
  const fileOptions = (none) => [none ? h("option", { value: "" }, none) : null,
    ...files.map((f) => h("option", { value: f.id }, `${f.filename} (${f.id}, ${fmt.bytes(f.bytes)})`))];
  const modelNames = [...new Set([...models.data.map((m) => m.id), ...catalog.data.map((m) => m.name)])];

  const training = h("select", { id: "new-training-file", required: true }, fileOptions());
  const validation = h("select", { id: "new-validation-file" }, fileOptions("none"));
  const model = h("input", { id: "new-model", list: "new-model-list", required: true, spellcheck: "false",
    // The guide's model, as `tunewise jobs create` shows it: priced at OpenAI's rate, trained here on its
    // local stand-in for free. A server without a catalog falls back to what it trains by default.
    value: catalog.default_model || catalog.default_local_model || models.data.find((m) => !m.id.startsWith("ft:"))?.id || "" });
  const epochs = h("input", { id: "new-epochs", placeholder: "auto", inputmode: "numeric" });
  const batch = h("input", { id: "new-batch-size", placeholder: "auto", inputmode: "numeric" });
  const lr = h("input", { id: "new-lr", placeholder: "auto", inputmode: "decimal" });
  const suffix = h("input", { id: "new-suffix", maxlength: 64, placeholder: "e.g. receipts-v1" });
  const seed = h("input", { id: "new-seed", inputmode: "numeric", placeholder: "random" });
  const estimate = h("div", { id: "new-estimate", class: "estimate" }, h("p", { class: "muted" }, "Choose a file and a model."));
  const submit = h("button", { id: "new-submit", type: "submit" }, "Start fine-tuning");
  const preset = ctx.query.get("file");
  if (preset && files.some((f) => f.id === preset)) training.value = preset;

  const form = h("form", { id: "new-job-form", class: "card" },
    h("div", { class: "grid2" },
      field("Training file", training),
      field("Validation file", validation, "Held-out examples: the job then reports validation loss."),
      field("Model", model, "A base model (an OpenAI name maps to this server's local stand-in) or a fine-tuned one."),
      field("Suffix", suffix, "Up to 64 characters, part of the fine-tuned model's name.")),
    h("datalist", { id: "new-model-list" }, modelNames.map((n) => h("option", { value: n }))),
    h("h2", {}, "Hyperparameters"),
    h("div", { class: "grid4" },
      field("Epochs", epochs, "auto or 1-25"), field("Batch size", batch, "auto or a number"),
      field("Learning rate multiplier", lr, "auto or a number"), field("Seed", seed, "for a reproducible run")),
    h("h2", {}, "Estimated cost"), estimate,
    h("div", { class: "row" }, submit));
  clear(ctx.view, h("h1", {}, "New fine-tuning job"), form);

  // The estimate follows the inputs. One request at a time (each tokenizes the whole file on the server);
  // inputs changed meanwhile are estimated once it returns.
  let running = false;
  let again = false;
  let timer;
  async function estimateOnce() {
    if (!training.value || !model.value.trim()) return;
    clear(estimate, h("p", { class: "muted" }, "Estimating…"));
    try {
      const e = await api(`/dashboard/files/${training.value}/estimate`,
        { query: { model: model.value.trim(), n_epochs: epochs.value.trim() || "auto" } });
      if (ctx.alive) drawEstimate(estimate, e);
    } catch (err) {
      if (ctx.alive) clear(estimate, h("p", { class: "error", id: "new-estimate-error" }, `No estimate: ${err.message}`));
    }
  }
  async function updateEstimate() {
    if (running) { again = true; return; }
    running = true;
    try {
      do { again = false; await estimateOnce(); } while (again && ctx.alive);
    } finally {
      running = false;
    }
  }
  const later = () => { clearTimeout(timer); timer = setTimeout(updateEstimate, 300); };
  for (const input of [training, model, epochs]) { input.addEventListener("input", later); input.addEventListener("change", later); }
  updateEstimate();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const hyper = {};
    for (const [name, input, parse] of [["n_epochs", epochs, parseInt], ["batch_size", batch, parseInt], ["learning_rate_multiplier", lr, parseFloat]]) {
      const v = input.value.trim();
      if (v && v !== "auto") {
        const n = parse(v);
        if (!Number.isFinite(n)) return flash(`${name} must be "auto" or a number, not "${v}".`, "error");
        hyper[name] = n;
      }
    }
    const body = {
      model: model.value.trim(),
      training_file: training.value,
      method: { type: "supervised", supervised: { hyperparameters: hyper } },
    };
    if (validation.value) body.validation_file = validation.value;
    if (suffix.value.trim()) body.suffix = suffix.value.trim();
    if (seed.value.trim()) body.seed = parseInt(seed.value.trim(), 10);
    submit.disabled = true;
    try {
      const job = await api("/fine_tuning/jobs", { method: "POST", json: body });
      flash(`Created job ${job.id}.`);
      window.location.hash = `#/jobs/${job.id}`;
    } catch (e) {
      flash(e.message, "error");
      submit.disabled = false;
    }
  });
}

function drawEstimate(el, e) {
  const rows = [
    ["Examples", fmt.num(e.n_examples)],
    ["Billed tokens per epoch", fmt.num(e.billed_tokens_per_epoch)],
    ["Epochs", `${e.n_epochs}${e.epochs_auto ? " (auto)" : ""}`],
    ["Billed tokens", fmt.num(e.billed_tokens)],
    ["Price", `${fmt.usd(e.price_per_1m)} per 1M training tokens (${e.model})`],
  ];
  // As `tunewise jobs create` says it: what OpenAI would charge for the named OpenAI model, and that this
  // (local) service trains it for free.
  const local = e.provider === "local";
  const there = local ? e.openai : e;
  clear(el,
    local
      ? h("p", { class: "big", id: "new-estimate-cost" }, "$0.00",
        h("span", { class: "muted" }, ` here: ${e.model} is a local model, trained on this server for free`))
      : h("p", { class: "big", id: "new-estimate-cost" }, fmt.usd(e.cost_usd),
        h("span", { class: "muted" }, ` on OpenAI, at ${e.model}'s training price`)),
    local
      ? (there ? h("p", { id: "new-estimate-openai" }, `OpenAI would charge ${fmt.usd(there.cost_usd)} for `
        + `${fmt.num(there.billed_tokens)} tokens to fine-tune ${there.model} on this file `
        + `(${fmt.usd(there.price_per_1m)} per 1M training tokens).`) : null)
      : h("p", { id: "new-estimate-local" }, "This server trains it for free: $0.00 here",
        e.local_model ? [", on its local stand-in ", h("code", {}, e.local_model)] : null, "."),
    h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    (e.warnings || []).length ? h("ul", { class: "warnings" }, e.warnings.map((w) => h("li", {}, w))) : null);
}
