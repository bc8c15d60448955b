//! The learning rate of every step: warm-up, then step decay by epoch (PSLA's `traintest.py`).
//!
//! PSLA (with `--warmup True`): at every global step `s <= 1000` with `s % 50 == 0` (steps count from
//! 0) it sets `lr = s / 1000 * base`, so the first 50 steps train with lr 0, the next 50 with
//! `0.05 * base`, ..., and from step 1000 on `base`. Its `MultiStepLR(milestones = range(start, 1000,
//! 5), gamma = 0.5)` is stepped after every epoch (1-based), so epoch `E` trains with
//! `base * 0.5^k`, `k` the number of milestones `m < E`: with start 35, epochs 36-40 use `base/2`,
//! 41-45 `base/4`, ... The warm-up *sets* the lr, so a decay that falls inside the warm-up is undone by
//! the next staircase step; [`Warmup::Psla`] reproduces that too.
//!
//! [`Warmup::Linear`] (the default) is smooth: `base * min(1, (s + 1) / warmup_steps)`, multiplied by
//! the decay factor.

use super::config::{OptimSection, Warmup};

/// PSLA's warm-up staircase: the lr is set every this many steps.
pub const PSLA_WARMUP_EVERY: u64 = 50;

#[derive(Debug, Clone)]
pub struct LrSchedule {
    pub base: f64,
    pub warmup: Warmup,
    pub warmup_steps: u64,
    pub decay_start: u32,
    pub decay_every: u32,
    pub decay: f64,
    /// Steps in one epoch (batches, the last one possibly partial).
    pub steps_per_epoch: u64,
}

impl LrSchedule {
    pub fn new(o: &OptimSection, steps_per_epoch: u64) -> Self {
        LrSchedule {
            base: o.lr,
            warmup: o.warmup,
            warmup_steps: o.warmup_steps,
            decay_start: o.lr_decay_start,
            decay_every: o.lr_decay_every.max(1),
            decay: o.lr_decay,
            steps_per_epoch,
        }
    }

    /// Whether the lr is decayed after epoch `e` (1-based): `e` is one of `start, start + every, ...`.
    pub fn is_milestone(&self, e: u32) -> bool {
        e >= self.decay_start && (e - self.decay_start) % self.decay_every == 0
    }

    /// Milestones `m` with `m < epoch`: the decays applied before epoch `epoch` (1-based) trains.
    pub fn decays_before(&self, epoch: u32) -> u32 {
        (1..epoch).filter(|&e| self.is_milestone(e)).count() as u32
    }

    /// The lr of global step `step` (0-based over the whole run) in epoch `epoch` (1-based).
    pub fn lr(&self, step: u64, epoch: u32) -> f64 {
        let w = self.warmup_steps;
        match self.warmup {
            Warmup::None => self.base * self.decay.powi(self.decays_before(epoch) as i32),
            Warmup::Linear => {
                let ramp = if w == 0 { 1.0 } else { ((step + 1) as f64 / w as f64).min(1.0) };
                self.base * ramp * self.decay.powi(self.decays_before(epoch) as i32)
            }
            Warmup::Psla => {
                // The last step at which the warm-up set the lr, and the value it set.
                let (set_at, set_lr) = if w == 0 {
                    (0, self.base)
                } else {
                    // Sets happen at steps 0, 50, ... up to w (inclusive).
                    let s = (step / PSLA_WARMUP_EVERY * PSLA_WARMUP_EVERY).min(w / PSLA_WARMUP_EVERY * PSLA_WARMUP_EVERY);
                    (s, self.base * s as f64 / w as f64)
                };
                // Decays after that set: milestone epochs e < epoch whose end (step e * spe) is after it.
                let k = (1..epoch)
                    .filter(|&e| self.is_milestone(e) && e as u64 * self.steps_per_epoch > set_at)
                    .count();
                set_lr * self.decay.powi(k as i32)
            }
        }
    }
}
