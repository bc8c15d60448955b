//! efficientnet_pytorch 0.7.1's EfficientNet backbone (`extract_features`), in tch.
//!
//! The facts, read from efficientnet_pytorch (`model.py`, `utils.py`):
//! - Seven stages of MBConv blocks (B0 block args, scaled per variant by [`round_filters`] and
//!   [`round_repeats`]); every block has squeeze-excite with ratio 0.25 of its *input* channels.
//! - "Same" padding is static: computed once from the variant's nominal image size (224 for B0, 260 for
//!   B2, ...) as it shrinks through the strides, then applied to inputs of any size. For an odd total
//!   padding the extra row/column goes right/bottom, which is asymmetric for most stride-2 convolutions.
//! - BatchNorm eps 1e-3, momentum 0.01 in PyTorch's sense (TensorFlow's 0.99); swish (x * sigmoid(x)).
//! - Drop-connect (stochastic depth) on residual blocks in training only, rate 0.2 * block_index / blocks.
//! - PSLA uses `in_channels=1` and replaces `_fc` by an identity, so there is no classifier here.

use tch::nn::Path;
use tch::{Kind, Tensor};

use super::Arch;

/// BatchNorm epsilon and momentum (PyTorch semantics: new = (1 - m) * old + m * batch). The momentum is
/// efficientnet_pytorch's default; a training recipe may choose another (it only changes how fast the
/// running statistics follow the batches, never the forward of a trained model).
pub const BN_EPS: f64 = 1e-3;
pub const BN_MOMENTUM: f64 = 0.01;
/// efficientnet_pytorch's drop-connect rate for every variant.
pub const DROP_CONNECT_RATE: f64 = 0.2;
/// Squeeze-excite ratio of every block.
pub const SE_RATIO: f64 = 0.25;

/// One stage of B0: (repeats, kernel, stride, expand ratio, input filters, output filters).
const B0_STAGES: [(i64, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// efficientnet_pytorch's `round_filters`: scale by the width multiplier, round to a multiple of 8 (at
/// least 8), and never round down by more than 10%.
pub fn round_filters(filters: i64, width: f64) -> i64 {
    let divisor = 8.0;
    let scaled = filters as f64 * width;
    let mut rounded = f64::max(divisor, ((scaled + divisor / 2.0).floor() / divisor).floor() * divisor);
    if rounded < 0.9 * scaled {
        rounded += divisor;
    }
    rounded as i64
}

/// efficientnet_pytorch's `round_repeats`: ceil(depth multiplier * repeats).
pub fn round_repeats(repeats: i64, depth: f64) -> i64 {
    (depth * repeats as f64).ceil() as i64
}

/// Number of MBConv blocks of a variant (16 for B0 .. 55 for B7).
pub fn block_count(arch: Arch) -> usize {
    let depth = arch.coefficients().depth;
    B0_STAGES.iter().map(|s| round_repeats(s.0, depth) as usize).sum()
}

/// Whether a variable name is a BatchNorm buffer rather than a learnable parameter.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var") || name.ends_with("num_batches_tracked")
}

/// efficientnet_pytorch's `Conv2dStaticSamePadding` for a square `image_size`: (before, after) padding
/// of each spatial dimension.
pub fn static_same_padding(image_size: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (image_size + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - image_size).max(0);
    (total / 2, total - total / 2)
}

/// A 2-d convolution with efficientnet_pytorch's static padding.
#[derive(Debug)]
pub struct Conv {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    stride: i64,
    groups: i64,
    /// (before, after) on both height and width.
    pad: (i64, i64),
}

impl Conv {
    /// `weight` [out, in / groups, k, k] (and `bias` [out]) under `p`, initialised as PyTorch's Conv2d
    /// (uniform in +-1/sqrt(fan_in)). `image_size` is the nominal input size that fixes the padding.
    #[allow(clippy::too_many_arguments)]
    pub fn new(p: &Path, cin: i64, cout: i64, kernel: i64, stride: i64, groups: i64, bias: bool, image_size: i64) -> Conv {
        let fan_in = (cin / groups) * kernel * kernel;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = tch::nn::Init::Uniform { lo: -bound, up: bound };
        let weight = p.var("weight", &[cout, cin / groups, kernel, kernel], init);
        let bias = bias.then(|| p.var("bias", &[cout], init));
        Conv { weight, bias, stride, groups, pad: static_same_padding(image_size, kernel, stride) }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (before, after) = self.pad;
        let s = [self.stride, self.stride];
        if before == after {
            // Symmetric: let the convolution pad (no copy of the input).
            x.conv2d(&self.weight, self.bias.as_ref(), s, [before, before], [1, 1], self.groups)
        } else {
            // Asymmetric (left/top `before`, right/bottom `after`), as nn.ZeroPad2d does it there.
            let padded = x.constant_pad_nd([before, after, before, after]);
            padded.conv2d(&self.weight, self.bias.as_ref(), s, [0, 0], [1, 1], self.groups)
        }
    }

    pub fn padding(&self) -> (i64, i64) {
        self.pad
    }
}

/// nn.BatchNorm2d(eps=1e-3, momentum=0.01) with PyTorch's buffers, `num_batches_tracked` included.
#[derive(Debug)]
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
    /// Running-statistics momentum used in training.
    pub momentum: f64,
}

