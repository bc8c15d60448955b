//! The training recipe: lr schedule, SpecAugment, mixup, Adam, recipes; the mel-domain mixup against
//! PSLA's waveform mixup on demo clips.

use psla::train::adam::Adam;
use psla::train::augment::{FBANK_EPS, beta, mask_range, mix_labels, mix_mel, mix_waveforms, spec_augment};
use psla::train::config::{MixupDomain, Normalize, Sampling, TrainConfig, Warmup, BUILTIN};
use psla::train::data::{centred_wave, pad_or_cut, rng_for, shuffled_order, waveform_fbank};
use psla::train::schedule::LrSchedule;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

fn schedule(warmup: Warmup, start: u32, steps_per_epoch: u64) -> LrSchedule {
    LrSchedule { base: 1e-3, warmup, warmup_steps: 1000, decay_start: start, decay_every: 5, decay: 0.5, steps_per_epoch }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
}

#[test]
fn psla_warmup_is_a_staircase_set_every_50_steps_from_zero() {
    let s = schedule(Warmup::Psla, 35, 200);
    // traintest.py: if global_step <= 1000 and global_step % 50 == 0: lr = global_step / 1000 * base.
    for step in 0..1200u64 {
        let epoch = (step / 200) as u32 + 1;
        let expected = if step >= 1000 { 1e-3 } else { 1e-3 * (step / 50 * 50) as f64 / 1000.0 };
        assert!(close(s.lr(step, epoch), expected), "step {step}: {} vs {expected}", s.lr(step, epoch));
    }
    assert_eq!(s.lr(0, 1), 0.0, "PSLA's first 50 steps train with lr 0");
    assert!(close(s.lr(50, 1), 5e-5));
    assert!(close(s.lr(999, 5), 9.5e-4));
}

#[test]
fn linear_warmup_ramps_smoothly_to_the_base_lr() {
    let s = schedule(Warmup::Linear, 35, 200);
    for step in 0..1500u64 {
        let epoch = (step / 200) as u32 + 1;
        let expected = 1e-3 * ((step + 1) as f64 / 1000.0).min(1.0);
        assert!(close(s.lr(step, epoch), expected), "step {step}");
    }
    // Strictly increasing during the warm-up, constant after it.
    assert!((1..999).all(|st| s.lr(st, 1) > s.lr(st - 1, 1)));
    assert_eq!(s.lr(999, 5), 1e-3);
    assert_eq!(s.lr(5000, 20), 1e-3);
}

#[test]
fn lr_halves_after_the_decay_start_epoch_and_every_5_epochs_after() {
    // MultiStepLR(range(35, 1000, 5), gamma=0.5) stepped after each epoch: epoch E trains with
    // base * 0.5^(number of milestones < E).
    for warmup in [Warmup::Linear, Warmup::Psla, Warmup::None] {
        let s = schedule(warmup, 35, 200);
        let late = 100_000; // well after the warm-up
        for epoch in 1..=60u32 {
            let k = if epoch <= 35 { 0 } else { (epoch - 36) / 5 + 1 };
            let expected = 1e-3 * 0.5f64.powi(k as i32);
            assert!(close(s.lr(late, epoch), expected), "{warmup:?} epoch {epoch}: {} vs {expected}", s.lr(late, epoch));
        }
        assert_eq!(s.lr(late, 35), 1e-3);
        assert_eq!(s.lr(late, 36), 5e-4);
        assert_eq!(s.lr(late, 40), 5e-4);
        assert_eq!(s.lr(late, 41), 2.5e-4);
        assert!(s.is_milestone(35) && s.is_milestone(40) && !s.is_milestone(36) && !s.is_milestone(34));
    }
    // The full-set recipe: start 10 -> epochs 11-15 at base/2, 16-20 at base/4.
    let s = schedule(Warmup::None, 10, 1);
    assert_eq!(s.lr(0, 10), 1e-3);
    assert_eq!(s.lr(0, 11), 5e-4);
    assert_eq!(s.lr(0, 16), 2.5e-4);
}

