// Tests of hallmark.js: the devnet's real answers verify, every tampering is caught with the
// right reason, encodings match Rust's pinned vectors, and scan() gives verifier.rs's verdicts.
// Run from the repository root: node --test node/assets/scan/test/

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import * as h from "../hallmark.js";
import { stringify } from "../vendor/lossless-json/index.js";
import { sha256 } from "../vendor/noble-hashes/sha2.js";
import * as secp from "../vendor/noble-secp256k1.js";

// ---- test kit: the twin of protocol/src/testkit.rs (deterministic keys, a federation of them,
// signed and certified events), to build histories the devnet fixtures do not have, served as
// an operator's API serializes them (serde_json's forms) ----

const FIXTURES = new URL("./fixtures/", import.meta.url);

/** A fixture's text. */
const fixture = (name) => readFileSync(new URL(name, FIXTURES), "utf8");
/** A fixture parsed losslessly. */
const fixtureJson = (name) => h.parseJson(fixture(name));
/** JSON text with BigInts written as plain numbers. */
const toText = (value) => stringify(value);

/** Secret key number `i`: `SHA256("hallmark-test-key" || i as u32 big-endian)`, as Rust's. */
function key(i) {
  const seed = new Uint8Array(21);
  seed.set(new TextEncoder().encode("hallmark-test-key"));
  new DataView(seed.buffer).setUint32(17, i, false);
  return sha256(seed);
}

const publicKey = (secret) => secp.getPublicKey(secret, true);
const operatorKey = (i) => key(1_000 + i);

/** A P2WPKH script paying to a hash made of byte `i`. */
const script = (i) => Uint8Array.of(0x00, 0x14, ...new Uint8Array(20).fill(i));

