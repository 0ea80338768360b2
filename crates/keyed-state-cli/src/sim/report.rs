//! What a simulation reports ([`SimReport`], each [`Divergence`] from the oracle), and its JSON
//! form: what `keyed-state simulate --json` prints per seed, and what a `--kill` worker sends
//! its parent.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::EngineKind;

/// One difference from the oracle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Divergence {
    /// When it was seen: after which restore, or at the end.
    pub step: String,
    /// The operator (`count`, `sessions`, `dedup`, …; `sink` for the committed output).
    pub operator: String,
    /// The state (or `output`).
    pub state: String,
    /// The user key, when the difference is in a state.
    pub key: Option<u64>,
    /// The namespace or map key (`window 5`, `kind 2`, `id 17`), or the output line.
    pub detail: String,
    /// What the oracle has (`None`: absent).
    pub expected: Option<String>,
    /// What the job has (`None`: absent).
    pub actual: Option<String>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
        write!(
            f,
            "{}: operator {} state {}",
            self.step, self.operator, self.state
        )?;
        if let Some(k) = self.key {
            write!(f, " key {k}")?;
        }
        if !self.detail.is_empty() {
            write!(f, " [{}]", self.detail)?;
        }
        write!(
            f,
            ": expected {}, actual {}",
            show(&self.expected),
            show(&self.actual)
        )
    }
}

/// What a run did and found. Its JSON form (what `--json` prints per seed and a `--kill`
/// worker sends its parent) has every field under its own name, the divergences under
/// `divergence_details` beside their number `divergences`, and digests as 16 hex digits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// The engine.
    pub engine: EngineKind,
    /// Events in the input.
    pub events: u64,
    /// Events processed, replays included.
    pub processed: u64,
    /// Job checkpoints completed (every instance, then the job record).
    pub checkpoints: u64,
    /// Job checkpoints aborted by a storage failure (the job went on).
    pub checkpoints_aborted: u64,
    /// Crashes, all kinds.
    pub crashes: u64,
    /// Crashes during a checkpoint (a subset of `crashes`).
    pub crashes_in_checkpoint: u64,
    /// Crashes during a restore (a subset of `crashes`).
    pub crashes_in_restore: u64,
    /// Restores from a checkpoint.
    pub restores: u64,
    /// Rescalings.
    pub rescales: u64,
    /// Bytes uploaded by completed checkpoints.
    pub bytes_checkpointed: u64,
    /// Committed outputs.
    pub outputs: u64,
    /// Every difference from the oracle (empty: the run is correct); at most a few per check.
    #[serde(rename = "divergence_details")]
    pub divergences: Vec<Divergence>,
    /// A digest of the final state (equal across engines for the same flags; see
    /// [`digest`](super::digest)).
    #[serde(with = "hex_digest")]
    pub state_digest: u64,
    /// A digest of the committed output (order-independent across instances).
    #[serde(with = "hex_digest")]
    pub output_digest: u64,
    /// Wall time.
    pub elapsed_s: f64,
}

impl Default for SimReport {
    fn default() -> Self {
        SimReport {
            seed: 0,
            engine: EngineKind::Heap,
            events: 0,
            processed: 0,
            checkpoints: 0,
            checkpoints_aborted: 0,
            crashes: 0,
            crashes_in_checkpoint: 0,
            crashes_in_restore: 0,
            restores: 0,
            rescales: 0,
            bytes_checkpointed: 0,
            outputs: 0,
            divergences: Vec::new(),
            state_digest: 0,
            output_digest: 0,
            elapsed_s: 0.0,
        }
    }
}

/// The JSON object: the report's fields plus the number of divergences.
#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(flatten)]
    report: SimReport,
    divergences: usize,
}

/// Digests as 16 lowercase hex digits.
mod hex_digest {
    use super::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

impl SimReport {
    /// The JSON object `--json` prints (see the type's documentation).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(Wire {
            report: self.clone(),
            divergences: self.divergences.len(),
        })
        .unwrap_or(Value::Null)
    }

    /// Reads what [`to_json`](Self::to_json) wrote; `None` when `v` is not such an object (a
    /// missing count, an unknown engine, a digest that is not hex, a divergence count that
    /// does not match the details).
    pub fn from_json(v: &Value) -> Option<SimReport> {
        let wire = Wire::deserialize(v).ok()?;
        (wire.divergences == wire.report.divergences.len()).then_some(wire.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_refuses_other_objects() {
        let report = SimReport {
            seed: 7,
            engine: EngineKind::RocksDb,
            events: 100,
            processed: 130,
            checkpoints: 4,
            checkpoints_aborted: 1,
            crashes: 2,
            crashes_in_checkpoint: 1,
            crashes_in_restore: 0,
            restores: 2,
            rescales: 1,
            bytes_checkpointed: 4096,
            outputs: 9,
            divergences: vec![Divergence {
                step: "end".into(),
                operator: "count".into(),
                state: "count".into(),
                key: Some(3),
                detail: String::new(),
                expected: Some("5".into()),
                actual: None,
            }],
            state_digest: 0xdead_beef_0123_4567,
            output_digest: 1,
            elapsed_s: 0.5,
        };
        let v = report.to_json();
        assert_eq!(v["divergences"], 1);
        assert_eq!(v["state_digest"], "deadbeef01234567");
        let back = SimReport::from_json(&v).expect("a report");
        assert_eq!(back.to_json(), v);
        assert_eq!(back.divergences, report.divergences);
        let mut other = v.clone();
        other["engine"] = "ramdisk".into();
        assert!(SimReport::from_json(&other).is_none());
        let mut other = v;
        other["state_digest"] = "not hex".into();
        assert!(SimReport::from_json(&other).is_none());
        assert!(SimReport::from_json(&serde_json::json!({"progress": 3})).is_none());
    }
}
