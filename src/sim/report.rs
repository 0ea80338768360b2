//! What a simulation reports ([`SimReport`], each [`Divergence`] from the oracle), and its JSON
//! form: what `keyed-state simulate --json` prints per seed, and what a `--kill` worker sends
//! its parent.

use std::fmt;

use serde_json::{Value, json};

use super::EngineKind;

/// One difference from the oracle.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// What a run did and found.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// The engine's name.
    pub engine: &'static str,
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
    pub divergences: Vec<Divergence>,
    /// A digest of the final state (equal across engines for the same flags).
    pub state_digest: u64,
    /// A digest of the committed output (order-independent across instances).
    pub output_digest: u64,
    /// Wall time.
    pub elapsed_s: f64,
}

impl SimReport {
    /// The JSON object `--json` prints: every count, the divergences (`divergences` their
    /// number, `divergence_details` each one), digests as 16 hex digits.
    pub fn to_json(&self) -> Value {
        json!({
            "seed": self.seed, "engine": self.engine, "events": self.events,
            "processed": self.processed, "checkpoints": self.checkpoints,
            "checkpoints_aborted": self.checkpoints_aborted,
            "crashes": self.crashes, "crashes_in_checkpoint": self.crashes_in_checkpoint,
            "crashes_in_restore": self.crashes_in_restore,
            "restores": self.restores, "rescales": self.rescales,
            "bytes_checkpointed": self.bytes_checkpointed, "outputs": self.outputs,
            "divergences": self.divergences.len(),
            "divergence_details": self.divergences.iter().map(|d| json!({
                "step": d.step, "operator": d.operator, "state": d.state, "key": d.key,
                "detail": d.detail, "expected": d.expected, "actual": d.actual,
            })).collect::<Vec<_>>(),
            "state_digest": format!("{:016x}", self.state_digest),
            "output_digest": format!("{:016x}", self.output_digest),
            "elapsed_s": self.elapsed_s,
        })
    }

    /// Reads what [`to_json`](Self::to_json) wrote; `None` when `v` is not such an object (a
    /// missing count, an unknown engine, a digest that is not hex).
    pub fn from_json(v: &Value) -> Option<SimReport> {
        let n = |k: &str| v[k].as_u64();
        let hex = |k: &str| u64::from_str_radix(v[k].as_str()?, 16).ok();
        let engine = [EngineKind::Heap, EngineKind::RocksDb]
            .into_iter()
            .map(EngineKind::name)
            .find(|name| Some(*name) == v["engine"].as_str())?;
        let divergences = v["divergence_details"]
            .as_array()?
            .iter()
            .map(|d| {
                let text = |k: &str| d[k].as_str().map(str::to_owned);
                Some(Divergence {
                    step: text("step")?,
                    operator: text("operator")?,
                    state: text("state")?,
                    key: d["key"].as_u64(),
                    detail: text("detail")?,
                    expected: text("expected"),
                    actual: text("actual"),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(SimReport {
            seed: n("seed")?,
            engine,
            events: n("events")?,
            processed: n("processed")?,
            checkpoints: n("checkpoints")?,
            checkpoints_aborted: n("checkpoints_aborted")?,
            crashes: n("crashes")?,
            crashes_in_checkpoint: n("crashes_in_checkpoint")?,
            crashes_in_restore: n("crashes_in_restore")?,
            restores: n("restores")?,
            rescales: n("rescales")?,
            bytes_checkpointed: n("bytes_checkpointed")?,
            outputs: n("outputs")?,
            divergences,
            state_digest: hex("state_digest")?,
            output_digest: hex("output_digest")?,
            elapsed_s: v["elapsed_s"].as_f64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_refuses_other_objects() {
        let report = SimReport {
            seed: 7,
            engine: "rocksdb",
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
        assert!(SimReport::from_json(&json!({"progress": 3})).is_none());
    }
}