#[test]
fn psla_warmup_overrides_a_decay_that_falls_inside_it() {
    // 10 steps per epoch, decay after epoch 1: PSLA halves the lr at the end of epoch 1 (step 10), the
    // staircase sets it again at step 50, so steps 10-49 train with half of 0 (= 0) and 50 on are undecayed
    // until step 1000; the next milestone (epoch 6, step 60) halves again.
    let s = LrSchedule { base: 1.0, warmup: Warmup::Psla, warmup_steps: 1000, decay_start: 1, decay_every: 5, decay: 0.5, steps_per_epoch: 10 };
    assert_eq!(s.lr(49, 5), 0.0);
    assert_eq!(s.lr(55, 6), 0.05); // set at 50, no milestone after step 50 yet (epoch 6 has not ended)
    assert_eq!(s.lr(65, 7), 0.025); // milestone 6 ended at step 60 > 50
    assert_eq!(s.lr(105, 11), 0.1); // set again at step 100, milestone 11 not passed before epoch 11
    // Set to the base lr at step 1000; milestone 96 ended at step 960, before that set, so it is undone.
    assert_eq!(s.lr(1005, 101), 1.0);
    // Past the warm-up, decays apply again: milestone 101 ends at step 1010.
    assert_eq!(s.lr(1015, 102), 0.5);
}

#[test]
fn spec_augment_masks_are_within_bounds_narrower_than_the_parameter_and_zero_exactly_their_cells() {
    let (frames, bins, freqm, timem) = (100usize, 128usize, 48usize, 30usize);
    let mut max_f = 0;
    let mut max_t = 0;
    let mut starts = std::collections::BTreeSet::new();
    for seed in 0..400u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let original: Vec<f32> = (0..frames * bins).map(|i| 1.0 + (i % 7) as f32).collect();
        let mut x = original.clone();
        let m = spec_augment(&mut rng, &mut x, bins, freqm, timem);
        let (fw, tw) = (m.freq.1 - m.freq.0, m.time.1 - m.time.0);
        assert!(fw < freqm && m.freq.1 <= bins, "{m:?}");
        assert!(tw < timem && m.time.1 <= frames, "{m:?}");
        max_f = max_f.max(fw);
        max_t = max_t.max(tw);
        starts.insert(m.time.0);
        for t in 0..frames {
            for f in 0..bins {
                let masked = (m.freq.0..m.freq.1).contains(&f) || (m.time.0..m.time.1).contains(&t);
                let v = x[t * bins + f];
                if masked {
                    assert_eq!(v, 0.0, "cell ({t}, {f}) in {m:?}");
                } else {
                    assert_eq!(v, original[t * bins + f], "cell ({t}, {f}) outside {m:?} changed");
                }
            }
        }
    }
    // The widths reach close to the parameter and the starts spread over the axis.
    assert!(max_f >= freqm - 3 && max_t >= timem - 3, "max widths {max_f}, {max_t}");
    assert!(starts.len() > 40, "only {} distinct time-mask starts", starts.len());
    // Off when the parameter is 0; a mask never exceeds a short axis.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    assert_eq!(mask_range(&mut rng, 50, 0), (0, 0));
    for _ in 0..1000 {
        let (a, b) = mask_range(&mut rng, 10, 192);
        assert!(a <= b && b <= 10);
    }
}

#[test]
fn mixup_lambda_is_beta_10_10_in_the_open_unit_interval_and_labels_mix_linearly() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let draws: Vec<f64> = (0..20000).map(|_| beta(&mut rng, 10.0, 10.0)).collect();
    assert!(draws.iter().all(|&l| l > 0.0 && l < 1.0));
    let mean = draws.iter().sum::<f64>() / draws.len() as f64;
    let var = draws.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / draws.len() as f64;
    // Beta(10, 10): mean 1/2, variance 1/84.
    assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
    assert!((var - 1.0 / 84.0).abs() < 0.0015, "variance {var}");
    // Beta(2, 5): mean 2/7.
    let m2 = (0..20000).map(|_| beta(&mut rng, 2.0, 5.0)).sum::<f64>() / 20000.0;
    assert!((m2 - 2.0 / 7.0).abs() < 0.01, "Beta(2,5) mean {m2}");

    let y1 = [1.0f32, 0.0, 1.0, 0.0];
    let y2 = [0.0f32, 1.0, 1.0, 0.0];
    for &l in draws.iter().take(200) {
        let y = mix_labels(&y1, &y2, l);
        let sum: f32 = y.iter().sum();
        let expected = l as f32 * 2.0 + (1.0 - l as f32) * 2.0;
        assert!((sum - expected).abs() < 1e-5, "label mass {sum} vs {expected}");
        assert!((y[0] - l as f32).abs() < 1e-6 && (y[1] - (1.0 - l as f32)).abs() < 1e-6);
        assert!((y[2] - 1.0).abs() < 1e-6, "a label both clips carry stays 1");
        assert_eq!(y[3], 0.0);
    }
}

