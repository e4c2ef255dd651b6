//! An operation history and its checker: every PUT and DELETE a test issues is recorded with
//! its start, end and outcome (ok / failed / maybe); after the appliances converge the final
//! state of every key on every appliance is checked against it:
//!
//! - **no divergence**: every appliance holds the same thing for the key;
//! - **nothing invented**: the final value is the bytes of a write that was issued (and not
//!   refused with a 4xx), byte for byte;
//! - **no lost acknowledged write, no resurrection**: the final state comes from some write or
//!   delete `O` (ok or maybe) that no acknowledged operation started after `O` ended. (An op
//!   that starts after another has been acknowledged gets a newer version, so it must win.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the promise holds.
    Ok,
    /// 4xx: nothing changed.
    Failed,
    /// 5xx or no answer: it may or may not have happened.
    Maybe,
}

impl Outcome {
    pub fn of_status(status: Option<u16>) -> Outcome {
        match status {
            Some(s) if (200..300).contains(&s) => Outcome::Ok,
            Some(s) if (400..500).contains(&s) => Outcome::Failed,
            _ => Outcome::Maybe,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Op {
    pub node: usize,
    pub key: String,
    /// The value written (None: a delete).
    pub value: Option<u64>,
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
}

/// The bytes of value `id`: the id itself, then bytes derived from it (length varies by id).
pub fn value_bytes(id: u64) -> Vec<u8> {
    let len = 8 + match id % 10 {
        0 => 1_500_000,
        1 | 2 => 70_000,
        _ => (id as usize * 37) % 9_000,
    };
    let mut v = id.to_le_bytes().to_vec();
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    v.extend((8..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    v
}

/// The value id a body holds, if it is exactly a value's bytes.
pub fn value_of(body: &[u8]) -> Option<u64> {
    let id = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    (value_bytes(id) == body).then_some(id)
}

#[derive(Debug, Default)]
pub struct History {
    ops: Mutex<Vec<Op>>,
}

/// What a check covered.
#[derive(Debug, Default)]
pub struct Summary {
    pub ops: usize,
    pub ok: usize,
    pub maybe: usize,
    pub failed: usize,
    pub keys: usize,
}

/// What one appliance holds for a key: a value id, absent, or bytes that are no value at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Value(u64),
    Absent,
    Garbage,
}

impl History {
    pub fn record(&self, op: Op) {
        self.ops.lock().expect("history").push(op);
    }

    pub fn keys(&self) -> BTreeSet<String> {
        self.ops.lock().expect("history").iter().map(|o| o.key.clone()).collect()
    }

    /// Checks the final state: `held[node][key]`.
    pub fn check(&self, held: &[BTreeMap<String, Held>]) -> Result<Summary, Vec<String>> {
        let ops = self.ops.lock().expect("history").clone();
        let mut problems = Vec::new();
        let mut s = Summary { ops: ops.len(), ..Default::default() };
        for o in &ops {
            match o.outcome {
                Outcome::Ok => s.ok += 1,
                Outcome::Maybe => s.maybe += 1,
                Outcome::Failed => s.failed += 1,
            }
        }
        for key in self.keys() {
            s.keys += 1;
            let states: Vec<Held> =
                held.iter().map(|h| h.get(&key).copied().unwrap_or(Held::Absent)).collect();
            if states.windows(2).any(|w| w[0] != w[1]) {
                problems.push(format!("{key}: appliances diverge: {states:?}"));
                continue;
            }
            let fin = states[0];
            let on_key: Vec<&Op> = ops.iter().filter(|o| o.key == key).collect();
            let acked_start = |after: Option<Instant>| {
                on_key.iter().any(|o| o.outcome == Outcome::Ok && after.is_none_or(|t| o.start > t))
            };
            let explained = match fin {
                Held::Garbage => false,
                Held::Value(id) => on_key
                    .iter()
                    .filter(|o| o.value == Some(id) && o.outcome != Outcome::Failed)
                    .any(|o| !acked_start(Some(o.end))),
                Held::Absent => {
                    // The key's state before any write, or a delete.
                    let never_acked_write =
                        !on_key.iter().any(|o| o.value.is_some() && o.outcome == Outcome::Ok);
                    never_acked_write
                        || on_key
                            .iter()
                            .filter(|o| o.value.is_none() && o.outcome != Outcome::Failed)
                            .any(|o| !acked_start(Some(o.end)))
                }
            };
            if !explained {
                let mut story: Vec<String> =
                    on_key.iter().map(|o| format!("{:?}@{} {:?}", o.value, o.node, o.outcome)).collect();
                story.truncate(12);
                problems.push(format!(
                    "{key}: final state {fin:?} is not the newest acknowledged write or delete (ops: {})",
                    story.join(", ")
                ));
            }
        }
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(problems)
        }
    }
}

/// One recorded PUT (`value`) or DELETE (None) of `/photos/{key}` on node `i`; its status.
pub fn op(
    h: &History,
    nodes: &[super::Node],
    i: usize,
    key: &str,
    value: Option<u64>,
    copies: &str,
) -> Option<u16> {
    let start = Instant::now();
    let path = format!("/photos/{key}");
    let r = match value {
        Some(id) => nodes[i].try_req("PUT", &path, &[("X-Copies", copies)], &value_bytes(id)),
        None => nodes[i].try_req("DELETE", &path, &[("X-Copies", copies)], b""),
    };
    let status = r.ok().map(|r| r.status);
    h.record(Op {
        node: i,
        key: key.into(),
        value,
        start,
        end: Instant::now(),
        outcome: Outcome::of_status(status),
    });
    status
}

/// What every node holds for every key of the history, once they agree (or the last look,
/// after `within`).
pub fn converge(
    h: &History,
    nodes: &[super::Node],
    within: std::time::Duration,
) -> Vec<BTreeMap<String, Held>> {
    let deadline = Instant::now() + within;
    loop {
        let held: Vec<BTreeMap<String, Held>> = nodes
            .iter()
            .map(|n| {
                h.keys()
                    .into_iter()
                    .map(|k| {
                        let r = n.req("GET", &format!("/photos/{k}"), &[], b"");
                        let v = match r.status {
                            404 => Held::Absent,
                            200 => value_of(&r.body).map_or(Held::Garbage, Held::Value),
                            s => panic!("GET {k}: {s}"),
                        };
                        (k, v)
                    })
                    .collect()
            })
            .collect();
        if held.windows(2).all(|w| w[0] == w[1]) || Instant::now() > deadline {
            return held;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
