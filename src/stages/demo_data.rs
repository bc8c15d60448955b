//! A small, deterministic audio-tagging dataset with known truth, written in AudioSet's on-disk formats.
//!
//! `psla demo` and the tests need data whose correct answer is known: this module synthesises it. The
//! output directory looks like a (tiny) AudioSet release:
//!
//! | file                       | content                                                                   |
//! |----------------------------|---------------------------------------------------------------------------|
//! | `ontology.json`            | the class hierarchy, in the AudioSet ontology format                      |
//! | `class_labels_indices.csv` | the label vocabulary (`index,mid,display_name`): every non-abstract class |
//! | `train_segments.csv`       | training clips with their *observed* (noisy) labels, official layout      |
//! | `eval_segments.csv`        | evaluation clips with their *true* labels, official layout                |
//! | `audio/<clip_id>.wav`      | one mono 16-bit PCM file per clip                                         |
//! | `true_labels.csv`          | every true label of every clip, whether it was observed and why not       |
//!
//! # Classes and sounds
//!
//! The ontology has one abstract root ("Synthetic sounds", never a label), four parent classes (one of
//! them, "Modulated tone", itself a child of "Tonal sound", so the hierarchy is three labels deep) and
//! standalone leaves (the `ONTOLOGY` table below lists them with their sounds). Every non-abstract class has its own synthetic sound, chosen to be
//! easy to tell apart on a log-mel spectrogram: steady tones in distinct bands, a harmonic stack, tremolo
//! (AM) and vibrato (FM) tones, a slow siren glide, repeated up or down chirps, band-limited noise, click
//! trains and beeps. A parent's own sound is its "generic" member, so a parent can be present without any
//! of its children. Every tone stays below 3.6 kHz and every filter cutoff below 4 kHz, so every sound is
//! valid at the lowest allowed sample rate (8 kHz).
//!
//! A clip mixes one to three distinct sources, each a leaf class or (with probability
//! [`GENERIC_SOURCE_PROB`]) a parent's generic sound, each over a random stretch of at least half the clip
//! at a random level, on a faint white-noise floor, normalised to a random peak of at most 0.9. A clip's
//! true labels are its sources' classes plus all their non-abstract ancestors.
//!
//! # Label noise (training split only)
//!
//! AudioSet's labels are incomplete in two typical ways (Gong et al., PSLA, 2021), which the observed
//! training labels imitate:
//!
//! * **Type I**: the parent is labelled but the child is missing. Going down the hierarchy, each true
//!   label whose parent is true and still observed is dropped with probability `type1_drop`.
//! * **Type II**: the child is labelled but an ancestor is missing. Going up the hierarchy, each true label
//!   that still has an observed true descendant is dropped with probability `type2_drop`, unless that
//!   would orphan a Type I drop below it.
//!
//! So a `type1` drop always has its parent observed, a `type2` drop always has an observed descendant, and
//! every clip keeps at least one observed label. Labels without a true parent or child (a standalone
//! leaf, say) are never dropped. Evaluation labels are never corrupted.
//!
//! # Determinism
//!
//! Everything is drawn from ChaCha8 generators seeded with `seed`, one stream per purpose (clip ids, label
//! noise, each clip's composition, each clip's audio), so the same parameters give byte-identical files
//! (on the same platform: the audio goes through the platform's `f64` `sin`, `exp` and `powf`), and changing the noise probabilities
//! leaves the clips and their audio unchanged. No output depends on hash order or the clock. Files that an
//! earlier run left in `out_dir` and this run does not write (say, WAVs of other clip ids) are not removed.

use std::collections::{BTreeMap, BTreeSet};
use std::f64::consts::{FRAC_1_SQRT_2, PI, TAU};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result, WithPath};

/// Parameters of [`generate`]. Every field has a default, so a spec may name only what it changes.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoDataParams {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of training clips (noisy labels).
    pub train_clips: usize,
    /// Number of evaluation clips (true labels).
    pub eval_clips: usize,
    /// Length of every clip, in seconds.
    pub clip_seconds: f64,
    /// Sample rate of the WAV files, in Hz.
    pub sample_rate: u32,
    /// Probability that a present child label is dropped from the observed training labels while its
    /// parent is kept (Type I error).
    pub type1_drop: f64,
    /// Probability that a present ancestor label is dropped from the observed training labels while a
    /// descendant is kept (Type II error).
    pub type2_drop: f64,
    /// 0 draws the leaf classes about equally often; above 0 the leaf of rank `r` (ontology order) has
    /// weight `(r + 1)^-imbalance`, a Zipf-like skew.
    pub imbalance: f64,
}

impl Default for DemoDataParams {
    fn default() -> Self {
        DemoDataParams {
            seed: 7,
            train_clips: 240,
            eval_clips: 80,
            clip_seconds: 2.0,
            sample_rate: 16000,
            type1_drop: 0.4,
            type2_drop: 0.4,
            imbalance: 0.0,
        }
    }
}

/// One entry of the generated ontology.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DemoClass {
    /// Position in [`DemoData::classes`]. The non-abstract classes come first, in vocabulary order, so for
    /// them this is the vocabulary index (the `index` column of `class_labels_indices.csv`); abstract
    /// classes follow and are not in the vocabulary.
    pub index: usize,
    pub mid: String,
    pub name: String,
    /// The parent's mid (possibly an abstract class); `None` for the root.
    pub parent: Option<String>,
    /// Abstract classes only group others: they are never labels.
    pub is_abstract: bool,
}