/** Rust's `testkit::federation(m, n)`. */
function federation(m, n) {
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
function body(fed, author, height, prev, kind) {
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
async function sign(b, secret) {
  return { body: b, signature: await secp.signAsync(h.eventHash({ body: b }), secret, { prehash: false }) };
}

/**
 * Certifies `event` by operators `signers` of `fed`, each a batch of one vote of `phase` in
 * `round` (commit votes unless told).
 */
async function certify(fed, event, signers = [...Array(fed.m).keys()], phase = "Commit", round = 0) {
  const hash = h.eventHash(event);
  const digest = h.batchDigest(fed.id, h.voteLeaf(hash, round, phase));
  const attestations = [];
  for (const i of signers) {
    attestations.push({
      operator: fed.operatorIds[i],
      path: { index: 0, total: 1, siblings: [] },
      signature: await secp.signAsync(digest, operatorKey(i), { prehash: false }),
    });
  }
  return { event, certificate: { event: hash, round, phase, attestations } };
}

// serde_json's forms of the typed values.
const hex = h.toHex;

function kindJson(k) {
  const { type, ...f } = k;
  const out = {};
  for (const [name, v] of Object.entries(f)) {
    if (name === "offer" && type === "AcceptOffer") out.offer = eventJson(v);
    else if (name === "payment")
      out.payment = hex(Uint8Array.from(v).reverse()); // Txid: display order
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

function eventJson(e) {
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

function certifiedJson(ce) {
  const c = ce.certificate;
  return {
    event: eventJson(ce.event),
    certificate: {
      event: hex(c.event),
      round: c.round,
      phase: c.phase,
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
async function world() {
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
    /** The id of this manufacturer's item `serial`. */
    item(serial) {
      return h.itemId(h.manufacturerId(publicKey(mfr)), serial);
    },
    /** The history JSON text an operator serves. */
    historyText(events) {
      return toText({ manufacturer: certifiedJson(registration), events: events.map(certifiedJson) });
    },
    /** Verifies `events` as the history of `item`, through their JSON as a scanner gets it. */
    verify(item, events) {
      return h.verifyItemHistory(fed, item, h.decodeHistory(h.parseJson(this.historyText(events))));
    },
  };
}

/**
 * A fetch that answers from `routes`: url -> `{status, body}` | a function of the url returning
 * one | "hang" (never answers, whatever the abort signal says).
 */
function fakeFetch(routes) {
  return async (url) => {
    let r = routes[url];
    if (typeof r === "function") r = r(url);
    if (r === "hang") return new Promise(() => {});
    if (!r) return new Response('{"error":{"code":"no_route","message":"no such route"}}', { status: 404 });
    return new Response(r.body, { status: r.status ?? 200 });
  };
}

const NOT_FOUND = { status: 404, body: '{"error":{"code":"not_found","message":"no item"}}' };

// ---- fixtures and helpers ----

const ITEM = "6b7efacae8deafa30e1efd9b2a7916cebd43ccfb957aae64183d523191141f8e";
const FEDERATION_ID = "9182b0047aa28bc3d5a5453b89cfe5a684bb878c81bd907fe3e6cf9820381734";
const OWNER = "02dabbe75428d1c8a7fcfba0e710e77c73f4740104d394cb58de0ca0945dfe0baa";
const OPERATORS = [0, 1, 2, 3].map((index) => ({ index, url: `http://op${index}.test` }));

const devnet = () => ({
  ...h.federationFromParams(h.decodeFederationParams(fixtureJson("info.json").federation)),
  pinned: true,
});

function verifyFixture(json, fed = devnet()) {
  return h.verifyItemHistory(fed, h.hexToBytes(ITEM), h.decodeHistory(json));
}

/** The fixture history after `mutate(json)`; asserts that it fails with `code` at `check`. */
function assertTampered(mutate, { check, code, message }) {
  const json = fixtureJson("history.json");
  mutate(json);
  assert.throws(
    () => verifyFixture(json),
    (e) => {
      assert.ok(e instanceof h.HallmarkError, e.stack);
      assert.equal(e.check, check, e.message);
      assert.equal(e.code, code, e.message);
      if (message) assert.match(e.message, message);
      return true;
    },
  );
}

const concatHex = (bytes, more) => h.hexToBytes(h.toHex(bytes) + more);
const flipHex = (s, at = 10) => s.slice(0, at) + (parseInt(s[at], 16) ^ 1).toString(16) + s.slice(at + 1);

// ---- the devnet's answers ----

test("the devnet history verifies: owner, status, manufacturer and timeline", () => {
  const d = h.describe(verifyFixture(fixtureJson("history.json")));
  assert.equal(d.item, ITEM);
  assert.equal(d.serial, "SN-1");
  assert.equal(d.product, "Chronograph ref. 5711");
  assert.equal(d.manufacturer.name, "Acme Watches");
  assert.equal(d.manufacturer.id, h.toHex(h.manufacturerId(h.hexToBytes(d.manufacturer.key))));
  assert.equal(d.owner, OWNER, "the buyer owns it after the settlement");
  assert.equal(d.status, "ACTIVE_HELD");
  assert.equal(d.height, 3);
  assert.deepEqual(
    d.timeline.map((t) => t.kind),
    ["mint", "transfer", "accept_offer", "settle"],
  );
  assert.deepEqual(
    d.timeline.map((t) => t.height),
    [0, 1, 2, 3],
  );
  assert.equal(d.head, d.timeline[3].hash);
  assert.match(d.timeline[2].summary, /2,000,000 sats \(0\.02 BTC\)/);
});

test("every computed event hash equals its certificate's, and the embedded offer's its id", () => {
  const json = fixtureJson("history.json");
  const hist = h.decodeHistory(json);
  for (const ce of [hist.manufacturer, ...hist.events]) {
    assert.equal(h.toHex(h.eventHash(ce.event)), h.toHex(ce.certificate.event));
  }
  const accept = hist.events[2].event.body.kind;
  assert.equal(h.toHex(h.eventHash(accept.offer)), h.toHex(accept.invoice.offer));
});

test("u64 values survive JSON parsing exactly", () => {
  const json = fixtureJson("history.json");
  assert.equal(json.manufacturer.event.body.nonce, 18153504226563962177n);
  assert.equal(json.events[0].event.body.timestamp_ms, 1795528902873n);
});

test("the federation id recomputed from /v1/info's parameters is the one it reports", () => {
  const info = fixtureJson("info.json");
  const fed = h.federationFromParams(h.decodeFederationParams(info.federation));
  assert.equal(fed.idHex, info.federation_id);
  assert.equal(fed.idHex, FEDERATION_ID);
  assert.deepEqual(
    fed.operatorIds.map(h.toHex),
    fixtureJson("info-members.json").members.map((m) => m.operator_id),
  );
});

// ---- the encoding against Rust's pinned vectors (protocol/src/tests.rs) ----

test("canonical encoding, hashes and signatures match Rust's fixed vectors", async () => {
  const w = await world();
  assert.equal(w.fed.idHex, "c502b5c1c0ed8d7cf9dc3535179e6c4345f54fcf61d91d25e105aeb4a4fd1c87");
  const reg = w.registration.event;
  assert.equal(
    h.toHex(h.encodeBody(reg.body)),
    "c502b5c1c0ed8d7cf9dc3535179e6c4345f54fcf61d91d25e105aeb4a4fd1c8700000000000000000000000000000000000000000000000000000000000000000080d095ffbc310003e6c15975388a9fd526ed1010e8a5d8602c2059ec14bba80cc6095fb9992bacb4000c41636d652057617463686573",
  );
  assert.equal(h.toHex(h.eventHash(reg)), "bfed925b392baeba605ab9013ba470b7b2dd401e8d0e7ac7765b6d87f31fe2be");
  assert.equal(
    h.toHex(reg.signature),
    "61126db0d9ce8aafebb2d8cb51bacd1c292fb08d3c3ce00c788fd812fe1a52d844c516789f3d5433503b0d5aca5cbe05ac8bd8a96471d6217f22311b9da23dea",
  );
  const mint = (await w.mint("SN-1", key(2))).event;
  assert.equal(
    h.toHex(h.encodeEvent(mint)),
    "c502b5c1c0ed8d7cf9dc3535179e6c4345f54fcf61d91d25e105aeb4a4fd1c8700000000000000000000000000000000000000000000000000000000000000000080d095ffbc310003e6c15975388a9fd526ed1010e8a5d8602c2059ec14bba80cc6095fb9992bacb40104534e2d310b4368726f6e6f677261706802e1a72bf2fd3ce9a0257360268f2bbf9b63482dfe379f7db6316035a95fa543ecdac03b91a6519b21ac4ba14d2748536a82d4b2c56ff4293f5ad9687da2aa9c7663a332838162afa2bce0ed90e927441518002ce389d6d8b6266423e218153d4f",
  );
});

test("a Settle's txid is encoded with a length prefix, in internal (reversed) byte order", () => {
  // bitcoin::Txid serializes through serialize_bytes (postcard: varint length, then the bytes)
  // and its JSON hex is Bitcoin's reversed display order. Checked against a running federation:
  // it accepted an author signature over this encoding and refused one over the display order.
  const display = "00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f";
  const json = fixtureJson("history.json").events[3].event;
  json.body.kind.Settle.payment = display;
  const bytes = h.encodeBody(h.decodeEvent(json).body);
  const tail = h.toHex(bytes.subarray(bytes.length - 33));
  assert.equal(tail, `20${h.toHex(h.hexToBytes(display).reverse())}`);
});

// ---- tampering ----

test("a changed owner in a Transfer breaks its author signature", () => {
  assertTampered(
    (j) => {
      const t = j.events[1].event.body.kind.Transfer;
      t.to = (t.to.startsWith("02") ? "03" : "02") + t.to.slice(2);
    },
    { check: "signatures", code: "bad_signature", message: /^event 1: author signature does not verify$/ },
  );
});

test("a flipped bit in an event signature is caught", () => {
  assertTampered(
    (j) => {
      j.events[0].event.signature = flipHex(j.events[0].event.signature);
    },
    { check: "signatures", code: "bad_signature", message: /^event 0:/ },
  );
});

test("a flipped bit in an operator's signature rejects the certificate", () => {
  assertTampered(
    (j) => {
      const a = j.events[1].certificate.attestations[2];
      a.signature = flipHex(a.signature, 100);
    },
    {
      check: "certificates",
      code: "bad_operator_signature",
      message: /^event 1: certificate: bad signature from operator 0e9211/,
    },
  );
});

test("a certificate with only 2 attestations is short of the quorum", () => {
  assertTampered((j) => j.events[2].certificate.attestations.pop(), {
    check: "certificates",
    code: "too_few_signatures",
    message: /^event 2: certificate: 2 signatures, the quorum needs 3$/,
  });
});

test("a duplicated attestation counts once and is rejected", () => {
  assertTampered(
    (j) => {
      const atts = j.events[0].certificate.attestations;
      atts[2] = atts[0];
    },
    { check: "certificates", code: "duplicate_signer", message: /signed more than once/ },
  );
});

test("an attestation from a non-member operator is rejected", () => {
  assertTampered(
    (j) => {
      j.events[3].certificate.attestations[1].operator = "ab".repeat(32);
    },
    { check: "certificates", code: "not_a_member", message: new RegExp(`operator ${"ab".repeat(32)} is not a member`) },
  );
});

test("malformed batch paths are rejected: wrong sibling count, index out of range", () => {
  // The AcceptOffer's second attestation is leaf 1 of a batch of 2: one sibling.
  assertTampered(
    (j) => {
      j.events[2].certificate.attestations[1].path.siblings = [];
    },
    { check: "certificates", code: "bad_batch_path", message: /proof has 0 sibling hashes, the path needs 1/ },
  );
  assertTampered(
    (j) => {
      j.events[2].certificate.attestations[1].path.index = 2n;
    },
    { check: "certificates", code: "bad_batch_path", message: /leaf 2 is not inside a tree of 2 leaves/ },
  );
});

test("a batch path counts only in canonical form: the unsigned tree size cannot be re-encoded", async () => {
  assert.equal(h.canonicalTotal(2, 7), 5); // leaf 2 has one path in trees of 5, 6 and 7 leaves
  assert.equal(h.canonicalTotal(2, 5), 5);
  assert.equal(h.canonicalTotal(0, 1), 1);
  assert.equal(h.canonicalTotal(4, 8), 7); // leaf 4 of 5 or 6 is promoted, of 7 and 8 not
  // Three operators each sign a batch of 5 votes holding the commit vote at leaf 2.
  const fed = federation(3, 4);
  const ev = await sign(body(fed, key(1), 0, new Uint8Array(32), { type: "RegisterManufacturer", name: "A" }), key(1));
  const hash = h.eventHash(ev);
  const leaf = h.voteLeaf(hash, 0);
  const attestations = [];
  for (const i of [0, 1, 2]) {
    const siblings = [1, 2, 3].map((k) => sha256(Uint8Array.of(i, k)));
    const path = { index: 2, total: 5, siblings };
    const root = h.inclusionRoot(path, leaf);
    const signature = await secp.signAsync(h.batchDigest(fed.id, root), operatorKey(i), { prehash: false });
    attestations.push({ operator: fed.operatorIds[i], path, signature });
  }
  const cert = { event: hash, round: 0, attestations };
  h.verifyCertificate(fed, cert);
  // Leaf 2 of 7 has the same path to the same signed root, but only the smallest size counts.
  const resized = { ...cert, attestations: cert.attestations.map((a, n) => (n === 1 ? { ...a, path: { ...a.path, total: 7 } } : a)) };
  assert.equal(h.inclusionRoot(resized.attestations[1].path, leaf).join(), h.inclusionRoot(cert.attestations[1].path, leaf).join());
  assert.throws(() => h.verifyCertificate(fed, resized), (e) => e.code === "bad_batch_path" && /same path in a tree of 5 leaves, not 7/.test(e.message));
});

test("a fast certificate holds the round-0 prevotes of every operator", async () => {
  const fed = federation(3, 4);
  const ev = await sign(body(fed, key(1), 0, new Uint8Array(32), { type: "RegisterManufacturer", name: "A" }), key(1));
  const fast = (await certify(fed, ev, [0, 1, 2, 3], "Prevote")).certificate;
  h.verifyCertificate(fed, fast);
  // m prevotes are a polka, not a certificate.
  const polka = (await certify(fed, ev, [0, 1, 2], "Prevote")).certificate;
  assert.throws(() => h.verifyCertificate(fed, polka), (e) => e.code === "too_few_signatures" && /needs 4/.test(e.message));
  // Prevotes of a later round make no certificate, however many.
  const late = (await certify(fed, ev, [0, 1, 2, 3], "Prevote", 1)).certificate;
  assert.throws(() => h.verifyCertificate(fed, late), (e) => e.code === "not_fast");
  // Prevotes do not pass for commits.
  assert.throws(() => h.verifyCertificate(fed, { ...fast, phase: "Commit" }), (e) => e.code === "bad_operator_signature");
  // As the operators serve it in JSON: decoded with its phase; an unknown phase is malformed,
  // and a certificate without one (served before fast certificates) holds commits.
  const json = certifiedJson({ event: ev, certificate: fast });
  const decode = (j) => h.decodeCertifiedEvent(h.parseJson(toText(j)));
  assert.equal(decode(json).certificate.phase, "Prevote");
  h.verifyCertifiedEvent(fed, decode(json));
  json.certificate.phase = "Fast";
  assert.throws(() => decode(json), (e) => e.code === "malformed" && /certificate\.phase must be one of Prevote, Commit/.test(e.message));
  delete json.certificate.phase;
  assert.equal(decode(json).certificate.phase, "Commit");
});

test("a certificate for another event is rejected", () => {
  assertTampered(
    (j) => {
      j.events[1].certificate = j.events[0].certificate;
    },
    { check: "certificates", code: "certificate_for_other_event" },
  );
});

test("a missing event breaks the chain", () => {
  assertTampered((j) => j.events.splice(1, 1), {
    check: "chain",
    code: "wrong_height",
    message: /^event 1: expected height 1, got 2$/,
  });
});

test("a signed and certified event with a broken prev link is rejected", async () => {
  const w = await world();
  const [alice, bob] = [key(2), key(3)];
  const mint = await w.mint("SN-9", alice);
  const item = w.item("SN-9");
  const transfer = await w.next(
    mint,
    alice,
    { type: "Transfer", item, to: publicKey(bob) },
    { prevHash: new Uint8Array(32).fill(7) },
  );
  assert.throws(
    () => w.verify(item, [mint, transfer]),
    (e) => {
      assert.equal(e.check, "chain");
      assert.equal(e.code, "wrong_prev");
      assert.match(e.message, /^event 1: previous hash 0707/);
      return true;
    },
  );
});

test("events of another federation are rejected", () => {
  // Same operators, other fees: another federation id.
  const params = h.decodeFederationParams(fixtureJson("info.json").federation);
  params.fees.dust_limit_sats += 1n;
  const other = h.federationFromParams(params);
  assert.notEqual(other.idHex, FEDERATION_ID);
  assert.throws(
    () => verifyFixture(fixtureJson("history.json"), other),
    (e) => {
      assert.equal(e.check, "manufacturer");
      assert.equal(e.code, "wrong_federation");
      assert.match(e.message, new RegExp(`event is for federation ${FEDERATION_ID}, not ${other.idHex}`));
      return true;
    },
  );
});

test("a mint by someone other than the registered manufacturer is rejected", async () => {
  const w = await world();
  const rogue = key(66);
  const kind = { type: "Mint", serial: "SN-1", product: "Chronograph", owner: publicKey(key(2)) };
  const mint = await certify(w.fed, await sign(body(w.fed, rogue, 0, new Uint8Array(32), kind), rogue));
  const item = h.itemId(h.manufacturerId(publicKey(rogue)), "SN-1");
  assert.throws(
    () => w.verify(item, [mint]),
    (e) => {
      assert.equal(e.code, "manufacturer_mismatch");
      return true;
    },
  );
});

test("the state machine: only the owner transfers, settle only while locked, stolen and retired", async () => {
  const w = await world();
  const [alice, bob] = [key(2), key(3)];
  const item = w.item("SN-2");
  const mint = await w.mint("SN-2", alice);
  const run = (events) => w.verify(item, events);

  const byStranger = await w.next(mint, bob, { type: "Transfer", item, to: publicKey(bob) });
  assert.throws(
    () => run([mint, byStranger]),
    (e) => e.code === "not_authorized" && e.check === "state",
  );

  const settle = await w.next(mint, alice, {
    type: "Settle",
    item,
    offer: new Uint8Array(32),
    payment: new Uint8Array(32).fill(1),
  });
  assert.throws(
    () => run([mint, settle]),
    (e) => e.code === "invalid_in_state" && /while the item is ACTIVE_HELD/.test(e.message),
  );

  const stolen = await w.next(mint, alice, { type: "ReportStolen", item });
  assert.equal(h.describe(run([mint, stolen])).status, "STOLEN");
  const transferStolen = await w.next(stolen, alice, { type: "Transfer", item, to: publicKey(bob) });
  assert.throws(
    () => run([mint, stolen, transferStolen]),
    (e) => e.code === "invalid_in_state",
  );

  const retired = await w.next(mint, alice, { type: "Retire", item });
  assert.equal(h.describe(run([mint, retired])).status, "RETIRED");
});

test("an AcceptOffer must embed a fitting offer and the fee schedule's invoice", async () => {
  const w = await world();
  const [alice, carol] = [key(2), key(4)];
  const item = w.item("SN-3");
  const mint = await w.mint("SN-3", alice);
  const run = (events) => w.verify(item, events);
  const offerKind = {
    type: "CreateOffer",
    item,
    item_height: 1n,
    seller: publicKey(alice),
    price_sats: 2_000_000n,
  };
  const offer = await sign(body(w.fed, carol, 0, new Uint8Array(32), offerKind), carol);
  const invoice = h.computeInvoice(w.fed, h.eventHash(offer), 2_000_000n, script(9), 500);
  assert.deepEqual(
    invoice.outputs.map((o) => o.amount_sats),
    [1_970_000n, 5_000n, 5_000n, 5_000n, 5_000n, 10_000n],
  );

  const accept = await w.next(mint, alice, { type: "AcceptOffer", offer, invoice });
  const locked = h.describe(run([mint, accept]));
  assert.equal(locked.status, "LOCKED_IN_ESCROW");
  assert.equal(locked.escrow.buyer, h.toHex(publicKey(carol)));

  const settle = await w.next(accept, carol, {
    type: "Settle",
    item,
    offer: h.eventHash(offer),
    payment: new Uint8Array(32).fill(5),
  });
  const sold = h.describe(run([mint, accept, settle]));
  assert.equal(sold.owner, h.toHex(publicKey(carol)));
  assert.equal(sold.status, "ACTIVE_HELD");

  const greedy = {
    ...invoice,
    outputs: invoice.outputs.map((o, i) => (i === 0 ? { ...o, amount_sats: o.amount_sats + 1n } : o)),
  };
  const badAccept = await w.next(mint, alice, { type: "AcceptOffer", offer, invoice: greedy });
  assert.throws(
    () => run([mint, badAccept]),
    (e) => e.code === "invoice_mismatch",
  );

  const staleKind = { ...offerKind, item_height: 5n };
  const stale = await sign(body(w.fed, carol, 0, new Uint8Array(32), staleKind), carol);
  const staleInvoice = h.computeInvoice(w.fed, h.eventHash(stale), 2_000_000n, script(9), 500);
  const staleAccept = await w.next(mint, alice, { type: "AcceptOffer", offer: stale, invoice: staleInvoice });
  assert.throws(
    () => run([mint, staleAccept]),
    (e) => e.code === "offer_mismatch" && /another item height/.test(e.message),
  );
});

test("malformed answers are rejected as such", () => {
  assertTampered(
    (j) => {
      j.events[0].event.body.kind.Mint.owner = "04" + "00".repeat(32);
    },
    {
      check: "format",
      code: "malformed",
      message: /kind\.Mint\.owner must be a valid compressed secp256k1 public key/,
    },
  );
  assertTampered(
    (j) => {
      j.events[0].event.body.height = -1n;
    },
    { check: "format", code: "malformed" },
  );
  assertTampered(
    (j) => {
      delete j.events[0].certificate;
    },
    { check: "format", code: "malformed" },
  );
});

// ---- anchors ----

test("the anchored proof bundle verifies: checkpoint certificate, inclusion, Bitcoin transaction and block", () => {
  const fed = devnet();
  const v = verifyFixture(fixtureJson("history.json"), fed);
  const anchors = h.verifyAnchors(fed, v.events, h.decodeProofBundle(fixtureJson("proof-anchored.json")));
  assert.equal(anchors.length, 4);
  for (const a of anchors) {
    assert.deepEqual(a, {
      checkpoint: 0,
      txid: "448534ae73fe0736a3d09f93c2e2102f972cd019b3b1a31d884adec923579147",
      block: "5eb391fd2e3073d1c811c5eb230503a347150ab95defbaa99d4d86728b699c65",
      height: 106,
    });
  }
  // The unanchored bundle: everything pending.
  assert.deepEqual(h.verifyAnchors(fed, v.events, h.decodeProofBundle(fixtureJson("proof.json"))), [
    null,
    null,
    null,
    null,
  ]);
});

test("the checkpoint in the fixture is the one the devnet certified", () => {
  const cp = fixtureJson("checkpoints.json").checkpoints[0];
  const c = cp.final.certified.checkpoint;
  const hash = h.checkpointHash({
    federation: h.hexToBytes(c.federation),
    number: c.number,
    prev: h.hexToBytes(c.prev),
    root: h.hexToBytes(c.root),
    count: Number(c.count),
  });
  assert.equal(h.toHex(hash), cp.hash);
});

test("tampered anchors fail with the right reason", () => {
  const fed = devnet();
  const v = verifyFixture(fixtureJson("history.json"), fed);
  // [name, event position, mutation of its anchored proof, reason]
  const cases = [
    [
      "checkpoint signature",
      1,
      (a) =>
        (a.checkpoint.certificate.attestations[0].signature = flipHex(
          a.checkpoint.certificate.attestations[0].signature,
        )),
      /checkpoint certificate: bad signature/,
    ],
    [
      "checkpoint root",
      1,
      (a) => (a.checkpoint.checkpoint.root = flipHex(a.checkpoint.checkpoint.root)),
      /certificate is not for this checkpoint/,
    ],
    [
      "inclusion sibling",
      1,
      (a) => (a.inclusion.siblings[0] = flipHex(a.inclusion.siblings[0])),
      /merkle: proof leads to a different root/,
    ],
    ["inclusion position", 1, (a) => (a.inclusion.total = 5n), /merkle: leaf 5 is not inside a tree of 5 leaves/],
    // Leaf 0 has the same path in trees of 5 and 6 leaves: only the count catches it.
    ["inclusion size", 2, (a) => (a.inclusion.total = 5n), /inclusion proof is for 5 events, the checkpoint covers 6/],
    ["transaction", 1, (a) => (a.anchor.tx = flipHex(a.anchor.tx, 200)), /OP_RETURN|does not decode|Merkle branch/],
    ["branch", 1, (a) => (a.anchor.branch.index = 0n), /Merkle branch does not lead/],
    ["branch index beyond depth", 1, (a) => (a.anchor.branch.index += 8n), /Merkle branch does not lead/],
    ["header merkle root", 1, (a) => (a.anchor.header = flipHex(a.anchor.header, 80)), /Merkle branch does not lead/],
    [
      "proof of work",
      1,
      (a) => (a.anchor.header = a.anchor.header.slice(0, 144) + "01000003" + a.anchor.header.slice(152)),
      /fails its proof of work/,
    ],
  ];
  for (const [name, at, mutate, reason] of cases) {
    const json = fixtureJson("proof-anchored.json");
    mutate(json.events[at].anchored);
    const anchors = h.verifyAnchors(fed, v.events, h.decodeProofBundle(json));
    assert.ok(anchors[3].txid, `${name}: the other events still verify`);
    assert.match(anchors[at].error ?? "", reason, name);
  }
});

test("a legacy (non-segwit) transaction parses, and non-canonical sizes are refused", () => {
  // Version 1, one input with a 1-byte scriptSig, one OP_RETURN output, lock time 0.
  const tx = h.hexToBytes(
    "01000000" +
      "01" +
      "11".repeat(32) +
      "00000000" +
      "0151" +
      "ffffffff" +
      "01" +
      "0000000000000000" +
      "026a00" +
      "00000000",
  );
  const parsed = h.parseTransaction(tx);
  assert.equal(parsed.outputs.length, 1);
  assert.equal(h.toHex(parsed.outputs[0].script), "6a00");
  const nonMinimal = h.hexToBytes(h.toHex(tx).replace("0151ffffffff", "fd010051ffffffff"));
  assert.throws(() => h.parseTransaction(nonMinimal), /non-minimal/);
  assert.throws(() => h.parseTransaction(concatHex(tx, "00")), /trailing/);
});

// ---- the trust root ----

test("loadFederation checks the parameters against the pinned id and reads the members", async () => {
  const info = fixture("info-members.json");
  const fetch = fakeFetch({ "http://127.0.0.1:27200/v1/info": { body: info } });
  const fed = await h.loadFederation("http://127.0.0.1:27200/", FEDERATION_ID, { fetch });
  assert.equal(fed.pinned, true);
  assert.equal(fed.idHex, FEDERATION_ID);
  assert.deepEqual(
    fed.members.map((m) => m.url),
    [27200, 27201, 27202, 27203].map((p) => `http://127.0.0.1:${p}`),
  );
  assert.deepEqual(fed.notes, []);

  await assert.rejects(h.loadFederation("http://127.0.0.1:27200", "ab".repeat(32), { fetch }), (e) => {
    assert.equal(e.code, "federation_mismatch");
    assert.match(e.message, /not to the pinned federation id abab/);
    return true;
  });

  const unpinned = await h.loadFederation("http://127.0.0.1:27200", null, { fetch });
  assert.equal(unpinned.pinned, false);
  const report = await h.scan(ITEM, { federation: unpinned, operators: [], fetch });
  assert.deepEqual(report.checks[0], {
    id: "federation",
    label: "trust root not pinned",
    ok: false,
    detail: `the link names no federation id: the parameters served by http://127.0.0.1:27200 are taken on trust (hallmark-devnet, 3-of-4, federation id ${FEDERATION_ID})`,
  });
});

test("loadFederation refuses parameters that do not hash to the reported id, and falls back without members", async () => {
  const liar = fixtureJson("info-members.json");
  liar.federation.quorum.m = 4n; // 4-of-4 would need max_faulty 0: still valid once that is changed
  liar.federation.max_faulty = 0n;
  const fetch = fakeFetch({ "http://x/v1/info": { body: toText(liar) } });
  await assert.rejects(
    h.loadFederation("http://x", null, { fetch }),
    /reports federation id 9182.*but its parameters hash to/,
  );

  const old = fakeFetch({ "http://x/v1/info": { body: fixture("info.json") } });
  const fed = await h.loadFederation("http://x", FEDERATION_ID, { fetch: old });
  assert.deepEqual(fed.members, [{ index: 0, url: "http://x" }]);
  assert.match(fed.notes[0], /lists no other operators/);

  const forged = fixtureJson("info-members.json");
  forged.members[1].key = forged.members[0].key;
  const f2 = await h.loadFederation("http://x", FEDERATION_ID, {
    fetch: fakeFetch({ "http://x/v1/info": { body: toText(forged) } }),
  });
  assert.deepEqual(
    f2.members.map((m) => m.index),
    [0, 2, 3],
  );
  assert.match(f2.notes[0], /member 1 of the list is not an operator/);
});

test("parseScanInput accepts ids, hallmark: URIs and scan links", () => {
  const fed = FEDERATION_ID;
  assert.deepEqual(h.parseScanInput(` ${ITEM.toUpperCase()} `), { item: ITEM, federation: null });
  assert.deepEqual(h.parseScanInput(`hallmark:${ITEM}@${fed}`), { item: ITEM, federation: fed });
  assert.deepEqual(h.parseScanInput(`hallmark:${ITEM}`), { item: ITEM, federation: null });
  assert.deepEqual(h.parseScanInput(`http://127.0.0.1:27200/scan/?item=${ITEM}&federation=${fed}`), {
    item: ITEM,
    federation: fed,
  });
  assert.throws(() => h.parseScanInput("hello"), /not an item id/);
  assert.throws(() => h.parseScanInput("http://x/scan/?item=12"), /names no item/);
});

// ---- scan verdicts ----

const historyUrl = (op, item = ITEM) => `${op.url}/v1/items/${item}/history`;

function serve(answers, item = ITEM) {
  return fakeFetch(Object.fromEntries(OPERATORS.map((op, i) => [historyUrl(op, item), answers[i]])));
}

function tampered() {
  const j = fixtureJson("history.json");
  const m = j.events[0].event.body.kind.Mint;
  m.owner = (m.owner.startsWith("02") ? "03" : "02") + m.owner.slice(2);
  return toText(j);
}

test("scan: four operators serving the same history -> AUTHENTIC, every check passed", async () => {
  const good = { body: fixture("history.json") };
  const r = await h.scan(ITEM, { federation: devnet(), operators: OPERATORS, fetch: serve([good, good, good, good]) });
  assert.equal(r.verdict, "AUTHENTIC");
  assert.equal(r.state.owner, OWNER);
  assert.deepEqual(
    r.operators.map((o) => [o.outcome, o.agrees, o.height]),
    Array(4).fill(["valid", true, 3]),
  );
  assert.deepEqual(
    r.checks.map((c) => c.id),
    ["federation", "certificates", "signatures", "chain", "state", "manufacturer", "agreement"],
  );
  assert.ok(
    r.checks.every((c) => c.ok),
    JSON.stringify(r.checks),
  );
  assert.equal(r.checks[1].label, "every certificate has >= 3 valid operator signatures (3-of-4)");
});

test("scan: every operator answers 404 not_found -> UNKNOWN", async () => {
  const r = await h.scan(ITEM, {
    federation: devnet(),
    operators: OPERATORS,
    fetch: serve(Array(4).fill(NOT_FOUND)),
  });
  assert.equal(r.verdict, "UNKNOWN");
  assert.equal(r.state, null);
  assert.deepEqual(
    r.operators.map((o) => o.outcome),
    Array(4).fill("not_found"),
  );
});

test("scan: every operator serving a tampered history -> COUNTERFEIT, with the failed check", async () => {
  const bad = { body: tampered() };
  const r = await h.scan(ITEM, { federation: devnet(), operators: OPERATORS, fetch: serve([bad, bad, bad, bad]) });
  assert.equal(r.verdict, "COUNTERFEIT");
  assert.deepEqual(
    r.operators.map((o) => o.outcome),
    Array(4).fill("invalid"),
  );
  assert.match(r.operators[0].reason, /event 0: author signature does not verify/);
  const signatures = r.checks.find((c) => c.id === "signatures");
  assert.equal(signatures.ok, false);
  assert.equal(signatures.detail, "operators 0, 1, 2, 3: event 0: author signature does not verify");
  assert.equal(r.reasons[0], "no operator served a history that verifies");
});

test("scan: one liar among four -> AUTHENTIC, the liar named invalid", async () => {
  const good = { body: fixture("history.json") };
  const r = await h.scan(ITEM, {
    federation: devnet(),
    operators: OPERATORS,
    fetch: serve([good, { body: tampered() }, good, good]),
  });
  assert.equal(r.verdict, "AUTHENTIC");
  assert.deepEqual(
    r.operators.map((o) => o.outcome),
    ["valid", "invalid", "valid", "valid"],
  );
  assert.ok(
    r.reasons.some((x) => /^operator 1 served a history that fails verification: event 0: author signature/.test(x)),
    r.reasons.join("\n"),
  );
});

test("scan: an operator behind the others is a prefix, not a conflict", async () => {
  const full = fixtureJson("history.json");
  const behind = fixtureJson("history.json");
  behind.events.length = 2;
  const r = await h.scan(ITEM, {
    federation: devnet(),
    operators: OPERATORS,
    fetch: serve([{ body: toText(full) }, { body: toText(full) }, { body: toText(behind) }, NOT_FOUND]),
  });
  assert.equal(r.verdict, "AUTHENTIC");
  assert.equal(r.state.height, 3);
  assert.deepEqual(
    r.operators.map((o) => o.agrees),
    [true, true, false, false],
  );
  assert.ok(r.reasons.includes("operator 2 is behind (height 1 of 3)"));
  assert.ok(r.reasons.includes("operator 3 does not know the item yet"));
});

test("scan: two conflicting certified histories -> INCONSISTENT", async () => {
  // Only possible if more than f operators sign conflicting events: the test holds every
  // operator key of its own federation, so it certifies two different transfers at height 1.
  const w = await world();
  const [alice, bob, carol] = [key(2), key(3), key(4)];
  const item = h.toHex(w.item("SN-5"));
  const mint = await w.mint("SN-5", alice);
  const toBob = await w.next(mint, alice, { type: "Transfer", item: h.hexToBytes(item), to: publicKey(bob) });
  const toCarol = await w.next(mint, alice, { type: "Transfer", item: h.hexToBytes(item), to: publicKey(carol) }, {});
  const a = { body: w.historyText([mint, toBob]) };
  const b = { body: w.historyText([mint, toCarol]) };
  const r = await h.scan(item, {
    federation: { ...w.fed, pinned: true },
    operators: OPERATORS,
    fetch: serve([a, a, b, b], item),
  });
  assert.equal(r.verdict, "INCONSISTENT");
  assert.deepEqual(
    r.operators.map((o) => o.outcome),
    Array(4).fill("valid"),
  );
  assert.ok(
    r.reasons.includes("operators 3 and 0 serve conflicting certified histories (diverging at height 1)"),
    r.reasons.join("\n"),
  );
  assert.equal(r.checks.find((c) => c.id === "agreement").ok, false);
  assert.equal(r.state, null);
});

test("scan: an operator that never answers still gives a verdict within the timeout", async () => {
  const good = { body: fixture("history.json") };
  const started = Date.now();
  const r = await h.scan(ITEM, {
    federation: devnet(),
    operators: OPERATORS,
    timeoutMs: 300,
    fetch: serve([good, "hang", good, good]),
  });
  assert.ok(Date.now() - started < 2000, "bounded by the timeout");
  assert.equal(r.verdict, "AUTHENTIC");
  assert.deepEqual(r.operators[1], {
    index: 1,
    url: "http://op1.test",
    agrees: false,
    outcome: "unreachable",
    error: "no answer within 300 ms",
  });

  const none = await h.scan(ITEM, {
    federation: devnet(),
    operators: OPERATORS,
    timeoutMs: 100,
    fetch: serve(Array(4).fill("hang")),
  });
  assert.equal(none.verdict, "UNREACHABLE");
});

test("scan: garbage, server errors and foreign 404s count as unreachable", async () => {
  const r = await h.scan(ITEM, {
    federation: devnet(),
    operators: OPERATORS,
    fetch: serve([{ body: "<html>" }, { status: 503, body: "{}" }, { status: 404, body: "not json" }, undefined]),
  });
  assert.equal(r.verdict, "UNREACHABLE");
  assert.deepEqual(
    r.operators.map((o) => o.error.split(":")[0]),
    ["bad JSON", "HTTP 503", "HTTP 404 (not an operator API)", "HTTP 404 (no_route)"],
  );
});

test("fetchAnchors verifies the bundle of an operator that served the verdict's history", async () => {
  const good = { body: fixture("history.json") };
  const fed = devnet();
  const routes = Object.fromEntries(OPERATORS.map((op) => [historyUrl(op), good]));
  routes[`${OPERATORS[0].url}/v1/items/${ITEM}/proof`] = { body: fixture("proof-anchored.json") };
  const fetch = fakeFetch(routes);
  const report = await h.scan(ITEM, { federation: fed, operators: OPERATORS, fetch });
  const a = await h.fetchAnchors(report, fed, { fetch });
  assert.equal(a.operator, 0);
  assert.deepEqual(
    a.anchors.map((x) => x.height),
    [106, 106, 106, 106],
  );
});
