//! The model: forward equal to PSLA's (goldens in ../shared/reference/model), checkpoints (bit-identical
//! reload, metadata, PSLA's keys, strict loading), efficientnet_pytorch's variants.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use psla::model::checkpoint::{self, CheckpointMeta};
use psla::model::input::{pad_or_cut, Normalization, PSLA_AUDIOSET};
use psla::model::{parameter_count, Arch, ModelConfig, PslaModel};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::common::{shared, tempdir};

fn reference(name: &str) -> PathBuf {
    shared().join("reference/model").join(name)
}

fn b0(heads: usize) -> (VarStore, PslaModel) {
    let vs = VarStore::new(Device::Cpu);
    let model = PslaModel::new(&vs.root(), &ModelConfig { arch: Arch::B0, heads, classes: 10 });
    (vs, model)
}

fn tensors(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// PSLA's eval-mode output on the reference input for a model loaded from PSLA's state dict.
fn golden_diff(heads: usize) -> f64 {
    let (mut vs, model) = b0(heads);
    checkpoint::load_psla_state_dict(&mut vs, &reference(&format!("effnet_b0_heads{heads}.safetensors"))).unwrap();
    let io = tensors(&reference(&format!("effnet_b0_heads{heads}_io.safetensors")));
    let (input, expected) = (&io["input"], &io["output"]);
    assert_eq!(input.size(), [2, 400, 128]);
    assert_eq!(expected.size(), [2, 10]);
    let out = tch::no_grad(|| model.forward_t(input, false));
    assert_eq!(out.size(), [2, 10]);
    let d = max_abs_diff(&out, expected);
    println!("heads {heads}: max |ours - PSLA| = {d:.3e} (outputs in [{:.4}, {:.4}])", expected.min().double_value(&[]), expected.max().double_value(&[]));
    d
}

#[test]
fn forward_equals_psla_mean_pooling() {
    assert!(golden_diff(0) <= 1e-5);
}

#[test]
fn forward_equals_psla_single_attention() {
    assert!(golden_diff(1) <= 1e-5);
}

#[test]
fn forward_equals_psla_four_heads() {
    assert!(golden_diff(4) <= 1e-5);
}

fn meta(arch: Arch, heads: usize, classes: usize) -> CheckpointMeta {
    CheckpointMeta {
        arch,
        heads,
        classes: (0..classes).map(|i| format!("/m/{i:03}x")).collect(),
        epoch: Some(7),
        config: serde_json::json!({"lr": 1e-3, "batch": 100, "mixup": 0.5, "nested": {"name": "psla \"b0\"", "list": [1, 2]}}),
        norm_mean: -4.6476,
        norm_std: 0.1 + 0.2, // not a short decimal: must still round-trip exactly
        target_frames: 1056,
    }
}

#[test]
fn checkpoint_reloads_bit_identically_with_psla_keys() {
    let dir = tempdir();
    let src = reference("effnet_b0_heads4.safetensors");
    let (mut vs, model) = b0(4);
    checkpoint::load_psla_state_dict(&mut vs, &src).unwrap();
    let path = dir.path().join("models/teacher/epoch-07.safetensors");
    let m = meta(Arch::B0, 4, 10);
    checkpoint::save(&vs, &path, &m).unwrap();
    assert!(!std::fs::read_dir(path.parent().unwrap()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("tmp")));

    // Our file holds exactly PSLA's state dict: the same keys (num_batches_tracked included), dtypes,
    // shapes and bytes, so PyTorch's strict load_state_dict accepts it.
    let ours = tensors(&path);
    let theirs = tensors(&src);
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
    for (k, t) in &theirs {
        assert_eq!(ours[k].kind(), t.kind(), "{k}");
        assert!(ours[k].equal(t), "{k} differs from PSLA's file");
    }
    assert_eq!(ours["effnet._bn0.num_batches_tracked"].kind(), Kind::Int64);

    let (mut vs2, model2) = b0(4);
    let back = checkpoint::load(&mut vs2, &path).unwrap();
    assert_eq!(back, m);
    let (a, b) = (vs.variables(), vs2.variables());
    assert_eq!(a.len(), b.len());
    for (k, t) in &a {
        assert!(t.equal(&b[k]), "{k} differs after reload");
    }
    let x = Tensor::randn([2, 200, 128], (Kind::Float, Device::Cpu));
    let (y1, y2) = tch::no_grad(|| (model.forward_t(&x, false), model2.forward_t(&x, false)));
    assert!(y1.equal(&y2), "outputs differ after a reload");
}

#[test]
fn checkpoint_metadata_round_trips() {
    let dir = tempdir();
    let vs = VarStore::new(Device::Cpu);
    let _model = PslaModel::new(&vs.root(), &ModelConfig { arch: Arch::B2, heads: 4, classes: 527 });
    let path = dir.path().join("b2.safetensors");
    let mut m = meta(Arch::B2, 4, 527);
    checkpoint::save(&vs, &path, &m).unwrap();
    assert_eq!(checkpoint::read_meta(&path).unwrap(), m);
    let raw = checkpoint::read_metadata_map(&path).unwrap().unwrap();
    assert_eq!(raw["arch"], "efficientnet-b2");
    assert_eq!(raw["heads"], "4");
    assert_eq!(raw["target_frames"], "1056");
    let mut vs2 = VarStore::new(Device::Cpu);
    let _model2 = PslaModel::new(&vs2.root(), &ModelConfig { arch: Arch::B2, heads: 4, classes: 527 });
    assert_eq!(checkpoint::load(&mut vs2, &path).unwrap(), m);

    // No epoch, empty config.
    m.epoch = None;
    m.config = serde_json::json!({});
    checkpoint::save(&vs, &path, &m).unwrap();
    assert_eq!(checkpoint::read_meta(&path).unwrap(), m);

    // A class list that does not fit the model is refused.
    let err = checkpoint::save(&vs, &path, &meta(Arch::B2, 4, 10)).unwrap_err().to_string();
    assert!(err.contains("527 classes") && err.contains("10"), "{err}");

    // PSLA's own files carry no metadata: read_meta says what to do.
    let err = checkpoint::read_meta(&reference("effnet_b0_heads1.safetensors")).unwrap_err().to_string();
    assert!(err.contains("--arch"), "{err}");
    let (mut vs3, _m3) = b0(1);
    let err = checkpoint::load(&mut vs3, &reference("effnet_b0_heads1.safetensors")).unwrap_err().to_string();
    assert!(err.contains("--arch"), "{err}");
}

/// Write `named` as a safetensors file without metadata.
fn write(path: &Path, named: BTreeMap<String, Tensor>) {
    let v: Vec<(String, Tensor)> = named.into_iter().collect();
    checkpoint::write_safetensors(path, &v, &HashMap::new()).unwrap();
}

#[test]
fn loading_names_missing_extra_and_misshaped_keys() {
    let dir = tempdir();
    let src = tensors(&reference("effnet_b0_heads1.safetensors"));
    let load = |named: BTreeMap<String, Tensor>| {
        let path = dir.path().join("bad.safetensors");
        write(&path, named);
        let (mut vs, _m) = b0(1);
        checkpoint::load_psla_state_dict(&mut vs, &path).unwrap_err().to_string()
    };

    let mut missing = src.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect::<BTreeMap<_, _>>();
    missing.remove("effnet._blocks.5._se_reduce.bias");
    let err = load(missing);
    assert!(err.contains("missing") && err.contains("`effnet._blocks.5._se_reduce.bias`"), "{err}");

    let mut extra = src.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect::<BTreeMap<_, _>>();
    extra.insert("attention.head_weight".into(), Tensor::ones([4], (Kind::Float, Device::Cpu)));
    let err = load(extra);
    assert!(err.contains("unexpected") && err.contains("`attention.head_weight`"), "{err}");

    let mut misshaped = src.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect::<BTreeMap<_, _>>();
    misshaped.insert("attention.cla.bias".into(), Tensor::zeros([11], (Kind::Float, Device::Cpu)));
    let err = load(misshaped);
    assert!(err.contains("misshaped") && err.contains("`attention.cla.bias`") && err.contains("[11]") && err.contains("[10]"), "{err}");

    // A heads-1 file into a heads-4 model: the attention keys are named.
    let (mut vs, _m) = b0(4);
    let err = checkpoint::load_psla_state_dict(&mut vs, &reference("effnet_b0_heads1.safetensors")).unwrap_err().to_string();
    assert!(err.contains("`attention.att.0.weight`") && err.contains("`attention.att.weight`"), "{err}");

    // num_batches_tracked is optional on reading.
    let without: BTreeMap<String, Tensor> =
        src.iter().filter(|(k, _)| !k.ends_with("num_batches_tracked")).map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    let path = dir.path().join("no_nbt.safetensors");
    write(&path, without);
    let (mut vs, _m) = b0(1);
    checkpoint::load_psla_state_dict(&mut vs, &path).unwrap();
}

#[test]
fn module_prefix_is_stripped_and_fc_ignored() {
    let dir = tempdir();
    let src = tensors(&reference("effnet_b0_heads0.safetensors"));
    let mut named: BTreeMap<String, Tensor> = src.iter().map(|(k, t)| (format!("module.{k}"), t.shallow_clone())).collect();
    named.insert("module.effnet._fc.weight".into(), Tensor::zeros([1000, 1280], (Kind::Float, Device::Cpu)));
    named.insert("module.effnet._fc.bias".into(), Tensor::zeros([1000], (Kind::Float, Device::Cpu)));
    let path = dir.path().join("dataparallel.safetensors");
    write(&path, named);
    let (mut vs, model) = b0(0);
    checkpoint::load_psla_state_dict(&mut vs, &path).unwrap();
    let io = tensors(&reference("effnet_b0_heads0_io.safetensors"));
    let out = tch::no_grad(|| model.forward_t(&io["input"], false));
    assert!(max_abs_diff(&out, &io["output"]) <= 1e-5);
}

#[test]
fn imagenet_init_loads_the_backbone_but_the_stem() {
    let dir = tempdir();
    // An efficientnet_pytorch ImageNet state dict: backbone keys without `effnet.`, a 3-channel stem, _fc.
    let src = tensors(&reference("effnet_b0_heads1.safetensors"));
    let mut named: BTreeMap<String, Tensor> = src
        .iter()
        .filter_map(|(k, t)| k.strip_prefix("effnet.").map(|k| (k.to_string(), t.shallow_clone())))
        .collect();
    let backbone = named.len();
    named.insert("_conv_stem.weight".into(), Tensor::ones([32, 3, 3, 3], (Kind::Float, Device::Cpu)));
    named.insert("_fc.weight".into(), Tensor::zeros([1000, 1280], (Kind::Float, Device::Cpu)));
    named.insert("_fc.bias".into(), Tensor::zeros([1000], (Kind::Float, Device::Cpu)));
    let path = dir.path().join("imagenet_b0.safetensors");
    write(&path, named);

    let (mut vs, model) = b0(1);
    let before = vs.variables();
    let loaded = checkpoint::load_imagenet_init(&mut vs, &path).unwrap();
    assert_eq!(loaded, backbone - 1, "every backbone tensor but the stem");
    let after = vs.variables();
    assert!(after["effnet._conv_stem.weight"].equal(&before["effnet._conv_stem.weight"]), "the stem keeps its init");
    assert_eq!(after["effnet._conv_stem.weight"].size(), [32, 1, 3, 3]);
    assert!(after["effnet._blocks.7._depthwise_conv.weight"].equal(&src["effnet._blocks.7._depthwise_conv.weight"]));
    assert!(after["attention.att.weight"].equal(&before["attention.att.weight"]), "the head is untouched");
    // Value for value, every backbone tensor; and with PSLA's own stem and head put back, the model is PSLA's
    // reference model again: its output is the golden one.
    for (k, t) in &src {
        if k.starts_with("effnet.") && k != "effnet._conv_stem.weight" {
            assert!(after[k].to_kind(Kind::Double).equal(&t.to_kind(Kind::Double)), "{k}");
        }
    }
    tch::no_grad(|| {
        for (k, t) in &after {
            if k == "effnet._conv_stem.weight" || k.starts_with("attention.") {
                t.shallow_clone().copy_(&src[k]);
            }
        }
    });
    let io = tensors(&reference("effnet_b0_heads1_io.safetensors"));
    let d = max_abs_diff(&tch::no_grad(|| model.forward_t(&io["input"], false)), &io["output"]);
    assert!(d <= 1e-5, "ImageNet-initialised backbone with PSLA's stem and head vs the golden: {d}");

    // B0 weights into a B2 model: the misshaped keys are named.
    let mut vs2 = VarStore::new(Device::Cpu);
    let _m2 = PslaModel::new(&vs2.root(), &ModelConfig { arch: Arch::B2, heads: 4, classes: 527 });
    let err = checkpoint::load_imagenet_init(&mut vs2, &path).unwrap_err().to_string();
    assert!((err.contains("misshaped") || err.contains("missing")) && err.contains("`effnet."), "{err}");
}

/// efficientnet_pytorch 0.7.1 (`EfficientNet.from_name(name, in_channels=1)`, run with torch 2.13 on this
/// project's machine): parameters without `_fc`, blocks, state-dict entries without `_fc`.
const EFFICIENTNET_PYTORCH: [(Arch, i64, usize, usize, i64); 8] = [
    (Arch::B0, 4_006_972, 16, 358, 1280),
    (Arch::B1, 6_512_608, 23, 506, 1280),
    (Arch::B2, 7_700_418, 23, 506, 1408),
    (Arch::B3, 10_695_512, 26, 572, 1536),
    (Arch::B4, 17_547_752, 32, 704, 1792),
    (Arch::B5, 28_339_920, 39, 852, 2048),
    (Arch::B6, 40_734_696, 45, 984, 2304),
    (Arch::B7, 63_785_808, 55, 1198, 2560),
];

#[test]
fn variants_match_efficientnet_pytorch() {
    for (arch, params, blocks, keys, channels) in EFFICIENTNET_PYTORCH {
        let vs = VarStore::new(Device::Cpu);
        let model = PslaModel::new(&vs.root(), &ModelConfig { arch, heads: 4, classes: 527 });
        assert_eq!(parameter_count(&vs, "effnet."), params, "{arch} backbone parameters");
        assert_eq!(model.effnet().blocks().len(), blocks, "{arch} blocks");
        assert_eq!(vs.variables().keys().filter(|k| k.starts_with("effnet.")).count(), keys, "{arch} state-dict keys");
        assert_eq!(arch.channels_out(), channels);
        // The 4 heads: 8 convolutions C -> 527 and the head weights.
        assert_eq!(parameter_count(&vs, "attention."), 8 * (channels * 527 + 527) + 4);
        assert_eq!(arch.to_string().parse::<Arch>().unwrap(), arch);
        assert_eq!(format!("b{}", arch.index()).parse::<Arch>().unwrap(), arch);
    }
    assert!("efficientnet-b8".parse::<Arch>().is_err());
    // A forward of B2 (PSLA's AudioSet model) on 1056 frames: 527 probabilities.
    let vs = VarStore::new(Device::Cpu);
    let model = PslaModel::new(&vs.root(), &ModelConfig { arch: Arch::B2, heads: 4, classes: 527 });
    let y = tch::no_grad(|| model.forward_t(&Tensor::randn([1, 1056, 128], (Kind::Float, Device::Cpu)), false));
    assert_eq!(y.size(), [1, 527]);
    assert!(y.min().double_value(&[]) > 0.0 && y.max().double_value(&[]) < 1.0);
}

#[test]
fn static_padding_is_efficientnet_pytorchs() {
    use psla::model::efficientnet::static_same_padding;
    // B0 at 224: stem 3x3/2 pads (0, 1); 5x5/2 at 56 pads (1, 2); at B2's 65, 5x5/2 pads (2, 2).
    assert_eq!(static_same_padding(224, 3, 2), (0, 1));
    assert_eq!(static_same_padding(56, 5, 2), (1, 2));
    assert_eq!(static_same_padding(65, 5, 2), (2, 2));
    assert_eq!(static_same_padding(14, 5, 1), (2, 2));
    assert_eq!(static_same_padding(7, 1, 1), (0, 0));
}

#[test]
fn training_mode_uses_batch_statistics_and_drop_connect() {
    let (vs, model) = b0(4);
    let x = Tensor::randn([3, 96, 128], (Kind::Float, Device::Cpu));
    let eval1 = tch::no_grad(|| model.forward_t(&x, false));
    let eval2 = tch::no_grad(|| model.forward_t(&x, false));
    assert!(eval1.equal(&eval2), "eval mode is deterministic");
    // Training: batch statistics (deterministic) and drop-connect (random per call; the global seed is
    // shared by the tests running in parallel, so only "differs" is checked).
    let t1 = model.forward_t(&x, true);
    let t2 = model.forward_t(&x, true);
    let t3 = model.forward_t(&x, true);
    assert!(!t1.equal(&t2) || !t1.equal(&t3), "drop-connect draws differ");
    assert!(!t1.allclose(&eval1, 1e-3, 1e-3, false), "training mode uses batch statistics");
    let vars = vs.variables();
    assert_eq!(vars["effnet._bn0.num_batches_tracked"].int64_value(&[]), 3);
    assert!(!vars["effnet._bn0.running_mean"].equal(&Tensor::zeros([32], (Kind::Float, Device::Cpu))));
    // Gradients reach the stem and the head weights.
    let loss = t1.clamp(1e-7, 1.0 - 1e-7).binary_cross_entropy::<Tensor>(&Tensor::zeros_like(&t1), None, tch::Reduction::Mean);
    loss.backward();
    assert!(vars["effnet._conv_stem.weight"].grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    assert!(vars["attention.head_weight"].grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn pad_or_cut_and_normalisation() {
    let frames: Vec<f32> = (0..3 * 128).map(|i| i as f32).collect();
    let padded = pad_or_cut(&frames, 3, 5);
    assert_eq!(padded.len(), 5 * 128);
    assert_eq!(&padded[..3 * 128], &frames[..]);
    assert!(padded[3 * 128..].iter().all(|&v| v == 0.0));
    let cut = pad_or_cut(&frames, 3, 2);
    assert_eq!(&cut[..], &frames[..2 * 128]);
    assert_eq!(pad_or_cut(&frames, 3, 3), frames);

    assert_eq!((PSLA_AUDIOSET.mean, PSLA_AUDIOSET.std), (-4.6476, 4.5699));
    let mut v = vec![-4.6476f32, 0.0];
    PSLA_AUDIOSET.apply(&mut v);
    assert_eq!(v[0], 0.0);
    assert!((v[1] - 4.6476 / 4.5699).abs() < 1e-6);
    let n = Normalization { mean: 1.0, std: 2.0 };
    let t = n.apply_tensor(&Tensor::from_slice(&[3.0f32, -1.0]));
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![1.0, -1.0]);
}