impl BatchNorm {
    pub fn new(p: &Path, channels: i64, momentum: f64) -> BatchNorm {
        let weight = p.var("weight", &[channels], tch::nn::Init::Const(1.0));
        let bias = p.var("bias", &[channels], tch::nn::Init::Const(0.0));
        let running_mean = p.zeros_no_train("running_mean", &[channels]);
        let running_var = p.ones_no_train("running_var", &[channels]);
        let num_batches_tracked = p.add("num_batches_tracked", Tensor::zeros([], (Kind::Int64, p.device())), false);
        BatchNorm { weight, bias, running_mean, running_var, num_batches_tracked, momentum }
    }

    /// Batch statistics (and a running-statistics update) in training, running statistics otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if train {
            let mut count = self.num_batches_tracked.shallow_clone();
            let _ = tch::no_grad(|| count.g_add_scalar_(1));
        }
        Tensor::batch_norm(
            x,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            self.momentum,
            BN_EPS,
            true,
        )
    }
}

/// Swish, x * sigmoid(x) (libtorch's fused SiLU).
fn swish(x: &Tensor) -> Tensor {
    x.silu()
}

/// The arguments of one MBConv block after scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockArgs {
    pub kernel: i64,
    pub stride: i64,
    pub expand_ratio: i64,
    pub input_filters: i64,
    pub output_filters: i64,
}

/// Mobile inverted bottleneck: expand (1x1), depthwise (kxk), squeeze-excite, project (1x1), residual.
#[derive(Debug)]
pub struct MbConv {
    pub args: BlockArgs,
    expand: Option<(Conv, BatchNorm)>,
    depthwise: Conv,
    bn1: BatchNorm,
    se_reduce: Conv,
    se_expand: Conv,
    project: Conv,
    bn2: BatchNorm,
    /// Drop-connect probability in training (0 for the first block).
    drop_connect: f64,
}

impl MbConv {
    /// `image_size`: the nominal size of this block's input, which fixes the depthwise padding.
    pub fn new(p: &Path, args: BlockArgs, image_size: i64, drop_connect: f64, bn_momentum: f64) -> MbConv {
        let inp = args.input_filters;
        let oup = inp * args.expand_ratio;
        let expand = (args.expand_ratio != 1).then(|| {
            (Conv::new(&(p / "_expand_conv"), inp, oup, 1, 1, 1, false, image_size), BatchNorm::new(&(p / "_bn0"), oup, bn_momentum))
        });
        let depthwise = Conv::new(&(p / "_depthwise_conv"), oup, oup, args.kernel, args.stride, oup, false, image_size);
        let bn1 = BatchNorm::new(&(p / "_bn1"), oup, bn_momentum);
        let squeezed = ((inp as f64 * SE_RATIO) as i64).max(1);
        let se_reduce = Conv::new(&(p / "_se_reduce"), oup, squeezed, 1, 1, 1, true, 1);
        let se_expand = Conv::new(&(p / "_se_expand"), squeezed, oup, 1, 1, 1, true, 1);
        let out_size = (image_size + args.stride - 1) / args.stride;
        let project = Conv::new(&(p / "_project_conv"), oup, args.output_filters, 1, 1, 1, false, out_size);
        let bn2 = BatchNorm::new(&(p / "_bn2"), args.output_filters, bn_momentum);
        MbConv { args, expand, depthwise, bn1, se_reduce, se_expand, project, bn2, drop_connect }
    }

