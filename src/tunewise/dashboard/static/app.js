// The dashboard's shell: sign-in, the hash router, and the page lifecycle (polling stops when you leave).

import { api, key } from "./api.js";
import { clear, flash, h } from "./dom.js";
import * as calculator from "./pages/calculator.js";
import * as files from "./pages/files.js";
import * as job from "./pages/job.js";
import * as jobs from "./pages/jobs.js";
import * as models from "./pages/models.js";
import * as newjob from "./pages/newjob.js";
import * as reports from "./pages/reports.js";

const ROUTES = [
  [/^\/files$/, "files", files.render],
  [/^\/jobs$/, "jobs", jobs.render],
  [/^\/jobs\/([^/]+)$/, "jobs", job.render],
  [/^\/new$/, "new", newjob.render],
  [/^\/models$/, "models", models.render],
  [/^\/reports$/, "reports", reports.renderList],
  [/^\/reports\/([^/]+)$/, "reports", reports.renderOne],
  [/^\/calculator$/, "calculator", calculator.render],
];

const $ = (id) => document.getElementById(id);
let current = null; // the page context now shown

// What a page gets: where to draw, its query parameters, and timers that die with the page.
class PageContext {
  constructor(view, query) {
    this.view = view;
    this.query = query;
    this.alive = true;
    this.timers = new Set();
  }

  // Run `fn` now and then every `ms` after each run ends (never overlapping) until it returns false or the
  // page is left. Errors are shown and polling goes on (the server may be restarting).
  every(ms, fn) {
    const tick = async () => {
      if (!this.alive) return;
      let again = true;
      try {
        again = (await fn()) !== false;
      } catch (e) {
        flash(e.message, "error");
      }
      if (this.alive && again) this.timers.add(setTimeout(tick, ms));
    };
    return tick();
  }

  close() {
    this.alive = false;
    for (const t of this.timers) clearTimeout(t);
  }
}

async function route() {
  if (!key.get()) return showLogin();
  const [path, qs] = (window.location.hash.replace(/^#/, "") || "/files").split("?");
  const match = ROUTES.map(([re, page, render]) => [path.match(re), page, render]).find(([m]) => m);
  if (current) current.close();
  const view = $("view");
  $("flash").replaceChildren();
  if (!match) {
    current = null;
    clear(view, h("p", {}, `No page at #${path}. `, h("a", { href: "#/files" }, "Go to Files")));
    return;
  }
  const [m, page, render] = match;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  view.dataset.page = page;
  const ctx = new PageContext(view, new URLSearchParams(qs || ""));
  current = ctx;
  clear(view, h("p", { class: "muted" }, "Loading…"));
  try {
    await render(ctx, ...m.slice(1).map(decodeURIComponent));
  } catch (e) {
    if (ctx.alive) clear(view, h("p", { class: "error" }, e.message));
  }
}

function showLogin(message) {
  if (current) current.close();
  current = null;
  $("view").replaceChildren();
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("api-key").focus();
}

async function signIn(secret) {
  key.set(secret);
  try {
    const me = await api("/dashboard/whoami");
    $("who").textContent = `project ${me.project}`;
  } catch (e) {
    key.clear();
    showLogin(e.status === 401 ? "That key was refused: check it and try again." : e.message);
    return false;
  }
  $("login").hidden = true;
  $("nav").hidden = false;
  $("signout").hidden = false;
  return true;
}

window.addEventListener("tunewise:unauthorized", () => {
  key.clear();
  showLogin("The server refused the key (revoked?). Enter a key again.");
});

window.addEventListener("hashchange", route);

window.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const secret = $("api-key").value.trim();
    if (secret && (await signIn(secret))) {
      $("api-key").value = "";
      route();
    }
  });
  $("signout").addEventListener("click", () => {
    key.clear();
    showLogin();
  });
  // A key already in this tab (a reload) is checked first; a refused one leaves the form with the reason.
  const stored = key.get();
  if (!stored) showLogin();
  else if (await signIn(stored)) route();
});
