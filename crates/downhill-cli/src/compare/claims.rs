//! The lecture's claims, each judged on a run by a stated measure.
//!
//! Every measure averages over seeds first. A claim that needs an optimizer the run did not
//! include (by label, or by family) is "n/a", not guessed.

use super::config::Entry;
use super::record::{Claim, EpochRecord};

/// Mini-batch losses kept from the start of each run for the steadiness measure.
pub const EARLY_UPDATES: usize = 100;

/// What a run leaves beside its epoch records, for judging.
pub struct RunDetail {
    /// Its label.
    pub label: String,
    /// It has a warm-up or another schedule.
    pub warmup: bool,
    /// Its seed.
    pub seed: u64,
    /// Mini-batch losses of the first [`EARLY_UPDATES`] updates.
    pub early_losses: Vec<f64>,
    /// Median per-coordinate step size per epoch (Adagrad, RMSProp).
    pub effective_lr: Vec<f64>,
    /// SWATS: per parameter tensor, the update at which it switched to SGD, if it did.
    pub switches: Vec<Option<u64>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Adam,
    Sgd,
    Other,
}

fn family(entry: &Entry) -> Family {
    let name = if entry.optimizer == "lookahead" {
        entry
            .options
            .pointer("/inner/optimizer")
            .and_then(|v| v.as_str())
            .unwrap_or("")
    } else {
        entry.optimizer.as_str()
    };
    match name {
        "adam" | "adamw" | "nadam" | "radam" | "adamax" => Family::Adam,
        "sgd" | "sgdw" => Family::Sgd,
        _ => Family::Other,
    }
}

fn mean(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = xs.into_iter().collect();
    (!v.is_empty() && v.iter().all(|x| x.is_finite()))
        .then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Seeds of the comparison (every label runs on all of them).
fn seeds(details: &[RunDetail]) -> Vec<u64> {
    let mut s: Vec<u64> = details.iter().map(|d| d.seed).collect();
    s.sort_unstable();
    s.dedup();
    s
}

struct Judge<'a> {
    entries: &'a [Entry],
    records: &'a [EpochRecord],
    details: &'a [RunDetail],
    seeds: Vec<u64>,
    last_epoch: usize,
}

impl Judge<'_> {
    /// Mean over seeds of `field` of `label` at `epoch`; `None` when a seed did not reach it
    /// or diverged.
    fn at(&self, label: &str, epoch: usize, field: fn(&EpochRecord) -> f64) -> Option<f64> {
        let values: Vec<f64> = self
            .records
            .iter()
            .filter(|r| r.optimizer == label && r.epoch == epoch)
            .map(field)
            .collect();
        (values.len() == self.seeds.len()).then_some(())?;
        mean(values)
    }

    fn has(&self, label: &str) -> bool {
        self.entries.iter().any(|e| e.label == label)
    }

    fn members(&self, f: Family) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| family(e) == f)
            .map(|e| e.label.as_str())
            .collect()
    }

    fn detail_mean(&self, label: &str, measure: impl Fn(&RunDetail) -> Option<f64>) -> Option<f64> {
        let v: Option<Vec<f64>> = self
            .details
            .iter()
            .filter(|d| d.label == label)
            .map(&measure)
            .collect();
        mean(v?)
    }

    fn early_epoch(&self) -> usize {
        (self.last_epoch / 10).max(1)
    }
}

fn na(claim: &str, why: String) -> Claim {
    Claim {
        claim: claim.into(),
        holds: None,
        evidence: why,
    }
}

