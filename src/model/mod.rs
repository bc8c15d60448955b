//! PSLA's model in tch: efficientnet_pytorch's EfficientNet-B0..B7 backbone (one input channel), frequency
//! mean pooling, then mean pooling, single-head or multi-head attention over time (YuanGongND/psla,
//! `src/models/Models.py` `EffNetAttention` and `src/models/HigherModels.py`).
//!
//! - [`efficientnet`]: the backbone, numerically efficientnet_pytorch 0.7.1 (static "same" padding from each
//!   variant's nominal image size, BatchNorm eps 1e-3 momentum 0.01, swish, squeeze-excite, drop-connect).
//! - [`heads`]: the pooling heads over time.
//! - [`checkpoint`]: safetensors files with PSLA's state-dict keys and our metadata.
//! - [`input`]: pad/cut to a fixed number of frames and normalisation, shared by train and score.
//!
//! Variables are created under the `nn::Path` given to [`PslaModel::new`] with the names of PSLA's
//! `state_dict()` (`effnet._conv_stem.weight`, `effnet._blocks.3._bn1.running_var`, `attention.cla.weight`,
//! ...), so pass `vs.root()` to get PSLA's keys exactly. BatchNorm layers also hold an int64
//! `num_batches_tracked` (not trainable) as PyTorch does, so a checkpoint loads into PSLA's class strictly.

use std::fmt;
use std::str::FromStr;

pub mod checkpoint;
pub mod device;
pub mod efficientnet;
pub mod heads;
pub mod input;

/// An EfficientNet variant (efficientnet_pytorch's `efficientnet-b0` .. `efficientnet-b7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Arch {
    B0,
    B1,
    B2,
    B3,
    B4,
    B5,
    B6,
    B7,
}

impl Arch {
    pub const ALL: [Arch; 8] = [Arch::B0, Arch::B1, Arch::B2, Arch::B3, Arch::B4, Arch::B5, Arch::B6, Arch::B7];

    /// 0 for B0 .. 7 for B7.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Channels out of the backbone (PSLA's `middim`): 1280, 1280, 1408, 1536, 1792, 2048, 2304, 2560.
    pub fn channels_out(self) -> i64 {
        efficientnet::round_filters(1280, self.coefficients().width)
    }

    /// efficientnet_pytorch's `efficientnet_params`: width and depth multipliers, nominal image size
    /// (which fixes the static padding) and the classifier's dropout (unused here: PSLA drops `_fc`).
    pub fn coefficients(self) -> Coefficients {
        let (width, depth, image_size, dropout) = match self {
            Arch::B0 => (1.0, 1.0, 224, 0.2),
            Arch::B1 => (1.0, 1.1, 240, 0.2),
            Arch::B2 => (1.1, 1.2, 260, 0.3),
            Arch::B3 => (1.2, 1.4, 300, 0.3),
            Arch::B4 => (1.4, 1.8, 380, 0.4),
            Arch::B5 => (1.6, 2.2, 456, 0.4),
            Arch::B6 => (1.8, 2.6, 528, 0.5),
            Arch::B7 => (2.0, 3.1, 600, 0.5),
        };
        Coefficients { width, depth, image_size, dropout }
    }
}

/// Scaling coefficients of one variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    pub width: f64,
    pub depth: f64,
    pub image_size: i64,
    pub dropout: f64,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "efficientnet-b{}", self.index())
    }
}

impl FromStr for Arch {
    type Err = String;

    /// `efficientnet-b2`, `b2`, `B2` (and `effnet-b2`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let rest = lower.strip_prefix("efficientnet-").or_else(|| lower.strip_prefix("effnet-")).unwrap_or(&lower);
        let digit = rest.strip_prefix('b').and_then(|d| d.parse::<usize>().ok());
        match digit {
            Some(i) if i < 8 => Ok(Arch::ALL[i]),
            _ => Err(format!("unknown architecture `{s}`: expected efficientnet-b0 .. efficientnet-b7 (or b0 .. b7)")),
        }
    }
}

/// What fixes the model's variables: the backbone, the head and the number of classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    pub arch: Arch,
    /// 0: mean pooling, 1: single-head attention, >1: multi-head attention with that many heads.
    pub heads: usize,
    pub classes: usize,
}

/// PSLA's `EffNetAttention`: [B, T, 128] log-mel (normalised) -> [B, classes] scores (see [`PslaModel::forward_t`]).
pub struct PslaModel {
    config: ModelConfig,
    effnet: efficientnet::EfficientNet,
    head: heads::Head,
}

impl PslaModel {
    /// Create the variables under `p` (use `vs.root()` for PSLA's key names), initialised as PSLA does
    /// when it trains from scratch (PyTorch's default conv init, BatchNorm weight 1 bias 0; PSLA's
    /// `init_layer` for single attention and mean pooling; head weights 1/heads).
    pub fn new(p: &tch::nn::Path, cfg: &ModelConfig) -> PslaModel {
        Self::with_bn_momentum(p, cfg, efficientnet::BN_MOMENTUM)
    }

    /// As [`PslaModel::new`], with BatchNorm running statistics that follow the training batches with
    /// `bn_momentum` instead of efficientnet_pytorch's 0.01 (a short run's statistics never settle at
    /// 0.01: a few dozen steps leave eval-mode outputs nearly constant).
    pub fn with_bn_momentum(p: &tch::nn::Path, cfg: &ModelConfig, bn_momentum: f64) -> PslaModel {
        let effnet = efficientnet::EfficientNet::new(&(p / "effnet"), cfg.arch, 1, bn_momentum);
        let head = heads::Head::new(&(p / "attention"), effnet.channels_out(), cfg.classes as i64, cfg.heads);
        PslaModel { config: cfg.clone(), effnet, head }
    }

    /// `x`: [B, T, 128] log-mel, already normalised, on the VarStore's device. Returns [B, classes]:
    /// probabilities in (0, 1) for mean pooling and single attention; for multi-head attention PSLA's
    /// sum of head outputs weighted by the learnt `head_weight`, which PSLA never normalises (in (0, 1)
    /// while the weights sum to at most 1, as at initialisation).
    /// `train` switches BatchNorm to batch statistics (updating the running ones) and enables
    /// drop-connect.
    pub fn forward_t(&self, x: &tch::Tensor, train: bool) -> tch::Tensor {
        // [B, T, F] -> [B, 1, F, T]: frequency is the image height, time its width.
        let x = x.unsqueeze(1).transpose(2, 3);
        let x = self.effnet.extract_features(&x, train);
        // PSLA's nn.AvgPool2d((4, 1)): average the 4 remaining frequency rows, then [B, C, T', 1].
        let x = x.avg_pool2d([4, 1], [4, 1], [0, 0], false, true, None::<i64>).transpose(2, 3);
        self.head.forward(&x)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn effnet(&self) -> &efficientnet::EfficientNet {
        &self.effnet
    }
}

/// Number of learnable values (weights, biases, head weights; not BatchNorm running statistics nor
/// `num_batches_tracked`) of the variables in `vs` whose name starts with `prefix` ("" for all,
/// "effnet." for the backbone): what PyTorch's `sum(p.numel() for p in model.parameters())` counts.
pub fn parameter_count(vs: &tch::nn::VarStore, prefix: &str) -> i64 {
    vs.variables()
        .iter()
        .filter(|(name, _)| name.starts_with(prefix) && !efficientnet::is_buffer(name))
        .map(|(_, t)| t.numel() as i64)
        .sum()
}
