// The scan page: reads what to verify (the link's ?item=&federation=, a pasted id, URI or link,
// or a photographed QR label), runs hallmark.js's scan against every operator of the federation,
// and shows the verdict and everything it rests on. Everything displayed about the item comes
// from histories verified here; nothing is taken from an operator's word but where it says so.
//
// Hooks for the automated browser test: #verdict, #owner, #product, #manufacturer,
// #timeline li, #checks li[data-ok], #operators li[data-outcome], #item-input, #scan-button,
// #qr-file, and body[data-state] = idle | scanning | done | error (bad input).

import { CHECKS, fetchAnchors, formatSats, loadFederation, parseScanInput, scan } from "./hallmark.js";

const TIMEOUT_MS = 5000;
/** Largest side of a photo handed to the QR decoder (phone photos are far larger than needed). */
const QR_MAX_SIDE = 1600;

const params = new URLSearchParams(location.search);
// Where the federation's parameters are asked for: the operator serving this page, unless the
// link names another (?operator=). With a pinned federation id this is only a place to ask.
const bootstrap = params.get("operator") || location.origin;

const $ = (id) => document.getElementById(id);
const setState = (s) => {
  document.body.dataset.state = s;
};

/** An element with text children (never HTML: product names and reasons are untrusted text). */
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-") || k.startsWith("aria-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

const shortHex = (hex) => `${hex.slice(0, 10)}…${hex.slice(-6)}`;
const keySpan = (hex) => el("span", { class: "hex", title: hex }, shortHex(hex));

