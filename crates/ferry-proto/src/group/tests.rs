use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

fn id(n: u8) -> [u8; 32] {
    *key(n).public().as_bytes()
}

fn card(n: u8) -> MemberCard {
    MemberCard {
        id: id(n),
        name: format!("member {n}"),
    }
}

/// A member's copy of a group's log, in memory: what the engine keeps in its store.
#[derive(Clone, Default)]
struct Log {
    group: [u8; 16],
    entries: BTreeMap<EntryHash, SignedEntry>,
    /// In the order they joined this log (which differs between members).
    arrived: Vec<EntryHash>,
    authors: HashMap<([u8; 32], u64), EntryHash>,
    /// Entries waiting for their parents.
    pending: Vec<SignedEntry>,
}

impl LogView for Log {
    fn group(&self) -> [u8; 16] {
        self.group
    }
    fn lamport_of(&self, hash: &EntryHash) -> Option<u64> {
        self.entries.get(hash).map(|e| e.entry.lamport)
    }
    fn by_author(&self, author: &[u8; 32], seq: u64) -> Option<EntryHash> {
        self.authors.get(&(*author, seq)).copied()
    }
}

impl Log {
    /// Takes an entry, or keeps it waiting for its parents; then whatever waited and can go.
    fn insert(&mut self, e: SignedEntry) -> Result<(), GroupError> {
        let hash = e.verify()?;
        match check_in_log(&e.entry, &hash, self) {
            Ok(()) => {}
            Err(GroupError::Missing(_)) => {
                self.pending.push(e);
                return Ok(());
            }
            Err(err) => return Err(err),
        }
        if self.entries.contains_key(&hash) {
            return Ok(());
        }
        self.authors.insert((e.entry.author, e.entry.seq), hash);
        self.entries.insert(hash, e);
        self.arrived.push(hash);
        loop {
            let ready = self.pending.iter().position(|p| {
                !matches!(
                    check_in_log(&p.entry, &p.entry.hash(), self),
                    Err(GroupError::Missing(_))
                )
            });
            let Some(i) = ready else { break };
            let p = self.pending.swap_remove(i);
            let h = p.entry.hash();
            if check_in_log(&p.entry, &h, self).is_ok() && !self.entries.contains_key(&h) {
                self.authors.insert((p.entry.author, p.entry.seq), h);
                self.entries.insert(h, p);
                self.arrived.push(h);
            }
        }
        Ok(())
    }

    fn heads(&self) -> Vec<EntryHash> {
        let named: BTreeSet<EntryHash> = self
            .entries
            .values()
            .flat_map(|e| e.entry.parents.iter().copied())
            .collect();
        self.entries
            .keys()
            .filter(|h| !named.contains(*h))
            .copied()
            .collect()
    }

    /// Writes `body` as `author`'s next entry.
    fn write(&mut self, author: &SecretKey, body: Body) -> SignedEntry {
        let me = *author.public().as_bytes();
        let seq = (1..)
            .find(|s| !self.authors.contains_key(&(me, *s)))
            .unwrap_or(1);
        let mut heads = self.heads();
        heads.sort_by_key(|h| std::cmp::Reverse(self.entries[h].entry.lamport));
        heads.truncate(MAX_PARENTS - 1);
        if seq > 1 {
            let prev = self.authors[&(me, seq - 1)];
            if !heads.contains(&prev) {
                heads.push(prev);
            }
        }
        heads.sort();
        let lamport = 1 + heads
            .iter()
            .map(|h| self.entries[h].entry.lamport)
            .max()
            .unwrap_or(0);
        let e = Entry {
            group: self.group(),
            author: me,
            seq,
            lamport,
            parents: heads,
            at: 1_000 + lamport,
            body,
        }
        .sign(author);
        self.insert(e.clone()).unwrap();
        e
    }

    /// The fold over the entries as they arrived here: `fold` must not depend on it.
    fn state(&self) -> GroupState {
        fold(self.arrived.iter().map(|h| &self.entries[h].entry))
    }