#[test]
fn mel_mix_adds_powers_weighted_by_lambda_squared_pads_with_silence_and_keeps_the_fbank_floor() {
    let floor = FBANK_EPS.ln();
    let x1 = vec![0.0f32, 1.0, floor, 2.0];
    let x2 = vec![0.0f32, -1.0];
    let l = 0.7;
    let m = mix_mel(&x1, &x2, l);
    assert_eq!(m.len(), x1.len(), "the mix has clip 1's frames");
    let expect = |a: f32, b: Option<f32>| ((l * l) as f32 * a.exp() + ((1.0 - l) * (1.0 - l)) as f32 * b.map_or(0.0, f32::exp)).max(FBANK_EPS).ln();
    assert!((m[0] - expect(0.0, Some(0.0))).abs() < 1e-6);
    assert!((m[1] - expect(1.0, Some(-1.0))).abs() < 1e-6);
    assert!((m[3] - expect(2.0, None)).abs() < 1e-6, "clip 2 is silence past its end");
    // Two floored cells stay at the floor.
    let z = mix_mel(&[floor], &[floor], 0.5);
    assert!((z[0] - floor).abs() < 1e-5);
    // Waveform mix: clip 2 cut or zero-padded to clip 1's length.
    let w = mix_waveforms(&[1.0, 1.0, 1.0], &[2.0], 0.25);
    assert_eq!(w, vec![0.25 + 0.75 * 2.0, 0.25, 0.25]);
}

#[test]
fn epoch_orders_and_example_rngs_depend_only_on_seed_epoch_and_position() {
    assert_eq!(shuffled_order(50, 7, 3), shuffled_order(50, 7, 3));
    assert_ne!(shuffled_order(50, 7, 3), shuffled_order(50, 7, 4));
    assert_ne!(shuffled_order(50, 7, 3), shuffled_order(50, 8, 3));
    let mut o = shuffled_order(50, 7, 3);
    o.sort();
    assert_eq!(o, (0..50).collect::<Vec<_>>(), "a permutation of the clips");
    use rand::Rng;
    let a: u64 = rng_for(1, 2, 2, 10).random();
    let b: u64 = rng_for(1, 2, 2, 10).random();
    let c: u64 = rng_for(1, 2, 2, 11).random();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let padded = pad_or_cut(&vec![1.0; 3 * 128], 5);
    assert_eq!(padded.len(), 5 * 128);
    assert!(padded[..3 * 128].iter().all(|&v| v == 1.0) && padded[3 * 128..].iter().all(|&v| v == 0.0));
    let cut = pad_or_cut(&(0..10 * 128).map(|i| i as f32).collect::<Vec<_>>(), 2);
    assert_eq!(cut, (0..2 * 128).map(|i| i as f32).collect::<Vec<_>>(), "cut keeps the first frames");
}

/// PyTorch's Adam (L2 weight decay in the gradient), by hand in f64.
fn adam_by_hand(p0: &[f64], grads: &dyn Fn(&[f64]) -> Vec<f64>, lrs: &[f64], b1: f64, b2: f64, eps: f64, wd: f64) -> Vec<f64> {
    let mut p = p0.to_vec();
    let mut m = vec![0.0; p.len()];
    let mut v = vec![0.0; p.len()];
    for (t, &lr) in lrs.iter().enumerate() {
        let t = (t + 1) as i32;
        let g: Vec<f64> = grads(&p).iter().zip(&p).map(|(g, p)| g + wd * p).collect();
        for i in 0..p.len() {
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let mhat_scale = lr / (1.0 - b1.powi(t));
            let denom = v[i].sqrt() / (1.0 - b2.powi(t)).sqrt() + eps;
            p[i] -= mhat_scale * m[i] / denom;
        }
    }
    p
}

fn loss_of(p: &Tensor) -> Tensor {
    // sum(c * p^3 / 3 + p): gradient c * p^2 + 1, different per element.
    let c = Tensor::from_slice(&[1.0f64, 2.0, 0.5]);
    (&c * p.pow_tensor_scalar(3) / 3.0 + p).sum(tch::Kind::Double)
}

