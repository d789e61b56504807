//! Store paths at size: a received message appended and flushed, the last page of a
//! 100,000-message conversation, its unread count, and the contact list of 1,000 contacts.
//!
//! `cargo bench -p ferry-core --bench store`

use std::time::Duration;

use criterion::{black_box, Criterion};
use ferry_core::model::{
    Contact, ContactId, ConversationId, Direction, Message, MessageId, MessageState, WireAddr,
};
use ferry_core::store::{Changes, Store};
use ferry_core::{Config, Node};

const HISTORY: u64 = 100_000;
const CONTACTS: usize = 1_000;

fn id(n: u64) -> ContactId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[31] = 1;
    iroh::SecretKey::from_bytes(&b).public()
}

fn incoming(conv: ConversationId, from: ContactId, seq: u64) -> Message {
    let mut mid = [0u8; 16];
    mid[..8].copy_from_slice(&seq.to_be_bytes());
    Message {
        id: MessageId(mid),
        conversation: conv,
        contact: from,
        seq,
        direction: Direction::Incoming,
        body: "a message of about a hundred bytes, which is what people mostly send to each other"
            .into(),
        sent_at: seq,
        stored_at: seq,
        state: MessageState::Received,
        transfer: None,
        author: from,
    }
}

fn store_paths(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let me = id(0);
    let bob = id(1);
    let key = std::sync::Arc::new(ferry_core::vault::DataKey::generate());
    let store = Store::open(dir.path(), &me, key).expect("store");
    let conv = ConversationId::direct(&me, &bob);
    let receive = |seq| {
        store
            .apply(&Changes {
                message: Some(incoming(conv, bob, seq)),
                ..Changes::default()
            })
            .expect("apply")
    };
    for seq in 1..=HISTORY {
        receive(seq);
    }
    rt.block_on(store.flush()).expect("flush");

    let mut seq = HISTORY;
    c.bench_function("store/append_received_and_flush", |b| {
        b.iter(|| {
            seq += 1;
            receive(seq);
            rt.block_on(store.flush()).expect("flush");
        })
    });
    c.bench_function("store/last_page_of_50_in_100k", |b| {
        b.iter(|| black_box(store.history(&conv, None, 50).expect("page")))
    });
    c.bench_function("store/unread_count_in_100k", |b| {
        b.iter(|| black_box(store.unread_count(&conv).expect("count")))
    });
}

fn contact_list(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let net = ferry_core::NetSettings {
        relay: ferry_core::RelayChoice::Disabled,
        bind: Some("127.0.0.1:0".parse().expect("addr")),
        local_discovery: false,
    };
    Node::init_with(&home, "Bench", &net).expect("init");
    {
        let store = Store::open_home(&home, None).expect("store");
        for n in 0..CONTACTS as u64 {
            store
                .put_contact(&Contact {
                    id: id(n + 10),
                    name: format!("Contact {n}"),
                    x25519: [n as u8; 32],
                    addr: WireAddr::default(),
                    paired_at: 0,
                    verified: false,
                })
                .expect("contact");
        }
        rt.block_on(store.flush()).expect("flush");
    }
    let node = rt
        .block_on(Node::open(&home, Config::default()))
        .expect("node");
    c.bench_function("node/contact_list_of_1000", |b| {
        b.iter(|| black_box(node.contacts().expect("contacts")))
    });
    rt.block_on(node.shutdown());
}

// Written out instead of `criterion_group!`/`criterion_main!`, so no undocumented `pub fn` is
// generated (the workspace denies `missing_docs`).
fn main() {
    let mut criterion = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));
    store_paths(&mut criterion);
    contact_list(&mut criterion);
    criterion.final_summary();
}
