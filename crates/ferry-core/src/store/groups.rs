//! Groups in the store: each group's record, its log of signed entries, and the sender chains.
//! Added with no schema change: empty trees mean no groups.
//!
//! | tree | key | value (postcard, sealed) |
//! | --- | --- | --- |
//! | `groups` | group id (16) | [`GroupRecord`] |
//! | `group_log` | group (16) ‖ lamport (u64 BE) ‖ entry hash (32) | [`SignedEntry`]: the log in the order every member shows it |
//! | `group_index` | group ‖ `a` ‖ author (32) ‖ seq (u64 BE); group ‖ `h` ‖ entry hash (32); group ‖ `m` ‖ message id (16) | entry hash (32) ‖ lamport (u64 BE); lamport (u64 BE); author (32) ‖ seq (u64 BE) |
//! | `group_keys` | group ‖ author (32) ‖ epoch (u32 BE) | [`StoredChain`] |
//! | `group_held` | `p` ‖ group ‖ entry hash; `l` ‖ group ‖ author ‖ epoch (u32 BE) ‖ lamport ‖ entry hash; `r` ‖ group ‖ member; `s` ‖ group; `f` ‖ transfer id (16) | [`Pending`]: an entry waiting for its parents; empty: a sealed entry in the log waiting for its author's chain; a member's newest [`SignedReceipt`]; what this home has read (author → last entry read); [`GroupFile`]: a file offered in a group, which its members may fetch from this home |
//!
//! A group's messages and event lines are ordinary [`Message`]s of the conversation whose id
//! is the group's, at `seq` = lamport << 24 | the entry hash's first 24 bits: the log's order.

use std::collections::BTreeMap;

use ferry_proto::group::{
    EntryHash, GroupState, KeyShare, LogView, SenderChain, SignedEntry, SignedReceipt,
};
use serde::{Deserialize, Serialize};

use super::sealed::Transact;
use super::{
    bump, dec, enc, message_key, put_message, tx_dec, tx_enc, tx_result, unread_key, Store,
};
use crate::model::{
    ContactId, Conversation, Direction, Message, MessageState, Transfer, TransferId,
};
use crate::Error;

/// Entries one group may hold back waiting for their parents; past it, new ones are dropped
/// (logged) and come again with the next catch-up.
pub const MAX_PENDING: usize = 4096;

/// A group as this home keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group's id.
    pub id: [u8; 16],
    /// Its membership and name after the log's membership entries.
    pub state: GroupState,
    /// The entries no other entry names as a parent (sorted).
    pub heads: Vec<EntryHash>,
    /// For each author, the number of their last entry in the log.
    pub vector: BTreeMap<[u8; 32], u64>,
    /// The epoch of this home's current sender chain, once it has one.
    pub my_epoch: Option<u32>,
    /// The members this home's current chain was shared with (sorted): when the members
    /// change, the next message starts a new chain.
    pub shared_for: Vec<[u8; 32]>,
    /// When this home first knew the group (Unix ms).
    pub created_at: u64,
    /// Restored from a backup and not caught up since: this home writes nothing in the group
    /// until a member has answered its catch-up (what it wrote after the backup comes back
    /// then, so its next entry does not reuse a number).
    pub restored: bool,
    /// Everyone a membership entry ever named (sorted): only they may write in the group.
    pub named: Vec<[u8; 32]>,
}

/// A sender chain as kept: the chain (advanced as messages are opened, or sealed) and, for
/// passing on, the share it came from with the heads it was made at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredChain {
    /// The chain.
    pub chain: SenderChain,
    /// The share as its author signed it.
    pub share: KeyShare,
    /// The author's heads when the share was made.
    pub needs: Vec<EntryHash>,
    /// Passed on to the member contacts it was for (once its `needs` were in the log).
    pub passed_on: bool,
    /// Members it was already sent to (by its author or those who passed it on).
    pub covered: Vec<[u8; 32]>,
}