#[test]
fn adam_steps_equal_a_hand_computation_and_its_state_resumes_exactly() {
    let p0 = [0.5f64, -1.0, 2.0];
    let lrs = [0.1, 0.05, 0.2, 0.01];
    let (b1, b2, eps, wd) = (0.95, 0.999, 1e-8, 5e-3);
    let grads = |p: &[f64]| vec![1.0 * p[0] * p[0] + 1.0, 2.0 * p[1] * p[1] + 1.0, 0.5 * p[2] * p[2] + 1.0];
    let expected = adam_by_hand(&p0, &grads, &lrs, b1, b2, eps, wd);

    let run = |steps: std::ops::Range<usize>, p: &Tensor, adam: &mut Adam| {
        for &lr in &lrs[steps] {
            adam.zero_grad();
            loss_of(p).backward();
            adam.step(lr);
        }
    };
    let p = Tensor::from_slice(&p0).set_requires_grad(true);
    let mut adam = Adam::new(vec![("w".into(), p.shallow_clone())], [b1, b2], eps, wd);
    run(0..4, &p, &mut adam);
    let got: Vec<f64> = Vec::<f64>::try_from(&p.detach()).unwrap();
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-12, "Adam {got:?} vs by hand {expected:?}");
    }
    assert_eq!(adam.steps(), 4);
    // Far from plain gradient descent: the update is normalised.
    assert!((got[0] - p0[0]).abs() > 0.1);

    // Two steps, save, a new optimizer loads the state, two more steps: the same parameters.
    let dir = tempfile::tempdir().unwrap();
    let q = Tensor::from_slice(&p0).set_requires_grad(true);
    let mut first = Adam::new(vec![("w".into(), q.shallow_clone())], [b1, b2], eps, wd);
    run(0..2, &q, &mut first);
    let path = dir.path().join("optim.safetensors");
    first.save(&path).unwrap();
    let mut second = Adam::new(vec![("w".into(), q.shallow_clone())], [b1, b2], eps, wd);
    second.load(&path).unwrap();
    run(2..4, &q, &mut second);
    let resumed: Vec<f64> = Vec::<f64>::try_from(&q.detach()).unwrap();
    assert_eq!(resumed, got, "a resumed optimizer continues bit for bit");
    // A state for other parameters is refused with the key named.
    let r = Tensor::from_slice(&p0).set_requires_grad(true);
    let mut other = Adam::new(vec![("other".into(), r)], [b1, b2], eps, wd);
    let err = other.load(&path).unwrap_err().to_string();
    assert!(err.contains("m.other"), "{err}");
}

