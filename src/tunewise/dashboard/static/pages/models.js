// Models: the list (delete a fine-tuned one), and a side-by-side chat with a fine-tuned model and its base.

import { api } from "../api.js";
import { clear, field, flash, fmt, h, modelName, table } from "../dom.js";

// ft:BASE:PROJECT:SUFFIX:ID[:ckpt-step-N] -> BASE
export function baseOf(name) {
  return name.startsWith("ft:") ? name.split(":")[1] : name;
}

export async function render(ctx) {
  const list = h("div", { id: "models-list" });
  const tuned = h("input", { id: "try-model", list: "try-model-list", spellcheck: "false", placeholder: "ft:…" });
  const base = h("input", { id: "try-base", list: "try-model-list", spellcheck: "false" });
  const system = h("textarea", { id: "try-system", rows: 2, placeholder: "(optional) system prompt" });
  const user = h("textarea", { id: "try-user", rows: 3, placeholder: "Your message" });
  const maxTokens = h("input", { id: "try-max-tokens", type: "number", min: 1, value: "64" });
  const temperature = h("input", { id: "try-temperature", type: "number", min: 0, max: 2, step: "0.1", value: "0" });
  const run = h("button", { id: "try-run", type: "submit" }, "Send to both");
  const outTuned = h("div", { id: "try-out-ft", class: "answer" });
  const outBase = h("div", { id: "try-out-base", class: "answer" });
  const names = h("datalist", { id: "try-model-list" });

  if (ctx.query.get("model")) {
    tuned.value = ctx.query.get("model");
    base.value = baseOf(tuned.value);
  }
  tuned.addEventListener("change", () => { if (tuned.value.startsWith("ft:")) base.value = baseOf(tuned.value.trim()); });
  const form = h("form", { class: "card", id: "try-form" },
    h("h2", {}, "Try it: fine-tuned vs base"),
    h("div", { class: "grid2" }, field("Fine-tuned model", tuned), field("Compare with", base, "Filled with the fine-tuned model's base.")),
    field("System", system), field("User", user),
    h("div", { class: "grid4" }, field("max_tokens", maxTokens), field("temperature", temperature)),
    h("div", { class: "row" }, run), names,
    h("div", { class: "grid2" },
      h("div", {}, h("h3", {}, "Fine-tuned"), outTuned), h("div", {}, h("h3", {}, "Base"), outBase)));

  clear(ctx.view, h("h1", {}, "Models"), form, h("section", { class: "card" }, h("h2", {}, "Served models"), list));

  async function refresh() {
    const [models, catalog] = await Promise.all([api("/models"), api("/dashboard/catalog").catch(() => ({ aliases: {} }))]);
    // Fine-tuned models first: they are what this page is for.
    models.data.sort((a, b) => Number(b.id.startsWith("ft:")) - Number(a.id.startsWith("ft:")) || b.created - a.created);
    clear(names, models.data.map((m) => h("option", { value: m.id })));
    if (!tuned.value) {
      const ft = models.data.find((m) => m.id.startsWith("ft:"))?.id;
      if (ft) { tuned.value = ft; base.value = baseOf(ft); }
    }
    clear(list, table(["Model", "Owned by", "Runs on", "Created", ""], models.data.map((m) => {
      const standIn = catalog.aliases[m.id];
      const cells = [h("td", {}, modelName(m.id)), h("td", {}, m.owned_by),
        h("td", { class: "muted" }, m.id.startsWith("ft:") ? "its adapter" : standIn ? `stand-in: ${standIn}` : "itself"),
        h("td", {}, fmt.time(m.created))];
      const tryIt = h("button", { type: "button", class: "small", onclick: () => {
        tuned.value = m.id; base.value = baseOf(m.id); user.focus(); form.scrollIntoView();
      } }, "Try");
      let del = null;
      if (m.id.startsWith("ft:")) {
        del = h("button", { type: "button", class: "danger small", "data-action": "delete" }, "Delete");
        del.addEventListener("click", async () => {
          if (del.dataset.armed !== "1") { del.dataset.armed = "1"; del.textContent = "Click again to delete"; return; }
          try {
            await api(`/models/${encodeURIComponent(m.id)}`, { method: "DELETE" });
            flash(`Deleted ${m.id}.`);
            await refresh();
          } catch (e) { flash(e.message, "error"); }
        });
      }
      return h("tr", { "data-model": m.id }, cells, h("td", { class: "actions" }, tryIt, " ", del));
    }), { id: "models-table" }));
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!user.value.trim()) return flash("Write a user message first.", "error");
    const messages = [];
    if (system.value.trim()) messages.push({ role: "system", content: system.value });
    messages.push({ role: "user", content: user.value });
    const params = { messages, max_tokens: parseInt(maxTokens.value, 10) || 64, temperature: parseFloat(temperature.value) || 0 };
    run.disabled = true;
    await Promise.all([[tuned, outTuned], [base, outBase]].map(([input, out]) => ask(input.value.trim(), params, out)));
    run.disabled = false;
  });

  await refresh();
}

async function ask(model, params, out) {
  if (!model) return clear(out, h("p", { class: "muted" }, "No model chosen."));
  clear(out, h("p", { class: "muted" }, `Asking ${model}…`));
  const t0 = performance.now();
  try {
    const r = await api("/chat/completions", { method: "POST", json: { model, ...params } });
    const ms = performance.now() - t0;
    const choice = r.choices[0];
    out.dataset.done = "1";
    clear(out, h("pre", { class: "answer-text" }, choice.message.content ?? ""),
      h("p", { class: "muted" }, `${r.model} · ${r.usage.prompt_tokens} prompt + ${r.usage.completion_tokens} completion tokens · ` +
        `finish: ${choice.finish_reason} · ${(ms / 1000).toFixed(2)} s`));
  } catch (e) {
    out.dataset.done = "1";
    clear(out, h("p", { class: "error" }, e.message));
  }
}