    fn order(&self) -> Vec<OrderKey> {
        let mut keys: Vec<OrderKey> = self.entries.values().map(|e| e.entry.order_key()).collect();
        keys.sort();
        keys
    }
}

/// A new group by member 1 with `members`, as the creator's log.
fn create(members: &[u8]) -> (Log, SignedEntry) {
    let nonce = [7; 16];
    let at = 1_000;
    let e = Entry {
        group: group_id(&id(1), &nonce, at),
        author: id(1),
        seq: 1,
        lamport: 1,
        parents: vec![],
        at,
        body: Body::Create {
            name: "Climbing".into(),
            nonce,
            members: std::iter::once(&1)
                .chain(members)
                .map(|n| card(*n))
                .collect(),
        },
    }
    .sign(&key(1));
    let mut log = Log {
        group: e.entry.group,
        ..Log::default()
    };
    log.insert(e.clone()).unwrap();
    (log, e)
}

#[test]
fn an_entry_verifies_only_as_its_author_signed_it() {
    let (mut log, create) = create(&[2, 3]);
    assert_eq!(create.verify().unwrap(), create.entry.hash());
    let text = log.write(
        &key(2),
        Body::Rename {
            name: "Crag".into(),
        },
    );
    text.verify().unwrap();

    let mut changed = text.clone();
    changed.entry.body = Body::Rename {
        name: "Cliff".into(),
    };
    assert_eq!(changed.verify(), Err(GroupError::BadSignature));
    let mut moved = text.clone();
    moved.entry.author = id(3);
    assert_eq!(moved.verify(), Err(GroupError::BadSignature));
    let mut resigned = text.entry.clone();
    resigned.author = id(2);
    let forged = resigned.sign(&key(3));
    assert_eq!(forged.verify(), Err(GroupError::BadSignature));
}

#[test]
fn the_first_entry_proves_the_group_id_and_only_it_has_no_parents() {
    let (_, create) = create(&[2]);
    let mut other = create.entry.clone();
    other.group = [9; 16];
    assert!(matches!(
        other.sign(&key(1)).verify(),
        Err(GroupError::Invalid(_))
    ));
    let orphan = Entry {
        group: create.entry.group,
        author: id(2),
        seq: 1,
        lamport: 1,
        parents: vec![],
        at: 0,
        body: Body::Leave,
    };
    assert!(matches!(
        orphan.sign(&key(2)).verify(),
        Err(GroupError::Invalid(_))
    ));
    let mut alone = create.entry.clone();
    if let Body::Create { members, .. } = &mut alone.body {
        members.retain(|m| m.id != id(1));
    }
    assert!(matches!(
        alone.sign(&key(1)).verify(),
        Err(GroupError::Invalid(_))
    ));
    let mut crowded = create.entry.clone();
    if let Body::Create { members, .. } = &mut crowded.body {
        members.truncate(1);
        for n in 0..MAX_MEMBERS as u16 {
            let mut m = [0u8; 32];
            m[..2].copy_from_slice(&n.to_be_bytes());
            members.push(MemberCard {
                id: m,
                name: "x".into(),
            });
        }
    }
    assert!(matches!(
        crowded.sign(&key(1)).verify(),
        Err(GroupError::Invalid(_))
    ));
}

