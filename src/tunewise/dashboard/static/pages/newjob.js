// New job: file, model, method (supervised, DPO or reinforcement) and its hyperparameters, suffix; the cost
// estimate is shown before anything is submitted. The body sent is OpenAI's: method = {type, [type]: {...}}.

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
  const method = h("select", { id: "new-method" }, Object.entries(METHODS).map(([v, label]) => h("option", { value: v }, label)));
  const epochs = h("input", { id: "new-epochs", placeholder: "auto", inputmode: "numeric" });
  const batch = h("input", { id: "new-batch-size", placeholder: "auto", inputmode: "numeric" });
  const lr = h("input", { id: "new-lr", placeholder: "auto", inputmode: "decimal" });
  const suffix = h("input", { id: "new-suffix", maxlength: 64, placeholder: "e.g. receipts-v1" });
  const seed = h("input", { id: "new-seed", inputmode: "numeric", placeholder: "random" });
  const estimate = h("div", { id: "new-estimate", class: "estimate" }, h("p", { class: "muted" }, "Choose a file and a model."));
  const submit = h("button", { id: "new-submit", type: "submit" }, "Start fine-tuning");
  // DPO's own hyperparameter; reinforcement's grader and its own hyperparameters.
  const beta = h("input", { id: "new-beta", placeholder: "auto", inputmode: "decimal" });
  const grader = h("textarea", { id: "new-grader", rows: 9, spellcheck: "false" });
  grader.value = JSON.stringify(GRADER_PRESETS.string_check.grader, null, 2);
  const graderPreset = h("select", { id: "new-grader-preset" },
    Object.entries(GRADER_PRESETS).map(([v, p]) => h("option", { value: v }, p.label)));
  const graderCheck = h("button", { type: "button", id: "new-grader-check" }, "Check grader");
  const graderResult = h("p", { id: "new-grader-result", class: "muted" });
  const compute = h("input", { id: "new-compute-multiplier", placeholder: "auto", inputmode: "decimal" });
  const evalInterval = h("input", { id: "new-eval-interval", placeholder: "auto", inputmode: "numeric" });
  const evalSamples = h("input", { id: "new-eval-samples", placeholder: "auto", inputmode: "numeric" });
  const effort = h("select", { id: "new-reasoning-effort" }, ["default", "low", "medium", "high"].map((v) => h("option", { value: v }, v)));
  // Each method's own fields, beside the method: hidden unless that method is chosen.
  const dpoFields = [field("Beta", beta, "auto (0.1) or a number in (0, 2]: higher holds the model closer to where it starts")];
  const rftFields = [
    field("Compute multiplier", compute, "auto (1) or a number in (0, 10]: completions per prompt, 4 x this (at least 2)"),
    field("Eval interval", evalInterval, "auto (one epoch) or steps between validation runs"),
    field("Eval samples", evalSamples, "auto (1) or 1-64 completions per validation prompt"),
    field("Reasoning effort", effort, "accepted and echoed; the local models do not reason")];
  dpoFields[0].id = "new-dpo";
  const rftBox = h("div", { id: "new-rft" },
    field("Grader (an OpenAI grader object, JSON)", grader,
      "Scores each sampled answer: string_check, text_similarity, multi (python where the server allows it). "
      + "{{ item.FIELD }} reads the training line, {{ sample.output_text }} the answer."),
    h("div", { class: "row" }, h("label", {}, "Preset ", graderPreset), " ", graderCheck, " ", graderResult));
  const preset = ctx.query.get("file");
  if (preset && files.some((f) => f.id === preset)) training.value = preset;
  if (METHODS[ctx.query.get("method")]) method.value = ctx.query.get("method");

  const form = h("form", { id: "new-job-form", class: "card" },
    h("div", { class: "grid2" },
      field("Training file", training),
      field("Validation file", validation, "Held-out examples: the job then reports validation loss."),
      field("Model", model, "A base model (an OpenAI name maps to this server's local stand-in) or a fine-tuned one."),
      field("Suffix", suffix, "Up to 64 characters, part of the fine-tuned model's name.")),
    h("datalist", { id: "new-model-list" }, modelNames.map((n) => h("option", { value: n }))),
    h("h2", {}, "Method"),
    h("div", { class: "grid4 fill" }, field("Method", method, "Supervised: chat examples. DPO: preference pairs. "
      + "Reinforcement: prompts, scored by a grader."), dpoFields, rftFields),
    rftBox,
    h("h2", {}, "Hyperparameters"),
    h("div", { class: "grid4" },
      field("Epochs", epochs, "auto or 1-25"), field("Batch size", batch, "auto or a number"),
      field("Learning rate multiplier", lr, "auto or a number"), field("Seed", seed, "for a reproducible run")),
    h("h2", {}, "Estimated cost"), estimate,
    h("div", { class: "row" }, submit));
  clear(ctx.view, h("h1", {}, "New fine-tuning job"), form);
  const showMethod = () => {
    for (const el of dpoFields) el.hidden = method.value !== "dpo";
    for (const el of [...rftFields, rftBox]) el.hidden = method.value !== "reinforcement";
  };
  showMethod();
  method.addEventListener("change", showMethod);
  graderPreset.addEventListener("change", () => {
    grader.value = JSON.stringify(GRADER_PRESETS[graderPreset.value].grader, null, 2);
    graderResult.textContent = "";
  });
  grader.addEventListener("input", () => { graderResult.textContent = ""; }); // a verdict on the text as it was
  graderCheck.addEventListener("click", async () => {
    const parsed = parseGrader(grader.value);
    graderResult.className = "error";
    if (parsed.error) { graderResult.textContent = parsed.error; return; }
    graderCheck.disabled = true;
    try {
      await api("/fine_tuning/alpha/graders/validate", { method: "POST", json: { grader: parsed.grader } });
      graderResult.className = "ok";
      graderResult.textContent = `The server accepts this ${parsed.grader.type} grader.`;
    } catch (e) {
      graderResult.textContent = e.status === 404 ? "This server cannot check graders (no /v1/fine_tuning/alpha/graders/validate)."
        : `The server refuses this grader: ${e.message}${e.param && !e.message.includes(e.param) ? ` (${e.param})` : ""}`;
    } finally {
      graderCheck.disabled = false;
    }
  });

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
        { query: { model: model.value.trim(), n_epochs: epochs.value.trim() || "auto", method: method.value } });
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
  for (const input of [training, model, epochs, method]) { input.addEventListener("input", later); input.addEventListener("change", later); }
  updateEstimate();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    // Everything is checked here before anything is sent; the ranges are the server's to judge (its 400 is
    // shown as it says it).
    const kind = method.value;
    const fields = [["n_epochs", epochs, true], ["batch_size", batch, true], ["learning_rate_multiplier", lr, false]];
    if (kind === "dpo") fields.push(["beta", beta, false]);
    if (kind === "reinforcement") {
      fields.push(["compute_multiplier", compute, false], ["eval_interval", evalInterval, true], ["eval_samples", evalSamples, true]);
    }
    const hyper = {};
    for (const [name, input, integer] of fields) {
      const v = input.value.trim();
      if (!v || v === "auto") continue;
      const n = Number(v);
      if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) {
        input.focus();
        return flash(`${name} must be "auto" or ${integer ? "a whole number" : "a number"}, not "${v}".`, "error");
      }
      hyper[name] = n;
    }
    const section = { hyperparameters: hyper };
    if (kind === "reinforcement") {
      if (effort.value !== "default") hyper.reasoning_effort = effort.value;
      const parsed = parseGrader(grader.value);
      if (parsed.error) {
        grader.focus();
        return flash(parsed.error, "error");
      }
      section.grader = parsed.grader;
    }
    const body = {
      model: model.value.trim(),
      training_file: training.value,
      method: { type: kind, [kind]: section },
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

const METHODS = { supervised: "Supervised", dpo: "DPO (preference pairs)", reinforcement: "Reinforcement (grader)" };

// Graders the form can start from (each an OpenAI grader object), for prompts with a reference_answer field.
const GRADER_PRESETS = {
  string_check: { label: "exact answer (string_check)", grader: {
    type: "string_check", name: "exact", operation: "eq",
    input: "{{ sample.output_text }}", reference: "{{ item.reference_answer }}" } },
  text_similarity: { label: "close answer (text_similarity)", grader: {
    type: "text_similarity", name: "close", evaluation_metric: "fuzzy_match",
    input: "{{ sample.output_text }}", reference: "{{ item.reference_answer }}" } },
};

// The grader textarea's JSON: {grader} or {error} (said in words, before anything is sent).
export function parseGrader(text) {
  if (!text.trim()) return { error: "The grader is empty: give an OpenAI grader object (JSON), or pick a preset." };
  let grader;
  try {
    grader = JSON.parse(text);
  } catch (e) {
    return { error: `The grader is not valid JSON: ${e.message}.` };
  }
  if (!grader || typeof grader !== "object" || Array.isArray(grader)) {
    return { error: `The grader must be a JSON object such as {"type": "string_check", ...}, not ${Array.isArray(grader) ? "a list" : JSON.stringify(grader)}.` };
  }
  if (typeof grader.type !== "string") return { error: 'The grader needs a "type": string_check, text_similarity, multi or python.' };
  return { grader };
}

function drawEstimate(el, e) {
  if (e.method === "reinforcement") return drawBilledByTime(el, e);
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

// Reinforcement fine-tuning has no token price: OpenAI bills it by training time (tunewise.cost.RFT_BILLING).
function drawBilledByTime(el, e) {
  clear(el,
    h("p", { class: "big", id: "new-estimate-cost" }, "Billed per training hour",
      h("span", { class: "muted" }, " on OpenAI: reinforcement fine-tuning has no token price")),
    h("p", { id: "new-estimate-billing" }, e.billing),
    h("p", { id: "new-estimate-local" }, "This server trains it for free: $0.00 here",
      e.local_model && e.local_model !== e.model ? [", on its local stand-in ", h("code", {}, e.local_model)] : null, "."),
    h("dl", { class: "facts" },
      [["Examples", fmt.num(e.n_examples)], ["Prompt tokens per epoch", fmt.num(e.prompt_tokens_per_epoch)]]
        .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    e.n_errors ? h("ul", { class: "warnings" }, h("li", {},
      `The file has ${e.n_errors} error(s) as reinforcement prompts: see its findings on the Files page.`)) : null);
}
