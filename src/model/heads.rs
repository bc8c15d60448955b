//! PSLA's pooling heads over time (`src/models/HigherModels.py`): input [B, C, T, 1] (after frequency
//! mean pooling), output [B, classes] (probabilities; for multi-head see below). `att` and `cla` are 1x1
//! convolutions C -> classes.
//!
//! - heads 0, `MeanPooling`: out = mean_t sigmoid(cla(x)). Keys `cla.weight`, `cla.bias`.
//! - heads 1, `Attention`: a = clamp(sigmoid(att(x)), 1e-7, 1 - 1e-7), a_norm = a / sum_t a,
//!   out = sum_t a_norm * sigmoid(cla(x)). Keys `att.weight`, `att.bias`, `cla.weight`, `cla.bias`.
//! - heads H > 1, `MHeadAttention`: H such heads, out = sum_h head_weight[h] * out_h, `head_weight` learnable,
//!   initialised 1/H, never normalised. Keys `att.{h}.weight`, ..., `cla.{h}.bias`, `head_weight`.
//!
//! Initialisation as PSLA: `init_layer` (uniform +-sqrt(2/fan_in)*sqrt(3), bias 0) for mean pooling and
//! single attention; PyTorch's default Conv2d init for the multi-head convolutions (PSLA calls no init there).

use tch::nn::Path;
use tch::Tensor;

/// PSLA's attention clamp.
pub const ATT_EPSILON: f64 = 1e-7;

/// A head's 1x1 convolution with bias: weight [classes, C, 1, 1], bias [classes].
#[derive(Debug)]
pub struct Conv1x1 {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Conv1x1 {
    /// `psla_init`: PSLA's `init_layer`; otherwise PyTorch's default (uniform +-1/sqrt(fan_in)).
    fn new(p: &Path, cin: i64, cout: i64, psla_init: bool) -> Conv1x1 {
        let (w_init, b_init) = if psla_init {
            let scale = (2.0 / cin as f64).sqrt() * 3f64.sqrt();
            (tch::nn::Init::Uniform { lo: -scale, up: scale }, tch::nn::Init::Const(0.0))
        } else {
            let bound = 1.0 / (cin as f64).sqrt();
            let init = tch::nn::Init::Uniform { lo: -bound, up: bound };
            (init, init)
        };
        let weight = p.var("weight", &[cout, cin, 1, 1], w_init);
        let bias = p.var("bias", &[cout], b_init);
        Conv1x1 { weight, bias }
    }

    /// [B, C, T, 1] -> [B, classes, T].
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, Some(&self.bias), [1, 1], [0, 0], [1, 1], 1).squeeze_dim(3)
    }
}

/// Attention pooling of one head: sum_t normalised clamp(sigmoid(att)) * sigmoid(cla) -> [B, classes].
fn attend(att: &Conv1x1, cla: &Conv1x1, x: &Tensor) -> Tensor {
    let a = att.forward(x).sigmoid().clamp(ATT_EPSILON, 1.0 - ATT_EPSILON);
    let c = cla.forward(x).sigmoid();
    let norm = &a / a.sum_dim_intlist([2i64].as_slice(), true, a.kind());
    (norm * c).sum_dim_intlist([2i64].as_slice(), false, a.kind())
}

/// One of PSLA's three heads.
#[derive(Debug)]
pub enum Head {
    Mean { cla: Conv1x1 },
    Attention { att: Conv1x1, cla: Conv1x1 },
    MultiHead { att: Vec<Conv1x1>, cla: Vec<Conv1x1>, head_weight: Tensor },
}

impl Head {
    /// Variables under `p` (PSLA's `attention`) for `heads` = 0 (mean), 1 (attention) or > 1 (multi-head).
    pub fn new(p: &Path, channels: i64, classes: i64, heads: usize) -> Head {
        match heads {
            0 => Head::Mean { cla: Conv1x1::new(&(p / "cla"), channels, classes, true) },
            1 => Head::Attention {
                att: Conv1x1::new(&(p / "att"), channels, classes, true),
                cla: Conv1x1::new(&(p / "cla"), channels, classes, true),
            },
            h => {
                let (att_p, cla_p) = (p / "att", p / "cla");
                // PSLA creates att.0, cla.0, att.1, ... in this order; the names are what matters.
                let mut att = Vec::with_capacity(h);
                let mut cla = Vec::with_capacity(h);
                for i in 0..h {
                    att.push(Conv1x1::new(&(&att_p / i), channels, classes, false));
                    cla.push(Conv1x1::new(&(&cla_p / i), channels, classes, false));
                }
                let head_weight = p.var("head_weight", &[h as i64], tch::nn::Init::Const(1.0 / h as f64));
                Head::MultiHead { att, cla, head_weight }
            }
        }
    }

    /// Number of heads as in [`super::ModelConfig::heads`].
    pub fn heads(&self) -> usize {
        match self {
            Head::Mean { .. } => 0,
            Head::Attention { .. } => 1,
            Head::MultiHead { att, .. } => att.len(),
        }
    }

    /// [B, C, T, 1] -> [B, classes] probabilities.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Head::Mean { cla } => {
                let c = cla.forward(x).sigmoid();
                c.mean_dim([2i64].as_slice(), false, c.kind())
            }
            Head::Attention { att, cla } => attend(att, cla, x),
            Head::MultiHead { att, cla, head_weight } => {
                let outs: Vec<Tensor> = att
                    .iter()
                    .zip(cla)
                    .enumerate()
                    .map(|(i, (a, c))| attend(a, c, x) * head_weight.get(i as i64))
                    .collect();
                Tensor::stack(&outs, 0).sum_dim_intlist([0i64].as_slice(), false, x.kind())
            }
        }
    }
}