/// One true label of one clip.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TruthRow {
    pub clip_id: String,
    /// `"train"` or `"eval"`.
    pub split: String,
    pub mid: String,
    /// Whether the label appears in the clip's segments file (always true for eval clips).
    pub observed: bool,
    /// `"type1"` or `"type2"` when `observed` is false: which error removed it.
    pub dropped: Option<String>,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoData {
    /// Every ontology entry, abstract ones included (see [`DemoClass::index`] for the order).
    pub classes: Vec<DemoClass>,
    /// Every true label of every clip: train clips then eval clips, each split by clip id, each clip's
    /// labels in vocabulary order (the same rows as `true_labels.csv`).
    pub truth: Vec<TruthRow>,
    /// Every file written, in the order written.
    pub files: Vec<PathBuf>,
    /// Number of clips, both splits together.
    pub clips: usize,
}

/// Probability that a source is a parent class's generic sound rather than a leaf class.
pub const GENERIC_SOURCE_PROB: f64 = 0.15;

/// Probabilities of a clip having one, two or three sources.
const SOURCE_COUNT_PROBS: [f64; 3] = [0.4, 0.4, 0.2];

/// Amplitude of the white-noise floor under every mix, relative to a full-level source.
const NOISE_FLOOR: f64 = 0.004;

/// First line of the segments files; fixed so the output does not depend on the clock.
const SEGMENTS_BANNER: &str = "# Segments csv created by the psla demo data generator (synthetic clips)";

/// Alphabet of YouTube ids, which the clip ids imitate.
const YTID_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const YTID_LEN: usize = 11;

/// One ontology entry: what `ontology.json` says about it, and how it sounds.
struct Entry {
    mid: &'static str,
    name: &'static str,
    description: &'static str,
    parent: Option<&'static str>,
    /// `None` for abstract classes, which have no sound and are never labels.
    sound: Option<Sound>,
}

/// An interval `[lo, hi]` from which a sound draws one of its parameters, anew for every source.
#[derive(Clone, Copy)]
struct Span(f64, f64);

impl Span {
    fn draw(self, rng: &mut ChaCha8Rng) -> f64 {
        self.0 + (self.1 - self.0) * rng.random::<f64>()
    }
}

/// The synthesiser of one class. Frequencies in Hz, rates in Hz, durations in seconds.
#[derive(Clone, Copy)]
enum Sound {
    /// A steady sine.
    Tone { freq: Span },
    /// Harmonics `1..=partials` of `f0` (those below 0.45 × sample rate) with amplitudes `1/k`.
    Harmonic { f0: Span, partials: usize },
    /// A sine around `carrier`, its amplitude dipping by `am_depth` at `am_rate` (tremolo) and its
    /// frequency swinging by `± fm_dev` at `fm_rate` (vibrato; a siren glide when slow and wide).
    Modulated { carrier: Span, am_rate: Span, am_depth: f64, fm_rate: Span, fm_dev: Span },
    /// Half-sine-windowed exponential chirps from `from` to `to`, each `length` long, one every `period`.
    Chirps { from: Span, to: Span, length: Span, period: Span },
    /// White noise through second-order high-pass (`low_cut`) and low-pass (`high_cut`) filters, each
    /// applied twice.
    Noise { low_cut: Option<f64>, high_cut: Option<f64> },
    /// Clicks (4 ms decaying noise bursts) at `rate` per second.
    Clicks { rate: Span },
    /// A tone switched on for half of every `period`.
    Beeps { freq: Span, period: Span },
}

/// A parameter that a sound does not use (a zero depth or deviation makes its rate irrelevant).
const UNUSED: Span = Span(0.0, 0.0);

