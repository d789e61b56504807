//! Benchmarks for the end-to-end encryption layer.

use criterion::{black_box, Criterion};
use ferry_proto::e2e::{respond, AssociatedData, InitiatorHandshake, Session};
use rand_core::OsRng;
use x25519_dalek::{PublicKey, StaticSecret};

const BINDING: &[u8] = b"ferry-bench-binding";

struct Identities {
    a: StaticSecret,
    a_pub: [u8; 32],
    b: StaticSecret,
    b_pub: [u8; 32],
}

fn identities() -> Identities {
    let a = StaticSecret::random_from_rng(OsRng);
    let b = StaticSecret::random_from_rng(OsRng);
    Identities {
        a_pub: PublicKey::from(&a).to_bytes(),
        b_pub: PublicKey::from(&b).to_bytes(),
        a,
        b,
    }
}

fn start(ids: &Identities) -> (Session, Session) {
    let (pending, eka) = InitiatorHandshake::start();
    let (b, ekb) = respond(&ids.b, &ids.a_pub, &eka, BINDING).expect("respond");
    let a = pending
        .complete(&ids.a, &ids.b_pub, &ekb, BINDING)
        .expect("complete");
    (a, b)
}

fn session_start(c: &mut Criterion) {
    let ids = identities();
    c.bench_function("session_start", |bench| {
        bench.iter(|| black_box(start(&ids)))
    });
}

fn seal_open(c: &mut Criterion, name: &str, size: usize) {
    let ids = identities();
    let (mut a, mut b) = start(&ids);
    let ad = AssociatedData {
        sender: [0xAA; 32],
        recipient: [0xBB; 32],
        message_id: [7; 16],
    };
    let plaintext = vec![0x42u8; size];
    c.bench_function(name, |bench| {
        bench.iter(|| {
            let envelope = a.seal(black_box(&plaintext), &ad).expect("seal");
            let opened = b.open(&envelope, &ad).expect("open");
            black_box(opened)
        })
    });
}

fn seal_open_1kib(c: &mut Criterion) {
    seal_open(c, "seal_open_1kib", 1024);
}

fn seal_open_32kib(c: &mut Criterion) {
    seal_open(c, "seal_open_32kib", 32 * 1024);
}

// Equivalent of `criterion_group!` + `criterion_main!`, written out so that no
// undocumented `pub fn` is generated (the workspace denies `missing_docs`).
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    session_start(&mut criterion);
    seal_open_1kib(&mut criterion);
    seal_open_32kib(&mut criterion);
    criterion.final_summary();
}
