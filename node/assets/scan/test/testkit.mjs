// Test helpers: the JavaScript twin of protocol/src/testkit.rs (deterministic keys, a federation
// of them, signed and certified events) so tests can build histories the devnet fixtures do not
// have, and serialize them as an operator's API would (serde_json's forms).

import { readFileSync } from "node:fs";
import { stringify } from "../vendor/lossless-json/index.js";
import { sha256 } from "../vendor/noble-hashes/sha2.js";
import * as secp from "../vendor/noble-secp256k1.js";
import * as h from "../hallmark.js";

const FIXTURES = new URL("./fixtures/", import.meta.url);

/** A fixture's text. */
export const fixture = (name) => readFileSync(new URL(name, FIXTURES), "utf8");
/** A fixture parsed losslessly. */
export const fixtureJson = (name) => h.parseJson(fixture(name));
/** JSON text with BigInts written as plain numbers. */
export const toText = (value) => stringify(value);

/** Secret key number `i`: `SHA256("hallmark-test-key" || i as u32 big-endian)`, as Rust's. */
export function key(i) {
  const seed = new Uint8Array(21);
  seed.set(new TextEncoder().encode("hallmark-test-key"));
  new DataView(seed.buffer).setUint32(17, i, false);
  return sha256(seed);
}

export const publicKey = (secret) => secp.getPublicKey(secret, true);
export const operatorKey = (i) => key(1_000 + i);

/** A P2WPKH script paying to a hash made of byte `i`. */
export const script = (i) => Uint8Array.of(0x00, 0x14, ...new Uint8Array(20).fill(i));

/** Rust's `testkit::federation(m, n)`. */
export function federation(m, n) {
  return h.federationFromParams({
    name: "hallmark-test",
    quorum: { m, n },
    max_faulty: Math.min(2 * m - n - 1, n - m),
    operators: Array.from({ length: n }, (_, i) => ({ key: publicKey(operatorKey(i)), payout: script(100 + i) })),
    treasury: script(200),
    fees: { operator_fee_bps: 100, treasury_fee_bps: 50, dust_limit_sats: 546n },
  });
}

/** Rust's `testkit::body`: fixed timestamp, the height as nonce. */
export function body(fed, author, height, prev, kind) {
  return {
    federation: fed.id,
    height: BigInt(height),
    prev,
    timestamp_ms: 1_700_000_000_000n + BigInt(height),
    nonce: BigInt(height),
    author: publicKey(author),
    kind,
  };
}

/** Signs a body (RFC 6979, low-S, as libsecp256k1). */
export async function sign(b, secret) {
  return { body: b, signature: await secp.signAsync(h.eventHash({ body: b }), secret, { prehash: false }) };
}

/** Certifies `event` by operators `signers` of `fed`, each a batch of one commit vote. */
export async function certify(fed, event, signers = [...Array(fed.m).keys()]) {
  const hash = h.eventHash(event);
  const digest = h.batchDigest(fed.id, h.voteLeaf(hash, 0));
  const attestations = [];
  for (const i of signers) {
    attestations.push({
      operator: fed.operatorIds[i],
      path: { index: 0, total: 1, siblings: [] },
      signature: await secp.signAsync(digest, operatorKey(i), { prehash: false }),
    });
  }
  return { event, certificate: { event: hash, round: 0, attestations } };
}

// serde_json's forms of the typed values.
const hex = h.toHex;

function kindJson(k) {
  const { type, ...f } = k;
  const out = {};
  for (const [name, v] of Object.entries(f)) {
    if (name === "offer" && type === "AcceptOffer") out.offer = eventJson(v);
    else if (name === "payment") out.payment = hex(Uint8Array.from(v).reverse()); // Txid: display order
    else out[name] = v instanceof Uint8Array ? hex(v) : v;
  }
  if (type === "AcceptOffer") {
    const inv = f.invoice;
    out.invoice = {
      offer: hex(inv.offer),
      price_sats: inv.price_sats,
      outputs: inv.outputs.map((o) => ({
        role: o.role.type === "Operator" ? { Operator: hex(o.role.operator) } : o.role.type,
        script_pubkey: hex(o.script_pubkey),
        amount_sats: o.amount_sats,
      })),
      deadline_height: inv.deadline_height,
    };
  }
  return { [type]: out };
}

export function eventJson(e) {
  const b = e.body;
  return {
    body: {
      federation: hex(b.federation),
      height: b.height,
      prev: hex(b.prev),
      timestamp_ms: b.timestamp_ms,
      nonce: b.nonce,
      author: hex(b.author),
      kind: kindJson(b.kind),
    },
    signature: hex(e.signature),
  };
}

export function certifiedJson(ce) {
  const c = ce.certificate;
  return {
    event: eventJson(ce.event),
    certificate: {
      event: hex(c.event),
      round: c.round,
      attestations: c.attestations.map((a) => ({
        operator: hex(a.operator),
        path: { index: a.path.index, total: a.path.total, siblings: a.path.siblings.map(hex) },
        signature: hex(a.signature),
      })),
    },
  };
}

/**
 * A small world: federation(3, 4), manufacturer key(1) registered as "Acme Watches", and
 * helpers to mint and extend an item's chain with certified events.
 */
export async function world() {
  const fed = federation(3, 4);
  const mfr = key(1);
  const registration = await certify(
    fed,
    await sign(body(fed, mfr, 0, new Uint8Array(32), { type: "RegisterManufacturer", name: "Acme Watches" }), mfr),
  );
  return {
    fed,
    mfr,
    registration,
    async mint(serial, owner) {
      const kind = { type: "Mint", serial, product: "Chronograph", owner: publicKey(owner) };
      return certify(fed, await sign(body(fed, mfr, 0, new Uint8Array(32), kind), mfr));
    },
    /** The next certified event after `prev` (a certified event at height `prev`'s + 1). */
    async next(prev, author, kind, { prevHash = prev.certificate.event } = {}) {
      const height = prev.event.body.height + 1n;
      return certify(fed, await sign(body(fed, author, height, prevHash, kind), author));
    },
    /** The history JSON text an operator serves. */
    historyText(events) {
      return toText({ manufacturer: certifiedJson(registration), events: events.map(certifiedJson) });
    },
  };
}

/**
 * A fetch that answers from `routes`: url -> `{status, body}` | a function of the url returning
 * one | "hang" (never answers, whatever the abort signal says).
 */
export function fakeFetch(routes) {
  return async (url) => {
    let r = routes[url];
    if (typeof r === "function") r = r(url);
    if (r === "hang") return new Promise(() => {});
    if (!r) return new Response('{"error":{"code":"no_route","message":"no such route"}}', { status: 404 });
    return new Response(r.body, { status: r.status ?? 200 });
  };
}

export const NOT_FOUND = { status: 404, body: '{"error":{"code":"not_found","message":"no item"}}' };