/// The demo ontology, in `ontology.json` order (each parent before its children).
const ONTOLOGY: &[Entry] = &[
    Entry {
        mid: "/x/synthetic",
        name: "Synthetic sounds",
        description: "Sounds synthesised by the psla demo data generator. An abstract grouping, never a label.",
        parent: None,
        sound: None,
    },
    Entry {
        mid: "/x/tonal",
        name: "Tonal sound",
        description: "A sound with a clear pitch. Its generic member is a steady sine between 1000 and 1300 Hz.",
        parent: Some("/x/synthetic"),
        sound: Some(Sound::Tone { freq: Span(1000.0, 1300.0) }),
    },
    Entry {
        mid: "/x/pure_tone",
        name: "Pure tone",
        description: "A steady sine between 350 and 500 Hz.",
        parent: Some("/x/tonal"),
        sound: Some(Sound::Tone { freq: Span(350.0, 500.0) }),
    },
    Entry {
        mid: "/x/harmonic_tone",
        name: "Harmonic tone",
        description: "A steady harmonic stack: a fundamental between 100 and 160 Hz and its first ten harmonics.",
        parent: Some("/x/tonal"),
        sound: Some(Sound::Harmonic { f0: Span(100.0, 160.0), partials: 10 }),
    },
    Entry {
        mid: "/x/modulated_tone",
        name: "Modulated tone",
        description: "A tone whose loudness or pitch wavers. Its generic member is a 1500 to 1800 Hz warble, \
                      slowly modulated in both amplitude and frequency.",
        parent: Some("/x/tonal"),
        sound: Some(Sound::Modulated {
            carrier: Span(1500.0, 1800.0),
            am_rate: Span(2.5, 3.5),
            am_depth: 0.6,
            fm_rate: Span(2.5, 3.5),
            fm_dev: Span(30.0, 50.0),
        }),
    },
    Entry {
        mid: "/x/tremolo",
        name: "Tremolo tone",
        description: "A 600 to 800 Hz tone whose amplitude pulses 5 to 8 times a second.",
        parent: Some("/x/modulated_tone"),
        sound: Some(Sound::Modulated {
            carrier: Span(600.0, 800.0),
            am_rate: Span(5.0, 8.0),
            am_depth: 0.9,
            fm_rate: UNUSED,
            fm_dev: UNUSED,
        }),
    },
    Entry {
        mid: "/x/vibrato",
        name: "Vibrato tone",
        description: "A 2000 to 2400 Hz tone whose pitch swings by 80 to 150 Hz, 5 to 7 times a second.",
        parent: Some("/x/modulated_tone"),
        sound: Some(Sound::Modulated {
            carrier: Span(2000.0, 2400.0),
            am_rate: UNUSED,
            am_depth: 0.0,
            fm_rate: Span(5.0, 7.0),
            fm_dev: Span(80.0, 150.0),
        }),
    },
    Entry {
        mid: "/x/sweep",
        name: "Frequency sweep",
        description: "A tone that glides in pitch. Its generic member is a slow siren, gliding around 1000 to \
                      1200 Hz by up to 450 Hz about once a second.",
        parent: Some("/x/synthetic"),
        sound: Some(Sound::Modulated {
            carrier: Span(1000.0, 1200.0),
            am_rate: UNUSED,
            am_depth: 0.0,
            fm_rate: Span(0.6, 1.2),
            fm_dev: Span(350.0, 450.0),
        }),
    },
    Entry {
        mid: "/x/chirp_up",
        name: "Upward chirp",
        description: "Upward sweeps from about 300 Hz to about 2500 Hz, each a quarter of a second long, two \
                      or three a second.",
        parent: Some("/x/sweep"),
        sound: Some(Sound::Chirps {
            from: Span(250.0, 350.0),
            to: Span(2200.0, 2800.0),
            length: Span(0.2, 0.3),
            period: Span(0.4, 0.5),
        }),
    },
    Entry {
        mid: "/x/chirp_down",
        name: "Downward chirp",
        description: "Downward sweeps from about 3200 Hz to about 1000 Hz, each an eighth of a second long, \
                      about four a second.",
        parent: Some("/x/sweep"),
        sound: Some(Sound::Chirps {
            from: Span(3000.0, 3500.0),
            to: Span(800.0, 1100.0),
            length: Span(0.1, 0.15),
            period: Span(0.22, 0.3),
        }),
    },
    Entry {
        mid: "/x/noise",
        name: "Noise",
        description: "Sound without pitch. Its generic member is noise band-limited to 1000 to 2000 Hz.",
        parent: Some("/x/synthetic"),
        sound: Some(Sound::Noise { low_cut: Some(1000.0), high_cut: Some(2000.0) }),
    },
    Entry {
        mid: "/x/rumble",
        name: "Rumble",
        description: "Noise low-passed at 200 Hz.",
        parent: Some("/x/noise"),
        sound: Some(Sound::Noise { low_cut: None, high_cut: Some(200.0) }),
    },
    Entry {
        mid: "/x/hiss",
        name: "Hiss",
        description: "Noise high-passed at 3 kHz.",
        parent: Some("/x/noise"),
        sound: Some(Sound::Noise { low_cut: Some(3000.0), high_cut: None }),
    },
    Entry {
        mid: "/x/click_train",
        name: "Click train",
        description: "Short broadband clicks, 8 to 14 a second.",
        parent: Some("/x/synthetic"),
        sound: Some(Sound::Clicks { rate: Span(8.0, 14.0) }),
    },
    Entry {
        mid: "/x/beeping",
        name: "Beeping",
        description: "A 2800 to 3300 Hz tone switched on and off 4 to 5 times a second.",
        parent: Some("/x/synthetic"),
        sound: Some(Sound::Beeps { freq: Span(2800.0, 3300.0), period: Span(0.2, 0.25) }),
    },
];

/// Random streams of one seed: one per purpose, so that, say, the noise probabilities do not move the
/// audio. Per-clip streams add the clip's generation number.
const STREAM_IDS: u64 = 0;
const STREAM_LABEL_NOISE: u64 = 1;
const STREAM_COMPOSITION: u64 = 2 << 32;
const STREAM_AUDIO: u64 = 3 << 32;

fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The label vocabulary (the non-abstract classes) and its hierarchy, in vocabulary indices.
struct Vocab {
    entries: Vec<&'static Entry>,
    /// Nearest non-abstract ancestor: the label that a true label implies directly.
    parent: Vec<Option<usize>>,
    /// Number of non-abstract ancestors.
    depth: Vec<usize>,
    /// Classes without children, in vocabulary order.
    leaves: Vec<usize>,
    /// Classes with children (whose own sound is their generic member).
    parents: Vec<usize>,
}