#[test]
fn an_entry_joins_the_log_only_after_its_parents_and_in_step_with_them() {
    let (mut log, _) = create(&[2, 3]);
    let a = log.write(&key(2), Body::Rename { name: "A".into() });
    let b = log.write(&key(2), Body::Rename { name: "B".into() });

    let (mut fresh, _) = create(&[2, 3]);
    assert_eq!(
        check_in_log(&b.entry, &b.entry.hash(), &fresh),
        Err(GroupError::Missing(vec![a.entry.hash()]))
    );
    fresh.insert(b.clone()).unwrap();
    assert_eq!(fresh.entries.len(), 1, "b waits");
    fresh.insert(a.clone()).unwrap();
    assert_eq!(fresh.entries.len(), 3, "then both are in");

    // A clock that is not one more than the parents'.
    let mut late = log.clone();
    let mut c = late.write(&key(3), Body::Leave).entry;
    late = log.clone();
    c.lamport += 5;
    let c = c.sign(&key(3));
    assert!(matches!(
        check_in_log(&c.entry, &c.entry.hash(), &late),
        Err(GroupError::Invalid(_))
    ));

    // The author's previous entry left out of the parents.
    let mut d = log.clone().write(&key(2), Body::Leave).entry;
    d.parents = vec![log
        .entries
        .keys()
        .find(|h| **h != b.entry.hash())
        .copied()
        .unwrap()];
    d.lamport = 2;
    let d = d.sign(&key(2));
    assert!(matches!(
        check_in_log(&d.entry, &d.entry.hash(), &log),
        Err(GroupError::Invalid(_))
    ));

    // An entry of another group.
    let mut stray = b.entry.clone();
    stray.group = [9; 16];
    let stray = stray.sign(&key(2));
    assert!(matches!(
        check_in_log(&stray.entry, &stray.entry.hash(), &log),
        Err(GroupError::Invalid(_))
    ));

    // Two entries under one number.
    let mut twin = b.entry.clone();
    twin.body = Body::Rename {
        name: "Other".into(),
    };
    let twin = twin.sign(&key(2));
    assert_eq!(
        check_in_log(&twin.entry, &twin.entry.hash(), &log),
        Err(GroupError::Equivocation(2))
    );
    assert_eq!(check_in_log(&b.entry, &b.entry.hash(), &log), Ok(()));
}

#[test]
fn only_admins_add_remove_and_promote_and_the_creator_stays() {
    let (mut log, _) = create(&[2, 3]);
    let state = log.state();
    assert_eq!(
        state.members[&id(1)].name,
        "member 1",
        "the creator's own card"
    );
    assert!(state.is_admin(&id(1)) && !state.is_admin(&id(2)));
    let refused = log.write(&key(2), Body::Remove { member: id(3) });
    let state = log.state();
    assert!(state.members.contains_key(&id(3)));
    assert!(state.rejected.contains_key(&refused.entry.hash()));

    log.write(&key(1), Body::MakeAdmin { member: id(2) });
    log.write(&key(2), Body::Add { member: card(4) });
    log.write(&key(2), Body::Remove { member: id(3) });
    let creator_out = log.write(&key(2), Body::Remove { member: id(1) });
    let state = log.state();
    assert_eq!(state.members.keys().copied().collect::<Vec<_>>(), {
        let mut v = vec![id(1), id(2), id(4)];
        v.sort();
        v
    });
    assert!(state.rejected.contains_key(&creator_out.entry.hash()));
    assert!(state.is_admin(&id(2)) && !state.is_admin(&id(4)));

    // A removed member's later entries have no effect; their messages there are not shown.
    let (mut removed_view, _) = (log.clone(), ());
    let after = removed_view.write(
        &key(3),
        Body::Rename {
            name: "Mine".into(),
        },
    );
    let state = removed_view.state();
    assert_eq!(state.name, "Climbing");
    assert!(state.rejected.contains_key(&after.entry.hash()));
    assert!(!state.member_at(&id(3), &after.entry.order_key()));

    // When the last admins leave, the longest-standing member becomes one.
    log.write(&key(2), Body::Leave);
    log.write(&key(1), Body::Leave);
    let state = log.state();
    assert_eq!(state.members.len(), 1);
    assert!(state.is_admin(&id(4)));
}

