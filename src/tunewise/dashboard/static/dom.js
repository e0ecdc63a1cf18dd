// Small DOM helpers. Every piece of data reaches the page as text (never as HTML), so a file name or a
// model's answer can never inject markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value") el.value = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows));
}

export function field(label, control, help) {
  return h("label", { class: "field" }, h("span", {}, label), control, help ? h("small", { class: "muted" }, help) : null);
}

export const fmt = {
  bytes(n) {
    if (n === null || n === undefined) return "";
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  },
  time(seconds) {
    if (!seconds) return "";
    const d = new Date(seconds * 1000);
    const pad = (x) => String(x).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  },
  ago(seconds) {
    if (!seconds) return "";
    const s = Math.round(seconds - Date.now() / 1000);
    const abs = Math.abs(s);
    const text = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min` : `${(abs / 3600).toFixed(1)} h`;
    return s >= 0 ? `in ${text}` : `${text} ago`;
  },
  usd(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return "";
    const a = Math.abs(x);
    const digits = a === 0 ? 2 : a < 0.01 ? 6 : a < 1 ? 4 : 2;
    return `${x < 0 ? "-" : ""}$${a.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits })}`;
  },
  num(x, digits = 4) {
    if (x === null || x === undefined || Number.isNaN(x)) return "";
    if (Number.isInteger(x)) return x.toLocaleString("en-US");
    const text = Number(x).toPrecision(digits);
    return text.includes("e") ? text : text.replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
  },
};

// A model name (ft:BASE:PROJECT:SUFFIX:ID[:ckpt-step-N]) as code that wraps only after a ':', never inside a
// part: each part is kept whole (white-space: nowrap in the stylesheet) and <wbr> marks where a line may end.
// The text stays the name itself, so copying it copies the name.
export function modelName(name, attrs = {}) {
  const parts = String(name).split(/(?<=:)/);
  const code = h("code", { ...attrs, class: `model-name${attrs.class ? ` ${attrs.class}` : ""}` });
  parts.forEach((part, i) => {
    if (i) code.append(document.createElement("wbr"));
    code.append(h("span", {}, part));
  });
  return code;
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

// One message at the top of the page; errors stay until dismissed, the rest fade after 5 s.
export function flash(message, kind = "info") {
  const box = document.getElementById("flash");
  const item = h("div", { class: `flash ${kind}` }, message,
    h("button", { type: "button", class: "link", "aria-label": "dismiss", onclick: () => item.remove() }, "×"));
  box.replaceChildren(item);
  if (kind !== "error") setTimeout(() => item.remove(), 5000);
}