impl Vocab {
    fn new() -> Vocab {
        let entries: Vec<&Entry> = ONTOLOGY.iter().filter(|e| e.sound.is_some()).collect();
        let index_of = |mid: &str| entries.iter().position(|e| e.mid == mid);
        let entry_of = |mid: &str| ONTOLOGY.iter().find(|e| e.mid == mid).expect("parent is in the ontology");
        let parent: Vec<Option<usize>> = entries
            .iter()
            .map(|e| {
                let mut up = e.parent;
                while let Some(mid) = up {
                    match index_of(mid) {
                        Some(i) => return Some(i),
                        None => up = entry_of(mid).parent,
                    }
                }
                None
            })
            .collect();
        let depth = (0..entries.len()).map(|i| std::iter::successors(parent[i], |&p| parent[p]).count()).collect();
        let (parents, leaves): (Vec<usize>, Vec<usize>) = (0..entries.len()).partition(|&i| parent.contains(&Some(i)));
        Vocab { entries, parent, depth, leaves, parents }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_ancestor(&self, ancestor: usize, of: usize) -> bool {
        std::iter::successors(self.parent[of], |&p| self.parent[p]).any(|p| p == ancestor)
    }

    /// The true labels of a clip with these sources: the sources and all their ancestors.
    fn closure(&self, sources: &[usize]) -> BTreeSet<usize> {
        sources.iter().flat_map(|&s| std::iter::successors(Some(s), |&c| self.parent[c])).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Split {
    Train,
    Eval,
}

impl Split {
    fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropKind {
    Type1,
    Type2,
}

impl DropKind {
    fn as_str(self) -> &'static str {
        match self {
            DropKind::Type1 => "type1",
            DropKind::Type2 => "type2",
        }
    }
}

/// One clip before it is written.
struct Clip {
    id: String,
    split: Split,
    /// Generation number: selects the clip's audio stream.
    number: u64,
    /// Vocabulary indices of the sources, in the order drawn.
    sources: Vec<usize>,
    truth: BTreeSet<usize>,
    /// True labels missing from the observed ones, and why.
    dropped: BTreeMap<usize, DropKind>,
}

impl Clip {
    fn observed(&self) -> impl Iterator<Item = usize> + '_ {
        self.truth.iter().copied().filter(|c| !self.dropped.contains_key(c))
    }
}

/// Generates the dataset into `out_dir` (created if missing; files of the same names are overwritten).
pub fn generate(params: &DemoDataParams, out_dir: &Path) -> Result<DemoData> {
    validate(params)?;
    let vocab = Vocab::new();
    let mut clips = compose_clips(params, &vocab);
    clips.sort_by(|a, b| (a.split, &a.id).cmp(&(b.split, &b.id)));

    let audio_dir = out_dir.join("audio");
    fs::create_dir_all(&audio_dir).with_path(&audio_dir)?;
    let mut files = Vec::new();
    let mut write = |name: &str, text: String| -> Result<()> {
        let path = out_dir.join(name);
        fs::write(&path, text).with_path(&path)?;
        files.push(path);
        Ok(())
    };
    write("ontology.json", ontology_json())?;
    write("class_labels_indices.csv", class_labels_csv(&vocab))?;
    let (train, eval): (Vec<&Clip>, Vec<&Clip>) = clips.iter().partition(|c| c.split == Split::Train);
    write("train_segments.csv", segments_csv(&train, &vocab, params.clip_seconds))?;
    write("eval_segments.csv", segments_csv(&eval, &vocab, params.clip_seconds))?;
    let truth = truth_rows(&clips, &vocab);
    write("true_labels.csv", true_labels_csv(&truth))?;

    let samples = (params.clip_seconds * f64::from(params.sample_rate)).round() as usize;
    for clip in &clips {
        let path = audio_dir.join(format!("{}.wav", clip.id));
        let mut rng = stream_rng(params.seed, STREAM_AUDIO + clip.number);
        let mix = synthesize(&clip.sources, &vocab, samples, f64::from(params.sample_rate), &mut rng);
        write_wav(&path, &mix, params.sample_rate)?;
        files.push(path);
    }

    Ok(DemoData { classes: demo_classes(&vocab), truth, files, clips: clips.len() })
}

fn validate(p: &DemoDataParams) -> Result<()> {
    let check = |ok: bool, name: &str, allowed: &str, got: &dyn std::fmt::Display| {
        if ok { Ok(()) } else { Err(Error::invalid(format!("demo data: `{name}` must be {allowed} (got {got})"))) }
    };
    check(p.train_clips >= 1, "train_clips", "at least 1", &p.train_clips)?;
    check(p.eval_clips >= 1, "eval_clips", "at least 1", &p.eval_clips)?;
    check((0.1..=60.0).contains(&p.clip_seconds), "clip_seconds", "between 0.1 and 60 seconds", &p.clip_seconds)?;
    check((8000..=96000).contains(&p.sample_rate), "sample_rate", "between 8000 and 96000 Hz", &p.sample_rate)?;
    check((0.0..=1.0).contains(&p.type1_drop), "type1_drop", "a probability, between 0 and 1", &p.type1_drop)?;
    check((0.0..=1.0).contains(&p.type2_drop), "type2_drop", "a probability, between 0 and 1", &p.type2_drop)?;
    check((0.0..=10.0).contains(&p.imbalance), "imbalance", "between 0 and 10", &p.imbalance)
}

/// Draws every clip's id, sources and (training clips only) label noise.
fn compose_clips(params: &DemoDataParams, vocab: &Vocab) -> Vec<Clip> {
    let mut id_rng = stream_rng(params.seed, STREAM_IDS);
    let mut noise_rng = stream_rng(params.seed, STREAM_LABEL_NOISE);
    let weights = source_weights(vocab, params.imbalance);
    let mut ids = BTreeSet::new();
    let mut clips = Vec::with_capacity(params.train_clips + params.eval_clips);
    for (split, count) in [(Split::Train, params.train_clips), (Split::Eval, params.eval_clips)] {
        for j in 0..count {
            let id = loop {
                let id: String = (0..YTID_LEN)
                    .map(|_| char::from(YTID_ALPHABET[id_rng.random_range(0..YTID_ALPHABET.len())]))
                    .collect();
                if ids.insert(id.clone()) {
                    break id;
                }
            };
            let number = clips.len() as u64;
            // The first source is sampled systematically over the split, so that each class leads as many
            // clips as its weight says (to within one) and even small splits keep the intended balance.
            let first = class_at(&weights, (j as f64 + 0.5) / count as f64);
            let mut rng = stream_rng(params.seed, STREAM_COMPOSITION + number);
            let sources = draw_sources(first, &weights, &mut rng);
            let truth = vocab.closure(&sources);
            let dropped = match split {
                Split::Train => corrupt(&truth, vocab, params.type1_drop, params.type2_drop, &mut noise_rng),
                Split::Eval => BTreeMap::new(),
            };
            clips.push(Clip { id, split, number, sources, truth, dropped });
        }
    }
    clips
}

/// Probability of each vocabulary class being drawn as a source: the leaves share `1 -
/// GENERIC_SOURCE_PROB` by their Zipf weights, the parents share the rest equally.
fn source_weights(vocab: &Vocab, imbalance: f64) -> Vec<f64> {
    let mut weights = vec![0.0; vocab.len()];
    let zipf: Vec<f64> = (0..vocab.leaves.len()).map(|rank| (rank as f64 + 1.0).powf(-imbalance)).collect();
    let total: f64 = zipf.iter().sum();
    for (&leaf, w) in vocab.leaves.iter().zip(&zipf) {
        weights[leaf] = (1.0 - GENERIC_SOURCE_PROB) * w / total;
    }
    for &parent in &vocab.parents {
        weights[parent] = GENERIC_SOURCE_PROB / vocab.parents.len() as f64;
    }
    weights
}

/// `first` and then zero to two more distinct source classes (one to three in all), drawn by `weights`
/// without replacement.
fn draw_sources(first: usize, weights: &[f64], rng: &mut ChaCha8Rng) -> Vec<usize> {
    let count = 1 + class_at(&SOURCE_COUNT_PROBS, rng.random());
    let mut weights = weights.to_vec();
    let mut sources = vec![first];
    weights[first] = 0.0;
    while sources.len() < count && weights.iter().any(|&w| w > 0.0) {
        let class = class_at(&weights, rng.random());
        weights[class] = 0.0;
        sources.push(class);
    }
    sources
}

/// The index at position `u` in `[0, 1)` of the cumulative distribution of `weights` (which need not sum
/// to one, but must not all be zero): with `u` uniform, an index drawn proportionally to its weight.
fn class_at(weights: &[f64], u: f64) -> usize {
    let mut target = u * weights.iter().sum::<f64>();
    for (i, &w) in weights.iter().enumerate() {
        if target < w {
            return i;
        }
        target -= w;
    }
    weights.iter().rposition(|&w| w > 0.0).expect("some weight is positive")
}

/// The training-label noise (see the module doc): which true labels are dropped, and by which error.
fn corrupt(
    truth: &BTreeSet<usize>,
    vocab: &Vocab,
    type1_drop: f64,
    type2_drop: f64,
    rng: &mut ChaCha8Rng,
) -> BTreeMap<usize, DropKind> {
    let mut top_down: Vec<usize> = truth.iter().copied().collect();
    top_down.sort_by_key(|&c| (vocab.depth[c], c));
    let mut dropped = BTreeMap::new();
    // Type I, top-down: a child goes missing while its parent stays labelled.
    for &child in &top_down {
        if let Some(parent) = vocab.parent[child]
            && !dropped.contains_key(&parent)
            && rng.random_bool(type1_drop)
        {
            dropped.insert(child, DropKind::Type1);
        }
    }
    // Type II, bottom-up (so descendants are final): an ancestor goes missing while a descendant stays.
    for &ancestor in top_down.iter().rev() {
        if dropped.contains_key(&ancestor) {
            continue;
        }
        let holds_type1 = dropped.iter().any(|(&c, &d)| d == DropKind::Type1 && vocab.parent[c] == Some(ancestor));
        let descendant_observed = truth.iter().any(|&d| vocab.is_ancestor(ancestor, d) && !dropped.contains_key(&d));
        if !holds_type1 && descendant_observed && rng.random_bool(type2_drop) {
            dropped.insert(ancestor, DropKind::Type2);
        }
    }
    dropped
}

fn demo_classes(vocab: &Vocab) -> Vec<DemoClass> {
    let abstract_entries = ONTOLOGY.iter().filter(|e| e.sound.is_none());
    vocab
        .entries
        .iter()
        .copied()
        .chain(abstract_entries)
        .enumerate()
        .map(|(index, e)| DemoClass {
            index,
            mid: e.mid.to_string(),
            name: e.name.to_string(),
            parent: e.parent.map(str::to_string),
            is_abstract: e.sound.is_none(),
        })
        .collect()
}

fn truth_rows(clips: &[Clip], vocab: &Vocab) -> Vec<TruthRow> {
    clips
        .iter()
        .flat_map(|clip| {
            clip.truth.iter().map(move |c| TruthRow {
                clip_id: clip.id.clone(),
                split: clip.split.as_str().to_string(),
                mid: vocab.entries[*c].mid.to_string(),
                observed: !clip.dropped.contains_key(c),
                dropped: clip.dropped.get(c).map(|d| d.as_str().to_string()),
            })
        })
        .collect()
}

/// `ontology.json`, laid out like AudioSet's (two-space indent, arrays on one line).
fn ontology_json() -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let entries: Vec<String> = ONTOLOGY
        .iter()
        .map(|e| {
            let children: Vec<String> =
                ONTOLOGY.iter().filter(|c| c.parent == Some(e.mid)).map(|c| quote(c.mid)).collect();
            let restrictions = if e.sound.is_none() { "[\"abstract\"]" } else { "[]" };
            format!(
                "  {{\n    \"id\": {},\n    \"name\": {},\n    \"description\": {},\n    \"citation_uri\": \"\",\n    \
                 \"positive_examples\": [],\n    \"child_ids\": [{}],\n    \"restrictions\": {}\n  }}",
                quote(e.mid),
                quote(e.name),
                quote(e.description),
                children.join(", "),
                restrictions
            )
        })
        .collect();
    format!("[\n{}\n]\n", entries.join(",\n"))
}

fn class_labels_csv(vocab: &Vocab) -> String {
    let mut out = String::from("index,mid,display_name\n");
    for (i, e) in vocab.entries.iter().enumerate() {
        writeln!(out, "{i},{},\"{}\"", e.mid, e.name).expect("writing to a String");
    }
    out
}

/// A segments file in AudioSet's layout: three `#` lines, then `YTID, start, end, "mid,mid"` with the
/// observed labels sorted like AudioSet's (by mid).
fn segments_csv(clips: &[&Clip], vocab: &Vocab, clip_seconds: f64) -> String {
    let labels: Vec<Vec<&str>> = clips
        .iter()
        .map(|clip| {
            let mut mids: Vec<&str> = clip.observed().map(|c| vocab.entries[c].mid).collect();
            mids.sort_unstable();
            mids
        })
        .collect();
    let unique: BTreeSet<&str> = labels.iter().flatten().copied().collect();
    let positives: usize = labels.iter().map(Vec::len).sum();
    let mut out = format!(
        "{SEGMENTS_BANNER}\n# num_ytids={n}, num_segs={n}, num_unique_labels={}, num_positive_labels={positives}\n\
         # YTID, start_seconds, end_seconds, positive_labels\n",
        unique.len(),
        n = clips.len(),
    );
    for (clip, mids) in clips.iter().zip(&labels) {
        writeln!(out, "{}, {:.3}, {:.3}, \"{}\"", clip.id, 0.0, clip_seconds, mids.join(","))
            .expect("writing to a String");
    }
    out
}

fn true_labels_csv(truth: &[TruthRow]) -> String {
    let mut out = String::from("clip_id,split,mid,observed,dropped\n");
    for row in truth {
        let dropped = row.dropped.as_deref().unwrap_or("");
        writeln!(out, "{},{},{},{},{dropped}", row.clip_id, row.split, row.mid, row.observed)
            .expect("writing to a String");
    }
    out
}

fn write_wav(path: &Path, mix: &[f64], sample_rate: u32) -> Result<()> {
    let spec =
        hound::WavSpec { channels: 1, sample_rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let wav_err = |e: hound::Error| Error::file(path, None, e);
    let mut writer = hound::WavWriter::create(path, spec).map_err(wav_err)?;
    for &x in mix {
        writer.write_sample((x * f64::from(i16::MAX)).round() as i16).map_err(wav_err)?;
    }
    writer.finalize().map_err(wav_err)
}

/// Mixes the sources into `len` samples: each over a random stretch of at least half the clip, at a random
/// level, on a white-noise floor, normalised to a random peak in [0.5, 0.9].
fn synthesize(sources: &[usize], vocab: &Vocab, len: usize, sample_rate: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut mix: Vec<f64> = (0..len).map(|_| NOISE_FLOOR * rng.random_range(-1.0..1.0)).collect();
    for &class in sources {
        let sound = vocab.entries[class].sound.expect("vocabulary classes have a sound");
        let span = ((len as f64) * Span(0.5, 1.0).draw(rng)).round() as usize;
        let start = rng.random_range(0..=len - span);
        let level = Span(0.3, 1.0).draw(rng);
        let mut source = render(sound, span, sample_rate, rng);
        fade(&mut source, (FADE_SECONDS * sample_rate) as usize);
        let peak = source.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
        if peak > 0.0 {
            for (m, x) in mix[start..start + span].iter_mut().zip(&source) {
                *m += level * x / peak;
            }
        }
    }
    let peak = mix.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
    let gain = Span(0.5, 0.9).draw(rng) / peak.max(f64::MIN_POSITIVE);
    mix.iter_mut().for_each(|x| *x *= gain);
    mix
}

/// Length of the fade-in and fade-out of every source. Rhythmic sounds start their first event right after
/// the fade-in, so even a short source holds a whole one.
const FADE_SECONDS: f64 = 0.01;

/// Linear fade-in and fade-out of `ramp` samples (at most a quarter of the signal each).
fn fade(signal: &mut [f64], ramp: usize) {
    let len = signal.len();
    let ramp = ramp.min(len / 4);
    for i in 0..ramp {
        let g = i as f64 / ramp as f64;
        signal[i] *= g;
        signal[len - 1 - i] *= g;
    }
}

/// Renders `len` samples of one class's sound, its parameters drawn from `rng`.
fn render(sound: Sound, len: usize, sr: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let t = |i: usize| i as f64 / sr;
    match sound {
        Sound::Tone { freq } => {
            let mut tone = Phasor::new(freq.draw(rng), sr, rng);
            (0..len).map(|_| tone.next()).collect()
        }
        Sound::Harmonic { f0, partials } => {
            let f0 = f0.draw(rng);
            let mut partials: Vec<(f64, Phasor)> = (1..=partials)
                .map(|k| k as f64)
                .filter(|&k| k * f0 < 0.45 * sr)
                .map(|k| (1.0 / k, Phasor::new(k * f0, sr, rng)))
                .collect();
            (0..len).map(|_| partials.iter_mut().map(|(amp, p)| *amp * p.next()).sum()).collect()
        }
        Sound::Modulated { carrier, am_rate, am_depth, fm_rate, fm_dev } => {
            let (fc, dev) = (carrier.draw(rng), fm_dev.draw(rng));
            let mut am = Phasor::new(am_rate.draw(rng), sr, rng);
            let mut fm = Phasor::new(fm_rate.draw(rng), sr, rng);
            let mut phase = Phase::random(rng);
            (0..len)
                .map(|_| {
                    let amp = 1.0 - am_depth * 0.5 * (1.0 + am.next());
                    amp * phase.advance(fc + dev * fm.next(), sr).sin()
                })
                .collect()
        }
        Sound::Chirps { from, to, length, period } => {
            let (f0, f1, length, period) = (from.draw(rng), to.draw(rng), length.draw(rng), period.draw(rng));
            let offset = period - FADE_SECONDS;
            let mut phase = Phase::random(rng);
            (0..len)
                .map(|i| {
                    let tau = (t(i) + offset) % period;
                    if tau >= length {
                        return 0.0;
                    }
                    let f = f0 * (f1 / f0).powf(tau / length);
                    (PI * tau / length).sin() * phase.advance(f, sr).sin()
                })
                .collect()
        }
        Sound::Noise { low_cut, high_cut } => {
            let mut filters: Vec<Biquad> = Vec::new();
            if let Some(f) = low_cut {
                filters.extend([Biquad::high_pass(f, sr), Biquad::high_pass(f, sr)]);
            }
            if let Some(f) = high_cut {
                filters.extend([Biquad::low_pass(f, sr), Biquad::low_pass(f, sr)]);
            }
            (0..len)
                .map(|_| filters.iter_mut().fold(rng.random_range(-1.0..1.0), |x, filter| filter.process(x)))
                .collect()
        }
        Sound::Clicks { rate } => {
            let period = sr / rate.draw(rng);
            let offset = period - FADE_SECONDS * sr;
            let (burst, decay) = (0.004 * sr, 0.0008 * sr);
            (0..len)
                .map(|i| {
                    let since = (i as f64 + offset) % period;
                    let noise = rng.random_range(-1.0..1.0);
                    if since < burst { noise * (-since / decay).exp() } else { 0.0 }
                })
                .collect()
        }
        Sound::Beeps { freq, period } => {
            let mut tone = Phasor::new(freq.draw(rng), sr, rng);
            let period = period.draw(rng);
            let (offset, on, ramp) = (period - FADE_SECONDS, period / 2.0, 0.005);
            (0..len)
                .map(|i| {
                    let tau = (t(i) + offset) % period;
                    let gate = if tau < on { (tau / ramp).min((on - tau) / ramp).min(1.0) } else { 0.0 };
                    gate * tone.next()
                })
                .collect()
        }
    }
}

/// A sine oscillator of fixed frequency and random initial phase, advanced by complex rotation: a
/// multiply-add per sample instead of a `sin`.
struct Phasor {
    value: (f64, f64),
    step: (f64, f64),
}

impl Phasor {
    fn new(freq: f64, sr: f64, rng: &mut ChaCha8Rng) -> Phasor {
        let (phase, w) = (TAU * rng.random::<f64>(), TAU * freq / sr);
        Phasor { value: (phase.cos(), phase.sin()), step: (w.cos(), w.sin()) }
    }

    /// The current sample (the sine of the phase), then one step on.
    fn next(&mut self) -> f64 {
        let ((re, im), (c, s)) = (self.value, self.step);
        self.value = (re * c - im * s, re * s + im * c);
        im
    }
}

/// The phase of an oscillator of varying frequency, kept in `[0, TAU)`.
struct Phase(f64);

impl Phase {
    fn random(rng: &mut ChaCha8Rng) -> Phase {
        Phase(TAU * rng.random::<f64>())
    }

    /// Advances by one sample at `freq` Hz; returns the new phase.
    fn advance(&mut self, freq: f64, sr: f64) -> f64 {
        self.0 = (self.0 + TAU * freq / sr).rem_euclid(TAU);
        self.0
    }
}

/// A second-order (RBJ cookbook, Butterworth Q) filter in transposed direct form II.
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
    state: [f64; 2],
}

impl Biquad {
    fn low_pass(cutoff: f64, sr: f64) -> Biquad {
        let cos = (TAU * cutoff / sr).cos();
        Biquad::new([(1.0 - cos) / 2.0, 1.0 - cos, (1.0 - cos) / 2.0], cutoff, sr)
    }

