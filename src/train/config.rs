//! Training recipes: `configs/<name>.toml`, parsed into [`TrainConfig`] (unknown keys are errors).
//!
//! A stage or `psla train` names a recipe either by a path to a TOML file or by the name of one of the
//! recipes shipped in `configs/` (embedded in the binary, so `--config demo_cpu` works anywhere).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The recipes in `configs/`, embedded: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("demo_cpu", include_str!("../../configs/demo_cpu.toml")),
    ("psla_audioset_balanced", include_str!("../../configs/psla_audioset_balanced.toml")),
    ("psla_audioset_full", include_str!("../../configs/psla_audioset_full.toml")),
    ("psla_fsd50k", include_str!("../../configs/psla_fsd50k.toml")),
];

/// One training recipe: model, input, augmentation, optimiser and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `[model]`: the network.
    pub model: ModelSection,
    /// `[input]`: what a clip becomes before the network.
    pub input: InputSection,
    /// `[augment]`: SpecAugment and mixup (training only).
    pub augment: AugmentSection,
    /// `[optim]`: Adam, learning-rate schedule, loss.
    pub optim: OptimSection,
    /// `[data]`: batching and sampling.
    pub data: DataSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `efficientnet-b0` ... `efficientnet-b7`.
    pub arch: String,
    /// 0 = mean pooling, 1 = single attention, 4 = PSLA's multi-head attention (any n >= 1 works).
    pub heads: u32,
    /// BatchNorm running-statistics momentum in training [default: efficientnet_pytorch's 0.01, as PSLA].
    /// Short runs (the demo) need more: at 0.01 the statistics move 1% a step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn_momentum: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSection {
    /// Frames every clip is padded (0.0, at the end) or cut (first frames kept) to. PSLA: 1056 (AudioSet).
    pub target_frames: usize,
    /// Normalisation `(x - mean) / std`: `stats` (the run's `feature_stats`, PSLA's per-clip figures),
    /// `psla` (PSLA's AudioSet constants -4.6476, 4.5699), or `none`.
    #[serde(default = "default_normalize")]
    pub normalize: Normalize,
}

fn default_normalize() -> Normalize {
    Normalize::Stats
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    Stats,
    Psla,
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentSection {
    /// Frequency mask: width uniform in [0, freqm) mel bins (torchaudio's FrequencyMasking). 0 = off.
    pub freqm: usize,
    /// Time mask: width uniform in [0, timem) frames. 0 = off.
    pub timem: usize,
    /// Probability that a training clip is mixed with another (PSLA: 0.5). 0 = off.
    pub mixup: f64,
    /// Mixup lambda ~ Beta(alpha, alpha) (PSLA: 10).
    #[serde(default = "default_mixup_alpha")]
    pub mixup_alpha: f64,
    /// Where clips are mixed: `mel` (from the stored features, in the mel power domain) or `waveform`
    /// (PSLA's: decode both clips' audio, mix, compute the fbank again).
    #[serde(default = "default_mixup_domain")]
    pub mixup_domain: MixupDomain,
}

fn default_mixup_alpha() -> f64 {
    10.0
}

fn default_mixup_domain() -> MixupDomain {
    MixupDomain::Mel
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MixupDomain {
    Mel,
    Waveform,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    /// Base learning rate.
    pub lr: f64,
    /// Epochs to train.
    pub epochs: u32,
    /// The first epoch (1-based) after which the lr is halved; then every `lr_decay_every` epochs.
    pub lr_decay_start: u32,
    #[serde(default = "default_decay_every")]
    pub lr_decay_every: u32,
    #[serde(default = "default_decay")]
    pub lr_decay: f64,
    /// Warm-up steps (PSLA: 1000).
    #[serde(default = "default_warmup_steps")]
    pub warmup_steps: u64,
    /// `linear` (smooth: lr * step / warmup_steps) or `psla` (PSLA's staircase: set every 50 steps).
    #[serde(default = "default_warmup")]
    pub warmup: Warmup,
    /// Adam betas (PSLA: 0.95, 0.999).
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// L2 weight decay added to the gradient, as torch.optim.Adam does (PSLA: 5e-7).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
}

fn default_decay_every() -> u32 {
    5
}
fn default_decay() -> f64 {
    0.5
}
fn default_warmup_steps() -> u64 {
    1000
}
fn default_warmup() -> Warmup {
    Warmup::Linear
}
fn default_betas() -> [f64; 2] {
    [0.95, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    5e-7
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Warmup {
    Linear,
    Psla,
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub batch_size: usize,
    /// Batch size of the evaluation forward passes [default: batch_size].
    #[serde(default)]
    pub eval_batch_size: Option<usize>,
    /// `uniform` (a seeded shuffle of the training clips each epoch, PSLA's balanced-set recipe) or
    /// `draws` (the `epoch_draws` table of the sample stage, PSLA's full-set recipe).
    pub sampling: Sampling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    Uniform,
    Draws,
}

impl TrainConfig {
    /// Parse TOML text; `origin` names the file in messages.
    pub fn parse(origin: &str, text: &str) -> Result<Self> {
        let cfg: TrainConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            Error::file(origin, line, format!("not a valid training recipe: {}", e.message().trim()))
        })?;
        cfg.check().map_err(|m| Error::file(origin, None, m))?;
        Ok(cfg)
    }

    /// A built-in recipe by name, or a TOML file by path. Returns the config and its text.
    pub fn load(name_or_path: &str) -> Result<(Self, String)> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Ok((Self::parse(&format!("configs/{name_or_path}.toml"), text)?, text.to_string()));
        }
        let path = crate::stages::local_path(name_or_path);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let names: Vec<_> = BUILTIN.iter().map(|(n, _)| *n).collect();
            Error::file(&path, None, format!("cannot read the training recipe ({e}); built-in recipes: {}", names.join(", ")))
        })?;
        Ok((Self::parse(&path.to_string_lossy(), &text)?, text))
    }

    /// Whether `name_or_path` is a built-in recipe name (not a file).
    pub fn is_builtin(name_or_path: &str) -> bool {
        BUILTIN.iter().any(|(n, _)| *n == name_or_path)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let o = &self.optim;
        let bad = |key: &str, why: &str| Err(format!("`{key}` {why}"));
        if self.data.batch_size == 0 {
            return bad("data.batch_size", "must be at least 1");
        }
        if self.data.eval_batch_size == Some(0) {
            return bad("data.eval_batch_size", "must be at least 1");
        }
        if self.input.target_frames == 0 {
            return bad("input.target_frames", "must be at least 1");
        }
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return bad("optim.lr", "must be a positive number");
        }
        if o.epochs == 0 {
            return bad("optim.epochs", "must be at least 1");
        }
        if o.lr_decay_every == 0 {
            return bad("optim.lr_decay_every", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.augment.mixup) {
            return bad("augment.mixup", "is a probability: between 0 and 1");
        }
        if !(self.augment.mixup_alpha > 0.0) {
            return bad("augment.mixup_alpha", "must be positive");
        }
        if self.augment.freqm > 128 {
            return bad("augment.freqm", "cannot exceed the 128 mel bins");
        }
        if !(0.0..1.0).contains(&o.betas[0]) || !(0.0..1.0).contains(&o.betas[1]) {
            return bad("optim.betas", "must both be in [0, 1)");
        }
        if !self.model.arch.starts_with("efficientnet-b") {
            return bad("model.arch", "must be efficientnet-b0 ... efficientnet-b7");
        }
        Ok(())
    }

    pub fn eval_batch_size(&self) -> usize {
        self.data.eval_batch_size.unwrap_or(self.data.batch_size)
    }
}
