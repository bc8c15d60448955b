//! Balanced subsets and multi-label stratified splits (`psla subset`).
//!
//! - [`balanced_subset`]: at least `k` clips per class where the class has them, built the way
//!   AudioSet's balanced set was: classes from the rarest up, each topped up to `k` with clips drawn at
//!   random (seeded) among those carrying it; every clip picked counts for all its labels.
//! - [`stratified_split`]: iterative stratification (Sechidis, Tsoumakas, Vlahavas, 2011) into a
//!   train and a validation part: the label with the fewest clips left is placed first, each of its
//!   clips going to the part that still most wants that label, so every label's share in each part
//!   stays close to the requested fraction. A rare label that mostly co-occurs with a frequent one
//!   can drift (the frequent one, placed last, takes the clips it needs); tests/sample.rs states the bound.
//!
//! Both are deterministic for a seed (ChaCha8) and independent of hash order.

use std::collections::{BTreeMap, HashMap};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Clips (sorted by id) and each clip's labels as class indices into `vocabulary`; labels outside it
/// are dropped and counted.
pub struct LabelSets {
    pub clips: Vec<String>,
    pub labels: Vec<Vec<usize>>,
    pub vocabulary: Vec<String>,
    pub unknown_labels: u64,
}

impl LabelSets {
    pub fn new(clip_ids: &[String], mids: &[String], vocabulary: &[String]) -> Result<Self> {
        if clip_ids.is_empty() {
            return Err(Error::invalid("the label table is empty"));
        }
        let index: HashMap<&str, usize> = vocabulary.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
        let mut per_clip: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut unknown_labels = 0;
        for (c, m) in clip_ids.iter().zip(mids) {
            let list = per_clip.entry(c.as_str()).or_default();
            match index.get(m.as_str()) {
                Some(&k) if !list.contains(&k) => list.push(k),
                Some(_) => {}
                None => unknown_labels += 1,
            }
        }
        Ok(LabelSets {
            clips: per_clip.keys().map(|c| c.to_string()).collect(),
            labels: per_clip.into_values().collect(),
            vocabulary: vocabulary.to_vec(),
            unknown_labels,
        })
    }

    /// Clips per class.
    pub fn counts(&self) -> Vec<usize> {
        let mut n = vec![0; self.vocabulary.len()];
        for ls in &self.labels {
            for &k in ls {
                n[k] += 1;
            }
        }
        n
    }
}

/// Indices of the clips of a balanced subset: at least `k` clips of every class that has `k`, all
/// clips of the classes that have fewer. Classes are visited from the rarest; ties by vocabulary order.
pub fn balanced_subset(sets: &LabelSets, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let counts = sets.counts();
    let mut order: Vec<usize> = (0..sets.vocabulary.len()).filter(|&c| counts[c] > 0).collect();
    order.sort_by_key(|&c| (counts[c], c));
    let mut clips_of: Vec<Vec<usize>> = vec![Vec::new(); sets.vocabulary.len()];
    for (i, ls) in sets.labels.iter().enumerate() {
        for &c in ls {
            clips_of[c].push(i);
        }
    }
    let mut selected = vec![false; sets.clips.len()];
    let mut have = vec![0usize; sets.vocabulary.len()];
    for c in order {
        if have[c] >= k {
            continue;
        }
        let mut candidates: Vec<usize> = clips_of[c].iter().copied().filter(|&i| !selected[i]).collect();
        candidates.shuffle(&mut rng);
        for i in candidates.into_iter().take(k - have[c]) {
            selected[i] = true;
            for &l in &sets.labels[i] {
                have[l] += 1;
            }
        }
    }
    (0..sets.clips.len()).filter(|&i| selected[i]).collect()
}

/// Split `clips` (indices into `sets`) into train and validation with iterative stratification;
/// returns true for the validation clips, in the order of `clips`.
pub fn stratified_split(sets: &LabelSets, clips: &[usize], val_fraction: f64, seed: u64) -> Vec<bool> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5b11);
    let fractions = [1.0 - val_fraction, val_fraction];
    let n_classes = sets.vocabulary.len();
    // Desired numbers of clips per part, overall and per label.
    let mut want_total: [f64; 2] = [clips.len() as f64 * fractions[0], clips.len() as f64 * fractions[1]];
    let mut label_count = vec![0usize; n_classes];
    for &i in clips {
        for &c in &sets.labels[i] {
            label_count[c] += 1;
        }
    }
    let mut want: Vec<[f64; 2]> = label_count.iter().map(|&n| [n as f64 * fractions[0], n as f64 * fractions[1]]).collect();
    let mut clips_of: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (pos, &i) in clips.iter().enumerate() {
        for &c in &sets.labels[i] {
            clips_of[c].push(pos);
        }
    }
    let mut part: Vec<Option<usize>> = vec![None; clips.len()];
    let mut left = label_count.clone();
    let place = |pos: usize, p: usize, part: &mut Vec<Option<usize>>, want: &mut Vec<[f64; 2]>, want_total: &mut [f64; 2], left: &mut Vec<usize>| {
        part[pos] = Some(p);
        want_total[p] -= 1.0;
        for &c in &sets.labels[clips[pos]] {
            want[c][p] -= 1.0;
            left[c] -= 1;
        }
    };
    loop {
        // The label with the fewest unplaced clips (ties: vocabulary order).
        let Some(c) = (0..n_classes).filter(|&c| left[c] > 0).min_by_key(|&c| (left[c], c)) else { break };
        let mut todo: Vec<usize> = clips_of[c].iter().copied().filter(|&pos| part[pos].is_none()).collect();
        todo.shuffle(&mut rng);
        for pos in todo {
            // The part that most wants this label; between parts that want it equally, the one that
            // most wants the clip's other labels (relative to their size), then the overall desire.
            let p = if want[c][0] != want[c][1] {
                usize::from(want[c][1] > want[c][0])
            } else {
                let rel = |p: usize| -> f64 {
                    sets.labels[clips[pos]].iter().map(|&l| want[l][p] / label_count[l].max(1) as f64).sum()
                };
                let (r0, r1) = (rel(0), rel(1));
                if r0 != r1 { usize::from(r1 > r0) } else { choose(want_total, want_total, &mut rng) }
            };
            place(pos, p, &mut part, &mut want, &mut want_total, &mut left);
        }
    }
    // Clips without labels: by the overall desire.
    for pos in 0..clips.len() {
        if part[pos].is_none() {
            let p = choose(want_total, want_total, &mut rng);
            part[pos] = Some(p);
            want_total[p] -= 1.0;
        }
    }
    part.into_iter().map(|p| p == Some(1)).collect()
}

/// The part that wants the label most; ties by the overall desire, then at random.
fn choose(label_want: [f64; 2], total_want: [f64; 2], rng: &mut ChaCha8Rng) -> usize {
    if label_want[0] != label_want[1] {
        return if label_want[0] > label_want[1] { 0 } else { 1 };
    }
    if total_want[0] != total_want[1] {
        return if total_want[0] > total_want[1] { 0 } else { 1 };
    }
    rng.random_range(0..2)
}
