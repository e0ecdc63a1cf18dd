// Jobs: every fine-tuning job of the project, newest first; refreshed while any is still active.

import { api } from "../api.js";
import { clear, flash, fmt, h, modelName, statusBadge, table } from "../dom.js";

export const ACTIVE = ["validating_files", "queued", "running", "paused"];
const PAGE = 50;

export async function render(ctx) {
  const list = h("div", { id: "jobs-list" });
  const more = h("button", { type: "button", id: "jobs-more", hidden: true }, "Older jobs");
  clear(ctx.view,
    h("div", { class: "row spread" }, h("h1", {}, "Fine-tuning jobs"), h("a", { class: "button", href: "#/new" }, "New job")),
    h("section", { class: "card" }, list, more));
  let shown = PAGE;
  more.addEventListener("click", () => {
    shown += PAGE;
    refresh().catch((e) => flash(e.message, "error"));
  });

  async function refresh() {
    const page = await api("/fine_tuning/jobs", { query: { limit: shown } });
    more.hidden = !page.has_more;
    if (!page.data.length) {
      clear(list, h("p", { class: "muted" }, "No jobs yet. ", h("a", { href: "#/new" }, "Start one.")));
    } else {
      clear(list, table(["Job", "Model", "Status", "Fine-tuned model", "Created", "Trained tokens"],
        page.data.map((j) => h("tr", { "data-job-id": j.id },
          h("td", {}, h("a", { href: `#/jobs/${j.id}` }, h("code", {}, j.id))),
          h("td", {}, j.model),
          h("td", {}, statusBadge(j.status)),
          h("td", {}, j.fine_tuned_model ? modelName(j.fine_tuned_model) : ""),
          h("td", {}, fmt.time(j.created_at)),
          h("td", { class: "num" }, fmt.num(j.trained_tokens)))),
        { id: "jobs-table" }));
    }
    return page.data.some((j) => ACTIVE.includes(j.status)) ? undefined : false;
  }
  // Poll every 2 s while a job is active; a finished list does not change by itself.
  await ctx.every(2000, refresh);
}