#[test]
fn a_sender_chain_opens_in_any_order_once_and_not_before_its_share() {
    let group = [5; 16];
    let author = key(1);
    let me = id(1);
    let mut chain = SenderChain::new(0);
    let early = chain.seal(
        &group,
        &me,
        &Content::Text {
            body: "early".into(),
        },
    );
    let share = chain.share(group, &author);
    share.verify().unwrap();
    let bodies: Vec<Body> = (0..5)
        .map(|i| {
            chain.seal(
                &group,
                &me,
                &Content::Text {
                    body: format!("m{i}"),
                },
            )
        })
        .collect();

    let mut theirs = SenderChain::from_share(&share);
    let open = |c: &mut SenderChain, b: &Body| match b {
        Body::Sealed {
            index,
            nonce,
            ciphertext,
            ..
        } => c.open(&group, &me, *index, nonce, ciphertext),
        _ => unreachable!(),
    };
    // Out of order, then the skipped ones; each opens once.
    assert_eq!(
        open(&mut theirs, &bodies[3]).unwrap(),
        Content::Text { body: "m3".into() }
    );
    assert_eq!(
        open(&mut theirs, &bodies[1]).unwrap(),
        Content::Text { body: "m1".into() }
    );
    assert_eq!(open(&mut theirs, &bodies[1]), Err(GroupError::Decrypt));
    assert_eq!(
        open(&mut theirs, &bodies[0]).unwrap(),
        Content::Text { body: "m0".into() }
    );
    // Before the share's position: never.
    assert_eq!(open(&mut theirs, &early), Err(GroupError::Decrypt));

    // A changed byte fails and changes nothing.
    let Body::Sealed {
        index,
        nonce,
        mut ciphertext,
        ..
    } = bodies[4].clone()
    else {
        unreachable!()
    };
    ciphertext[0] ^= 1;
    let before = theirs.clone();
    assert_eq!(
        theirs.open(&group, &me, index, &nonce, &ciphertext),
        Err(GroupError::Decrypt)
    );
    assert_eq!(theirs.next_index(), before.next_index());
    assert_eq!(
        open(&mut theirs, &bodies[4]).unwrap(),
        Content::Text { body: "m4".into() }
    );
    // Another author's or group's binding does not open.
    let mut other = SenderChain::from_share(&share);
    if let Body::Sealed {
        index,
        nonce,
        ciphertext,
        ..
    } = &bodies[0]
    {
        assert_eq!(
            other.open(&[6; 16], &me, *index, nonce, ciphertext),
            Err(GroupError::Decrypt)
        );
        assert_eq!(
            other.open(&group, &id(2), *index, nonce, ciphertext),
            Err(GroupError::Decrypt)
        );
        // Too far ahead: refused before any key is made.
        assert!(matches!(
            other.open(&group, &me, MAX_CHAIN_GAP + 10, nonce, ciphertext),
            Err(GroupError::Invalid(_))
        ));
    }
}

#[test]
fn a_key_share_is_believed_only_as_its_author_signed_it() {
    let chain = SenderChain::new(3);
    let share = chain.share([1; 16], &key(1));
    share.verify().unwrap();
    let mut other_chain = share.clone();
    other_chain.chain[0] ^= 1;
    assert_eq!(other_chain.verify(), Err(GroupError::BadSignature));
    let mut other_author = share.clone();
    other_author.author = id(2);
    assert_eq!(other_author.verify(), Err(GroupError::BadSignature));
    let mut later = share.clone();
    later.index += 1;
    assert_eq!(later.verify(), Err(GroupError::BadSignature));
}

