// Hallmark's client-side verification in JavaScript: what the scan page runs in the browser,
// trusting no single operator. It mirrors the Rust code that defines the formats and rules
// (protocol/src: encoding, hash, ids, keys, event, certificate, merkle, federation, invoice,
// state, verify, checkpoint) and the scanning client's verdict (node/src/verifier.rs).
//
// Pure: no DOM, no globals but `fetch` (injectable) and timers, so node's test runner uses it
// as the browser does. Integers from JSON are BigInt (nonces and timestamps exceed 2^53).

import { parse as parseLossless, parseNumberAndBigInt } from "./vendor/lossless-json/index.js";
import { sha256 } from "./vendor/noble-hashes/sha2.js";
import * as secp from "./vendor/noble-secp256k1.js";

// ---------------------------------------------------------------------------------------------
// Bytes

const HEX_DIGITS = /^(?:[0-9a-fA-F]{2})*$/;
const utf8 = new TextEncoder();

/** Bytes of an even-length hex string (either case, as Rust's `FromHex` accepts). */
export function hexToBytes(hex) {
  if (typeof hex !== "string" || !HEX_DIGITS.test(hex)) throw new Error("not hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Lowercase hex. */
export function toHex(bytes) {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// Bitcoin shows sha256d hashes (txids, block hashes) byte-reversed.
function reversed(bytes) {
  return Uint8Array.from(bytes).reverse();
}

const ZERO32 = new Uint8Array(32);

// ---------------------------------------------------------------------------------------------
// Errors

/**
 * Why something does not verify. `code` is the Rust error's code where it has one;
 * `check` names the check of the scan report it fails (see CHECKS).
 */
export class HallmarkError extends Error {
  constructor(check, code, message) {
    super(message);
    this.name = "HallmarkError";
    this.check = check;
    this.code = code;
  }

  /** The same error with its location prefixed to the message. */
  at(where) {
    return new HallmarkError(this.check, this.code, `${where}: ${this.message}`);
  }
}

const fail = (check, code, message) => new HallmarkError(check, code, message);

// ---------------------------------------------------------------------------------------------
// JSON without precision loss

/** Parses JSON text; every integer becomes a BigInt, other numbers stay floats. */
export function parseJson(text) {
  return parseLossless(text, null, parseNumberAndBigInt);
}

// ---------------------------------------------------------------------------------------------
// Decoding the JSON of the HTTP API into typed values (serde_json's view of the Rust types):
// ids and hashes are 64 hex digits, keys 66, signatures 128; fixed-size byte arrays become
// Uint8Arrays; u64 are BigInt, u32 plain numbers. Anything else is a malformed answer.

const U64_MAX = (1n << 64n) - 1n;

const malformed = (path, what) => fail("format", "malformed", `malformed answer: ${path} must be ${what}`);

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

// Own properties only: a parsed "__proto__" key must not answer for a missing field.
function field(obj, name, path) {
  if (!isObject(obj)) throw malformed(path, "an object");
  if (!Object.hasOwn(obj, name)) throw malformed(`${path}.${name}`, "present");
  return obj[name];
}

const dec = {
  u64(v, path) {
    if (typeof v !== "bigint" || v < 0n || v > U64_MAX) throw malformed(path, "an unsigned 64-bit integer");
    return v;
  },
  u32(v, path) {
    if (typeof v !== "bigint" || v < 0n || v > 0xffffffffn) throw malformed(path, "an unsigned 32-bit integer");
    return Number(v);
  },
  str(v, path) {
    if (typeof v !== "string") throw malformed(path, "a string");
    return v;
  },
  fixed(v, path, n) {
    if (typeof v !== "string" || v.length !== 2 * n || !HEX_DIGITS.test(v)) {
      throw malformed(path, `${2 * n} hex digits`);
    }
    return hexToBytes(v);
  },
  hash(v, path) {
    return dec.fixed(v, path, 32);
  },
  // Rust parses the point when it decodes a key, so an invalid point is a malformed answer.
  key(v, path) {
    const b = dec.fixed(v, path, 33);
    try {
      secp.Point.fromBytes(b);
    } catch {
      throw malformed(path, "a valid compressed secp256k1 public key");
    }
    return b;
  },
  sig(v, path) {
    return dec.fixed(v, path, 64);
  },
  // ScriptBuf: plain hex of any length.
  script(v, path) {
    if (typeof v !== "string" || !HEX_DIGITS.test(v)) throw malformed(path, "script hex");
    return hexToBytes(v);
  },
  // bitcoin::Txid: JSON shows it byte-reversed (Bitcoin's display order); kept in internal order.
  txid(v, path) {
    return reversed(dec.fixed(v, path, 32));
  },
  array(v, path, item) {
    if (!Array.isArray(v)) throw malformed(path, "an array");
    return v.map((x, i) => item(x, `${path}[${i}]`));
  },
};

/** serde_json's externally tagged enum: `"Unit"` or `{"Variant": value}`. */
function variant(v, path) {
  if (typeof v === "string") return [v, undefined];
  if (isObject(v) && Object.keys(v).length === 1) {
    const [name] = Object.keys(v);
    return [name, v[name]];
  }
  throw malformed(path, "an enum variant");
}

const KIND_INDEX = {
  RegisterManufacturer: 0,
  Mint: 1,
  Transfer: 2,
  CreateOffer: 3,
  AcceptOffer: 4,
  Settle: 5,
  ExpireEscrow: 6,
  ReportStolen: 7,
  Recover: 8,
  Retire: 9,
};

/** `EventKind::name()`: short names for messages. */
const KIND_NAME = {
  RegisterManufacturer: "register_manufacturer",
  Mint: "mint",
  Transfer: "transfer",
  CreateOffer: "create_offer",
  AcceptOffer: "accept_offer",
  Settle: "settle",
  ExpireEscrow: "expire_escrow",
  ReportStolen: "report_stolen",
  Recover: "recover",
  Retire: "retire",
};

function decodeKind(v, path) {
  const [type, f] = variant(v, path);
  const p = `${path}.${type}`;
  const item = () => dec.hash(field(f, "item", p), `${p}.item`);
  switch (type) {
    case "RegisterManufacturer":
      return { type, name: dec.str(field(f, "name", p), `${p}.name`) };
    case "Mint":
      return {
        type,
        serial: dec.str(field(f, "serial", p), `${p}.serial`),
        product: dec.str(field(f, "product", p), `${p}.product`),
        owner: dec.key(field(f, "owner", p), `${p}.owner`),
      };
    case "Transfer":
      return { type, item: item(), to: dec.key(field(f, "to", p), `${p}.to`) };
    case "CreateOffer":
      return {
        type,
        item: item(),
        item_height: dec.u64(field(f, "item_height", p), `${p}.item_height`),
        seller: dec.key(field(f, "seller", p), `${p}.seller`),
        price_sats: dec.u64(field(f, "price_sats", p), `${p}.price_sats`),
      };
    case "AcceptOffer":
      return {
        type,
        offer: decodeEvent(field(f, "offer", p), `${p}.offer`),
        invoice: decodeInvoice(field(f, "invoice", p), `${p}.invoice`),
      };
    case "Settle":
      return {
        type,
        item: item(),
        offer: dec.hash(field(f, "offer", p), `${p}.offer`),
        payment: dec.txid(field(f, "payment", p), `${p}.payment`),
      };
    case "ExpireEscrow":
      return { type, item: item(), offer: dec.hash(field(f, "offer", p), `${p}.offer`) };
    case "ReportStolen":
    case "Recover":
    case "Retire":
      return { type, item: item() };
    default:
      throw malformed(path, "a known event kind");
  }
}

function decodeRole(v, path) {
  const [type, value] = variant(v, path);
  if (type === "Seller" || type === "Treasury") {
    if (value !== undefined) throw malformed(path, "a payout role");
    return { type };
  }
  if (type === "Operator") return { type, operator: dec.hash(value, `${path}.Operator`) };
  throw malformed(path, "a payout role");
}

function decodeInvoice(v, path) {
  return {
    offer: dec.hash(field(v, "offer", path), `${path}.offer`),
    price_sats: dec.u64(field(v, "price_sats", path), `${path}.price_sats`),
    outputs: dec.array(field(v, "outputs", path), `${path}.outputs`, (o, p) => ({
      role: decodeRole(field(o, "role", p), `${p}.role`),
      script_pubkey: dec.script(field(o, "script_pubkey", p), `${p}.script_pubkey`),
      amount_sats: dec.u64(field(o, "amount_sats", p), `${p}.amount_sats`),
    })),
    deadline_height: dec.u32(field(v, "deadline_height", path), `${path}.deadline_height`),
  };
}

/** A signed event `{"body": {...}, "signature": "..."}`. */
export function decodeEvent(v, path = "event") {
  const b = field(v, "body", path);
  const p = `${path}.body`;
  return {
    body: {
      federation: dec.hash(field(b, "federation", p), `${p}.federation`),
      height: dec.u64(field(b, "height", p), `${p}.height`),
      prev: dec.hash(field(b, "prev", p), `${p}.prev`),
      timestamp_ms: dec.u64(field(b, "timestamp_ms", p), `${p}.timestamp_ms`),
      nonce: dec.u64(field(b, "nonce", p), `${p}.nonce`),
      author: dec.key(field(b, "author", p), `${p}.author`),
      kind: decodeKind(field(b, "kind", p), `${p}.kind`),
    },
    signature: dec.sig(field(v, "signature", path), `${path}.signature`),
  };
}

function decodeInclusion(v, path) {
  return {
    index: dec.u32(field(v, "index", path), `${path}.index`),
    total: dec.u32(field(v, "total", path), `${path}.total`),
    siblings: dec.array(field(v, "siblings", path), `${path}.siblings`, dec.hash),
  };
}

// `Phase` (certificate.rs): its vote byte. Certificates served before fast certificates have no
// `phase`: they hold commit votes (Rust decodes them the same way).
const PHASES = { Prevote: 0, Commit: 1 };

function decodePhase(v, path) {
  if (v === undefined) return "Commit";
  if (!Object.hasOwn(PHASES, v)) throw malformed(path, `one of ${Object.keys(PHASES).join(", ")}`);
  return v;
}

function decodeCertificate(v, path) {
  return {
    event: dec.hash(field(v, "event", path), `${path}.event`),
    round: dec.u32(field(v, "round", path), `${path}.round`),
    phase: decodePhase(Object.hasOwn(v, "phase") ? v.phase : undefined, `${path}.phase`),
    attestations: dec.array(field(v, "attestations", path), `${path}.attestations`, (a, p) => ({
      operator: dec.hash(field(a, "operator", p), `${p}.operator`),
      path: decodeInclusion(field(a, "path", p), `${p}.path`),
      signature: dec.sig(field(a, "signature", p), `${p}.signature`),
    })),
  };
}

/** A certified event `{"event", "certificate"}`. */
export function decodeCertifiedEvent(v, path = "certified event") {
  return {
    event: decodeEvent(field(v, "event", path), `${path}.event`),
    certificate: decodeCertificate(field(v, "certificate", path), `${path}.certificate`),
  };
}

/** `GET /v1/items/<id>/history`: `{"manufacturer": <certified registration>, "events": [...]}`. */
export function decodeHistory(v) {
  return {
    manufacturer: decodeCertifiedEvent(field(v, "manufacturer", "history"), "history.manufacturer"),
    events: dec.array(field(v, "events", "history"), "history.events", decodeCertifiedEvent),
  };
}

/** `FederationParams` as in `/v1/info`'s `federation` and the federation file. */
export function decodeFederationParams(v, path = "federation") {
  const q = field(v, "quorum", path);
  const fees = field(v, "fees", path);
  return {
    name: dec.str(field(v, "name", path), `${path}.name`),
    quorum: {
      m: dec.u32(field(q, "m", `${path}.quorum`), `${path}.quorum.m`),
      n: dec.u32(field(q, "n", `${path}.quorum`), `${path}.quorum.n`),
    },
    max_faulty: dec.u32(field(v, "max_faulty", path), `${path}.max_faulty`),
    operators: dec.array(field(v, "operators", path), `${path}.operators`, (o, p) => ({
      key: dec.key(field(o, "key", p), `${p}.key`),
      payout: dec.script(field(o, "payout", p), `${p}.payout`),
    })),
    treasury: dec.script(field(v, "treasury", path), `${path}.treasury`),
    fees: {
      operator_fee_bps: dec.u32(field(fees, "operator_fee_bps", `${path}.fees`), `${path}.fees.operator_fee_bps`),
      treasury_fee_bps: dec.u32(field(fees, "treasury_fee_bps", `${path}.fees`), `${path}.fees.treasury_fee_bps`),
      dust_limit_sats: dec.u64(field(fees, "dust_limit_sats", `${path}.fees`), `${path}.fees.dust_limit_sats`),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Canonical encoding: postcard over serde (protocol/src/encoding.rs).
// - u32, u64, usize (lengths) and enum variant indices: varint (unsigned LEB128);
// - String and serialize_bytes (ScriptBuf, Txid): varint length, then the bytes;
// - fixed-size arrays (ids, hashes, keys, signatures): the bytes as they are (bytes.rs);
// - Vec: varint length, then the items; structs: fields in declaration order; Box<T>: T.

class Writer {
  constructor() {
    this.parts = [];
  }
  varint(n) {
    let v = BigInt(n);
    const out = [];
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v > 0n) byte |= 0x80;
      out.push(byte);
    } while (v > 0n);
    this.parts.push(Uint8Array.from(out));
    return this;
  }
  raw(bytes) {
    this.parts.push(bytes);
    return this;
  }
  bytes(bytes) {
    return this.varint(bytes.length).raw(bytes);
  }
  str(s) {
    return this.bytes(utf8.encode(s));
  }
  finish() {
    return concat(...this.parts);
  }
}

function writeKind(w, k) {
  w.varint(KIND_INDEX[k.type]);
  switch (k.type) {
    case "RegisterManufacturer":
      return w.str(k.name);
    case "Mint":
      return w.str(k.serial).str(k.product).raw(k.owner);
    case "Transfer":
      return w.raw(k.item).raw(k.to);
    case "CreateOffer":
      return w.raw(k.item).varint(k.item_height).raw(k.seller).varint(k.price_sats);
    case "AcceptOffer":
      writeEvent(w, k.offer);
      return writeInvoice(w, k.invoice);
    case "Settle":
      // Txid goes through serde's serialize_bytes: a length prefix, then the internal order.
      return w.raw(k.item).raw(k.offer).bytes(k.payment);
    case "ExpireEscrow":
      return w.raw(k.item).raw(k.offer);
    default: // ReportStolen, Recover, Retire
      return w.raw(k.item);
  }
}

const ROLE_INDEX = { Seller: 0, Operator: 1, Treasury: 2 };

function writeInvoice(w, inv) {
  w.raw(inv.offer).varint(inv.price_sats).varint(inv.outputs.length);
  for (const o of inv.outputs) {
    w.varint(ROLE_INDEX[o.role.type]);
    if (o.role.type === "Operator") w.raw(o.role.operator);
    w.bytes(o.script_pubkey).varint(o.amount_sats);
  }
  return w.varint(inv.deadline_height);
}

function writeBody(w, b) {
  w.raw(b.federation).varint(b.height).raw(b.prev).varint(b.timestamp_ms).varint(b.nonce).raw(b.author);
  return writeKind(w, b.kind);
}

function writeEvent(w, e) {
  return writeBody(w, e.body).raw(e.signature);
}

/** Canonical bytes of an event body. */
export function encodeBody(body) {
  return writeBody(new Writer(), body).finish();
}

/** Canonical bytes of a signed event. */
export function encodeEvent(event) {
  return writeEvent(new Writer(), event).finish();
}

function encodeInvoice(inv) {
  return writeInvoice(new Writer(), inv).finish();
}

/** Canonical bytes of `FederationParams`. */
export function encodeFederationParams(p) {
  const w = new Writer().str(p.name).varint(p.quorum.m).varint(p.quorum.n).varint(p.max_faulty);
  w.varint(p.operators.length);
  for (const o of p.operators) w.raw(o.key).bytes(o.payout);
  w.bytes(p.treasury);
  return w.varint(p.fees.operator_fee_bps).varint(p.fees.treasury_fee_bps).varint(p.fees.dust_limit_sats).finish();
}

// ---------------------------------------------------------------------------------------------
// Tagged hashes and ids (hash.rs, ids.rs)

/** The tags of protocol/src/hash.rs. */
export const TAGS = {
  EVENT: "hallmark/v1/event",
  MANUFACTURER_ID: "hallmark/v1/manufacturer-id",
  ITEM_ID: "hallmark/v1/item-id",
  OPERATOR_ID: "hallmark/v1/operator-id",
  FEDERATION_ID: "hallmark/v1/federation-id",
  VOTE_LEAF: "hallmark/v1/vote-leaf",
  VOTE_BATCH: "hallmark/v1/vote-batch",
  MERKLE_NODE: "hallmark/v1/merkle-node",
  CHECKPOINT: "hallmark/v1/checkpoint",
};

const tagPrefixes = new Map();

/** `SHA256(SHA256(tag) || SHA256(tag) || parts...)` (BIP-340 style). */
export function taggedHash(tag, ...parts) {
  let prefix = tagPrefixes.get(tag);
  if (!prefix) {
    const t = sha256(utf8.encode(tag));
    prefix = concat(t, t);
    tagPrefixes.set(tag, prefix);
  }
  return sha256(concat(prefix, ...parts));
}

const sha256d = (bytes) => sha256(sha256(bytes));

/** `EventHash`: the tagged hash of the canonical bytes of the body (not the signature). */
export const eventHash = (event) => taggedHash(TAGS.EVENT, encodeBody(event.body));
export const manufacturerId = (key) => taggedHash(TAGS.MANUFACTURER_ID, key);
export const operatorId = (key) => taggedHash(TAGS.OPERATOR_ID, key);
/** `ItemId::new`: manufacturer id, then the serial's UTF-8 bytes (no length prefix). */
export const itemId = (manufacturer, serial) => taggedHash(TAGS.ITEM_ID, manufacturer, utf8.encode(serial));

// ---------------------------------------------------------------------------------------------
// Signatures (keys.rs): ECDSA over a 32-byte digest, compact 64-byte, low-S only, as
// libsecp256k1 verifies. Operators serve the same certificates, so results are memoized.

const verified = new Map();
const MAX_MEMO = 8192;

/** Whether `sig` is `key`'s signature of `digest`. */
export function verifySignature(key, digest, sig) {
  const id = toHex(key) + toHex(digest) + toHex(sig);
  let ok = verified.get(id);
  if (ok === undefined) {
    ok = secp.verify(sig, digest, key, { prehash: false, lowS: true, format: "compact" });
    if (verified.size >= MAX_MEMO) verified.clear();
    verified.set(id, ok);
  }
  return ok;
}

// ---------------------------------------------------------------------------------------------
// The federation (federation.rs)

const MAX_OPERATORS = 64;
const MAX_FEDERATION_NAME = 64;

/**
 * Validates the parameters as `Federation::new` does and computes the federation id (the tagged
 * hash of their canonical bytes) and the operators' ids.
 */
export function federationFromParams(params) {
  const bad = (msg) => fail("federation", "bad_federation", msg);
  const { m, n } = params.quorum;
  if (n === 0 || n > MAX_OPERATORS) throw bad(`a federation needs 1..=${MAX_OPERATORS} operators, not ${n}`);
  if (m === 0 || m > n) throw bad(`threshold ${m} out of range for ${n} operators`);
  if (2 * m <= n) throw bad(`${m}-of-${n}: two quorums need not share any operator (need 2m > n)`);
  const nameLen = utf8.encode(params.name).length;
  if (nameLen === 0 || nameLen > MAX_FEDERATION_NAME) {
    throw bad(`federation name must be 1..=${MAX_FEDERATION_NAME} bytes`);
  }
  if (params.operators.length !== n) throw bad(`quorum says ${n} operators but ${params.operators.length} are listed`);
  const tolerated = Math.min(2 * m - n - 1, n - m);
  if (params.max_faulty > tolerated) {
    throw bad(`${m}-of-${n} tolerates ${tolerated} faulty operators, not ${params.max_faulty}`);
  }
  const operatorIds = params.operators.map((o) => operatorId(o.key));
  if (new Set(operatorIds.map(toHex)).size !== n) throw bad("an operator key is listed twice");
  if (params.fees.operator_fee_bps + params.fees.treasury_fee_bps >= 10_000) {
    throw bad("operator and treasury fees must total below 100%");
  }
  const id = taggedHash(TAGS.FEDERATION_ID, encodeFederationParams(params));
  return { params, id, idHex: toHex(id), operatorIds, m, n };
}

function operatorIndex(federation, id) {
  const i = federation.operatorIds.findIndex((o) => equal(o, id));
  return i < 0 ? undefined : i;
}

// ---------------------------------------------------------------------------------------------
// Merkle paths (merkle.rs): interior node = tagged(MERKLE_NODE, left || right); an odd last
// node is promoted unchanged (rs_merkle's rule).

export const MAX_LEAVES = 1 << 24;

/** The steps from leaf `index` of a `total`-leaf tree to the root, or null if out of range. */
export function pathShape(index, total) {
  if (total === 0 || index >= total || total > MAX_LEAVES) return null;
  const steps = [];
  let [i, count] = [index, total];
  while (count > 1) {
    steps.push(i % 2 === 1 ? "left" : i + 1 < count ? "right" : "promote");
    i = Math.floor(i / 2);
    count = Math.ceil(count / 2);
  }
  return steps;
}

/**
 * `InclusionProof::canonical`'s tree size: the smallest with the same path for the leaf (trees
 * of different sizes can share one, e.g. leaf 2 of 5 and of 7 leaves).
 */
export function canonicalTotal(index, total) {
  const shape = pathShape(index, total);
  if (!shape) return total;
  const levels = shape.length;
  const low = levels === 0 ? 1 : 2 ** (levels - 1) + 1;
  const same = (a, b) => a !== null && a.length === b.length && a.every((x, k) => x === b[k]);
  for (let t = Math.max(low, index + 1); t < total; t++) {
    if (same(pathShape(index, t), shape)) return t;
  }
  return total;
}

/** `InclusionProof::root`: the root `proof` leads to from `leaf`; rejects malformed proofs. */
export function inclusionRoot(proof, leaf) {
  const shape = pathShape(proof.index, proof.total);
  if (!shape) {
    throw fail("format", "bad_position", `leaf ${proof.index} is not inside a tree of ${proof.total} leaves`);
  }
  const needed = shape.filter((s) => s !== "promote").length;
  if (needed !== proof.siblings.length) {
    throw fail(
      "format",
      "wrong_sibling_count",
      `proof has ${proof.siblings.length} sibling hashes, the path needs ${needed}`,
    );
  }
  let node = leaf;
  let k = 0;
  for (const step of shape) {
    if (step === "left") node = taggedHash(TAGS.MERKLE_NODE, proof.siblings[k++], node);
    else if (step === "right") node = taggedHash(TAGS.MERKLE_NODE, node, proof.siblings[k++]);
  }
  return node;
}

// ---------------------------------------------------------------------------------------------
// Quorum certificates (certificate.rs)

/** The Merkle leaf of a vote: event hash, round (u32 big-endian), phase byte (commit unless told). */
export function voteLeaf(event, round, phase = "Commit") {
  const r = new Uint8Array(4);
  new DataView(r.buffer).setUint32(0, round, false);
  return taggedHash(TAGS.VOTE_LEAF, event, r, Uint8Array.of(PHASES[phase]));
}

/** What an operator signs for a batch of votes with this root. */
export const batchDigest = (federationId, root) => taggedHash(TAGS.VOTE_BATCH, federationId, root);

const certErr = (code, message) => fail("certificates", code, message);

/**
 * `Certificate::verify`: every attestation a vote of the certificate's phase from a distinct
 * member with a valid path and signature (any bad one rejects the whole certificate), and at
 * least `m` of them (commits) or all `n` (a fast certificate: round-0 prevotes).
 */
export function verifyCertificate(federation, cert) {
  const phase = cert.phase ?? "Commit";
  if (phase === "Prevote" && cert.round !== 0) {
    throw certErr("not_fast", "only round-0 prevotes make a (fast) certificate");
  }
  const need = phase === "Prevote" ? federation.n : federation.m;
  const leaf = voteLeaf(cert.event, cert.round, phase);
  const seen = new Set();
  for (const a of cert.attestations) {
    const op = toHex(a.operator);
    const index = operatorIndex(federation, a.operator);
    if (index === undefined) throw certErr("not_a_member", `operator ${op} is not a member of the federation`);
    if (seen.has(index)) throw certErr("duplicate_signer", `operator ${op} signed more than once`);
    seen.add(index);
    let root;
    try {
      root = inclusionRoot(a.path, leaf);
    } catch (e) {
      throw certErr("bad_batch_path", `bad batch path from operator ${op}: ${e.message}`);
    }
    // The batch's size is not signed: only the canonical path is accepted (as operators do).
    const canonical = canonicalTotal(a.path.index, a.path.total);
    if (canonical !== a.path.total) {
      throw certErr(
        "bad_batch_path",
        `bad batch path from operator ${op}: leaf ${a.path.index} has the same path in a tree of ${canonical} leaves, not ${a.path.total}`,
      );
    }
    const key = federation.params.operators[index].key;
    if (!verifySignature(key, batchDigest(federation.id, root), a.signature)) {
      throw certErr("bad_operator_signature", `bad signature from operator ${op}`);
    }
  }
  if (cert.attestations.length < need) {
    throw certErr("too_few_signatures", `${cert.attestations.length} signatures, the quorum needs ${need}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Events (event.rs)

const MAX_NAME_LEN = 128;
const MAX_SERIAL_LEN = 128;
const MAX_PRODUCT_LEN = 256;
const GENESIS = new Set(["RegisterManufacturer", "Mint", "CreateOffer"]);

// Rust's `char::is_control` is Unicode category Cc.
function checkText(name, s, max) {
  const len = utf8.encode(s).length;
  if (len === 0 || len > max || /\p{Cc}/u.test(s)) {
    throw fail("state", "bad_field", `${name} must be 1..=${max} bytes without control characters`);
  }
}

/**
 * `Event::check`: the federation, genesis rules, field limits and the author's signature.
 * Returns the event's hash.
 */
export function checkEvent(event, federationId) {
  const b = event.body;
  const kind = KIND_NAME[b.kind.type];
  if (!equal(b.federation, federationId)) {
    throw fail(
      "federation",
      "wrong_federation",
      `event is for federation ${toHex(b.federation)}, not ${toHex(federationId)}`,
    );
  }
  const genesis = GENESIS.has(b.kind.type);
  if (genesis && (b.height !== 0n || !equal(b.prev, ZERO32))) {
    throw fail("chain", "bad_height", `${kind} must be at height 0 with no previous event`);
  }
  if (!genesis && b.height === 0n) throw fail("chain", "bad_height", `${kind} cannot start a chain`);
  const k = b.kind;
  if (k.type === "RegisterManufacturer") checkText("name", k.name, MAX_NAME_LEN);
  if (k.type === "Mint") {
    checkText("serial", k.serial, MAX_SERIAL_LEN);
    checkText("product", k.product, MAX_PRODUCT_LEN);
  }
  if (k.type === "CreateOffer" && k.price_sats === 0n) throw fail("state", "bad_field", "offer price must be positive");
  if (k.type === "AcceptOffer") {
    if (k.offer.body.kind.type !== "CreateOffer") {
      throw fail("state", "not_an_offer", "accept_offer must embed a create_offer event");
    }
    checkEvent(k.offer, federationId);
  }
  const hash = eventHash(event);
  if (!verifySignature(b.author, hash, event.signature)) {
    throw fail("signatures", "bad_signature", "author signature does not verify");
  }
  return hash;
}

/** The chain an event belongs to (`Event::subject`): `{type, id}`. */
function subject(event, hash) {
  const k = event.body.kind;
  switch (k.type) {
    case "RegisterManufacturer":
      return { type: "manufacturer", id: manufacturerId(event.body.author) };
    case "Mint":
      return { type: "item", id: itemId(manufacturerId(event.body.author), k.serial) };
    case "CreateOffer":
      return { type: "offer", id: hash };
    case "AcceptOffer":
      return k.offer.body.kind.type === "CreateOffer"
        ? { type: "item", id: k.offer.body.kind.item }
        : { type: "offer", id: hash };
    default:
      return { type: "item", id: k.item };
  }
}

/** `CertifiedEvent::verify`: the event's own checks, then its certificate. Returns its hash. */
export function verifyCertifiedEvent(federation, ce) {
  const hash = checkEvent(ce.event, federation.id);
  if (!equal(ce.certificate.event, hash)) {
    throw fail("certificates", "certificate_for_other_event", "certificate is for another event");
  }
  try {
    verifyCertificate(federation, ce.certificate);
  } catch (e) {
    throw e instanceof HallmarkError ? e.at("certificate") : e;
  }
  return hash;
}

// ---------------------------------------------------------------------------------------------
// Invoices (invoice.rs)

const MAX_PAYOUT_SCRIPT_LEN = 64;

/** `compute_invoice`: the invoice of a sale from the federation's fee schedule. */
export function computeInvoice(federation, offer, priceSats, sellerPayout, deadlineHeight) {
  if (sellerPayout.length === 0 || sellerPayout.length > MAX_PAYOUT_SCRIPT_LEN) {
    throw fail("state", "invoice_invalid", `invoice: seller payout script must be 1..=${MAX_PAYOUT_SCRIPT_LEN} bytes`);
  }
  const p = federation.params;
  const n = BigInt(p.operators.length);
  const pct = (bps) => (priceSats * BigInt(bps)) / 10_000n;
  const operatorTotal = pct(p.fees.operator_fee_bps);
  const perOperator = operatorTotal / n;
  const treasury = pct(p.fees.treasury_fee_bps) + (operatorTotal - perOperator * n);
  const seller = priceSats - perOperator * n - treasury;
  const outputs = [{ role: { type: "Seller" }, script_pubkey: sellerPayout, amount_sats: seller }];
  if (perOperator > 0n) {
    p.operators.forEach((op, i) => {
      outputs.push({
        role: { type: "Operator", operator: federation.operatorIds[i] },
        script_pubkey: op.payout,
        amount_sats: perOperator,
      });
    });
  }
  if (treasury > 0n) outputs.push({ role: { type: "Treasury" }, script_pubkey: p.treasury, amount_sats: treasury });
  if (outputs.some((o) => o.amount_sats < p.fees.dust_limit_sats)) {
    throw fail(
      "state",
      "invoice_invalid",
      `invoice: price ${priceSats} sats leaves an invoice output below the dust limit of ${p.fees.dust_limit_sats} sats`,
    );
  }
  return { offer, price_sats: priceSats, outputs, deadline_height: deadlineHeight };
}

// ---------------------------------------------------------------------------------------------
// The item state machine (state.rs, docs/state-machine.md)

/** Status names as in the docs and the API. */
export const STATUS = {
  Active: "ACTIVE_HELD",
  LockedInEscrow: "LOCKED_IN_ESCROW",
  Stolen: "STOLEN",
  Retired: "RETIRED",
};

const stateErr = (code, message) => fail("state", code, message);
const chainErr = (code, message) => fail("chain", code, message);

function mint(event, item, hash) {
  const b = event.body;
  const k = b.kind;
  if (k.type === "Mint" && b.height === 0n && equal(b.prev, ZERO32)) {
    return {
      id: item,
      manufacturer: manufacturerId(b.author),
      serial: k.serial,
      product: k.product,
      owner: k.owner,
      status: { type: "Active" },
      height: 0n,
      head: hash,
    };
  }
  if (k.type === "Mint") throw chainErr("wrong_height", `expected height 0, got ${b.height}`);
  throw stateErr("not_minted", `item ${toHex(item)} has not been minted`);
}

// `accept`: the embedded offer fits the item now, and the invoice is the fee schedule's.
function accept(federation, state, height, offer, invoice) {
  const offerId = eventHash(offer);
  const o = offer.body.kind;
  if (o.type !== "CreateOffer") throw stateErr("wrong_chain", `${KIND_NAME[o.type]} does not belong to this chain`);
  const mismatch = (why) => stateErr("offer_mismatch", `offer does not match: ${why}`);
  if (!equal(o.item, state.id)) throw mismatch("offer is for another item");
  if (o.item_height !== height) throw mismatch("offer is for another item height");
  if (!equal(o.seller, state.owner)) throw mismatch("seller is not the current owner");
  if (equal(offer.body.author, state.owner)) throw mismatch("buyer is the seller");
  const first = invoice.outputs[0];
  const invoiceMismatch = () =>
    stateErr("invoice_mismatch", "invoice is not the one the federation's fee schedule gives");
  if (!first || first.role.type !== "Seller") throw invoiceMismatch();
  const expected = computeInvoice(federation, offerId, o.price_sats, first.script_pubkey, invoice.deadline_height);
  // Equal values have equal canonical bytes (the encoding is injective).
  if (!equal(encodeInvoice(expected), encodeInvoice(invoice))) throw invoiceMismatch();
  return { offer: offerId, buyer: offer.body.author, seller: o.seller, invoice: expected };
}

function checkParty(escrow, offer, author, kind) {
  if (!equal(offer, escrow.offer)) {
    throw stateErr("wrong_offer", `escrow holds offer ${toHex(escrow.offer)}, not ${toHex(offer)}`);
  }
  if (!equal(author, escrow.buyer) && !equal(author, escrow.seller)) {
    throw stateErr("not_authorized", `${toHex(author)} may not make ${kind} on this item`);
  }
}

/**
 * `apply_item_event`: applies one (checked) event to an item; `state` is null before the mint.
 * Returns the new state and leaves `state` untouched.
 */
export function applyItemEvent(federation, state, event, hash) {
  const b = event.body;
  const kind = KIND_NAME[b.kind.type];
  const subj = subject(event, hash);
  if (subj.type !== "item") throw stateErr("wrong_chain", `${kind} does not belong to this chain`);
  const item = subj.id;
  if (!state) return mint(event, item, hash);
  if (b.kind.type === "Mint") throw stateErr("already_minted", `item ${toHex(item)} is already minted`);
  if (!equal(item, state.id)) throw stateErr("wrong_item", `event is for item ${toHex(item)}, not ${toHex(state.id)}`);
  if (b.height !== state.height + 1n) {
    throw chainErr("wrong_height", `expected height ${state.height + 1n}, got ${b.height}`);
  }
  if (!equal(b.prev, state.head)) {
    throw chainErr("wrong_prev", `previous hash ${toHex(b.prev)} is not the current head ${toHex(state.head)}`);
  }
  const author = b.author;
  const status = state.status;
  const invalid = () => stateErr("invalid_in_state", `${kind} is not allowed while the item is ${STATUS[status.type]}`);
  const requireOwner = () => {
    if (!equal(author, state.owner)) {
      throw stateErr("not_authorized", `${toHex(author)} may not make ${kind} on this item`);
    }
  };
  const next = { ...state, height: b.height, head: hash };
  const k = b.kind;
  switch (`${k.type}/${status.type}`) {
    case "Transfer/Active":
      requireOwner();
      if (equal(k.to, state.owner)) throw stateErr("transfer_to_self", "transfer to the current owner");
      next.owner = k.to;
      break;
    case "AcceptOffer/Active":
      requireOwner();
      next.status = { type: "LockedInEscrow", escrow: accept(federation, state, b.height, k.offer, k.invoice) };
      break;
    case "Settle/LockedInEscrow":
      checkParty(status.escrow, k.offer, author, kind);
      next.owner = status.escrow.buyer;
      next.status = { type: "Active" };
      break;
    case "ExpireEscrow/LockedInEscrow":
      checkParty(status.escrow, k.offer, author, kind);
      next.owner = status.escrow.seller;
      next.status = { type: "Active" };
      break;
    case "ReportStolen/Active":
      requireOwner();
      next.status = { type: "Stolen" };
      break;
    case "Recover/Stolen":
      requireOwner();
      next.status = { type: "Active" };
      break;
    case "Retire/Active":
      requireOwner();
      next.status = { type: "Retired" };
      break;
    default:
      throw invalid();
  }
  return next;
}

// ---------------------------------------------------------------------------------------------
// Whole histories (verify.rs)

/** `verify_manufacturer`: the certified registration, as `{id, name, key, registration}`. */
export function verifyManufacturer(federation, registration) {
  let hash;
  try {
    hash = verifyCertifiedEvent(federation, registration);
  } catch (e) {
    // Whatever fails in the registration fails the manufacturer check.
    throw e instanceof HallmarkError
      ? new HallmarkError("manufacturer", e.code, `manufacturer registration: ${e.message}`)
      : e;
  }
  const b = registration.event.body;
  if (b.kind.type !== "RegisterManufacturer") {
    throw fail("manufacturer", "not_a_registration", "manufacturer registration is not a register_manufacturer event");
  }
  return { id: manufacturerId(b.author), name: b.kind.name, key: b.author, registration: hash };
}

/**
 * `verify_item_history`: every event's checks and certificate, the chain from the mint, every
 * transition, and the mint's author being the certified registered manufacturer.
 * Returns `{state, manufacturer, events: [{event, certificate, hash, after}]}` (`after`: the
 * item's state after that event); throws HallmarkError.
 */
export function verifyItemHistory(federation, item, history) {
  const manufacturer = verifyManufacturer(federation, history.manufacturer);
  let state = null;
  const events = [];
  history.events.forEach((ce, index) => {
    let hash;
    try {
      hash = verifyCertifiedEvent(federation, ce);
    } catch (e) {
      throw e instanceof HallmarkError ? e.at(`event ${index}`) : e;
    }
    const subj = subject(ce.event, hash);
    if (subj.type !== "item" || !equal(subj.id, item)) {
      throw fail("chain", "wrong_item", `event ${index} belongs to another item`);
    }
    let next;
    try {
      next = applyItemEvent(federation, state, ce.event, hash);
    } catch (e) {
      throw e instanceof HallmarkError ? e.at(`event ${index}`) : e;
    }
    if (!equal(next.manufacturer, manufacturer.id)) {
      throw fail(
        "manufacturer",
        "manufacturer_mismatch",
        `item minted by ${toHex(next.manufacturer)}, not by registered manufacturer ${toHex(manufacturer.id)}`,
      );
    }
    state = next;
    events.push({ ...ce, hash, after: next });
  });
  if (!state) throw fail("chain", "empty_history", "empty history: the item was never minted");
  return { state, manufacturer, events };
}

// ---------------------------------------------------------------------------------------------
// What a person reads: the verified state and timeline in plain values (hex strings, numbers).

const short = (bytes) => toHex(bytes).slice(0, 10);

/** Satoshis as "2,000,000 sats (0.02 BTC)". */
export function formatSats(sats) {
  const grouped = sats.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const btc = `${sats / 100_000_000n}.${(sats % 100_000_000n).toString().padStart(8, "0")}`.replace(/\.?0+$/, "");
  return `${grouped} sats (${btc} BTC)`;
}

function summary(event, owner) {
  const k = event.body.kind;
  switch (k.type) {
    case "Mint":
      return `Minted serial ${k.serial} (${k.product}) to ${short(k.owner)}…`;
    case "Transfer":
      return `Transferred to ${short(k.to)}…`;
    case "AcceptOffer": {
      const o = k.offer.body.kind;
      return `Sale accepted: locked in escrow for ${short(k.offer.body.author)}… at ${formatSats(o.price_sats)}, to be paid by block ${k.invoice.deadline_height}`;
    }
    case "Settle":
      return `Sale settled by Bitcoin payment ${short(reversed(k.payment))}…: now owned by ${short(owner)}…`;
    case "ExpireEscrow":
      return `Escrow expired unpaid: back to ${short(owner)}…`;
    case "ReportStolen":
      return "Reported stolen by its owner";
    case "Recover":
      return "Reported recovered by its owner";
    case "Retire":
      return "Retired for good by its owner";
    default:
      return KIND_NAME[k.type];
  }
}

/** The verified history as display values: state, manufacturer and a timeline. */
export function describe(verifiedHistory) {
  const { state, manufacturer, events } = verifiedHistory;
  const timeline = events.map(({ event, hash, after }) => ({
    kind: KIND_NAME[event.body.kind.type],
    height: Number(event.body.height),
    author: toHex(event.body.author),
    timestampMs: event.body.timestamp_ms,
    hash: toHex(hash),
    summary: summary(event, after.owner),
  }));
  const escrow = state.status.escrow;
  return {
    item: toHex(state.id),
    serial: state.serial,
    product: state.product,
    manufacturer: { id: toHex(manufacturer.id), name: manufacturer.name, key: toHex(manufacturer.key) },
    owner: toHex(state.owner),
    status: STATUS[state.status.type],
    escrow: escrow && {
      offer: toHex(escrow.offer),
      buyer: toHex(escrow.buyer),
      seller: toHex(escrow.seller),
      priceSats: escrow.invoice.price_sats,
      deadlineHeight: escrow.invoice.deadline_height,
    },
    height: Number(state.height),
    head: toHex(state.head),
    timeline,
  };
}

// ---------------------------------------------------------------------------------------------
// Checkpoints and Bitcoin anchors (checkpoint.rs): an event's inclusion in a certified
// checkpoint, and the checkpoint's OP_RETURN in a transaction of a block with valid proof of work.

const ANCHOR_PAYLOAD_LEN = 36;
const ANCHOR_MAGIC = utf8.encode("HMK");
const ANCHOR_VERSION = 1;

const anchorErr = (code, message) => fail("anchor", code, message);

function decodeAnchored(v, path) {
  const cc = field(v, "checkpoint", path);
  const cp = field(cc, "checkpoint", `${path}.checkpoint`);
  const q = `${path}.checkpoint.checkpoint`;
  const anchor = field(v, "anchor", path);
  const a = `${path}.anchor`;
  const branch = field(anchor, "branch", a);
  return {
    checkpoint: {
      checkpoint: {
        federation: dec.hash(field(cp, "federation", q), `${q}.federation`),
        number: dec.u64(field(cp, "number", q), `${q}.number`),
        prev: dec.hash(field(cp, "prev", q), `${q}.prev`),
        root: dec.hash(field(cp, "root", q), `${q}.root`),
        count: dec.u32(field(cp, "count", q), `${q}.count`),
      },
      certificate: decodeCertificate(field(cc, "certificate", `${path}.checkpoint`), `${path}.checkpoint.certificate`),
    },
    inclusion: decodeInclusion(field(v, "inclusion", path), `${path}.inclusion`),
    anchor: {
      tx: dec.script(field(anchor, "tx", a), `${a}.tx`),
      header: dec.script(field(anchor, "header", a), `${a}.header`),
      height: dec.u32(field(anchor, "height", a), `${a}.height`),
      branch: {
        index: dec.u32(field(branch, "index", `${a}.branch`), `${a}.branch.index`),
        // `Vec<[u8; 32]>` without a hex adapter: JSON arrays of 32 numbers, internal byte order.
        siblings: dec.array(field(branch, "siblings", `${a}.branch`), `${a}.branch.siblings`, (s, p) => {
          if (!Array.isArray(s) || s.length !== 32 || s.some((x) => typeof x !== "bigint" || x < 0n || x > 255n)) {
            throw malformed(p, "32 byte values");
          }
          return Uint8Array.from(s, Number);
        }),
      },
    },
  };
}

/** `GET /v1/items/<id>/proof`: the proof bundle; `anchor_facts` (a decoded convenience) is ignored. */
export function decodeProofBundle(v) {
  return {
    item: dec.hash(field(v, "item", "proof"), "proof.item"),
    events: dec.array(field(v, "events", "proof"), "proof.events", (e, p) => {
      const anchored = field(e, "anchored", p);
      return {
        event: decodeCertifiedEvent(field(e, "event", p), `${p}.event`),
        anchored: anchored === null ? null : decodeAnchored(anchored, `${p}.anchored`),
      };
    }),
  };
}

/** `Checkpoint::hash`: the tagged hash of its canonical bytes. */
export function checkpointHash(c) {
  const bytes = new Writer().raw(c.federation).varint(c.number).raw(c.prev).raw(c.root).varint(c.count).finish();
  return taggedHash(TAGS.CHECKPOINT, bytes);
}

// A strict reader of Bitcoin's consensus encoding, as rust-bitcoin's `deserialize`: canonical
// CompactSize integers, nothing left over.
class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.at = 0;
  }
  take(n) {
    if (this.at + n > this.bytes.length) throw new Error("truncated");
    const s = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return s;
  }
  u8() {
    return this.take(1)[0];
  }
  le(n) {
    return this.take(n).reduceRight((acc, b) => (acc << 8n) | BigInt(b), 0n);
  }
  compactSize() {
    const first = this.u8();
    if (first < 0xfd) return first;
    const [width, min] = { 0xfd: [2, 0xfdn], 0xfe: [4, 0x10000n], 0xff: [8, 0x100000000n] }[first];
    const v = this.le(width);
    if (v < min) throw new Error("non-minimal CompactSize");
    if (v > BigInt(this.bytes.length)) throw new Error("length beyond the data");
    return Number(v);
  }
  varBytes() {
    return this.take(this.compactSize());
  }
  end() {
    if (this.at !== this.bytes.length) throw new Error("trailing bytes");
  }
}

/** A transaction's txid (internal order) and outputs' scripts, from its consensus bytes. */
export function parseTransaction(bytes) {
  const r = new Reader(bytes);
  r.take(4); // version
  let start = r.at;
  let count = r.compactSize();
  const segwit = count === 0;
  if (segwit) {
    const flag = r.u8();
    if (flag !== 1) throw new Error(`unsupported segwit flag ${flag}`);
    start = r.at;
    count = r.compactSize();
  }
  for (let i = 0; i < count; i++) {
    r.take(36); // previous output
    r.varBytes(); // script_sig
    r.take(4); // sequence
  }
  const inputs = count;
  const outputs = [];
  for (let i = 0, n = r.compactSize(); i < n; i++) {
    const value = r.le(8);
    outputs.push({ value, script: r.varBytes() });
  }
  const end = r.at;
  if (segwit) {
    let witnesses = 0;
    for (let i = 0; i < inputs; i++) {
      const items = r.compactSize();
      for (let j = 0; j < items; j++) r.varBytes();
      if (items > 0) witnesses++;
    }
    if (inputs > 0 && witnesses === 0) throw new Error("witness flag set but no witnesses present");
  }
  const lockTime = r.take(4);
  r.end();
  // The txid commits to the transaction without its witness: version, inputs, outputs, lock time.
  const txid = sha256d(concat(bytes.subarray(0, 4), bytes.subarray(start, end), lockTime));
  return { txid, outputs };
}

/** `anchors_in`: the checkpoint hashes of a transaction's Hallmark OP_RETURN outputs. */
function anchorsIn(outputs) {
  return outputs
    .map((o) => o.script)
    .filter(
      (b) =>
        b.length === 2 + ANCHOR_PAYLOAD_LEN &&
        b[0] === 0x6a && // OP_RETURN
        b[1] === ANCHOR_PAYLOAD_LEN &&
        equal(b.subarray(2, 5), ANCHOR_MAGIC) &&
        b[5] === ANCHOR_VERSION,
    )
    .map((b) => b.subarray(6));
}

/** `Target::from_compact` with rust-bitcoin's U256 wrapping shift. */
function targetFromBits(bits) {
  const exponent = bits >>> 24;
  const [mantissa, shift] =
    exponent <= 3 ? [(bits & 0xffffff) >>> (8 * (3 - exponent)), 0] : [bits & 0xffffff, 8 * (exponent - 3)];
  if (mantissa > 0x7fffff) return 0n; // the mantissa is signed and may not be negative
  return (BigInt(mantissa) << BigInt(shift & 0xff)) & ((1n << 256n) - 1n);
}

/**
 * `Anchor::verify`: the transaction carries the checkpoint in an OP_RETURN, its branch leads to
 * the header's Merkle root, and the header has valid proof of work. Whether that block is in
 * Bitcoin's best chain needs a Bitcoin node: the page reports it as the operator says.
 * Returns `{txid, block, height}` (txid and block hash in Bitcoin's display order).
 */
export function verifyAnchor(anchor, checkpoint) {
  let tx;
  try {
    tx = parseTransaction(anchor.tx);
  } catch (e) {
    throw anchorErr("bad_transaction", `anchor transaction does not decode: ${e.message}`);
  }
  if (!anchorsIn(tx.outputs).some((h) => equal(h, checkpoint))) {
    throw anchorErr("payload_mismatch", "anchor transaction has no OP_RETURN with this checkpoint's hash");
  }
  const header = anchor.header;
  if (header.length !== 80) throw anchorErr("bad_header", "block header does not decode");
  const { index, siblings } = anchor.branch;
  // The index must fit the branch's depth, or one branch would prove many positions.
  const fits = siblings.length >= 32 || index >>> siblings.length === 0;
  let node = tx.txid;
  let i = index;
  for (const s of siblings) {
    node = sha256d(i % 2 === 0 ? concat(node, s) : concat(s, node));
    i = Math.floor(i / 2);
  }
  if (!fits || !equal(node, header.subarray(36, 68))) {
    throw anchorErr("branch_mismatch", "transaction Merkle branch does not lead to the block's Merkle root");
  }
  const blockHash = sha256d(header);
  const bits = new DataView(header.buffer, header.byteOffset + 72, 4).getUint32(0, true);
  const hashValue = BigInt(`0x${toHex(reversed(blockHash))}`);
  if (hashValue > targetFromBits(bits)) throw anchorErr("bad_proof_of_work", "block header fails its proof of work");
  return { txid: toHex(reversed(tx.txid)), block: toHex(reversed(blockHash)), height: anchor.height };
}

/**
 * Checks the anchors of a verified history (the part of `verify_bundle` after the history):
 * for each anchored event, the certified checkpoint of this federation, the event's inclusion
 * under its root (a proof for the checkpoint's size) and the checkpoint's anchor. The bundle's
 * events must be the verified ones. Returns, per verified event, `null` (pending),
 * `{checkpoint, txid, block, height}`, or `{error}`.
 */
export function verifyAnchors(federation, verifiedEvents, bundle) {
  return verifiedEvents.map((ve, index) => {
    const p = bundle.events[index];
    if (!p) return null;
    try {
      if (!equal(eventHash(p.event.event), ve.hash)) {
        throw anchorErr("other_event", "the proof bundle's event is not the verified one");
      }
      if (!p.anchored) return null;
      const { checkpoint: cc, inclusion, anchor } = p.anchored;
      const c = cc.checkpoint;
      if (!equal(c.federation, federation.id)) throw anchorErr("wrong_federation", "checkpoint of another federation");
      const hash = checkpointHash(c);
      if (!equal(cc.certificate.event, hash)) {
        throw anchorErr("certificate_for_other", "certificate is not for this checkpoint");
      }
      try {
        verifyCertificate(federation, cc.certificate);
      } catch (e) {
        throw anchorErr(e.code, `checkpoint certificate: ${e.message}`);
      }
      let root;
      try {
        root = inclusionRoot(inclusion, ve.hash);
      } catch (e) {
        throw anchorErr(e.code, `merkle: ${e.message}`);
      }
      if (!equal(root, c.root)) throw anchorErr("root_mismatch", "merkle: proof leads to a different root");
      if (inclusion.total !== c.count) {
        throw anchorErr(
          "bad_count",
          `inclusion proof is for ${inclusion.total} events, the checkpoint covers ${c.count}`,
        );
      }
      return { checkpoint: Number(c.number), ...verifyAnchor(anchor, hash) };
    } catch (e) {
      if (!(e instanceof HallmarkError)) throw e;
      return { error: `event ${index}: anchor: ${e.message}` };
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The trust root

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * What a person scanned or pasted: a bare item id, a `hallmark:<item>@<federation>` URI or a
 * scan URL `…/scan/?item=<item>&federation=<federation>`. Returns `{item, federation}` (hex;
 * `federation` null when not given); throws on anything else.
 */
export function parseScanInput(text) {
  const s = String(text).trim();
  const lower = s.toLowerCase();
  if (HEX64.test(lower)) return { item: lower, federation: null };
  const uri = /^hallmark:([0-9a-f]{64})(?:@([0-9a-f]{64}))?$/.exec(lower);
  if (uri) return { item: uri[1], federation: uri[2] ?? null };
  let url;
  try {
    url = new URL(s);
  } catch {
    throw new Error("not an item id, a hallmark: URI or a scan link");
  }
  const item = url.searchParams.get("item")?.toLowerCase();
  const federation = url.searchParams.get("federation")?.toLowerCase() ?? null;
  if (!item || !HEX64.test(item)) throw new Error("the link names no item (item=<64 hex digits>)");
  if (federation !== null && !HEX64.test(federation)) throw new Error("the link's federation id is not 64 hex digits");
  return { item, federation };
}

const DEFAULT_TIMEOUT_MS = 5000;

// GET `url` within `timeoutMs`, body included: `{status, text}`, or throws.
async function get(fetchFn, url, timeoutMs) {
  const ctl = new AbortController();
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => {
      ctl.abort();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  const answer = (async () => {
    const res = await fetchFn(url, { signal: ctl.signal });
    return { status: res.status, text: await res.text() };
  })();
  try {
    return await Promise.race([answer, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

const trimSlash = (url) => url.replace(/\/+$/, "");

/**
 * The trust root: asks the operator at `url` for `/v1/info`, recomputes the federation id from
 * the parameters it serves and requires it to equal `pinnedId` (hex, from the scanned link) when
 * given, and the id the operator reports. Returns the federation (as `federationFromParams`)
 * with `pinned`, `source`, `members` (`[{index, url}]`, the operators' public APIs as listed by
 * this operator, checked against the parameters' keys), `notes` (members left out and why),
 * `bitcoinTip` (this operator's view, or null) and `operatorIndex`. Throws HallmarkError.
 */
export async function loadFederation(
  url,
  pinnedId,
  { fetch: fetchFn = globalThis.fetch, timeoutMs = DEFAULT_TIMEOUT_MS } = {},
) {
  const source = trimSlash(url);
  let info;
  try {
    const r = await get(fetchFn, `${source}/v1/info`, timeoutMs);
    if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
    info = parseJson(r.text);
  } catch (e) {
    throw fail("federation", "unreachable", `${source}/v1/info: ${e.message}`);
  }
  const federation = federationFromParams(decodeFederationParams(field(info, "federation", "info"), "info.federation"));
  const pinned = pinnedId ? pinnedId.toLowerCase() : null;
  if (pinned && federation.idHex !== pinned) {
    throw fail(
      "federation",
      "federation_mismatch",
      `the operator at ${source} serves federation parameters that hash to ${federation.idHex}, not to the pinned federation id ${pinned}`,
    );
  }
  if (info.federation_id !== federation.idHex) {
    throw fail(
      "federation",
      "federation_mismatch",
      `the operator at ${source} reports federation id ${info.federation_id}, but its parameters hash to ${federation.idHex}`,
    );
  }
  const operatorIndex = dec.u32(field(info, "operator_index", "info"), "info.operator_index");
  const notes = [];
  let members;
  if (Object.hasOwn(info, "members")) {
    members = [];
    for (const [i, m] of dec.array(info.members, "info.members", (x) => x).entries()) {
      const index = typeof m?.index === "bigint" ? Number(m.index) : -1;
      const entry = federation.params.operators[index];
      if (!entry || m.key !== toHex(entry.key) || m.operator_id !== toHex(federation.operatorIds[index])) {
        notes.push(`member ${i} of the list is not an operator of this federation: left out`);
      } else if (typeof m.http !== "string" || !/^https?:\/\//.test(m.http)) {
        notes.push(`operator ${index} lists no usable API URL: left out`);
      } else if (members.some((x) => x.index === index)) {
        notes.push(`operator ${index} is listed twice: the first entry is used`);
      } else {
        members.push({ index, url: trimSlash(m.http) });
      }
    }
  } else {
    // An operator without the member list: only itself can be asked.
    notes.push("the operator lists no other operators: only it is asked");
    members = [{ index: operatorIndex, url: source }];
  }
  const tip = info.bitcoin_tip ?? null;
  return {
    ...federation,
    pinned: pinned !== null,
    source,
    members,
    notes,
    bitcoinTip: tip === null ? null : dec.u32(tip, "info.bitcoin_tip"),
    operatorIndex,
  };
}

// ---------------------------------------------------------------------------------------------
// Scanning (node/src/verifier.rs)

/** The named checks of a scan report, in display order. */
export const CHECKS = {
  federation: "federation parameters match the pinned federation id",
  certificates: "every certificate has >= m valid operator signatures",
  signatures: "event signatures valid",
  chain: "chain heights and links",
  state: "state machine",
  manufacturer: "manufacturer registration certified",
  agreement: "operators agree",
  format: "answers are well-formed",
  anchor: "Bitcoin anchor verified",
};

const HISTORY_CHECKS = ["certificates", "signatures", "chain", "state", "manufacturer"];

function startsWith(long, short) {
  return short.length <= long.length && short.every((h, i) => equal(h, long[i]));
}

async function askOperator(fetchFn, op, item, timeoutMs, federation) {
  const base = { index: op.index, url: trimSlash(op.url), agrees: false };
  let r;
  try {
    r = await get(fetchFn, `${base.url}/v1/items/${item}/history`, timeoutMs);
  } catch (e) {
    return { report: { ...base, outcome: "unreachable", error: e.message } };
  }
  if (r.status === 404) {
    // Only the API's own "nothing stored under that id" means not found; any other 404 is a
    // server that is not (this version of) a Hallmark operator.
    let code;
    try {
      code = parseJson(r.text)?.error?.code;
    } catch {
      code = undefined;
    }
    if (code === "not_found") return { report: { ...base, outcome: "not_found" } };
    return { report: { ...base, outcome: "unreachable", error: `HTTP 404 (${code ?? "not an operator API"})` } };
  }
  if (r.status < 200 || r.status > 299) {
    return { report: { ...base, outcome: "unreachable", error: `HTTP ${r.status}` } };
  }
  let json;
  try {
    json = parseJson(r.text);
  } catch (e) {
    return { report: { ...base, outcome: "unreachable", error: `bad JSON: ${e.message}` } };
  }
  try {
    const v = verifyItemHistory(federation, hexToBytes(item), decodeHistory(json));
    return {
      report: { ...base, outcome: "valid", height: Number(v.state.height), head: toHex(v.state.head) },
      verified: v,
      heads: v.events.map((e) => e.certificate.event),
    };
  } catch (e) {
    if (!(e instanceof HallmarkError)) throw e;
    return { report: { ...base, outcome: "invalid", reason: e.message, check: e.check } };
  }
}

function federationCheck(federation) {
  const what = `${federation.params.name}, ${federation.m}-of-${federation.n}, federation id ${federation.idHex}`;
  return federation.pinned
    ? { id: "federation", label: CHECKS.federation, ok: true, detail: what }
    : {
        id: "federation",
        label: "trust root not pinned",
        ok: false,
        detail: `the link names no federation id: the parameters served by ${federation.source ?? "the operator"} are taken on trust (${what})`,
      };
}

function historyChecks(federation, answers, best) {
  const label = (id) =>
    id === "certificates"
      ? `every certificate has >= ${federation.m} valid operator signatures (${federation.m}-of-${federation.n})`
      : CHECKS[id];
  if (best) {
    return HISTORY_CHECKS.map((id) => ({
      id,
      label: label(id),
      ok: true,
      detail: `${best.heads.length} events and the registration`,
    }));
  }
  const invalid = answers.filter((a) => a.report.outcome === "invalid").map((a) => a.report);
  if (invalid.length === 0) return [];
  const ids = [...HISTORY_CHECKS, ...(invalid.some((r) => r.check === "format") ? ["format"] : [])];
  return ids.map((id) => {
    const failed = invalid.filter((r) => r.check === id);
    if (failed.length === 0) {
      return { id, label: label(id), ok: false, detail: "not established: no operator served a history that verifies" };
    }
    // Operators that serve the same forgery fail the same way: one line per distinct reason.
    const byReason = new Map();
    for (const r of failed) byReason.set(r.reason, [...(byReason.get(r.reason) ?? []), r.index]);
    const detail = [...byReason]
      .map(([reason, ops]) => `operator${ops.length > 1 ? "s" : ""} ${ops.join(", ")}: ${reason}`)
      .join("; ");
    return { id, label: label(id), ok: false, detail };
  });
}

function agreementCheck(verdict, reports, best) {
  if (verdict === "INCONSISTENT") {
    return { ok: false, detail: "verified histories contradict each other: the federation's quorum rule was broken" };
  }
  if (best) {
    const agree = reports.filter((r) => r.agrees).length;
    return {
      ok: true,
      detail: `${agree} of ${reports.length} operators serve this history; every other verified one is a prefix of it`,
    };
  }
  if (reports.some((r) => r.outcome === "not_found") && !reports.some((r) => r.outcome === "invalid")) {
    return { ok: true, detail: "no operator knows the item" };
  }
  return { ok: false, detail: "no verified history to compare" };
}

/**
 * Scans `item` (64 hex digits): asks every operator `{index, url}` in parallel for the item's
 * history, each bounded by `timeoutMs`, verifies each answer against `federation`, and gives
 * the verdict as `hallmark scan` does: AUTHENTIC (a verified history; every other verified one
 * is a prefix of the longest), COUNTERFEIT (histories served, none verifies), UNKNOWN (nobody
 * knows the item), INCONSISTENT (verified histories that contradict each other) or UNREACHABLE.
 */
export async function scan(
  item,
  { operators, federation, timeoutMs = DEFAULT_TIMEOUT_MS, fetch: fetchFn = globalThis.fetch },
) {
  const started = Date.now();
  item = String(item).toLowerCase();
  if (!HEX64.test(item)) throw new Error("an item id is 64 hex digits");
  const answers = await Promise.all(operators.map((op) => askOperator(fetchFn, op, item, timeoutMs, federation)));
  const reports = answers.map((a) => a.report);

  const reasons = [];
  // The longest verified history (the last of equals, as Rust's max_by_key).
  let bi = -1;
  answers.forEach((a, i) => {
    if (a.verified && (bi < 0 || a.heads.length >= answers[bi].heads.length)) bi = i;
  });
  const best = bi >= 0 ? answers[bi] : null;
  const any = (outcome) => reports.some((r) => r.outcome === outcome);
  let verdict = best ? "AUTHENTIC" : any("invalid") ? "COUNTERFEIT" : any("not_found") ? "UNKNOWN" : "UNREACHABLE";
  if (best) {
    answers.forEach((a, i) => {
      if (!a.verified) return;
      if (startsWith(best.heads, a.heads)) {
        reports[i].agrees = a.heads.length === best.heads.length;
        if (!reports[i].agrees) {
          reasons.push(`operator ${reports[i].index} is behind (height ${reports[i].height} of ${best.report.height})`);
        }
      } else {
        verdict = "INCONSISTENT";
        let common = 0;
        while (common < a.heads.length && equal(a.heads[common], best.heads[common])) common++;
        reasons.push(
          `operators ${best.report.index} and ${reports[i].index} serve conflicting certified histories (diverging at height ${common})`,
        );
      }
    });
  }
  const lead = {
    AUTHENTIC:
      "every event carries a valid quorum certificate, the chain links and follows the state machine, and the manufacturer's registration is certified",
    COUNTERFEIT: "no operator served a history that verifies",
    UNKNOWN: "no operator knows this item: it was never minted in this federation",
    UNREACHABLE: "no operator answered",
  }[verdict];
  if (lead) reasons.unshift(lead);
  for (const r of reports) {
    if (r.outcome === "invalid") {
      reasons.push(`operator ${r.index} served a history that fails verification: ${r.reason}`);
    } else if (r.outcome === "unreachable" && verdict === "AUTHENTIC") {
      reasons.push(`operator ${r.index} unreachable: ${r.error}`);
    } else if (r.outcome === "not_found" && verdict === "AUTHENTIC") {
      reasons.push(`operator ${r.index} does not know the item yet`);
    }
  }

  const checks = [
    federationCheck(federation),
    ...historyChecks(federation, answers, best),
    { id: "agreement", label: CHECKS.agreement, ...agreementCheck(verdict, reports, best) },
  ];

  const authentic = verdict === "AUTHENTIC";
  return {
    item,
    verdict,
    state: authentic ? describe(best.verified) : null,
    verified: authentic ? best.verified : null,
    reasons,
    operators: reports,
    checks,
    elapsedMs: Date.now() - started,
  };
}

/**
 * The anchors of an AUTHENTIC scan's history, from the proof bundle of an operator that served
 * that history: `{operator, anchors}` (per event as `verifyAnchors`), or `{operator, error}`.
 */
export async function fetchAnchors(
  report,
  federation,
  { fetch: fetchFn = globalThis.fetch, timeoutMs = DEFAULT_TIMEOUT_MS } = {},
) {
  const op = report.operators.find((r) => r.agrees);
  try {
    const r = await get(fetchFn, `${op.url}/v1/items/${report.item}/proof`, timeoutMs);
    if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
    const bundle = decodeProofBundle(parseJson(r.text));
    if (toHex(bundle.item) !== report.item) throw new Error("the bundle is for another item");
    return { operator: op.index, anchors: verifyAnchors(federation, report.verified.events, bundle) };
  } catch (e) {
    return { operator: op.index, error: e.message };
  }
}