    /// Residual connection: stride 1 and as many channels out as in (every block but a stage's first).
    pub fn has_skip(&self) -> bool {
        self.args.stride == 1 && self.args.input_filters == self.args.output_filters
    }

    pub fn forward_t(&self, inputs: &Tensor, train: bool) -> Tensor {
        let mut x = match &self.expand {
            Some((conv, bn)) => swish(&bn.forward_t(&conv.forward(inputs), train)),
            None => inputs.shallow_clone(),
        };
        x = swish(&self.bn1.forward_t(&self.depthwise.forward(&x), train));
        let squeezed = x.mean_dim([2i64, 3].as_slice(), true, x.kind());
        let squeezed = self.se_expand.forward(&swish(&self.se_reduce.forward(&squeezed)));
        x = squeezed.sigmoid() * x;
        x = self.bn2.forward_t(&self.project.forward(&x), train);
        if self.has_skip() {
            if train && self.drop_connect > 0.0 {
                x = drop_connect(&x, self.drop_connect);
            }
            x = x + inputs;
        }
        x
    }
}

/// Zero whole samples with probability `p` and scale the others by 1 / (1 - p).
fn drop_connect(x: &Tensor, p: f64) -> Tensor {
    let keep = 1.0 - p;
    let mask = (Tensor::rand([x.size()[0], 1, 1, 1], (x.kind(), x.device())) + keep).floor();
    x / keep * mask
}

/// The backbone up to the head convolution's swish: [B, in_channels, H, W] -> [B, C, H/32, W/32].
#[derive(Debug)]
pub struct EfficientNet {
    pub arch: Arch,
    conv_stem: Conv,
    bn0: BatchNorm,
    blocks: Vec<MbConv>,
    conv_head: Conv,
    bn1: BatchNorm,
    channels_out: i64,
}

impl EfficientNet {
    /// Variables `_conv_stem`, `_bn0`, `_blocks.N.*`, `_conv_head`, `_bn1` under `p`; every BatchNorm
    /// trains with `bn_momentum` ([`BN_MOMENTUM`] is efficientnet_pytorch's).
    pub fn new(p: &Path, arch: Arch, in_channels: i64, bn_momentum: f64) -> EfficientNet {
        let c = arch.coefficients();
        let mut image_size = c.image_size;
        let stem_out = round_filters(32, c.width);
        let conv_stem = Conv::new(&(p / "_conv_stem"), in_channels, stem_out, 3, 2, 1, false, image_size);
        let bn0 = BatchNorm::new(&(p / "_bn0"), stem_out, bn_momentum);
        image_size = (image_size + 1) / 2;

        let total: i64 = B0_STAGES.iter().map(|s| round_repeats(s.0, c.depth)).sum();
        let mut blocks = Vec::with_capacity(total as usize);
        let blocks_path = p / "_blocks";
        for &(repeats, kernel, stride, expand_ratio, inp, out) in &B0_STAGES {
            let mut args = BlockArgs {
                kernel,
                stride,
                expand_ratio,
                input_filters: round_filters(inp, c.width),
                output_filters: round_filters(out, c.width),
            };
            for r in 0..round_repeats(repeats, c.depth) {
                if r == 1 {
                    // The stage's other blocks keep the size and channels of its first block's output.
                    args.input_filters = args.output_filters;
                    args.stride = 1;
                }
                let idx = blocks.len();
                let rate = DROP_CONNECT_RATE * idx as f64 / total as f64;
                blocks.push(MbConv::new(&(&blocks_path / idx), args, image_size, rate, bn_momentum));
                image_size = (image_size + args.stride - 1) / args.stride;
            }
        }
        let last = blocks.last().map(|b| b.args.output_filters).unwrap_or(stem_out);
        let channels_out = round_filters(1280, c.width);
        let conv_head = Conv::new(&(p / "_conv_head"), last, channels_out, 1, 1, 1, false, image_size);
        let bn1 = BatchNorm::new(&(p / "_bn1"), channels_out, bn_momentum);
        EfficientNet { arch, conv_stem, bn0, blocks, conv_head, bn1, channels_out }
    }

    /// efficientnet_pytorch's `extract_features`.
    pub fn extract_features(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = swish(&self.bn0.forward_t(&self.conv_stem.forward(x), train));
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        swish(&self.bn1.forward_t(&self.conv_head.forward(&x), train))
    }

    pub fn channels_out(&self) -> i64 {
        self.channels_out
    }

    pub fn blocks(&self) -> &[MbConv] {
        &self.blocks
    }
}
