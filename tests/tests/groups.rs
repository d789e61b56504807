//! Groups between real nodes on loopback: every message reaches every member once and in one
//! order; a member who was away catches up from whichever member it meets; a removed member
//! gets nothing after the removal and cannot open it; concurrent adds converge; entries that
//! break the rules or were tampered with are refused; blocking hides a member for you only.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use ferry_core::group::Body;
use ferry_core::{Direction, Event, GroupView, MemberKind, MessageId, Node};
use ferry_tests::*;

/// Nodes with these names, paired along `links` (indexes into `names`).
async fn nodes(root: &Path, names: &[&str], links: &[(usize, usize)]) -> Result<Vec<Arc<Node>>> {
    init_tracing();
    let mut out = Vec::new();
    for n in names {
        out.push(open(&new_home(root, n)?, test_config()).await?);
    }
    for (a, b) in links {
        pair(&out[*a], &out[*b]).await?;
    }
    Ok(out)
}

/// Every pair of `n` nodes.
fn mesh(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .collect()
}

/// Polls `check` until it holds, up to [`WAIT`] (no event says "all members have it").
async fn until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A group's conversation as one member shows it: (id, body, author's id), in order.
async fn shown(node: &Node, group: &str) -> Result<Vec<(MessageId, String, Direction)>> {
    let page = node.history(group, None, 10_000, false).await?;
    Ok(page
        .into_iter()
        .map(|m| (m.id, m.body, m.direction))
        .collect())
}

/// The texts (not event lines) a member shows.
async fn texts(node: &Node, group: &str) -> Result<Vec<String>> {
    Ok(shown(node, group)
        .await?
        .into_iter()
        .filter(|(_, _, d)| *d != Direction::System)
        .map(|(_, b, _)| b)
        .collect())
}

fn ids_of(v: &GroupView) -> Vec<ferry_core::ContactId> {
    let mut ids: Vec<_> = v.members.iter().map(|m| m.id).collect();
    ids.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    ids
}