/// An entry that waits for its parents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// The contact it came from.
    pub from: [u8; 32],
    /// The entry.
    pub entry: SignedEntry,
    /// As the payload said: members already sent it.
    pub covered: Vec<[u8; 32]>,
}

/// A file offered in a group: the transfer record (this home's own offer, or one it received)
/// says the rest. Any member of the group may fetch its content from a home that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupFile {
    /// The group it was offered in.
    pub group: [u8; 16],
    /// Its BLAKE3 root hash (a folder's list when `folder`).
    pub hash: [u8; 32],
    /// A folder (collection) rather than one file.
    pub folder: bool,
    /// Who offered it.
    pub author: [u8; 32],
}

/// One change to a group, written in one transaction.
#[derive(Debug, Default)]
pub struct GroupWrite {
    /// The group it changes.
    pub group: [u8; 16],
    /// The record after the change.
    pub record: Option<GroupRecord>,
    /// An entry that joins the log.
    pub entry: Option<(SignedEntry, EntryHash)>,
    /// Messages (and event lines) to store.
    pub messages: Vec<Message>,
    /// Chains to store.
    pub chains: Vec<([u8; 32], u32, StoredChain)>,
    /// Sealed entries to hold until their chain arrives: (author, epoch, lamport, hash).
    pub lock: Vec<([u8; 32], u32, u64, EntryHash)>,
    /// Held sealed entries now opened.
    pub unlock: Vec<([u8; 32], u32, u64, EntryHash)>,
    /// Pending entries that joined the log (or were dropped).
    pub unpend: Vec<EntryHash>,
    /// Entries to hold until their parents arrive.
    pub pend: Vec<(EntryHash, Pending)>,
    /// The group's conversation record.
    pub conversation: Option<Conversation>,
    /// Files offered in the group: their transfer records (new) and what the group says of them.
    pub files: Vec<(Transfer, GroupFile)>,
}

fn log_key(group: &[u8; 16], lamport: u64, hash: &EntryHash) -> Vec<u8> {
    [&group[..], &lamport.to_be_bytes(), hash].concat()
}

fn author_key(group: &[u8; 16], author: &[u8; 32], seq: u64) -> Vec<u8> {
    [&group[..], b"a", author, &seq.to_be_bytes()].concat()
}

fn hash_key(group: &[u8; 16], hash: &EntryHash) -> Vec<u8> {
    [&group[..], b"h", hash].concat()
}

fn chain_key(group: &[u8; 16], author: &[u8; 32], epoch: u32) -> Vec<u8> {
    [&group[..], author, &epoch.to_be_bytes()].concat()
}

fn file_key(id: &TransferId) -> Vec<u8> {
    [&b"f"[..], &id.0[..]].concat()
}

fn pending_key(group: &[u8; 16], hash: &EntryHash) -> Vec<u8> {
    [&b"p"[..], group, hash].concat()
}

fn locked_prefix(group: &[u8; 16], author: &[u8; 32], epoch: u32) -> Vec<u8> {
    [&b"l"[..], group, author, &epoch.to_be_bytes()].concat()
}

fn locked_key(
    group: &[u8; 16],
    author: &[u8; 32],
    epoch: u32,
    lamport: u64,
    h: &EntryHash,
) -> Vec<u8> {
    [
        locked_prefix(group, author, epoch),
        lamport.to_be_bytes().to_vec(),
        h.to_vec(),
    ]
    .concat()
}

fn u64_at(v: &[u8], at: usize) -> u64 {
    v.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// The log of one group as [`check_in_log`](ferry_proto::group::check_in_log) reads it.
pub struct StoreLog<'a> {
    store: &'a Store,
    group: [u8; 16],
}

impl LogView for StoreLog<'_> {
    fn group(&self) -> [u8; 16] {
        self.group
    }

    fn lamport_of(&self, hash: &EntryHash) -> Option<u64> {
        self.store.group_lamport(&self.group, hash).ok().flatten()
    }

    fn by_author(&self, author: &[u8; 32], seq: u64) -> Option<EntryHash> {
        self.store
            .group_index
            .get(author_key(&self.group, author, seq))
            .ok()
            .flatten()
            .and_then(|v| v.get(..32).and_then(|h| h.try_into().ok()))
    }
}

