//! Costs of the protocol's hot operations: signing, verifying, certificate verification,
//! batch signing, canonical encoding and hashing.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hallmark_protocol::testkit::{body, certify, federation, key, operator_key};
use hallmark_protocol::{decode, encode, BatchVote, Event, EventHash, EventKind, Vote};
use std::hint::black_box;

fn sample_event() -> Event {
    let f = federation(3, 4);
    let m = key(1);
    body(
        &f,
        &m,
        0,
        EventHash::ZERO,
        EventKind::Mint {
            serial: "SN-000123".into(),
            product: "Chronograph ref. 5711".into(),
            owner: key(2).public_key(),
        },
    )
    .sign(&m)
    .expect("author signs")
}

fn crypto(c: &mut Criterion) {
    let k = key(1);
    let digest = [7u8; 32];
    let sig = k.sign(&digest);
    let pk = k.public_key();
    c.bench_function("ecdsa_sign", |b| b.iter(|| k.sign(black_box(&digest))));
    c.bench_function("ecdsa_verify", |b| {
        b.iter(|| pk.verify(black_box(&digest), black_box(&sig)))
    });
    let bytes = pk.to_bytes();
    c.bench_function("pubkey_parse", |b| {
        b.iter(|| hallmark_protocol::PublicKey::from_bytes(black_box(&bytes)))
    });
}

fn events(c: &mut Criterion) {
    let f = federation(3, 4);
    let e = sample_event();
    let bytes = encode(&e);
    c.bench_function("event_encode", |b| b.iter(|| encode(black_box(&e))));
    c.bench_function("event_decode", |b| {
        b.iter(|| decode::<Event>(black_box(&bytes)))
    });
    c.bench_function("event_hash", |b| b.iter(|| black_box(&e).hash()));
    c.bench_function("event_check_incl_signature", |b| {
        b.iter(|| black_box(&e).check(f.id()))
    });
}

fn certificates(c: &mut Criterion) {
    let f = federation(3, 4);
    let ce = certify(&f, sample_event());
    c.bench_function("certificate_verify_3_of_4", |b| {
        b.iter(|| black_box(&ce.certificate).verify(&f))
    });
    let op = operator_key(0);
    let mut g = c.benchmark_group("batch_sign");
    for n in [1usize, 64, 1024] {
        let votes: Vec<Vote> = (0..n)
            .map(|i| {
                Vote::commit(
                    EventHash(hallmark_protocol::hash::sha256(&i.to_be_bytes())),
                    0,
                )
            })
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &votes, |b, v| {
            b.iter(|| BatchVote::sign(&op, f.id(), v.clone()))
        });
    }
    g.finish();
}

criterion_group!(benches, crypto, events, certificates);
criterion_main!(benches);