fn list(values: &[(&str, Option<f64>)]) -> String {
    values
        .iter()
        .map(|(l, v)| match v {
            Some(v) => format!("{l} {v:.4}"),
            None => format!("{l} diverged"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Judge every claim on this comparison.
pub fn judge(entries: &[Entry], records: &[EpochRecord], details: &[RunDetail]) -> Vec<Claim> {
    let j = Judge {
        entries,
        records,
        details,
        seeds: seeds(details),
        last_epoch: records.iter().map(|r| r.epoch).max().unwrap_or(0),
    };
    if j.last_epoch == 0 {
        return Vec::new();
    }
    vec![
        fastest_early(&j),
        smallest_gap(&j),
        adagrad_shrinks(&j),
        rmsprop_fixes(&j),
        steadier_early(&j),
        swats_both(&j),
    ]
}

fn fastest_early(j: &Judge) -> Claim {
    const CLAIM: &str = "Adam-family methods train fastest early";
    let e = j.early_epoch();
    let (adam, sgd) = (j.members(Family::Adam), j.members(Family::Sgd));
    if adam.is_empty() || sgd.is_empty() {
        return na(
            CLAIM,
            "needs an Adam-family and an SGD-family optimizer".into(),
        );
    }
    let loss = |labels: &[&str]| -> Vec<(String, Option<f64>)> {
        labels
            .iter()
            .map(|l| (l.to_string(), j.at(l, e, |r| r.train_loss)))
            .collect()
    };
    let (a, s) = (loss(&adam), loss(&sgd));
    // A diverged run counts as infinitely slow.
    let med = |v: &[(String, Option<f64>)]| {
        median(v.iter().map(|(_, x)| x.unwrap_or(f64::INFINITY)).collect())
    };
    let (ma, ms) = (med(&a), med(&s));
    let show = |v: &[(String, Option<f64>)]| {
        list(&v.iter().map(|(l, x)| (l.as_str(), *x)).collect::<Vec<_>>())
    };
    Claim {
        claim: CLAIM.into(),
        holds: ma.zip(ms).map(|(a, s)| a < s),
        evidence: format!(
            "median training loss after epoch {e}: Adam family {:.4} ({}) vs SGD family {:.4} ({})",
            ma.unwrap_or(f64::NAN),
            show(&a),
            ms.unwrap_or(f64::NAN),
            show(&s)
        ),
    }
}

fn smallest_gap(j: &Judge) -> Claim {
    const CLAIM: &str =
        "SGD with momentum generalizes better: a smaller generalization gap than the Adam family";
    let e = j.last_epoch;
    let adam = j.members(Family::Adam);
    if !j.has("sgd-momentum") || adam.is_empty() {
        return na(
            CLAIM,
            "needs sgd-momentum and an Adam-family optimizer".into(),
        );
    }
    let gap = |l: &str| j.at(l, e, |r| r.gap);
    let sgdm = gap("sgd-momentum");
    let others: Vec<(&str, Option<f64>)> = adam.iter().map(|l| (*l, gap(l))).collect();
    let smallest = others
        .iter()
        .filter_map(|(l, g)| g.map(|g| (*l, g)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    Claim {
        claim: CLAIM.into(),
        holds: sgdm.map(|s| smallest.is_none_or(|(_, g)| s < g)),
        evidence: format!(
            "test loss − training loss at epoch {e}: sgd-momentum {} vs {}",
            sgdm.map_or("diverged".into(), |g| format!("{g:.4}")),
            list(&others)
        ),
    }
}

/// Effective step size at the last epoch over epoch 1, mean over seeds.
fn step_ratio(j: &Judge, label: &str) -> Option<f64> {
    let last = j.last_epoch;
    j.detail_mean(label, |d| {
        let (first, end) = (d.effective_lr.get(1)?, d.effective_lr.get(last)?);
        Some(end / first)
    })
}

const STEP_MEASURE: &str = "median per-coordinate step lr/(√s+ε), last epoch ÷ epoch 1";

fn adagrad_shrinks(j: &Judge) -> Claim {
    const CLAIM: &str = "Adagrad's steps keep shrinking as squared gradients accumulate";
    if !j.has("adagrad") || j.last_epoch < 2 {
        return na(CLAIM, "needs adagrad and at least 2 epochs".into());
    }
    let r = step_ratio(j, "adagrad");
    Claim {
        claim: CLAIM.into(),
        holds: r.map(|r| r < 0.5),
        evidence: format!(
            "{STEP_MEASURE}: adagrad {} (holds below 0.5)",
            r.map_or("n/a".into(), |r| format!("{r:.3}"))
        ),
    }
}

fn rmsprop_fixes(j: &Judge) -> Claim {
    const CLAIM: &str = "RMSProp fixes it: a moving average keeps its steps from vanishing";
    if !j.has("adagrad") || !j.has("rmsprop") || j.last_epoch < 2 {
        return na(CLAIM, "needs adagrad, rmsprop and at least 2 epochs".into());
    }
    let (a, r) = (step_ratio(j, "adagrad"), step_ratio(j, "rmsprop"));
    Claim {
        claim: CLAIM.into(),
        holds: a.zip(r).map(|(a, r)| r >= 0.5 && r > a),
        evidence: format!(
            "{STEP_MEASURE}: rmsprop {} vs adagrad {} (holds if rmsprop ≥ 0.5 and above adagrad)",
            r.map_or("n/a".into(), |r| format!("{r:.3}")),
            a.map_or("n/a".into(), |a| format!("{a:.3}"))
        ),
    }
}

/// Total rise of the mini-batch loss over the first updates: the sum of its increases.
fn rises(losses: &[f64]) -> Option<f64> {
    (losses.len() >= 2).then(|| {
        losses
            .windows(2)
            .map(|w| (w[1] - w[0]).max(0.0))
            .sum::<f64>()
    })
}

fn steadier_early(j: &Judge) -> Claim {
    const CLAIM: &str = "Warm-up and RAdam make the first updates steadier than Adam's";
    let warm: Vec<&str> = j
        .details
        .iter()
        .filter(|d| d.warmup)
        .map(|d| d.label.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut steady: Vec<&str> = warm;
    if j.has("radam") {
        steady.insert(0, "radam");
    }
    if !j.has("adam") || steady.is_empty() {
        return na(CLAIM, "needs adam and radam or a run with warm-up".into());
    }
    let measure = |l: &str| j.detail_mean(l, |d| rises(&d.early_losses));
    let adam = measure("adam");
    let others: Vec<(&str, Option<f64>)> = steady.iter().map(|l| (*l, measure(l))).collect();
    Claim {
        claim: CLAIM.into(),
        holds: adam.and_then(|a| {
            others
                .iter()
                .map(|(_, x)| x.map(|x| x < a))
                .collect::<Option<Vec<bool>>>()
                .map(|v| v.iter().all(|&b| b))
        }),
        evidence: format!(
            "sum of the mini-batch loss's rises over the first {EARLY_UPDATES} updates: adam {} vs {}",
            adam.map_or("n/a".into(), |a| format!("{a:.4}")),
            list(&others)
        ),
    }
}

fn swats_both(j: &Judge) -> Claim {
    const CLAIM: &str =
        "SWATS gets both: Adam's early speed and a generalization gap closer to SGD's";
    if !j.has("swats") || !j.has("adam") || !j.has("sgd-momentum") {
        return na(CLAIM, "needs swats, adam and sgd-momentum".into());
    }
    let switched = switch_summary(j.details.iter().filter(|d| d.label == "swats"));
    let Some(switched) = switched else {
        return na(
            CLAIM,
            "swats never switched from Adam to SGD in this run (see its switch_eps), so it ran as Adam throughout".into(),
        );
    };
    let e = j.early_epoch();
    let last = j.last_epoch;
    let early = |l: &str| j.at(l, e, |r| r.train_loss);
    let gap = |l: &str| j.at(l, last, |r| r.gap);
    let (se, me) = (early("swats"), early("sgd-momentum"));
    let (sg, ag) = (gap("swats"), gap("adam"));
    let fmt = |x: Option<f64>| x.map_or("diverged".into(), |x| format!("{x:.4}"));
    let holds = match (se, me, sg, ag) {
        (Some(se), Some(me), Some(sg), Some(ag)) => Some(se < me && sg < ag),
        (None, ..) | (_, _, None, _) => Some(false),
        _ => None,
    };
    Claim {
        claim: CLAIM.into(),
        holds,
        evidence: format!(
            "{switched}; training loss after epoch {e}: swats {} vs sgd-momentum {}; gap at epoch {last}: swats {} vs adam {} (holds if below both)",
            fmt(se),
            fmt(me),
            fmt(sg),
            fmt(ag)
        ),
    }
}

/// "switched n of m tensors to SGD, at updates a–b" over the runs `details`; `None` if no
/// tensor of any of them switched.
fn switch_summary<'a>(details: impl Iterator<Item = &'a RunDetail>) -> Option<String> {
    let (mut total, mut at) = (0, Vec::new());
    for d in details {
        total += d.switches.len();
        at.extend(d.switches.iter().flatten().copied());
    }
    let (first, last) = (at.iter().min()?, at.iter().max()?);
    Some(format!(
        "swats switched {} of {total} tensors to SGD, at updates {first}–{last}",
        at.len()
    ))
}

/// `optimizer,seed,update,loss` for the first updates of every run.
pub fn early_csv(details: &[RunDetail]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["optimizer", "seed", "update", "loss"])?;
    for d in details {
        for (k, l) in d.early_losses.iter().enumerate() {
            writer.serialize((&d.label, d.seed, k + 1, l))?;
        }
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(label: &str, optimizer: &str) -> Entry {
        Entry {
            label: label.into(),
            optimizer: optimizer.into(),
            options: json!({}),
            warmup: None,
            schedule: None,
            rest: None,
        }
    }

    fn rec(label: &str, epoch: usize, train_loss: f64, gap: f64) -> EpochRecord {
        EpochRecord {
            optimizer: label.into(),
            seed: 0,
            epoch,
            train_loss,
            test_loss: train_loss + gap,
            train_accuracy: 0.9,
            test_accuracy: 0.9,
            gap,
            lr: 0.1,
            displacement: 1.0,
            wall_time_s: 1.0,
            state_bytes: 0,
            state_bytes_per_param: 0.0,
        }
    }

    fn detail(label: &str, early: Vec<f64>, eff: Vec<f64>) -> RunDetail {
        RunDetail {
            label: label.into(),
            warmup: false,
            seed: 0,
            early_losses: early,
            effective_lr: eff,
            switches: vec![Some(10), None],
        }
    }

    #[test]
    fn each_claim_follows_its_measure() {
        let entries = vec![
            entry("adam", "adam"),
            entry("sgd-momentum", "sgd"),
            entry("adagrad", "adagrad"),
            entry("rmsprop", "rmsprop"),
            entry("radam", "radam"),
            entry("swats", "swats"),
        ];
        let mut records = Vec::new();
        for (l, early, gap) in [
            ("adam", 0.2, 0.5),
            ("sgd-momentum", 0.6, 0.1),
            ("adagrad", 0.5, 0.2),
            ("rmsprop", 0.3, 0.4),
            ("radam", 0.25, 0.4),
            ("swats", 0.3, 0.2),
        ] {
            records.push(rec(l, 0, 2.3, 0.0));
            records.push(rec(l, 1, early, gap));
            records.push(rec(l, 2, early / 2.0, gap));
        }
        let details = vec![
            detail("adam", vec![2.0, 1.0, 1.5, 0.5], vec![]),
            detail("sgd-momentum", vec![2.0, 1.9], vec![]),
            detail("adagrad", vec![2.0, 1.9], vec![100.0, 1.0, 0.3]),
            detail("rmsprop", vec![2.0, 1.9], vec![100.0, 1.0, 1.2]),
            detail("radam", vec![2.0, 1.8, 1.6, 1.5], vec![]),
            detail("swats", vec![2.0, 1.9], vec![]),
        ];
        let claims = judge(&entries, &records, &details);
        let verdicts: Vec<Option<bool>> = claims.iter().map(|c| c.holds).collect();
        assert_eq!(
            verdicts,
            [
                Some(true),
                Some(true),
                Some(true),
                Some(true),
                Some(true),
                Some(true)
            ],
            "{claims:#?}"
        );
        // Flip the gap: sgd-momentum now generalizes worse than adam.
        for r in records.iter_mut().filter(|r| r.optimizer == "sgd-momentum") {
            r.gap = 0.9;
        }
        assert_eq!(judge(&entries, &records, &details)[1].holds, Some(false));
        let swats = &judge(&entries, &records, &details)[5];
        assert!(
            swats
                .evidence
                .starts_with("swats switched 1 of 2 tensors to SGD, at updates 10–10"),
            "{swats:?}"
        );
        // A SWATS that never left Adam cannot show the claim either way.
        let mut details = details;
        details[5].switches = vec![None, None];
        let swats = &judge(&entries, &records, &details)[5];
        assert_eq!(swats.holds, None);
        assert!(swats.evidence.contains("never switched"), "{swats:?}");
    }

    #[test]
    fn missing_optimizers_make_claims_not_applicable() {
        let entries = vec![entry("adam", "adam")];
        let records = vec![rec("adam", 0, 2.3, 0.0), rec("adam", 1, 1.0, 0.1)];
        let details = vec![detail("adam", vec![1.0], vec![])];
        let claims = judge(&entries, &records, &details);
        assert!(claims.iter().all(|c| c.holds.is_none()), "{claims:#?}");
    }

    #[test]
    fn rises_sum_only_increases() {
        assert_eq!(rises(&[3.0, 1.0, 2.0, 1.5, 2.5]), Some(2.0));
        assert_eq!(rises(&[1.0]), None);
    }

    #[test]
    fn early_csv_quotes_labels_and_reads_back() {
        let details = vec![detail("adam, \"warm\"", vec![2.5, 1.25], vec![])];
        let bytes = early_csv(&details).unwrap();
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let rows: Vec<(String, u64, usize, f64)> =
            reader.deserialize().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            rows,
            vec![
                ("adam, \"warm\"".to_string(), 0, 1, 2.5),
                ("adam, \"warm\"".to_string(), 0, 2, 1.25)
            ]
        );
    }
}