    fn high_pass(cutoff: f64, sr: f64) -> Biquad {
        let cos = (TAU * cutoff / sr).cos();
        Biquad::new([(1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0], cutoff, sr)
    }

    fn new(b: [f64; 3], cutoff: f64, sr: f64) -> Biquad {
        let w0 = TAU * cutoff / sr;
        let alpha = w0.sin() * FRAC_1_SQRT_2; // sin(w0) / (2 Q) with Q = 1/sqrt(2)
        let a0 = 1.0 + alpha;
        Biquad { b: b.map(|x| x / a0), a: [-2.0 * w0.cos() / a0, (1.0 - alpha) / a0], state: [0.0; 2] }
    }

    fn process(&mut self, x: f64) -> f64 {
        let y = self.b[0] * x + self.state[0];
        self.state[0] = self.b[1] * x - self.a[0] * y + self.state[1];
        self.state[1] = self.b[2] * x - self.a[1] * y;
        y
    }
}

// ---------------------------------------------------------------------------------------------------
// The pipeline stage: `[stage.demo_data]` with `out = "<folder>"` plus the fields of `DemoDataParams`.

pub const KIND: super::StageKind = super::StageKind {
    name: "demo_data",
    about: "generate the known-truth demo dataset (AudioSet formats, wav audio, hidden truth)",
    build: |value, resolver| {
        let mut table = match value {
            toml::Value::Table(t) => t,
            _ => return Err("parameters must be a table".into()),
        };
        let out = match table.remove("out") {
            Some(toml::Value::String(s)) => resolver.path(&s),
            Some(_) => return Err("invalid type for field `out`: expected a folder path string".into()),
            None => return Err("missing field `out` (the folder to write the dataset into)".into()),
        };
        let params: DemoDataParams = super::params_from(toml::Value::Table(table))?;
        Ok(Box::new(DemoDataStage { out, params }))
    },
};

/// `demo_data` as a pipeline stage: where to write, and what to generate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoDataStage {
    pub out: String,
    #[serde(flatten)]
    pub params: DemoDataParams,
}

impl super::Stage for DemoDataStage {
    fn kind(&self) -> &'static str {
        "demo_data"
    }

