// Files: upload with progress, the validator's findings line by line, the list, delete.

import { ApiError, api, listAll, send, uploadFile } from "../api.js";
import { clear, flash, fmt, h, table } from "../dom.js";

export async function render(ctx) {
  const input = h("input", { id: "upload-file", type: "file", accept: ".jsonl,.json,application/jsonl" });
  const button = h("button", { id: "upload-submit", type: "button" }, "Upload");
  const progress = h("progress", { id: "upload-progress", max: 100, value: 0, hidden: true });
  const status = h("p", { id: "upload-status", class: "muted" });
  const findings = h("div", { id: "findings" });
  const list = h("div", { id: "files-list" });

  clear(ctx.view,
    h("h1", {}, "Files"),
    h("section", { class: "card" },
      h("h2", {}, "Upload training data"),
      h("p", { class: "muted" }, "Chat-format JSONL, one example per line. The server checks every line before it " +
        "stores the file; the findings appear below, line by line."),
      h("div", { class: "row" }, input, button), progress, status),
    findings,
    h("section", { class: "card" }, h("h2", {}, "Uploaded files"), list));

  async function refresh() {
    const rows = await listAll("/files", { purpose: "fine-tune" });
    drawList(list, rows, { refresh, showFindings: (report) => drawFindings(findings, report) });
  }

  button.addEventListener("click", async () => {
    const file = input.files[0];
    if (!file) return flash("Choose a JSONL file first.", "error");
    button.disabled = true;
    progress.hidden = false;
    const onProgress = (done, total) => {
      progress.value = Math.round((100 * done) / total);
      status.textContent = `Uploading ${file.name}: ${progress.value}% of ${fmt.bytes(total)}`;
    };
    findings.replaceChildren();
    try {
      const obj = await uploadFile(file, onProgress);
      progress.value = 100;
      status.textContent = `Uploaded ${file.name} as ${obj.id}. Checking it…`;
      status.dataset.fileId = obj.id;
      await refresh();
      const report = await api(`/dashboard/files/${obj.id}/validation`);
      drawFindings(findings, report);
      status.textContent = `Uploaded ${file.name} as ${obj.id}: ${summary(report)}.`;
      status.className = "ok";
    } catch (e) {
      status.className = "error";
      status.textContent = `Not uploaded: ${e.message}`;
      // A refused training file: ask the validator for every finding (the refusal lists only the first few).
      if (e instanceof ApiError && e.status === 400 && file.size) {
        try {
          const report = await send("/dashboard/validate", { body: file, contentType: "application/octet-stream", onProgress });
          drawFindings(findings, { ...report, filename: file.name });
          status.textContent = `Not uploaded: ${file.name} has ${summary(report)}. Fix the lines below and upload again.`;
        } catch (inner) {
          status.textContent += ` (${inner.message})`;
        }
      }
    } finally {
      button.disabled = false;
    }
  });

  await refresh();
}

function summary(report) {
  const e = report.n_errors ?? (report.findings || []).filter((f) => f.severity === "error").length;
  const w = report.n_warnings ?? (report.findings || []).filter((f) => f.severity === "warning").length;
  return `${e} error${e === 1 ? "" : "s"}, ${w} warning${w === 1 ? "" : "s"}`;
}

function drawList(el, rows, { refresh, showFindings }) {
  if (!rows.length) return clear(el, h("p", { class: "muted" }, "No files yet."));
  const tr = rows.map((f) => {
    const del = h("button", { type: "button", class: "danger small", "data-action": "delete" }, "Delete");
    del.addEventListener("click", async () => {
      // Two clicks: a plain confirm() would block the page and any test driving it.
      if (del.dataset.armed !== "1") {
        del.dataset.armed = "1";
        del.textContent = "Click again to delete";
        return;
      }
      try {
        await api(`/files/${f.id}`, { method: "DELETE" });
        flash(`Deleted ${f.filename} (${f.id}).`);
        await refresh();
      } catch (e) {
        flash(e.message, "error");
      }
    });
    const check = h("button", { type: "button", class: "small", "data-action": "findings" }, "Findings");
    check.addEventListener("click", async () => {
      check.disabled = true;
      try {
        showFindings(await api(`/dashboard/files/${f.id}/validation`));
      } catch (e) {
        flash(e.message, "error");
      } finally {
        check.disabled = false;
      }
    });
    return h("tr", { "data-file-id": f.id },
      h("td", {}, h("code", {}, f.id)), h("td", {}, f.filename), h("td", { class: "num" }, fmt.bytes(f.bytes)),
      h("td", {}, fmt.time(f.created_at)),
      h("td", { class: "actions" }, check, " ", h("a", { class: "button small", href: `#/new?file=${f.id}` }, "Train"), " ", del));
  });
  clear(el, table(["ID", "Name", "Size", "Uploaded", ""], tr, { id: "files-table" }));
}

// The validator's report: a summary, statistics, and one row per finding with the text of its line.
export function drawFindings(el, report) {
  const items = report.findings || [];
  const lines = report.lines || {};
  const stats = report.stats || {};
  const rows = [...items]
    .sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.severity === "error" ? -1 : 1))
    .map((f) => {
      const text = f.line !== null && f.line !== undefined ? lines[String(f.line)] : undefined;
      const more = (f.lines || []).filter((n) => n !== f.line);
      return h("tr", { class: `finding ${f.severity}`, "data-line": f.line ?? "" },
        h("td", { class: "num" }, f.line ?? "file"),
        h("td", {}, h("span", { class: `badge sev-${f.severity}` }, f.severity)),
        h("td", {}, h("code", {}, f.code)),
        h("td", {},
          h("div", {}, f.message),
          f.hint ? h("div", { class: "muted" }, f.hint) : null,
          more.length ? h("div", { class: "muted" }, `also lines ${more.slice(0, 20).join(", ")}${more.length > 20 ? ", …" : ""}`) : null,
          text !== undefined ? h("pre", { class: "line-text" }, text) : null));
    });
  const facts = [
    ["examples", stats.n_examples],
    ["model", stats.model],
    ["encoding", stats.encoding],
    ["billed tokens per epoch", stats.billed_tokens_per_epoch],
  ].filter(([, v]) => v !== undefined && v !== null);
  clear(el, h("section", { class: "card", id: "findings-card" },
    h("h2", {}, `Findings${report.filename ? ` for ${report.filename}` : ""}`),
    h("p", { id: "findings-summary", class: (report.n_errors ?? 0) > 0 ? "error" : "ok" },
      report.ok === false ? `${summary(report)}: this file cannot be used for training as it is.`
        : `${summary(report)}: ready to train.`),
    facts.length ? h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "number" ? fmt.num(v) : v)])) : null,
    rows.length ? table(["Line", "Severity", "Code", "Finding"], rows, { id: "findings-table" })
      : h("p", { class: "muted" }, "No findings: every line is a well-formed chat example.")));
}
