// Reports: the evaluation reports in the server's DATA_DIR/reports/, each shown in a sandboxed frame.

import { api } from "../api.js";
import { clear, fmt, h, table } from "../dom.js";

export async function renderList(ctx) {
  const r = await api("/dashboard/reports");
  clear(ctx.view, h("h1", {}, "Evaluation reports"),
    h("section", { class: "card", id: "reports-list" },
      r.data.length
        ? table(["Report", "Verdict", "Written", "Files"], r.data.map((x) => h("tr", { "data-report": x.name },
          h("td", {}, h("a", { href: `#/reports/${encodeURIComponent(x.name)}` }, x.name)),
          h("td", {}, h("div", {}, x.verdict || "—"), x.summary ? h("small", { class: "muted" }, x.summary) : null), h("td", {}, fmt.time(x.created_at)), h("td", {}, x.files.join(", ")))),
        { id: "reports-table" })
        : h("div", {},
          h("p", {}, "No reports yet."),
          h("p", { class: "muted" }, "Reports appear here when ", h("code", {}, "tunewise decide EVAL_DIR --out DIR"),
            " writes them into a folder of ", r.directory, "."))));
}

export async function renderOne(ctx, name) {
  const r = await api(`/dashboard/reports/${encodeURIComponent(name)}`);
  let body;
  if (r.html) {
    // sandbox without allow-scripts: the report's HTML is shown, never run.
    body = h("iframe", { id: "report-frame", class: "report", sandbox: "", title: `report ${name}` });
    body.srcdoc = r.html;
  } else if (r.markdown) {
    body = h("pre", { id: "report-markdown", class: "report-md" }, r.markdown);
  } else {
    body = h("p", { class: "muted" }, "This report has no HTML or Markdown, only its metrics.");
  }
  clear(ctx.view,
    h("p", {}, h("a", { href: "#/reports" }, "← All reports")),
    h("h1", {}, "Report ", h("code", {}, name)),
    r.verdict ? h("p", { class: "big", id: "report-verdict" }, r.verdict) : null,
    h("section", { class: "card" }, body),
    r.metrics ? h("details", { class: "card" }, h("summary", {}, "metrics.json"),
      h("pre", {}, JSON.stringify(r.metrics, null, 2))) : null);
}