    fn io(&self) -> super::StageIo {
        super::StageIo {
            writes: super::names(&["demo_truth", "demo_teacher"]),
            output_dirs: vec![self.out.clone()],
            ..Default::default()
        }
    }

    fn params_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("params serialize")
    }

    fn run(&self, ctx: &super::StageContext) -> Result<super::StageOutput> {
        let data = generate(&self.params, &super::local_path(&self.out))?;
        let table = ctx.stage_table("demo_truth", truth_schema(), &[truth_batch(&data.truth)?])?;
        let teacher = ctx.stage_table("demo_teacher", teacher_schema(), &[teacher_batch(&data, self.params.seed)?])?;
        let observed = data.truth.iter().filter(|t| t.observed).count();
        Ok(super::StageOutput {
            tables: vec![table, teacher],
            rows_in: 0,
            rows_out: data.truth.len() as u64,
            rejects: 0,
            detail: format!(
                "{} clips, {} classes, {} true labels, {} observed, {} files in {}",
                data.clips,
                data.classes.iter().filter(|c| !c.is_abstract).count(),
                data.truth.len(),
                observed,
                data.files.len(),
                self.out
            ),
        })
    }
}

/// `demo_teacher`: (clip_id, mid, score Float32) for every clip and every vocabulary class.
pub fn teacher_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    std::sync::Arc::new(Schema::new(vec![
        Field::new("clip_id", DataType::Utf8, false),
        Field::new("mid", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ]))
}

