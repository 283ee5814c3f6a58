// The pages, as plain template strings. Everything interpolated goes through `esc` except
// what is marked `raw` (markup this app made: other fragments, and the QR code's SVG).

const RAW = Symbol("raw");

/** Markup that is not to be escaped again. */
export function raw(markup) {
  return { [RAW]: markup };
}

export function esc(value) {
  if (value && typeof value === "object" && RAW in value) {
    return value[RAW];
  }
  if (Array.isArray(value)) {
    return value.map(esc).join("");
  }
  return String(value ?? "")
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

/** Tagged template: `html\`<p>${text}</p>\`` escapes `text`; answers raw markup. */
export function html(strings, ...values) {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) {
    out += esc(values[i]) + strings[i + 1];
  }
  return raw(out);
}

/** A whole page. `scripts`: paths of the app's own scripts the page loads (deferred); the
 * pages with a passkey form load /passkeys.js, the others none. */
export function page(title, body, { scripts = [] } = {}) {
  const tags = scripts.map((src) => `<script src="${esc(src)}" defer></script>\n`).join("");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)} · Example account</title>
<link rel="stylesheet" href="/style.css">
${tags}</head>
<body>
<header><a href="/account" class="brand">Example account</a></header>
<main>
<h1>${esc(title)}</h1>
${esc(body)}
</main>
</body>
</html>
`;
}

/** A notice (`kind` "ok") or a refusal (`kind` "error"), with the test's hooks. */
export function message(kind, text) {
  if (!text) {
    return raw("");
  }
  const role = kind === "error" ? "alert" : "status";
  return html`<p class="message ${kind}" role="${role}" data-testid="${kind}">${text}</p>`;
}

/** The hidden CSRF field every POST form carries. */
export function csrfField(token) {
  return html`<input type="hidden" name="csrf" value="${token}">`;
}

/** A date as `2025-01-31 14:05:09 UTC`, in a <time> with the exact instant. */
export function when(date) {
  if (!date) {
    return html`<span class="muted">never</span>`;
  }
  const text = date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  return html`<time datetime="${date.toISOString()}">${text}</time>`;
}

export const STYLE = `
body { font: 16px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f5f6f8; }
header { background: #1d2330; padding: .7rem 1.5rem; }
header .brand { color: #fff; text-decoration: none; font-weight: 600; }
main { max-width: 46rem; margin: 1.5rem auto; padding: 0 1rem; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 1rem 1.25rem; margin: 1rem 0; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 0; }
label { display: block; margin: .5rem 0 .2rem; }
label.inline { display: inline; margin-left: .3rem; }
input[type=text], input[type=password] { width: 100%; max-width: 22rem; padding: .4rem; box-sizing: border-box; }
button { margin-top: .6rem; padding: .4rem .9rem; cursor: pointer; }
button.link { background: none; border: none; color: #2451b8; text-decoration: underline; padding: 0; margin: 0; }
.message { padding: .6rem .8rem; border-radius: 6px; }
.message.error { background: #fde8e8; border: 1px solid #f3a5a5; }
.message.ok { background: #e6f6ea; border: 1px solid #9fd8ac; }
.muted { color: #6b7280; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .35rem .4rem; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
.qr svg { width: 220px; height: 220px; }
code.secret { font-size: 1.05rem; letter-spacing: .06em; word-break: break-all; }
td:nth-child(4), td:nth-child(5) { white-space: nowrap; }
ol.codes { columns: 2; font-family: ui-monospace, monospace; }
form.inline { display: inline; }
form.inline input[type=password] { width: 10rem; padding: .25rem; }
[hidden] { display: none !important; }
.or { margin: .8rem 0 .2rem; }
`;