#[test]
fn shipped_recipes_parse_with_psla_values_and_unknown_keys_are_errors() {
    assert_eq!(BUILTIN.len(), 4);
    for (name, _) in BUILTIN {
        TrainConfig::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let (b, _) = TrainConfig::load("psla_audioset_balanced").unwrap();
    assert_eq!((b.model.arch.as_str(), b.model.heads), ("efficientnet-b2", 4));
    assert_eq!((b.optim.lr, b.data.batch_size, b.optim.epochs, b.optim.lr_decay_start), (1e-3, 100, 60, 35));
    assert_eq!((b.input.target_frames, b.augment.freqm, b.augment.timem, b.augment.mixup), (1056, 48, 192, 0.5));
    assert_eq!(b.data.sampling, Sampling::Uniform);
    assert_eq!((b.optim.betas, b.optim.weight_decay, b.optim.warmup_steps), ([0.95, 0.999], 5e-7, 1000));
    let (f, _) = TrainConfig::load("psla_audioset_full").unwrap();
    assert_eq!((f.optim.lr, f.optim.epochs, f.optim.lr_decay_start, f.data.sampling), (1e-4, 30, 10, Sampling::Draws));
    let (d, _) = TrainConfig::load("psla_fsd50k").unwrap();
    assert_eq!((d.optim.lr, d.data.batch_size, d.optim.epochs, d.input.target_frames), (5e-4, 24, 40, 3000));
    let (c, _) = TrainConfig::load("demo_cpu").unwrap();
    assert_eq!((c.model.arch.as_str(), c.input.normalize, c.augment.mixup_domain), ("efficientnet-b0", Normalize::Stats, MixupDomain::Mel));

    let text = include_str!("../configs/demo_cpu.toml").replace("batch_size = 16", "batch_size = 16\nbatch_sise = 3");
    let err = TrainConfig::parse("x.toml", &text).unwrap_err().to_string();
    assert!(err.contains("batch_sise") && err.contains("x.toml:"), "{err}");
    let text = include_str!("../configs/demo_cpu.toml").replace("mixup = 0.5", "mixup = 1.5");
    let err = TrainConfig::parse("x.toml", &text).unwrap_err().to_string();
    assert!(err.contains("augment.mixup"), "{err}");
    let err = TrainConfig::load("no_such_recipe").unwrap_err().to_string();
    assert!(err.contains("demo_cpu"), "lists the built-in recipes: {err}");
}

/// How far the mel-domain mix is from PSLA's waveform mix, on demo clips: the mean absolute difference
/// of log-mel values over the mixed clip's frames, for our mix and for two cruder ones.
#[test]
fn mel_domain_mixup_is_close_to_the_waveform_mix_on_demo_clips() {
    use psla::stages::demo_data::{DemoDataParams, generate};
    let dir = tempfile::tempdir().unwrap();
    let params = DemoDataParams { train_clips: 12, eval_clips: 2, clip_seconds: 1.0, ..DemoDataParams::default() };
    generate(&params, dir.path()).unwrap();
    let mut wavs: Vec<_> = std::fs::read_dir(dir.path().join("audio")).unwrap().map(|e| e.unwrap().path()).collect();
    wavs.sort();
    let waves: Vec<Vec<f32>> = wavs.iter().map(|p| centred_wave(p.to_str().unwrap()).unwrap()).collect();
    let fbanks: Vec<Vec<f32>> = waves.iter().map(|w| waveform_fbank(w.clone()).unwrap()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (mut ours, mut power_lambda, mut log_linear, mut unmixed) = (0f64, 0f64, 0f64, 0f64);
    let mut pairs = 0;
    for i in 0..waves.len() - 1 {
        let j = i + 1;
        let l = beta(&mut rng, 10.0, 10.0);
        let truth = waveform_fbank(mix_waveforms(&waves[i], &waves[j], l)).unwrap();
        let mad = |x: &[f32]| x.iter().zip(&truth).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / truth.len() as f64;
        ours += mad(&mix_mel(&fbanks[i], &fbanks[j], l));
        unmixed += mad(&fbanks[i]);
        // Powers weighted by lambda (not lambda^2), and a plain mix of the log values.
        let pl: Vec<f32> = fbanks[i].iter().zip(&fbanks[j]).map(|(a, b)| (l as f32 * a.exp() + (1.0 - l) as f32 * b.exp()).max(FBANK_EPS).ln()).collect();
        power_lambda += mad(&pl);
        let ll: Vec<f32> = fbanks[i].iter().zip(&fbanks[j]).map(|(a, b)| l as f32 * a + (1.0 - l) as f32 * b).collect();
        log_linear += mad(&ll);
        pairs += 1;
    }
    let n = pairs as f64;
    let (ours, power_lambda, log_linear, unmixed) = (ours / n, power_lambda / n, log_linear / n, unmixed / n);
    eprintln!(
        "mixup on {pairs} demo clip pairs, mean |log-mel difference| from the waveform mix: mel power (lambda^2) {ours:.4}, \
         mel power (lambda) {power_lambda:.4}, log-linear {log_linear:.4}, clip 1 unmixed {unmixed:.4}"
    );
    assert!(ours < power_lambda && ours < log_linear, "ours {ours}, lambda-weighted {power_lambda}, log-linear {log_linear}");
    assert!(ours < 0.5 && ours < unmixed / 4.0, "mean |difference| {ours} nats (unmixed: {unmixed})");
}

// ---- end to end: the train stage on generated demo data -----------------------------------------

use crate::common::{psla, run_ok, sql_csv, stderr};
use std::path::{Path, PathBuf};

/// A small recipe for the tests: B0, 1 s clips, a few epochs, PSLA's augmentation on; BatchNorm statistics
/// that follow the batches at PyTorch's default momentum (0.1), since 12 steps at PSLA's 0.01 leave them unsettled.
const TEST_RECIPE: &str = r#"
[model]
arch = "efficientnet-b0"
heads = 4
bn_momentum = 0.1

[input]
target_frames = 64
normalize = "stats"

[augment]
freqm = 12
timem = 20
mixup = 0.5
mixup_alpha = 10.0
mixup_domain = "mel"

[optim]
lr = 2e-3
epochs = EPOCHS
lr_decay_start = 2
lr_decay_every = 1
lr_decay = 0.5
warmup_steps = 8
warmup = "linear"

[data]
batch_size = 16
sampling = "uniform"
"#;

/// A pipeline: demo data (TRAIN train clips, 1 s), ingest, features, train with TEST_RECIPE.
fn write_pipeline(dir: &Path, train_clips: usize, epochs: u32) -> PathBuf {
    std::fs::write(dir.join("recipe.toml"), TEST_RECIPE.replace("EPOCHS", &epochs.to_string())).unwrap();
    let spec = format!(
        r#"
[pipeline]
name = "train-test"

[stage.demo_data]
out = "${{root}}/demo_data"
seed = 7
train_clips = {train_clips}
eval_clips = 60
clip_seconds = 1.0

[stage.ingest]
segments = ["${{root}}/demo_data/train_segments.csv", "${{root}}/demo_data/eval_segments.csv"]
classes = "${{root}}/demo_data/class_labels_indices.csv"
ontology = "${{root}}/demo_data/ontology.json"
audio = "${{root}}/demo_data/audio"

[stage.features]
sample_rate = 16000

[stage.train]
config = "recipe.toml"
name = "student"
seed = 11
device = "cpu"
threads = 2
eval_splits = ["eval"]
tables = {{ eval_labels = "labels" }}
"#
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, spec).unwrap();
    path
}

fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    let mut t = Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn metric_rows(root: &Path) -> Vec<Vec<String>> {
    sql_csv(root, "SELECT epoch, train_loss, eval_loss, map, ensemble_map, lr, steps FROM train_metrics ORDER BY epoch")
        .into_iter()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

#[test]
fn training_on_demo_data_lowers_the_loss_and_resumes_after_a_kill_to_identical_weights() {
    let epochs = 3;
    let base = crate::common::tempdir();

    // 1. Uninterrupted.
    let a = base.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    let spec_a = write_pipeline(&a, 64, epochs);
    let out = run_ok(psla().arg("run").arg(&spec_a).arg("--root").arg(a.join("root")));
    let log = stderr(&out);
    assert!(log.contains("train:") && log.contains(&format!("{epochs} epochs")), "{log}");
    let root_a = a.join("root");
    let rows = metric_rows(&root_a);
    assert_eq!(rows.len(), epochs as usize);
    let f = |r: &Vec<String>, i: usize| r[i].parse::<f64>().unwrap();
    let (first_loss, last_loss) = (f(&rows[0], 1), f(&rows[epochs as usize - 1], 1));
    let last_map = f(&rows[epochs as usize - 1], 3);
    // Chance: a constant score gives each class AP = its positive rate; the mean positive rate of the eval labels.
    let chance = {
        let l = sql_csv(
            &root_a,
            "SELECT avg(rate) FROM (SELECT count(*) * 1.0 / (SELECT count(*) FROM clips WHERE split = 'eval') AS rate \
             FROM labels l JOIN clips c USING (clip_id) WHERE c.split = 'eval' GROUP BY l.mid)",
        );
        l[1].parse::<f64>().unwrap()
    };
    eprintln!("demo training: train loss {first_loss:.4} -> {last_loss:.4}, eval mAP {last_map:.4} (chance {chance:.4}), rows {rows:?}");
    assert!(last_loss < first_loss * 0.9, "training loss {first_loss} -> {last_loss}");
    // Not asserted: eval mAP above chance. With BatchNorm momentum 0.01 (PSLA's) the running statistics
    // are far from converged after 12 steps, so eval-mode predictions are nearly constant (see
    // docs/training.md); the figures are printed for the record.
    // PSLA's lr schedule is visible in the table: halved after epoch 2.
    assert_eq!(f(&rows[1], 5), 2e-3);
    assert_eq!(f(&rows[2], 5), 1e-3);
    let steps_per_epoch = 64u64.div_ceil(16);
    assert_eq!(rows[2][6].parse::<u64>().unwrap(), 3 * steps_per_epoch);
    let final_a = root_a.join(format!("models/student/epoch-{epochs:02}.safetensors"));
    assert!(root_a.join(format!("models/student/epoch-{epochs:02}.optim.safetensors")).exists());

    // 2. Killed in the middle of epoch 2, then rerun.
    let b = base.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    let spec_b = write_pipeline(&b, 64, epochs);
    let root_b = b.join("root");
    let killed = psla()
        .arg("run")
        .arg(&spec_b)
        .arg("--root")
        .arg(&root_b)
        .env("PSLA_TRAIN_ABORT_AT_STEP", (steps_per_epoch + 3).to_string())
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the run should have died");
    assert!(root_b.join("models/student/epoch-01.safetensors").exists());
    assert!(!root_b.join("models/student/epoch-02.safetensors").exists());
    let out = run_ok(psla().arg("run").arg(&spec_b).arg("--root").arg(&root_b));
    let log = stderr(&out);
    assert!(log.contains("resumed after epoch 1"), "{log}");
    let final_b = root_b.join(format!("models/student/epoch-{epochs:02}.safetensors"));
    let (ta, tb) = (tensors(&final_a), tensors(&final_b));
    assert_eq!(ta.len(), tb.len());
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(xa.equal(xb), "tensor {na} differs after the resume");
    }
    // The metrics of the resumed run equal the uninterrupted run's (but timings).
    let (ra, rb) = (metric_rows(&root_a), metric_rows(&root_b));
    assert_eq!(ra, rb);
}

#[test]
fn clips_without_features_and_labels_outside_the_vocabulary_are_counted_and_left_out() {
    let dir = crate::common::tempdir();
    let spec = write_pipeline(dir.path(), 40, 1);
    // Training labels with two rows of a class outside the vocabulary.
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text = text.replace(
        "tables = { eval_labels = \"labels\" }",
        "tables = { labels = \"noisy_labels\", eval_labels = \"labels\" }",
    );
    text.push_str(
        r#"
[stage.noisy_labels]
kind = "sql"
reads = ["labels", "clips"]
query = "SELECT clip_id, mid FROM labels UNION ALL SELECT * FROM (SELECT l.clip_id, '/m/not_a_class' AS mid FROM labels l JOIN clips c USING (clip_id) WHERE c.split = 'train' ORDER BY l.clip_id DESC LIMIT 2)"
out = "noisy_labels"
"#,
    );
    std::fs::write(&spec, text).unwrap();
    // This run also mixes waveforms, as PSLA does (decoding the clips' audio).
    let recipe = dir.path().join("recipe.toml");
    let r = std::fs::read_to_string(&recipe).unwrap().replace("mixup_domain = \"mel\"", "mixup_domain = \"waveform\"");
    std::fs::write(&recipe, r).unwrap();
    let root = dir.path().join("root");
    run_ok(psla().arg("run").arg(&spec).arg("--root").arg(&root).args(["--only", "demo_data"]));
    // Three training clips lose their audio: the features stage rejects them.
    let mut wavs: Vec<_> = std::fs::read_dir(root.join("demo_data/audio")).unwrap().map(|e| e.unwrap().path()).collect();
    wavs.sort();
    let train_segments = std::fs::read_to_string(root.join("demo_data/train_segments.csv")).unwrap();
    let removed: Vec<_> = wavs
        .iter()
        .filter(|p| train_segments.contains(p.file_stem().unwrap().to_str().unwrap()))
        .take(3)
        .cloned()
        .collect();
    assert_eq!(removed.len(), 3);
    for p in &removed {
        std::fs::remove_file(p).unwrap();
    }
    let log = stderr(&run_ok(psla().arg("run").arg(&spec).arg("--root").arg(&root)));
    let line = log.lines().find(|l| l.starts_with("train:")).unwrap_or_else(|| panic!("no train line in {log}"));
    assert!(line.contains("3 labeled training clips have no features and were left out"), "{line}");
    assert!(line.contains("2 training labels are not in the vocabulary") && line.contains("/m/not_a_class"), "{line}");
    assert!(line.contains("over 37 train clips"), "{line}");
}

#[test]
fn a_diverging_loss_stops_with_the_epoch_and_step_and_keeps_the_last_good_checkpoint() {
    let dir = crate::common::tempdir();
    let spec = write_pipeline(dir.path(), 32, 3);
    let recipe = dir.path().join("recipe.toml");
    let text = std::fs::read_to_string(&recipe).unwrap().replace("lr = 2e-3", "lr = 1e30").replace("warmup = \"linear\"", "warmup = \"none\"");
    std::fs::write(&recipe, text).unwrap();
    let root = dir.path().join("root");
    let err = crate::common::run_err(psla().arg("run").arg(&spec).arg("--root").arg(&root));
    assert!(err.contains("training diverged") && err.contains("at epoch ") && err.contains(", step "), "{err}");
    let epoch: u32 = err.split("at epoch ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    for e in 1..epoch {
        assert!(root.join(format!("models/student/epoch-{e:02}.safetensors")).exists(), "epoch {e} kept");
    }
    assert!(!root.join(format!("models/student/epoch-{epoch:02}.safetensors")).exists());
}

#[test]
fn psla_train_trains_on_the_tables_a_run_root_already_has() {
    // A copy of the shared demo run (features, labels, classes, clips, feature_stats are in it).
    let demo = crate::common::demo_run();
    let dir = crate::common::tempdir();
    let root = dir.path().join("root");
    copy_dir(&demo.root, &root);
    std::fs::write(dir.path().join("recipe.toml"), TEST_RECIPE.replace("EPOCHS", "1")).unwrap();
    let out = run_ok(
        psla()
            .args(["train", "--root"])
            .arg(&root)
            .arg("--config")
            .arg(dir.path().join("recipe.toml"))
            .args(["--name", "cli", "--device", "cpu", "--train-splits", "train", "--threads", "2"]),
    );
    let log = stderr(&out);
    assert!(log.contains("train:"), "{log}");
    assert!(root.join("models/cli/epoch-01.safetensors").exists(), "{log}");
    assert_eq!(sql_csv(&root, "SELECT count(*) FROM train_metrics")[1], "1");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn feature_store_reads_every_clip_of_a_multi_file_table_exactly() {
    // FeatureStore reads one row at a time through the page index: over a table of several files of
    // many clips each, read in a shuffled order, every clip's fbank must come back value for value,
    // and the audio locations with it.
    use std::sync::Arc;
    use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray};
    use arrow::buffer::OffsetBuffer;
    use arrow::datatypes::{DataType, Field};
    use psla::stages::features::{Dtype, features_schema};
    use psla::table::RunRoot;
    use psla::train::data::FeatureStore;
    use rand::Rng;

    let dir = tempfile::tempdir().unwrap();
    let root = RunRoot::open(&dir.path().to_string_lossy()).unwrap();
    let schema = features_schema(Dtype::F32);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut expected: Vec<(String, String, Vec<f32>)> = Vec::new();
    let mut writer = root.table_writer("features", schema.clone(), "test").unwrap();
    for file in 0..3 {
        for batch in 0..4 {
            let n = 5 + batch;
            let mut rows = Vec::new();
            for k in 0..n {
                let frames = rng.random_range(1..300usize);
                let values: Vec<f32> = (0..frames * 128).map(|_| rng.random_range(-15.9f32..10.0)).collect();
                rows.push((format!("f{file}/b{batch}/clip{k}.wav"), format!("file:///audio/{file}-{batch}-{k}.wav"), values));
            }
            let item = Arc::new(Field::new("item", DataType::Float32, false));
            let flat: Vec<f32> = rows.iter().flat_map(|r| r.2.iter().copied()).collect();
            let fixed = FixedSizeListArray::new(item, 128, Arc::new(Float32Array::from(flat)), None);
            let lengths = rows.iter().map(|r| r.2.len() / 128);
            let row_field = Arc::new(Field::new("item", fixed.data_type().clone(), false));
            let fbank = ListArray::new(row_field, OffsetBuffer::from_lengths(lengths), Arc::new(fixed), None);
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()))),
                Arc::new(Int32Array::from(vec![16000; n])),
                Arc::new(Int32Array::from(vec![1; n])),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| (r.2.len() / 128 * 160 + 240) as i64))),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| (r.2.len() / 128) as i32))),
                Arc::new(fbank),
            ];
            writer.write(&RecordBatch::try_new(schema.clone(), columns).unwrap()).unwrap();
            expected.extend(rows);
        }
        writer.checkpoint().unwrap(); // one Parquet file per `file`
    }
    let staged = writer.finish().unwrap();
    assert_eq!(staged.entry.files.len(), 3);
    root.commit(vec![staged], None).unwrap();

    let store = FeatureStore::open(&root, "features").unwrap();
    assert_eq!(store.len(), expected.len());
    // in a shuffled order, as an epoch reads them
    let mut order: Vec<usize> = (0..expected.len()).collect();
    use rand::seq::SliceRandom;
    order.shuffle(&mut rng);
    for i in order {
        let (id, uri, values) = &expected[i];
        assert_eq!(&store.fbank(id).unwrap(), values, "{id}");
        assert_eq!(store.audio_uri(id), Some(uri.as_str()));
    }
    let err = store.fbank("no/such/clip.wav").unwrap_err().to_string();
    assert!(err.contains("no/such/clip.wav") && err.contains("no features"), "{err}");
}