/// A simulated teacher, standing in for a trained model's scores until the demo trains one: it
/// knows the hidden truth but is imperfect. A true label scores `1 - 0.6 u^2` (mostly high, from 0.4),
/// a false one `0.5 u^5` (mostly near 0, up to 0.5), with `u` uniform; 2% of all scores are instead
/// uniform noise. Drawn from its own stream of `seed`, so the rest of the data does not change.
pub fn teacher_batch(data: &DemoData, seed: u64) -> Result<arrow::array::RecordBatch> {
    use arrow::array::{Float32Array, StringArray};
    let truth: std::collections::HashSet<(&str, &str)> =
        data.truth.iter().map(|t| (t.clip_id.as_str(), t.mid.as_str())).collect();
    let mut clips: Vec<&str> = Vec::new();
    for t in &data.truth {
        if clips.last() != Some(&t.clip_id.as_str()) {
            clips.push(&t.clip_id);
        }
    }
    let vocab: Vec<&str> = data.classes.iter().filter(|c| !c.is_abstract).map(|c| c.mid.as_str()).collect();
    let mut rng = stream_rng(seed, 0x7eac_4e12);
    let (mut ids, mut mids, mut scores) = (Vec::new(), Vec::new(), Vec::new());
    for clip in &clips {
        for mid in &vocab {
            let u: f64 = rng.random();
            let score = if rng.random::<f64>() < 0.02 {
                rng.random::<f64>()
            } else if truth.contains(&(clip, mid)) {
                1.0 - 0.6 * u * u
            } else {
                0.5 * u.powi(5)
            };
            ids.push(*clip);
            mids.push(*mid);
            scores.push(score as f32);
        }
    }
    Ok(arrow::array::RecordBatch::try_new(
        teacher_schema(),
        vec![
            std::sync::Arc::new(StringArray::from(ids)),
            std::sync::Arc::new(StringArray::from(mids)),
            std::sync::Arc::new(Float32Array::from(scores)),
        ],
    )?)
}