function when(ms) {
  const n = Number(ms);
  // Dates beyond ±8.64e15 ms are not dates: show the raw number rather than "Invalid Date".
  if (!(Math.abs(n) <= 8.64e15)) return `${ms} ms`;
  return new Date(n).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// ---- what to show for a verdict ----

const VERDICTS = {
  COUNTERFEIT: { cls: "counterfeit" },
  UNKNOWN: { cls: "unknown" },
  INCONSISTENT: { cls: "inconsistent" },
  UNREACHABLE: { cls: "unreachable" },
};

function headline(report) {
  if (report.verdict !== "AUTHENTIC") {
    return { text: report.verdict, cls: VERDICTS[report.verdict].cls, note: report.reasons[0] };
  }
  const s = report.state;
  switch (s.status) {
    case "LOCKED_IN_ESCROW":
      return {
        text: "LOCKED IN ESCROW",
        cls: "locked",
        note: `Authentic. A sale is in progress: locked in escrow until the buyer's payment settles or block ${s.escrow.deadlineHeight} passes.`,
      };
    case "STOLEN":
      return {
        text: "STOLEN",
        cls: "stolen",
        note: "Authentic, but its owner reported it stolen: it cannot be sold or transferred.",
      };
    case "RETIRED":
      return { text: "RETIRED", cls: "retired", note: "Authentic, but retired for good by its owner." };
    default:
      return {
        text: "AUTHENTIC",
        cls: "authentic",
        note: `Made by ${s.manufacturer.name} and certified by the federation's quorum.`,
      };
  }
}

const STATUS_TEXT = {
  ACTIVE_HELD: "held by its owner",
  LOCKED_IN_ESCROW: "locked in escrow (sale in progress)",
  STOLEN: "reported stolen",
  RETIRED: "retired",
};

const OUTCOME_TEXT = {
  valid: (r) => `verified history up to height ${r.height}${r.agrees ? "" : " (behind or conflicting)"}`,
  not_found: () => "does not know this item",
  invalid: (r) => `served a history that fails verification: ${r.reason}`,
  unreachable: (r) => `unreachable: ${r.error}`,
};

// ---- rendering ----

function renderChecks(checks) {
  $("checks").replaceChildren(
    ...checks.map((c) =>
      el(
        "li",
        { "data-ok": String(c.ok), "data-check": c.id },
        el("span", { class: "mark", "aria-hidden": "true" }, c.ok ? "✓" : "✗"),
        el("span", { class: "label" }, c.label),
        c.detail ? el("span", { class: "detail" }, c.detail) : null,
      ),
    ),
  );
}

function renderFederation(fed) {
  const pin = fed.pinned ? "pinned by the link" : "NOT pinned: taken on trust from the operator";
  const text = `Federation ${fed.params.name}, ${fed.m}-of-${fed.n}, id ${fed.idHex} (${pin}). Operator addresses as listed by ${fed.source}.`;
  $("federation").replaceChildren(text, ...fed.notes.map((n) => el("span", { class: "detail" }, n)));
}

function renderReport(report, fed) {
  const h = headline(report);
  $("verdict").textContent = h.text;
  $("verdict-box").className = `verdict ${h.cls}`;
  $("verdict-note").textContent = fed.pinned
    ? h.note
    : `${h.note} The link pins no federation: this holds for the federation the operator names (see the checks).`;

  const s = report.state;
  $("facts-box").hidden = !s;
  $("timeline-box").hidden = !s;
  if (s) {
    $("product").textContent = s.product;
    $("serial").textContent = s.serial;
    $("manufacturer").replaceChildren(s.manufacturer.name, " · id ", keySpan(s.manufacturer.id));
    $("owner").replaceChildren(keySpan(s.owner));
    $("status").textContent = STATUS_TEXT[s.status];
    $("sale-label").hidden = $("sale").hidden = !s.escrow;
    if (s.escrow) {
      $("sale").replaceChildren(
        "to ",
        keySpan(s.escrow.buyer),
        ` for ${formatSats(s.escrow.priceSats)}, to be paid by block ${s.escrow.deadlineHeight}`,
      );
    }
    $("item-id").textContent = s.item;
    $("timeline").replaceChildren(
      ...s.timeline.map((t) =>
        el(
          "li",
          { "data-kind": t.kind, "data-hash": t.hash },
          el("span", { class: "when" }, when(t.timestampMs)),
          el("span", { class: "what" }, t.summary),
          el("span", { class: "meta" }, `#${t.height} ${t.kind} by `, keySpan(t.author), " · event ", keySpan(t.hash)),
        ),
      ),
    );
  } else {
    $("timeline").replaceChildren();
  }
  $("anchor-note").hidden = true;

  renderChecks(report.checks);
  $("operators").replaceChildren(
    ...report.operators.map((r) =>
      el(
        "li",
        { "data-outcome": r.outcome },
        el("strong", {}, `Operator ${r.index}`),
        el("span", { class: "what" }, OUTCOME_TEXT[r.outcome](r)),
        el("span", { class: "detail" }, r.url),
      ),
    ),
  );
  renderFederation(fed);
  $("reasons").replaceChildren(...report.reasons.map((r) => el("li", {}, r)));
}

/** The Bitcoin anchors of an authentic history, checked here; adds a check if any is anchored. */
function renderAnchors(report, fed, result) {
  const note = $("anchor-note");
  note.hidden = false;
  if (result.error) {
    note.textContent = `Bitcoin anchors could not be checked: operator ${result.operator}: ${result.error}`;
    return;
  }
  const anchored = result.anchors.filter((a) => a !== null);
  if (anchored.length === 0) {
    note.textContent = "Not anchored in Bitcoin yet: the federation anchors its log periodically.";
    return;
  }
  const tip = fed.bitcoinTip;
  const confirmations = (a) =>
    tip === null
      ? "confirmations unknown (the operator reports no Bitcoin tip)"
      : `${Math.max(0, tip - a.height + 1)} confirmations`;
  const items = $("timeline").children;
  result.anchors.forEach((a, i) => {
    const text =
      a === null
        ? "Bitcoin anchor: pending"
        : a.error
          ? `Bitcoin anchor INVALID: ${a.error}`
          : `Anchored in Bitcoin block ${a.height} (${confirmations(a)}), checkpoint ${a.checkpoint}, transaction ${shortHex(a.txid)}`;
    items[i].append(el("span", { class: a?.error ? "anchor bad" : "anchor" }, text));
  });
  const bad = anchored.filter((a) => a.error);
  const good = anchored.filter((a) => !a.error);
  const blocks = [...new Set(good.map((a) => `${a.height} (${shortHex(a.block)})`))].join(", ");
  const detail = bad.length
    ? bad.map((a) => a.error).join("; ")
    : `verified here: the checkpoints' quorum certificates, each event's inclusion, the OP_RETURN transactions, their Merkle branches and the blocks' proof of work. As reported by operator ${fed.operatorIndex}: that block ${blocks} is in Bitcoin's best chain, and the chain tip the confirmations count from.`;
  report.checks.push({ id: "anchor", label: CHECKS.anchor, ok: bad.length === 0, detail });
  renderChecks(report.checks);
  note.textContent = `${good.length} of ${report.state.timeline.length} events anchored in Bitcoin; proofs from operator ${result.operator}.`;
}

function renderFailure(error) {
  const message = error.message;
  $("verdict").textContent = "UNREACHABLE";
  $("verdict-box").className = "verdict unreachable";
  $("verdict-note").textContent =
    error.code === "federation_mismatch"
      ? "The operator serves another federation than the one this link pins: nothing could be verified."
      : "The federation's parameters could not be had from an operator: nothing could be verified.";
  $("facts-box").hidden = true;
  $("timeline-box").hidden = true;
  renderChecks([{ id: "federation", label: CHECKS.federation, ok: false, detail: message }]);
  $("operators").replaceChildren();
  $("federation").textContent = `The federation's parameters were asked of ${bootstrap}.`;
  $("reasons").replaceChildren(el("li", {}, message));
}

// ---- running a scan ----

let current = 0;

async function run(item, pinned) {
  const mine = ++current;
  setState("scanning");
  $("input-error").hidden = true;
  $("progress").hidden = false;
  $("result").hidden = true;
  try {
    let fed;
    try {
      fed = await loadFederation(bootstrap, pinned, { timeoutMs: TIMEOUT_MS });
    } catch (e) {
      if (mine === current) renderFailure(e);
      return;
    }
    const report = await scan(item, { federation: fed, operators: fed.members, timeoutMs: TIMEOUT_MS });
    if (mine !== current) return;
    renderReport(report, fed);
    $("result").hidden = false;
    if (report.verdict === "AUTHENTIC") {
      const anchors = await fetchAnchors(report, fed, { timeoutMs: TIMEOUT_MS });
      if (mine === current) renderAnchors(report, fed, anchors);
    }
  } finally {
    if (mine === current) {
      $("progress").hidden = true;
      $("result").hidden = false;
      setState("done");
    }
  }
}

function showInputError(message) {
  current++; // a scan still running must not overwrite this
  $("progress").hidden = true;
  const p = $("input-error");
  p.textContent = message;
  p.hidden = false;
  setState("error");
}

/** Scans what `text` names, keeping the page's pinned federation unless the text pins one. */
function start(text) {
  let target;
  try {
    target = parseScanInput(text);
  } catch (e) {
    showInputError(e.message);
    return;
  }
  const federation = target.federation ?? params.get("federation")?.toLowerCase() ?? null;
  const q = new URLSearchParams({ item: target.item });
  if (federation) q.set("federation", federation);
  if (params.get("operator")) q.set("operator", params.get("operator"));
  history.replaceState(null, "", `?${q}`);
  params.set("item", target.item);
  if (federation) params.set("federation", federation);
  run(target.item, federation);
}

/** The text of the QR code in an image file, decoded through a canvas with jsQR. */
async function readQr(file) {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, QR_MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const [w, h] = [Math.round(bitmap.width * scale), Math.round(bitmap.height * scale)];
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0, w, h);
  bitmap.close();
  const code = globalThis.jsQR(ctx.getImageData(0, 0, w, h).data, w, h);
  if (!code) throw new Error("no QR code found in the picture: try a sharper, closer photo of the label");
  return code.data;
}

$("scan-form").addEventListener("submit", (event) => {
  event.preventDefault();
  start($("item-input").value);
});

$("qr-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  event.target.value = ""; // choosing the same photo again fires change again
  if (!file) return;
  setState("scanning");
  let text;
  try {
    text = await readQr(file);
  } catch (e) {
    showInputError(e.message);
    return;
  }
  $("item-input").value = text;
  start(text);
});

if (params.get("item")) {
  const item = params.get("item");
  const fed = params.get("federation");
  $("item-input").value = fed ? `hallmark:${item}@${fed}` : item;
  start($("item-input").value);
}