/// The `seq` of a group entry's message: the log's order, as a number.
pub fn group_seq(lamport: u64, hash: &EntryHash) -> u64 {
    (lamport.min((1 << 40) - 1) << 24)
        | (u64::from(hash[0]) << 16 | u64::from(hash[1]) << 8 | u64::from(hash[2]))
}

impl Store {
    /// A group's record.
    pub fn group(&self, id: &[u8; 16]) -> Result<Option<GroupRecord>, Error> {
        self.groups.get(id)?.map(|v| dec(&v)).transpose()
    }

    /// Every group this home knows.
    pub fn groups(&self) -> Result<Vec<GroupRecord>, Error> {
        self.groups.iter().values().map(|v| dec(&v?)).collect()
    }

    /// The log of a group, for checks.
    pub fn group_log(&self, group: &[u8; 16]) -> StoreLog<'_> {
        StoreLog {
            store: self,
            group: *group,
        }
    }

    /// The Lamport clock of an entry in a group's log.
    pub fn group_lamport(&self, group: &[u8; 16], hash: &EntryHash) -> Result<Option<u64>, Error> {
        Ok(self
            .group_index
            .get(hash_key(group, hash))?
            .map(|v| u64_at(&v, 0)))
    }

    /// A group's entries in log order (parents first).
    pub fn group_entries(&self, group: &[u8; 16]) -> Result<Vec<SignedEntry>, Error> {
        self.group_log
            .scan_prefix(group)
            .values()
            .map(|v| dec(&v?))
            .collect()
    }

    /// One entry of a group's log, by hash.
    pub fn group_entry(
        &self,
        group: &[u8; 16],
        hash: &EntryHash,
    ) -> Result<Option<SignedEntry>, Error> {
        let Some(lamport) = self.group_lamport(group, hash)? else {
            return Ok(None);
        };
        self.group_log
            .get(log_key(group, lamport, hash))?
            .map(|v| dec(&v))
            .transpose()
    }

    /// A sender chain.
    pub fn group_chain(
        &self,
        group: &[u8; 16],
        author: &[u8; 32],
        epoch: u32,
    ) -> Result<Option<StoredChain>, Error> {
        self.group_keys
            .get(chain_key(group, author, epoch))?
            .map(|v| dec(&v))
            .transpose()
    }

    /// Every sender chain held for a group: (author, epoch, chain).
    pub fn group_chains(
        &self,
        group: &[u8; 16],
    ) -> Result<Vec<([u8; 32], u32, StoredChain)>, Error> {
        let mut out = Vec::new();
        for kv in self.group_keys.scan_prefix(group) {
            let (k, v) = kv?;
            let (Some(author), Some(epoch)) = (
                k.get(16..48).and_then(|a| <[u8; 32]>::try_from(a).ok()),
                k.get(48..52).and_then(|e| <[u8; 4]>::try_from(e).ok()),
            ) else {
                return Err(Error::Corrupt("a group chain's key".into()));
            };
            out.push((author, u32::from_be_bytes(epoch), dec(&v)?));
        }
        Ok(out)
    }

    /// The entries of a group waiting for their parents.
    pub fn group_pending(&self, group: &[u8; 16]) -> Result<Vec<(EntryHash, Pending)>, Error> {
        let prefix = [&b"p"[..], group].concat();
        let mut out = Vec::new();
        for kv in self.group_held.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let hash: EntryHash = k
                .get(17..49)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| Error::Corrupt("a pending entry's key".into()))?;
            out.push((hash, dec(&v)?));
        }
        Ok(out)
    }

    /// The sealed entries of `author`'s chain `epoch` waiting for it: (lamport, hash).
    pub fn group_locked(
        &self,
        group: &[u8; 16],
        author: &[u8; 32],
        epoch: u32,
    ) -> Result<Vec<(u64, EntryHash)>, Error> {
        let prefix = locked_prefix(group, author, epoch);
        let mut out = Vec::new();
        for k in self.group_held.scan_prefix(&prefix).keys() {
            let k = k?;
            let rest = &k[prefix.len()..];
            let hash: EntryHash = rest
                .get(8..40)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| Error::Corrupt("a held entry's key".into()))?;
            out.push((u64_at(rest, 0), hash));
        }
        Ok(out)
    }

    /// How many sealed entries of a group wait for a chain.
    pub fn group_locked_count(&self, group: &[u8; 16]) -> Result<usize, Error> {
        Ok(self
            .group_held
            .scan_prefix([&b"l"[..], group].concat())
            .keys()
            .count())
    }

    /// The seq a group message at this place in the log gets: its order, moved on past one
    /// taken by another message (the first 24 bits of two hashes at one clock may meet).
    pub fn free_group_seq(
        &self,
        group: &[u8; 16],
        lamport: u64,
        hash: &EntryHash,
    ) -> Result<u64, Error> {
        self.free_seq_from(group, group_seq(lamport, hash), &[])
    }

    /// The first seq from `seq` on that no stored message of the group, and none of `taken`,
    /// has.
    pub fn free_seq_from(
        &self,
        group: &[u8; 16],
        mut seq: u64,
        taken: &[u64],
    ) -> Result<u64, Error> {
        let conv = crate::model::ConversationId(*group);
        while taken.contains(&seq) || self.messages.contains_key(message_key(&conv, seq))? {
            seq += 1;
        }
        Ok(seq)
    }

    /// Writes one change to a group in one transaction. Returns false (and writes nothing) if
    /// the entry was already in the log.
    pub fn apply_group(&self, w: &GroupWrite) -> Result<bool, Error> {
        let record = w.record.as_ref().map(enc).transpose()?;
        let conversation = w.conversation.as_ref().map(enc).transpose()?;
        let entry = w
            .entry
            .as_ref()
            .map(|(e, h)| {
                Ok::<_, Error>((
                    e.entry.group,
                    e.entry.author,
                    e.entry.seq,
                    e.entry.lamport,
                    *h,
                    enc(e)?,
                ))
            })
            .transpose()?;
        let chains = w
            .chains
            .iter()
            .map(|(a, e, c)| Ok((*a, *e, enc(c)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let pend = w
            .pend
            .iter()
            .map(|(h, p)| Ok((*h, p.entry.entry.group, enc(p)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let files = w
            .files
            .iter()
            .map(|(t, f)| Ok((t.id, enc(t)?, enc(f)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let group = w.group;
        tx_result(
            (
                &self.groups,
                &self.group_log,
                &self.group_index,
                &self.group_keys,
                &self.group_held,
                &self.messages,
                &self.message_ids,
                &self.counters,
                &self.conversations,
                &self.transfers,
            )
                .transaction(
                    |(grp, log, idx, keys, held, msgs, ids, cnt, convs, trs)| {
                        if let Some((g, author, seq, lamport, hash, bytes)) = &entry {
                            if idx.get(hash_key(g, hash))?.is_some() {
                                return Ok(false);
                            }
                            log.insert(log_key(g, *lamport, hash), bytes)?;
                            idx.insert(hash_key(g, hash), lamport.to_be_bytes())?;
                            idx.insert(
                                author_key(g, author, *seq),
                                [&hash[..], &lamport.to_be_bytes()].concat(),
                            )?;
                            idx.insert(
                                [&g[..], b"m", &hash[..16]].concat(),
                                [&author[..], &seq.to_be_bytes()].concat(),
                            )?;
                        }
                        if let Some(r) = &record {
                            grp.insert(group, r)?;
                        }
                        if let Some(c) = &conversation {
                            convs.insert(group, c)?;
                        }
                        for m in &w.messages {
                            if ids.get(m.id.0)?.is_some() {
                                continue;
                            }
                            put_message(msgs, ids, m)?;
                            if m.direction == Direction::Incoming
                                && m.state == MessageState::Received
                            {
                                bump(cnt, &unread_key(&m.conversation), 1)?;
                            }
                        }
                        for (a, e, bytes) in &chains {
                            keys.insert(chain_key(&group, a, *e), bytes)?;
                        }
                        for (a, e, l, h) in &w.lock {
                            held.insert(locked_key(&group, a, *e, *l, h), [])?;
                        }
                        for (a, e, l, h) in &w.unlock {
                            held.remove(locked_key(&group, a, *e, *l, h))?;
                        }
                        for h in &w.unpend {
                            held.remove(pending_key(&group, h))?;
                        }
                        for (h, g, bytes) in &pend {
                            held.insert(pending_key(g, h), bytes)?;
                        }
                        for (id, t, f) in &files {
                            // Ids are derived from entry hashes: one already taken is this very
                            // offer, written before.
                            if trs.get(id.0)?.is_none() {
                                trs.insert(&id.0[..], t.clone())?;
                                held.insert(file_key(id), f.clone())?;
                            }
                        }
                        Ok(true)
                    },
                ),
        )
    }

    /// The incoming messages of a group not yet read, marked seen (no receipt: group read
    /// receipts are not sent yet). Returns how many.
    pub fn mark_group_seen(&self, messages: &[Message]) -> Result<usize, Error> {
        tx_result((&self.messages, &self.counters).transaction(|(msgs, cnt)| {
            let mut n = 0;
            for m in messages {
                let key = message_key(&m.conversation, m.seq);
                let Some(v) = msgs.get(key)? else { continue };
                let mut stored: Message = tx_dec(&v)?;
                if stored.direction != Direction::Incoming || stored.state != MessageState::Received
                {
                    continue;
                }
                stored.state = MessageState::Seen;
                msgs.insert(key, tx_enc(&stored)?)?;
                bump(cnt, &unread_key(&m.conversation), -1)?;
                n += 1;
            }
            Ok(n)
        }))
    }

    /// After a backup was restored: every group waits for a catch-up before this home writes
    /// in it again, and starts a new sender chain then under an epoch the lost one cannot
    /// have used.
    pub(crate) fn restore_groups(&self) -> Result<(), Error> {
        use rand_core::RngCore;
        for mut rec in self.groups()? {
            rec.restored = true;
            // Far past any epoch the lost state can have started after the backup.
            let jump = 1024 + (rand_core::OsRng.next_u32() >> 12);
            rec.my_epoch = Some(rec.my_epoch.unwrap_or(0).wrapping_add(jump));
            rec.shared_for.clear();
            self.groups.insert(rec.id, enc(&rec)?)?;
        }
        Ok(())
    }

    /// The author and number of the entry a group message came from (by the message's id).
    pub fn group_message_entry(
        &self,
        group: &[u8; 16],
        id: &crate::model::MessageId,
    ) -> Result<Option<([u8; 32], u64)>, Error> {
        Ok(self
            .group_index
            .get([&group[..], b"m", &id.0[..]].concat())?
            .and_then(|v| {
                let author: [u8; 32] = v.get(..32)?.try_into().ok()?;
                Some((author, u64_at(&v, 32)))
            }))
    }

    /// The newest receipt of each member of a group that sent one.
    pub fn group_receipts(&self, group: &[u8; 16]) -> Result<Vec<SignedReceipt>, Error> {
        self.group_held
            .scan_prefix([&b"r"[..], group].concat())
            .values()
            .map(|v| dec(&v?))
            .collect()
    }

    /// A member's newest receipt.
    pub fn group_receipt(
        &self,
        group: &[u8; 16],
        member: &[u8; 32],
    ) -> Result<Option<SignedReceipt>, Error> {
        self.group_held
            .get([&b"r"[..], group, member].concat())?
            .map(|v| dec(&v))
            .transpose()
    }

    /// Keeps a member's receipt (the caller checked it is newer).
    pub fn put_group_receipt(&self, r: &SignedReceipt) -> Result<(), Error> {
        let key = [&b"r"[..], &r.receipt.group, &r.receipt.member].concat();
        self.group_held.insert(key, enc(r)?)
    }

    /// What this home has read of a group: per author, the last entry read.
    pub fn group_read(&self, group: &[u8; 16]) -> Result<BTreeMap<[u8; 32], u64>, Error> {
        Ok(self
            .group_held
            .get([&b"s"[..], group].concat())?
            .map(|v| dec(&v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Records what this home has read of a group.
    pub fn set_group_read(
        &self,
        group: &[u8; 16],
        read: &BTreeMap<[u8; 32], u64>,
    ) -> Result<(), Error> {
        self.group_held
            .insert([&b"s"[..], group].concat(), enc(read)?)
    }

    /// What a group says of a file offered in it, by its transfer's id.
    pub fn group_file(&self, id: &TransferId) -> Result<Option<GroupFile>, Error> {
        self.group_held
            .get(file_key(id))?
            .map(|v| dec(&v))
            .transpose()
    }

    /// Every file offered in a group this home knows of, with its transfer's id.
    pub fn group_files(&self) -> Result<Vec<(TransferId, GroupFile)>, Error> {
        let mut out = Vec::new();
        for kv in self.group_held.scan_prefix(b"f") {
            let (k, v) = kv?;
            let Some(id) = k.get(1..17).and_then(|b| <[u8; 16]>::try_from(b).ok()) else {
                continue;
            };
            out.push((TransferId(id), dec(&v)?));
        }
        Ok(out)
    }

    /// Whether `id` is a contact of this home (stored, blocked or not).
    pub fn is_contact(&self, id: &ContactId) -> Result<bool, Error> {
        self.contacts.contains_key(id.as_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ferry_proto::group::{Member, OrderKey};

    /// Pins the stored format of a group's file: a change here needs a migration.
    #[test]
    fn group_file_format_snapshot() {
        let f = GroupFile {
            group: [1; 16],
            hash: [2; 32],
            folder: true,
            author: [3; 32],
        };
        let hex = data_encoding::HEXLOWER.encode(&postcard::to_allocvec(&f).unwrap());
        assert_eq!(
            hex,
            format!(
                "{}{}01{}",
                "01".repeat(16),
                "02".repeat(32),
                "03".repeat(32)
            )
        );
    }

    /// Pins the stored format of a group's record: a change here needs a migration and a
    /// fixture test (DESIGN.md, "Compatibility").
    #[test]
    fn group_record_format_snapshot() {
        let key = OrderKey {
            lamport: 1,
            hash: [3; 32],
        };
        let mut state = GroupState {
            creator: [1; 32],
            name: "G".into(),
            ..GroupState::default()
        };
        state.members.insert(
            [1; 32],
            Member {
                name: "A".into(),
                admin: true,
                since: key,
            },
        );
        state.spans.insert([1; 32], vec![(key, None)]);
        let rec = GroupRecord {
            id: [9; 16],
            state,
            heads: vec![[3; 32]],
            vector: [([1; 32], 1)].into_iter().collect(),
            my_epoch: Some(2),
            shared_for: Vec::new(),
            created_at: 5,
            restored: false,
            named: vec![[1; 32]],
        };
        let bytes = postcard::to_allocvec(&rec).unwrap();
        let hex = data_encoding::HEXLOWER.encode(&bytes);
        assert_eq!(
            hex,
            concat!(
                "0909090909090909090909090909090901010101010101010101010101010101",
                "0101010101010101010101010101010101470101010101010101010101010101",
                "0101010101010101010101010101010101010101410101030303030303030303",
                "0303030303030303030303030303030303030303030303010101010101010101",
                "0101010101010101010101010101010101010101010101010101030303030303",
                "0303030303030303030303030303030303030303030303030303000001030303",
                "0303030303030303030303030303030303030303030303030303030303010101",
                "0101010101010101010101010101010101010101010101010101010101010101",
                "0200050001010101010101010101010101010101010101010101010101010101",
                "0101010101",
            ),
            "{hex}"
        );
        let back: GroupRecord = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, rec);
    }
}