/// With `names` paired along `links`, the first creates a group of all and each member sends
/// `per` messages; every member ends with every message once, in one order.
async fn everyone_sees_everything(
    names: &[&str],
    links: &[(usize, usize)],
    per: usize,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let n = nodes(dir.path(), names, links).await?;
    let creator = &n[0];
    // The creator's contacts, then (for members who are not) added by a member who knows them.
    let direct: Vec<String> = links
        .iter()
        .filter(|(a, _)| *a == 0)
        .map(|(_, b)| names[*b].to_string())
        .collect();
    let g = creator.create_group("Friends", &direct).await?;
    let gid = g.id.to_string();
    for (i, name) in names.iter().enumerate().skip(1) {
        if direct.iter().any(|d| d == name) {
            continue;
        }
        // Someone the creator knows adds them (made an admin first).
        let (adder, _) = links
            .iter()
            .find(|(a, b)| *b == i && direct.iter().any(|d| d == names[*a]))
            .context("a member who knows them")?;
        until("the adder is in the group", || async {
            Ok(n[*adder].group(&gid).is_ok())
        })
        .await?;
        creator.group_make_admin(&gid, names[*adder]).await?;
        until("the adder is an admin", || async {
            Ok(n[*adder].group(&gid).map(|v| v.admin).unwrap_or(false))
        })
        .await?;
        n[*adder].group_add(&gid, name).await?;
    }
    until("the creator knows every member", || async {
        Ok(creator.group(&gid)?.members.len() == names.len())
    })
    .await?;
    let want_members = ids_of(&creator.group(&gid)?);
    for node in &n {
        until("every member knows every member", || async {
            Ok(node
                .group(&gid)
                .map(|v| ids_of(&v) == want_members)
                .unwrap_or(false))
        })
        .await?;
    }
    // Everyone writes, at the same time.
    let mut tasks = Vec::new();
    for (i, node) in n.iter().enumerate() {
        let (node, gid) = (node.clone(), gid.clone());
        let name = names[i].to_string();
        tasks.push(tokio::spawn(async move {
            for k in 0..per {
                node.send_text(&gid, &format!("{name} {k}")).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let total = names.len() * per;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &n {
        eprintln!("{:?} {:?}", texts(node, &gid).await?, node.group(&gid)?);
    }
    for node in &n {
        until("every member has every message", || async {
            Ok(texts(node, &gid).await?.len() >= total)
        })
        .await?;
    }
    // Once each, and in one order everywhere (event lines included).
    let order = shown(creator, &gid).await?;
    let mut seen: Vec<&String> = order
        .iter()
        .filter(|(_, _, d)| *d != Direction::System)
        .map(|(_, b, _)| b)
        .collect();
    ensure!(seen.len() == total, "{seen:?}");
    seen.sort();
    seen.dedup();
    ensure!(seen.len() == total, "a message shown twice");
    let want: Vec<MessageId> = order.iter().map(|(id, _, _)| *id).collect();
    for node in &n {
        let got: Vec<MessageId> = shown(node, &gid)
            .await?
            .iter()
            .map(|(id, _, _)| *id)
            .collect();
        ensure!(got == want, "{} shows another order", node.id().fmt_short());
    }
    for node in &n {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_see_every_message_once_in_one_order() -> Result<()> {
    everyone_sees_everything(&["Ann", "Ben", "Cat"], &mesh(3), 5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_some_not_paired_see_every_message_once_in_one_order() -> Result<()> {
    // Dan and Eve are not Ann's contacts: what they write, and what is written to them, goes
    // through members who are (Ben and Cat), keys included.
    let links = [(0, 1), (0, 2), (1, 2), (1, 3), (2, 4), (3, 4)];
    everyone_sees_everything(&["Ann", "Ben", "Cat", "Dan", "Eve"], &links, 3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_away_for_fifty_messages_catches_up_from_another_member() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut n = nodes(dir.path(), &["Ann", "Ben", "Cat"], &mesh(3)).await?;
    let (cat, ben, ann) = (n.remove(2), n.remove(1), n.remove(0));
    let g = ann
        .create_group("Trip", &["Ben".to_string(), "Cat".to_string()])
        .await?;
    let gid = g.id.to_string();
    until("Cat is in the group", || async {
        Ok(cat.group(&gid).is_ok())
    })
    .await?;
    let cat_home = cat.home().to_path_buf();
    cat.shutdown().await;
    drop(cat);
    let ben = &ben;
    for k in 0..50 {
        ann.send_text(&gid, &format!("while Cat is away {k}"))
            .await?;
    }
    until("Ben has all 50", || async {
        Ok(texts(ben, &gid).await?.len() == 50)
    })
    .await?;
    // The author goes away before Cat comes back: Cat gets it all from Ben.
    ann.shutdown().await;
    let cat = open(&cat_home, test_config()).await?;
    until("Cat has caught up", || async {
        Ok(texts(&cat, &gid).await?.len() == 50)
    })
    .await?;
    let want: Vec<String> = (0..50).map(|k| format!("while Cat is away {k}")).collect();
    ensure!(texts(&cat, &gid).await? == want);
    ensure!(cat.group(&gid)?.waiting == 0);
    ensure!(cat.group(&gid)?.unread == 50);
    cat.shutdown().await;
    ben.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_gets_nothing_after_and_cannot_open_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let n = nodes(dir.path(), &["Ann", "Ben", "Cat"], &mesh(3)).await?;
    let (ann, ben, cat) = (&n[0], &n[1], &n[2]);
    let g = ann
        .create_group("Club", &["Ben".to_string(), "Cat".to_string()])
        .await?;
    let gid = g.id.to_string();
    ann.send_text(&gid, "before").await?;
    ben.send_text(&gid, "before too").await?;
    until("Cat has both", || async {
        Ok(texts(cat, &gid).await?.len() == 2)
    })
    .await?;

    ann.group_remove(&gid, "Cat").await?;
    until("Cat knows", || async { Ok(!cat.group(&gid)?.member) }).await?;
    until("Ben knows", || async {
        Ok(ben.group(&gid)?.members.len() == 2)
    })
    .await?;
    ann.send_text(&gid, "after").await?;
    ben.send_text(&gid, "after too").await?;
    until("Ann and Ben have both", || async {
        Ok(texts(ann, &gid).await?.len() == 4 && texts(ben, &gid).await?.len() == 4)
    })
    .await?;
    // Cat got neither; handed the entries themselves, it still cannot open them.
    ensure!(ann.wait_outbox_drained(None, WAIT).await?);
    ensure!(ben.wait_outbox_drained(None, WAIT).await?);
    let mut got = texts(cat, &gid).await?;
    got.sort();
    ensure!(
        got == ["before", "before too"],
        "before handing over: {got:?}"
    );
    let entries = ann.group_entries(&gid)?;
    cat.inject_group_entries("Ann", entries).await?;
    ensure!(cat.group_entries(&gid)?.len() == ann.group_entries(&gid)?.len());
    let mut got = texts(cat, &gid).await?;
    got.sort();
    ensure!(got == ["before", "before too"], "handed over: {got:?}");
    // It holds the ciphertext but no key for it, and waits for none (none will come).
    ensure!(cat.group(&gid)?.waiting == 0, "{:?}", cat.group(&gid)?);
    // And sending to it is refused here.
    ensure!(cat.send_text(&gid, "still here?").await.is_err());
    for node in &n {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_adding_at_once_converge_on_every_member() -> Result<()> {
    // Ann and Bea know each other only through Cal; Dov is Ann's contact, Eli is Bea's.
    let names = ["Ann", "Bea", "Cal", "Dov", "Eli"];
    let dir = tempfile::tempdir()?;
    let mut n = nodes(dir.path(), &names, &[(0, 2), (1, 2), (0, 3), (1, 4)]).await?;
    let cal = n.remove(2);
    let (ann, bea) = (&n[0], &n[1]);
    let g = ann.create_group("Both", &["Cal".to_string()]).await?;
    let gid = g.id.to_string();
    until("Cal is in", || async { Ok(cal.group(&gid).is_ok()) }).await?;
    ann.group_make_admin(&gid, "Cal").await?;
    until("Cal is an admin", || async { Ok(cal.group(&gid)?.admin) }).await?;
    cal.group_add(&gid, "Bea").await?;
    cal.group_make_admin(&gid, "Bea").await?;
    until("Bea is an admin and Ann knows", || async {
        Ok(bea.group(&gid).map(|v| v.admin).unwrap_or(false)
            && ann
                .group(&gid)?
                .members
                .iter()
                .any(|m| m.name == "Bea" && m.admin))
    })
    .await?;

    // Cal goes away: Ann and Bea cannot hear of each other's add.
    let cal_home = cal.home().to_path_buf();
    cal.shutdown().await;
    drop(cal);
    ann.group_add(&gid, "Dov").await?;
    bea.group_add(&gid, "Eli").await?;
    let cal = open(&cal_home, test_config()).await?;
    let all = [&n[0], &n[1], &cal, &n[2], &n[3]];
    for node in all {
        until("five members everywhere", || async {
            Ok(node
                .group(&gid)
                .map(|v| v.members.len() == 5)
                .unwrap_or(false))
        })
        .await?;
    }
    let want = ids_of(&ann.group(&gid)?);
    for node in all {
        ensure!(ids_of(&node.group(&gid)?) == want);
    }
    // The two adds were concurrent: neither names the other among its parents.
    let log = cal.group_entries(&gid)?;
    let adds: Vec<_> = log
        .iter()
        .filter(|e| matches!(e.entry.body, Body::Add { .. }))
        .filter(|e| e.entry.author != *cal.id().as_bytes())
        .collect();
    ensure!(adds.len() == 2, "{adds:?}");
    for (a, b) in [(0, 1), (1, 0)] {
        ensure!(!adds[a].entry.parents.contains(&adds[b].entry.hash()));
    }
    // Dov and Eli, not contacts, show each other as "not verified by you".
    let dov = n[2].group(&gid)?;
    ensure!(dov
        .members
        .iter()
        .any(|m| m.name == "Eli" && m.kind == MemberKind::NotYourContact));
    for node in all {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_admins_removal_and_a_tampered_entry_are_refused_everywhere() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let n = nodes(dir.path(), &["Ann", "Ben", "Cat"], &mesh(3)).await?;
    let (ann, ben, cat) = (&n[0], &n[1], &n[2]);
    let g = ann
        .create_group("Rules", &["Ben".to_string(), "Cat".to_string()])
        .await?;
    let gid = g.id.to_string();
    until("Ben is in", || async { Ok(ben.group(&gid).is_ok()) }).await?;
    // Ben is no admin: the command refuses, and an entry written anyway changes nothing.
    ensure!(ben.group_remove(&gid, "Cat").await.is_err());
    ben.group_write_unchecked(
        &gid,
        Body::Remove {
            member: *cat.id().as_bytes(),
        },
    )
    .await?;
    let count = ben.group_entries(&gid)?.len();
    for node in [ann, cat] {
        until("the entry arrived", || async {
            Ok(node.group_entries(&gid)?.len() == count)
        })
        .await?;
    }
    for node in [ann, ben, cat] {
        ensure!(
            node.group(&gid)?.members.len() == 3,
            "{:?}",
            node.group(&gid)?
        );
    }
    ensure!(cat.group(&gid)?.member);

    // A rename by Ann with its name changed on the way, or signed by someone else: refused.
    ann.group_rename(&gid, "Rules 2").await?;
    until("Ben has the rename", || async {
        Ok(ben.group(&gid)?.name == "Rules 2")
    })
    .await?;
    let mut forged = ann
        .group_entries(&gid)?
        .into_iter()
        .find(|e| matches!(e.entry.body, Body::Rename { .. }))
        .context("the rename")?;
    forged.entry.body = Body::Rename {
        name: "Owned".into(),
    };
    forged.entry.seq += 1;
    let before = ben.group_entries(&gid)?.len();
    ben.inject_group_entries("Ann", vec![forged]).await?;
    ensure!(ben.group_entries(&gid)?.len() == before);
    ensure!(ben.group(&gid)?.name == "Rules 2");
    // Well signed, by a key no membership entry ever named: refused, not stored, not passed on.
    let log = ann.group_entries(&gid)?;
    let create = &log[0].entry;
    let stranger = iroh::SecretKey::from_bytes(&[7; 32]);
    let junk = ferry_core::group::Entry {
        group: create.group,
        author: *stranger.public().as_bytes(),
        seq: 1,
        lamport: 2,
        parents: vec![create.hash()],
        at: 1,
        body: Body::Rename {
            name: "Junk".into(),
        },
    }
    .sign(&stranger);
    ben.inject_group_entries("Ann", vec![junk]).await?;
    ensure!(ben.group_entries(&gid)?.len() == before);
    ensure!(ben.group(&gid)?.name == "Rules 2" && ben.group(&gid)?.waiting == 0);
    for node in &n {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_a_member_hides_their_messages_for_you_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let n = nodes(dir.path(), &["Ann", "Ben", "Cat"], &mesh(3)).await?;
    let (ann, ben, cat) = (&n[0], &n[1], &n[2]);
    let g = ann
        .create_group("Mixed", &["Ben".to_string(), "Cat".to_string()])
        .await?;
    let gid = g.id.to_string();
    until("Ben is in", || async { Ok(ben.group(&gid).is_ok()) }).await?;
    cat.block("Ben").await?;
    ben.send_text(&gid, "from Ben").await?;
    until("Ann has it", || async {
        Ok(texts(ann, &gid).await? == ["from Ben"])
    })
    .await?;
    ann.send_text(&gid, "from Ann").await?;
    until("Cat has Ann's", || async {
        Ok(texts(cat, &gid).await? == ["from Ann"])
    })
    .await?;
    ensure!(cat
        .group(&gid)?
        .members
        .iter()
        .any(|m| m.name == "Ben" && m.kind == MemberKind::Blocked));
    until("Ben has both", || async {
        Ok(texts(ben, &gid).await?.len() == 2)
    })
    .await?;
    for node in &n {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_of_a_contact_and_a_group_asks_for_the_id() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let n = nodes(dir.path(), &["Ann", "Ben"], &mesh(2)).await?;
    let g = n[0].create_group("Ben", &["Ben".to_string()]).await?;
    let e = n[0]
        .send_text("Ben", "which?")
        .await
        .err()
        .context("ambiguous")?;
    ensure!(e.code() == "ambiguous", "{e}");
    ensure!(e.to_string().contains("give the id"), "{e}");
    let prefix = &g.id.to_string()[..8];
    n[0].send_text(prefix, "to the group").await?;
    ensure!(texts(&n[0], prefix).await? == ["to the group"]);
    for node in &n {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_restored_from_a_backup_catches_up_before_it_writes_again() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut n = nodes(dir.path(), &["Ann", "Ben"], &mesh(2)).await?;
    let (ben, ann) = (n.remove(1), n.remove(0));
    let g = ann.create_group("Home", &["Ben".to_string()]).await?;
    let gid = g.id.to_string();
    ann.send_text(&gid, "one").await?;
    let file = dir.path().join("ann.ferrybak");
    let pass = ferry_core::vault::Passphrase::from("backup passphrase");
    ann.export_backup(&file, &pass, |_, _| {}).await?;
    // Written after the backup: the restored home must not write over it.
    ann.send_text(&gid, "two").await?;
    until("Ben has both", || async {
        Ok(texts(&ben, &gid).await? == ["one", "two"])
    })
    .await?;
    ann.shutdown().await;
    drop(ann);

    let home = dir.path().join("new-laptop");
    ferry_core::backup::import(&file, &home, &pass, None)?;
    let ann = open(&home, test_config()).await?;
    // Until Ben has told it what it missed, it refuses to write in the group.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match ann.send_text(&gid, "three").await {
            Ok(_) => break,
            Err(e) if e.to_string().contains("catching up") => {}
            Err(e) => return Err(e.into()),
        }
        ensure!(tokio::time::Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing lost on either side: its own message written after the backup came back, and
    // Ben took the new one (a reused number would have been refused as an equivocation).
    until("Ben has all three", || async {
        Ok(texts(&ben, &gid).await? == ["one", "two", "three"])
    })
    .await?;
    ensure!(texts(&ann, &gid).await? == ["one", "two", "three"]);
    ann.shutdown().await;
    ben.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_say_how_many_members_hold_and_have_read_a_message() -> Result<()> {
    // Cat is not Ann's contact: her receipt reaches Ann through Ben.
    let dir = tempfile::tempdir()?;
    let n = nodes(dir.path(), &["Ann", "Ben", "Cat"], &[(0, 1), (1, 2)]).await?;
    let (ann, ben, cat) = (&n[0], &n[1], &n[2]);
    let g = ann.create_group("Reads", &["Ben".to_string()]).await?;
    let gid = g.id.to_string();
    until("Ben is in", || async { Ok(ben.group(&gid).is_ok()) }).await?;
    ann.group_make_admin(&gid, "Ben").await?;
    until("Ben is an admin", || async { Ok(ben.group(&gid)?.admin) }).await?;
    ben.group_add(&gid, "Cat").await?;
    until("Ann knows Cat", || async {
        Ok(ann.group(&gid)?.members.len() == 3)
    })
    .await?;

    let m = ann.send_text(&gid, "did you get this?").await?;
    let count = || {
        ann.group_receipts(&gid, &[m.id])
            .map(|r| r.first().copied())
    };
    until("both hold it", || async {
        Ok(count()?.is_some_and(|r| r.delivered == 2 && r.of == 2))
    })
    .await?;
    ensure!(count()?.is_some_and(|r| r.read == 0));
    // Reading it (the history with mark_read) says so, also from Cat through Ben.
    ben.history(&gid, None, 50, true).await?;
    until("Ben read it", || async {
        Ok(count()?.is_some_and(|r| r.read == 1))
    })
    .await?;
    until("Cat has it", || async {
        Ok(texts(cat, &gid).await?.len() == 1)
    })
    .await?;
    cat.history(&gid, None, 50, true).await?;
    until("both read it", || async {
        Ok(count()?.is_some_and(|r| r.read == 2))
    })
    .await?;
    for node in &n {
        node.shutdown().await;
    }
    Ok(())
}

/// Ann, Ben and Cat, all paired, in Ann's group "Trip" (its id returned); Ann's blob provider
/// sends at most `bps` bytes a second; Ben and Cat save into `<root>/<name>-downloads`.
async fn trip_with_a_slow_author(
    root: &Path,
    bps: u64,
) -> Result<(Arc<Node>, Arc<Node>, Arc<Node>, String)> {
    init_tracing();
    let slow = ferry_core::Config {
        throttle_bps: Some(bps),
        ..test_config()
    };
    let ann = open(&new_home(root, "Ann")?, slow).await?;
    let ben = open(&new_home(root, "Ben")?, test_config()).await?;
    let cat = open(&new_home(root, "Cat")?, test_config()).await?;
    pair(&ann, &ben).await?;
    pair(&ann, &cat).await?;
    pair(&ben, &cat).await?;
    let gid = ann
        .create_group("Trip", &["Ben".into(), "Cat".into()])
        .await?
        .id
        .to_string();
    for node in [&ben, &cat] {
        until("the member knows all three", || async {
            Ok(node
                .group(&gid)
                .map(|g| g.members.len() == 3)
                .unwrap_or(false))
        })
        .await?;
    }
    ben.set_downloads_dir(&root.join("ben-downloads")).await?;
    cat.set_downloads_dir(&root.join("cat-downloads")).await?;
    Ok((ann, ben, cat, gid))
}

/// A file offered in a group reaches every member; two fetch it, and the second gets part of
/// it from the first while the author, slow, is still sending it to the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_file_is_fetched_by_two_members_the_second_partly_from_the_first() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    // Ann, the author, sends at most 1 MB/s (to each member fetching).
    let (ann, ben, cat, gid) = trip_with_a_slow_author(root, 1_000_000).await?;
    let bytes: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i * 7 + i / 4093) as u8)
        .collect();
    let path = root.join("video.bin");
    std::fs::write(&path, &bytes)?;
    let (mut ben_rx, mut cat_rx) = (ben.subscribe(), cat.subscribe());
    let sent = ann.send_file(&gid, &path).await?;
    ensure!(sent.size == bytes.len() as u64);
    let offered = |e: &Event| match e {
        Event::TransferOffered { transfer } => Some(transfer.clone()),
        _ => None,
    };
    let ben_t = wait_for(&mut ben_rx, offered).await?;
    let cat_t = wait_for(&mut cat_rx, offered).await?;
    // The offer is a message of the group, by Ann, with its file card.
    let history = ben.history(&gid, None, 100, false).await?;
    ensure!(
        history
            .iter()
            .any(|m| m.transfer == Some(ben_t.id) && m.author == ann.id() && m.body == "video.bin"),
        "the offer is not in Ben's group conversation: {history:?}"
    );
    ben.accept_transfer(&ben_t.id.to_string()).await?;
    // Ben holds a third of it (Ann is slow), and then Cat accepts.
    wait_for(&mut ben_rx, |e| match e {
        Event::TransferProgress { id, bytes_done, .. }
            if *id == ben_t.id && *bytes_done >= 1_000_000 =>
        {
            Some(())
        }
        _ => None,
    })
    .await?;
    cat.accept_transfer(&cat_t.id.to_string()).await?;
    let done = |id: ferry_core::TransferId| {
        move |e: &Event| match e {
            Event::TransferCompleted { id: done, path } if *done == id => Some(path.clone()),
            Event::TransferFailed { id: failed, reason } if *failed == id => {
                Some(Path::new(&format!("failed: {reason}")).to_path_buf())
            }
            _ => None,
        }
    };
    let cat_path = wait_for(&mut cat_rx, done(cat_t.id)).await?;
    let ben_path = wait_for(&mut ben_rx, done(ben_t.id)).await?;
    for p in [&ben_path, &cat_path] {
        ensure!(
            std::fs::read(p).ok().as_ref() == Some(&bytes),
            "{} is not the file",
            p.display()
        );
    }
    let sources = cat.transfer_sources(&cat_t.id.to_string())?;
    let from = |who: &Node| {
        sources
            .iter()
            .find(|(c, _)| *c == who.id())
            .map_or(0, |(_, b)| *b)
    };
    ensure!(
        from(&ben) >= 512 * 1024 && from(&ben) + from(&ann) >= bytes.len() as u64,
        "Cat got {} bytes from Ben and {} from Ann",
        from(&ben),
        from(&ann)
    );
    // Ben, done, keeps it for the others: a member who joins later could fetch it from him.
    ensure!(ben.transfer(&ben_t.id.to_string())?.state == ferry_core::TransferState::Done);
    Ok(())
}

/// A group file is served only to members: a contact of both the author and a member who is not
/// in the group fetches nothing from either, and a member removed from the group no longer can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_may_fetch_a_group_file() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let n = nodes(root, &["Ann", "Ben", "Dan"], &mesh(3)).await?;
    let (ann, ben) = (&n[0], &n[1]);
    let gid = ann
        .create_group("Trip", &["Ben".into()])
        .await?
        .id
        .to_string();
    until("Ben is in the group", || async {
        Ok(ben.group(&gid).is_ok())
    })
    .await?;
    ben.set_downloads_dir(&root.join("ben-downloads")).await?;
    let path = root.join("plan.pdf");
    std::fs::write(&path, vec![7u8; 200_000])?;
    let mut rx = ben.subscribe();
    let sent = ann.send_file(&gid, &path).await?;
    let offer = wait_for(&mut rx, |e| match e {
        Event::TransferOffered { transfer } => Some(transfer.clone()),
        _ => None,
    })
    .await?;
    ben.accept_transfer(&offer.id.to_string()).await?;
    wait_for(&mut rx, |e| match e {
        Event::TransferCompleted { id, .. } if *id == offer.id => Some(()),
        _ => None,
    })
    .await?;
    let hash: iroh_blobs::Hash = sent.hash.parse()?;
    let (ann_addr, ben_addr) = (ann.endpoint().addr(), ben.endpoint().addr());
    // Dan, a contact of both, not in the group: with his own key, asks each of them.
    let dan_home = root.join("dan");
    n[2].shutdown().await;
    let dan_key = ferry_core::identity::load_identity(&dan_home, None)?
        .secret_key()
        .clone();
    let fetch = |key: iroh::SecretKey, from: iroh::EndpointAddr| async move {
        let ep = loopback_endpoint(key).await?;
        let store = iroh_blobs::store::mem::MemStore::new();
        let attempt = async {
            let conn = ep.connect(from, iroh_blobs::ALPN).await?;
            store
                .remote()
                .fetch(conn, iroh_blobs::HashAndFormat::raw(hash))
                .await?;
            anyhow::Ok(())
        };
        let r = tokio::time::timeout(WAIT, attempt).await?;
        let got = store.blobs().has(hash).await?;
        ep.close().await;
        anyhow::Ok(r.is_ok() || got)
    };
    for (who, addr) in [("Ann", ann_addr.clone()), ("Ben", ben_addr.clone())] {
        ensure!(
            !fetch(dan_key.clone(), addr).await?,
            "Dan fetched it from {who}"
        );
    }
    // Ben, a member, may fetch it from Ann (here with his key, his node closed); once
    // removed, no longer.
    ben.shutdown().await;
    let ben_key = ferry_core::identity::load_identity(&root.join("ben"), None)?
        .secret_key()
        .clone();
    ensure!(
        fetch(ben_key.clone(), ann_addr.clone()).await?,
        "Ben, a member, was refused"
    );
    ann.group_remove(&gid, "Ben").await?;
    ensure!(
        !fetch(ben_key, ann_addr).await?,
        "Ben fetched it after his removal"
    );
    Ok(())
}

/// A measurement, not a check: how long a member waits for a group file when only the author
/// (upload limited to 2 MB/s) can send it, and when another member already holds it.
/// `cargo test -p ferry-tests --test groups measure -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it by name with --ignored"]
async fn measure_a_group_file_from_the_author_alone_and_from_a_member() -> Result<()> {
    const SIZE: usize = 8_000_000;
    const RUNS: usize = 3;
    let dir = tempfile::tempdir()?;
    let (ann, ben, cat, gid) = trip_with_a_slow_author(dir.path(), 2_000_000).await?;
    let root = dir.path();
    let offered = |e: &Event| match e {
        Event::TransferOffered { transfer } => Some(transfer.id),
        _ => None,
    };
    let completed = |id: ferry_core::TransferId| {
        move |e: &Event| match e {
            Event::TransferCompleted { id: done, .. } if *done == id => Some(()),
            _ => None,
        }
    };
    let (mut alone, mut member) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let path = root.join(format!("video-{run}.bin"));
        let bytes: Vec<u8> = (0..SIZE as u32)
            .map(|i| (i * 13 + run as u32) as u8)
            .collect();
        std::fs::write(&path, &bytes)?;
        let (mut ben_rx, mut cat_rx) = (ben.subscribe(), cat.subscribe());
        ann.send_file(&gid, &path).await?;
        let (ben_t, cat_t) = (
            wait_for(&mut ben_rx, offered).await?,
            wait_for(&mut cat_rx, offered).await?,
        );
        // Ben: nobody but Ann holds it.
        let start = std::time::Instant::now();
        ben.accept_transfer(&ben_t.to_string()).await?;
        tokio::time::timeout(
            Duration::from_secs(60),
            wait_for(&mut ben_rx, completed(ben_t)),
        )
        .await??;
        alone.push(start.elapsed().as_secs_f64());
        // Cat: Ben holds all of it.
        let start = std::time::Instant::now();
        cat.accept_transfer(&cat_t.to_string()).await?;
        wait_for(&mut cat_rx, completed(cat_t)).await?;
        member.push(start.elapsed().as_secs_f64());
    }
    let show = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "{:.2} s ({:.2}–{:.2})",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        )
    };
    println!("| {SIZE} bytes, author's upload 2 MB/s, {RUNS} runs | median (min–max) |");
    println!("| --- | ---: |");
    println!("| from the author alone | {} |", show(&mut alone));
    println!("| another member holds it | {} |", show(&mut member));
    Ok(())
}