/// One step of a random history: member `who` (an index into the replicas) writes something
/// from what it knows, or takes everything another replica has.
#[derive(Debug, Clone)]
enum Step {
    Write { who: usize, what: u8, whom: u8 },
    Sync { to: usize, from: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..4usize, 0..6u8, 1..8u8).prop_map(|(who, what, whom)| Step::Write { who, what, whom }),
        2 => (0..4usize, 0..4usize).prop_map(|(to, from)| Step::Sync { to, from }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Members 1–4 write membership changes and messages concurrently from what each knows and
    /// pass entries around at random. However the entries then reach a member, and in
    /// whatever order, every member ends with the same order and the same membership.
    #[test]
    fn members_who_hold_the_same_entries_agree_on_order_and_membership(
        steps in proptest::collection::vec(step(), 1..40),
        shuffles in proptest::collection::vec(any::<u64>(), 3),
    ) {
        let (creator, _) = create(&[2, 3, 4]);
        let mut replicas = vec![creator.clone(); 4];
        // Members 1 and 2 start as admins.
        replicas[0].write(&key(1), Body::MakeAdmin { member: id(2) });
        let first = replicas[0].clone();
        replicas.iter_mut().for_each(|r| *r = first.clone());
        for s in &steps {
            match *s {
                Step::Write { who, what, whom } => {
                    let author = key(who as u8 + 1);
                    let body = match what {
                        0 => Body::Add { member: card(whom) },
                        1 => Body::Remove { member: id(whom) },
                        2 => Body::MakeAdmin { member: id(whom) },
                        3 => Body::Rename { name: format!("name {whom}") },
                        4 if whom == 1 => Body::Leave,
                        _ => Body::Sealed { epoch: 0, index: whom as u32, nonce: [0; 24], ciphertext: vec![whom] },
                    };
                    replicas[who].write(&author, body);
                }
                Step::Sync { to, from } => {
                    let theirs: Vec<SignedEntry> = replicas[from].entries.values().cloned().collect();
                    for e in theirs {
                        replicas[to].insert(e).unwrap();
                    }
                }
            }
        }
        let all: Vec<SignedEntry> = replicas.iter().flat_map(|r| r.entries.values().cloned()).collect();
        let mut outcomes = Vec::new();
        for seed in shuffles {
            // A deterministic shuffle of everything, delivered to a member who had only the
            // first entry.
            let mut order: Vec<SignedEntry> = all.clone();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut fresh = create(&[2, 3, 4]).0;
            for e in order {
                fresh.insert(e).unwrap();
            }
            prop_assert!(fresh.pending.is_empty());
            outcomes.push((fresh.order(), fresh.state()));
        }
        for r in &mut replicas {
            for e in &all {
                r.insert(e.clone()).unwrap();
            }
            outcomes.push((r.order(), r.state()));
        }
        for o in &outcomes[1..] {
            prop_assert_eq!(&o.0, &outcomes[0].0);
            prop_assert_eq!(&o.1, &outcomes[0].1);
        }
        // Everything agreed on is consistent: at most MAX_MEMBERS, an admin while anyone is in.
        let state = &outcomes[0].1;
        prop_assert!(state.members.is_empty() || state.members.values().any(|m| m.admin));
        prop_assert!(state.members.contains_key(&id(1)) || state.spans[&id(1)].iter().all(|s| s.1.is_some()));
    }
}

#[test]
fn a_chain_at_its_last_index_refuses_instead_of_wrapping() {
    // A share claims the chain is at the last index there is; a message there cannot be
    // opened past it (no overflow, no panic), and the chain is left as it was.
    let mut share = SenderChain::new(0).share([1; 16], &key(1));
    share.index = u32::MAX;
    let mut chain = SenderChain::from_share(&share);
    let got = chain.open(&[1; 16], &id(1), u32::MAX, &[0; 24], &[0; 40]);
    assert!(matches!(got, Err(GroupError::Invalid(_))), "{got:?}");
    assert_eq!(chain.next_index(), u32::MAX);
}

#[test]
fn a_receipt_is_its_members_and_cannot_be_altered() {
    let r = Receipt {
        group: [1; 16],
        member: id(2),
        at: 5,
        delivered: vec![(id(1), 3)],
        read: vec![(id(1), 2)],
    };
    let signed = r.clone().sign(&key(2));
    assert_eq!(signed.verify(), Ok(()));
    let mut more = signed.clone();
    more.receipt.read = vec![(id(1), 3)];
    assert_eq!(more.verify(), Err(GroupError::BadSignature));
    let by_another = r.sign(&key(3));
    assert_eq!(by_another.verify(), Err(GroupError::BadSignature));
}