pub fn truth_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    std::sync::Arc::new(Schema::new(vec![
        Field::new("clip_id", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("mid", DataType::Utf8, false),
        Field::new("observed", DataType::Boolean, false),
        Field::new("dropped", DataType::Utf8, true),
    ]))
}

fn truth_batch(rows: &[TruthRow]) -> Result<arrow::array::RecordBatch> {
    use arrow::array::{BooleanArray, StringArray};
    let col = |f: fn(&TruthRow) -> Option<&str>| std::sync::Arc::new(rows.iter().map(f).collect::<StringArray>());
    Ok(arrow::array::RecordBatch::try_new(
        truth_schema(),
        vec![
            col(|r| Some(r.clip_id.as_str())),
            col(|r| Some(r.split.as_str())),
            col(|r| Some(r.mid.as_str())),
            std::sync::Arc::new(rows.iter().map(|r| Some(r.observed)).collect::<BooleanArray>()),
            col(|r| r.dropped.as_deref()),
        ],
    )?)
}

/// The SQL of the demo's closing table, embedded from `sql/demo/`.
pub mod sql {
    pub const MODELS: &str = include_str!("../../sql/demo/models.sql");
    pub const LABEL_QUALITY: &str = include_str!("../../sql/demo/label_quality.sql");
}

/// The table `psla demo` ends with: every model's eval mAP (`sql/demo/models.sql`) and the label
/// enhancement's precision and recall against the hidden truth (`sql/demo/label_quality.sql`).
pub fn summary(root: &crate::table::RunRoot) -> Result<String> {
    let session = crate::sql::Session::open(root)?;
    let pretty = |sql: &str, what: &str| -> Result<String> {
        let t = session.query_read_only(sql).map_err(|e| crate::error::Error::invalid(format!("the demo's {what} table: {e}")))?;
        Ok(arrow::util::pretty::pretty_format_batches(&t.batches)?.to_string())
    };
    Ok(format!(
        "Models on the clean eval split (sql/demo/models.sql):\n{}\n\
         Label enhancement against the hidden truth, train split (sql/demo/label_quality.sql):\n{}",
        pretty(sql::MODELS, "models")?,
        pretty(sql::LABEL_QUALITY, "label quality")?
    ))
}
