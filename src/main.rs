//! The `psla` command line: parse, call into the library, print. No logic lives here.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use psla::error::{Error, Result};
use psla::pipeline::{self, PipelineSpec, RunOptions};
use psla::stages::features::{Dtype, FeaturesParams};
use psla::stages::ingest::IngestParams;
use psla::stages::label::{LabelParams, TeacherCheck, ThresholdKind};
use psla::table::{RunRoot, TableData};
use arrow::array::RecordBatch;

/// The embedded demo pipeline (also at pipelines/demo.toml).
const DEMO_PIPELINE: &str = include_str!("../pipelines/demo.toml");

#[derive(Parser)]
#[command(
    name = "psla",
    version,
    about = "Turn raw audio collections into audio-tagging models with the PSLA recipe",
    long_about = "Turn raw audio collections into audio-tagging models with the PSLA recipe \
                  (Pretraining, Sampling, Labeling, Aggregation).\n\n\
                  Stages read and write Parquet tables in a run root (a folder): ingest -> features -> \
                  label -> sample -> train -> score -> evaluate. Run them one by one, or declare them in \
                  a pipeline TOML and `psla run` it.",
    after_help = "Start with `psla demo`, then `psla tables --root psla-demo` and \
                  `psla sql \"SELECT * FROM labels LIMIT 5\" --root psla-demo`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// An object-store option, KEY=VALUE (repeatable): object_store's configuration keys for the
    /// URL's scheme, e.g. aws_endpoint=http://127.0.0.1:9000, aws_region=eu-west-1,
    /// aws_allow_http=true. They override the environment (AWS_*, GOOGLE_*, AZURE_*).
    #[arg(long = "storage-option", global = true, value_name = "KEY=VALUE")]
    storage_options: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline TOML: validate it, plan the stages, run those that are out of date.
    #[command(
        long_about = "Run a pipeline TOML on a run root.\n\n\
                      The whole spec is checked first (unknown stage kind or key, a table read that no stage \
                      writes, a missing input file, a cycle): any problem is reported with its file, line and key, \
                      and nothing runs. Each stage then runs in dependency order. A stage whose parameters, \
                      input tables and input files are unchanged since it last completed is skipped, so a rerun \
                      after an interruption resumes where it stopped."
    )]
    Run {
        /// The pipeline file (see pipelines/).
        pipeline: PathBuf,
        /// Run root: a folder (created if missing) holding manifest.json and tables/.
        #[arg(long)]
        root: String,
        /// Print the plan and what would run, then stop.
        #[arg(long)]
        dry_run: bool,
        /// Run only this stage (skipped when up to date, unless --force).
        #[arg(long, value_name = "STAGE")]
        only: Option<String>,
        /// Rerun this stage and every stage after it, even when up to date.
        #[arg(long, value_name = "STAGE", conflicts_with = "only")]
        from: Option<String>,
        /// Rerun every selected stage even when up to date.
        #[arg(long)]
        force: bool,
        /// Where the SQL stages (label, ensemble, sql) run: `local` or `ballista://HOST:PORT`, a cluster
        /// started with `psla cluster` [default: the pipeline's `engine`, else local].
        #[arg(long, value_name = "ENGINE")]
        engine: Option<String>,
        /// Run shard K of N of the --only stage (a features stage) into tables of its own
        /// (features_shard_K_of_N, ...); N such runs may go at once on one root, and the next plain
        /// run of the stage merges them (docs/cluster.md).
        #[arg(long, value_name = "K/N", requires = "only")]
        shard: Option<String>,
    },

    /// Ingest AudioSet-style segment CSVs, a class vocabulary and the ontology into Parquet tables.
    #[command(
        long_about = "Ingest AudioSet-style metadata into a run root.\n\n\
                      Writes the tables classes, ontology, ontology_edges, clips, labels and ingest_rejects \
                      (docs/tables.md). Segment CSVs may have AudioSet's `#` comment lines or not; the split of \
                      each clip is its file name without `_segments.csv`. Bad rows (malformed, unknown mid, end \
                      before start, duplicate clip id) go to ingest_rejects with file, line and reason; good rows \
                      are all kept. A missing input file or an unparsable vocabulary or ontology is an error and \
                      writes nothing."
    )]
    Ingest {
        /// A segment CSV (repeat for several: balanced_train_segments.csv, eval_segments.csv, ...).
        #[arg(long, required = true, value_name = "CSV")]
        segments: Vec<String>,
        /// The class vocabulary, class_labels_indices.csv (index,mid,display_name).
        #[arg(long, value_name = "CSV")]
        classes: String,
        /// AudioSet's ontology.json.
        #[arg(long, value_name = "JSON")]
        ontology: String,
        /// Folder where each clip's audio is `<clip_id>.<wav|flac|mp3|ogg|opus|m4a>`.
        #[arg(long, value_name = "DIR")]
        audio: Option<String>,
        /// CSV `clip_id,path` giving each clip's audio file.
        #[arg(long, value_name = "CSV")]
        audio_manifest: Option<String>,
        /// Run root to write the tables into.
        #[arg(long, value_name = "ROOT")]
        out: String,
    },

    /// Decode audio and compute PSLA's 128-bin log-mel filterbank of every clip into Parquet.
    #[command(
        long_about = "Decode audio and compute PSLA's 128-bin Kaldi log-mel filterbank of every clip.\n\n\
                      Each clip is decoded (wav, flac, mp3, ogg/vorbis, ...), resampled to --sample-rate with \
                      torchaudio's sinc resampler, its mean removed, and its filterbank computed exactly as \
                      torchaudio.compliance.kaldi.fbank does in PSLA (25 ms Hanning frames every 10 ms). \
                      A folder INPUT contributes every audio file under it; its clip_id is the path relative to \
                      the folder, extension included.\n\n\
                      Clips that cannot be used (unreadable, empty, not audio, corrupt, shorter than one frame, \
                      NaN samples, truncated) go to the rejects file with the reason; the rest are all kept. \
                      Work is staged in OUT.partial/ so a killed run resumes there; clips already in an \
                      existing OUT are kept and not recomputed. In a pipeline, the `features` stage reads the \
                      clips table instead.",
        after_help = "Examples:\n  psla features audio/ --out features.parquet\n  \
                      psla features a.wav b.flac --out f.parquet --native-rate --dtype f16\n  \
                      psla features audio/ --out part3.parquet --shard 3/8"
    )]
    Features {
        /// Audio folders, files or file:// URLs.
        #[arg(required = true, value_name = "INPUT")]
        inputs: Vec<String>,
        /// The features Parquet file to write.
        #[arg(long, value_name = "FILE.parquet")]
        out: PathBuf,
        /// Where rejected clips go [default: OUT with `.rejects.parquet`].
        #[arg(long, value_name = "FILE.parquet")]
        rejects: Option<PathBuf>,
        /// Also write feature statistics (per mel bin and overall; PSLA's norm mean/std).
        #[arg(long, value_name = "FILE.parquet")]
        stats: Option<PathBuf>,
        /// Resample every clip to this rate before the filterbank.
        #[arg(long, default_value_t = 16000, value_name = "HZ")]
        sample_rate: u32,
        /// Keep each file's own sample rate (no resampling).
        #[arg(long, conflicts_with = "sample_rate")]
        native_rate: bool,
        /// Worker threads [default: all cores].
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        /// Process only shard K of N (1 <= K <= N), split by a stable hash of clip_id.
        #[arg(long, value_name = "K/N")]
        shard: Option<String>,
        /// How to store the filterbank values.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Dtype,
        /// Keep the part of a truncated file that is there (PSLA's loader does) instead of rejecting it.
        #[arg(long)]
        keep_truncated: bool,
    },

    /// PSLA label enhancement: add missing child (Type I) and ancestor (Type II) labels a teacher supports.
    #[command(
        long_about = "PSLA label enhancement with a teacher's scores, as the SQL in sql/label/ (DataFusion).\n\n\
                      Per class, a threshold is taken from the teacher's scores on the clips originally labeled \
                      with it (mean, median or a percentile). Type I adds a child class of an original, \
                      non-abstract label; Type II adds an ancestor of an original label; each only where the \
                      teacher's score is above the class threshold. Additions never trigger more additions. \
                      The result equals PSLA's own scripts label for label.\n\n\
                      Writes OUT (every label with origin, via_mid, score, threshold), OUT.thresholds.parquet \
                      and OUT.changes.parquet (per class: what each rule added). Missing, duplicate or invalid \
                      teacher scores are an error with examples; nothing is guessed. The teacher's table is \
                      read once: the scores the rules read are kept and checked (--check full also checks \
                      every other score first, in one more pass).",
        after_help = "Example:\n  psla label --labels labels.parquet --teacher scores.parquet \\\n    \
                      --ontology ontology.json --classes class_labels_indices.csv \\\n    \
                      --threshold p25 --rules type1,type2 --out enhanced.parquet"
    )]
    Label {
        /// Original labels: Parquet with columns clip_id, mid.
        #[arg(long, value_name = "FILE.parquet")]
        labels: PathBuf,
        /// Teacher scores: Parquet with columns clip_id, mid, score (at least every pair the rules read;
        /// every labeled clip x every class with --check full).
        #[arg(long, value_name = "FILE.parquet")]
        teacher: PathBuf,
        /// AudioSet's ontology.json.
        #[arg(long, value_name = "JSON")]
        ontology: String,
        /// The class vocabulary, class_labels_indices.csv (index,mid,display_name).
        #[arg(long, value_name = "CSV")]
        classes: String,
        /// How each class's threshold is computed from the teacher's scores on its labeled clips.
        #[arg(long, value_enum, default_value = "mean")]
        threshold: ThresholdKind,
        /// Which rules to apply: type1, type2 or type1,type2.
        #[arg(long, default_value = "type1,type2")]
        rules: String,
        /// Classes with fewer labeled clips get no threshold and no additions (1 = PSLA).
        #[arg(long, default_value_t = 1, value_name = "N")]
        min_support: u64,
        /// Which teacher scores to check first: those the rules read (needed, no extra pass), or
        /// every labeled clip x every class (full, one more pass over the teacher's table).
        #[arg(long, value_enum, default_value_t = TeacherCheck::Needed)]
        check: TeacherCheck,
        /// The enhanced labels to write.
        #[arg(long, value_name = "FILE.parquet")]
        out: PathBuf,
        /// Where the SQL runs: `local` or `ballista://HOST:PORT`. On a cluster, every executor must
        /// read the input files at the same paths, and intermediate tables go to OUT.scratch/.
        #[arg(long, value_name = "ENGINE", default_value = "local")]
        engine: String,
    },

    /// PSLA balanced-sampling weights, and seeded epoch draws with what each class received.
    #[command(
        long_about = "PSLA's balanced-sampling weights: label_weight[c] = 1000 / (clips with c + 0.01), a clip's \
                      weight the sum over its labels (PSLA's gen_weight_file.py).\n\n\
                      With --draws N, also draws N epochs of as many clips as there are, with replacement, \
                      by weight (PyTorch's WeightedRandomSampler, PSLA's full-set recipe) or uniformly \
                      (--uniform, its balanced-set recipe), reproducibly from --seed, and writes per class \
                      and epoch how many draws carried it against the expected share.",
        after_help = "Example:\n  psla sample --labels labels.parquet --classes class_labels_indices.csv --out weights.parquet \\\n    \
                      --draws 5 --seed 1 --draws-out draws.parquet   # also writes draws.exposure.parquet"
    )]
    Sample {
        /// Labels: Parquet with columns clip_id, mid (original or enhanced).
        #[arg(long, value_name = "FILE.parquet")]
        labels: PathBuf,
        /// The class vocabulary, class_labels_indices.csv.
        #[arg(long, value_name = "CSV")]
        classes: String,
        /// The weights to write (clip_id, weight, n_labels).
        #[arg(long, value_name = "FILE.parquet")]
        out: PathBuf,
        /// Epochs of draws to write to --draws-out.
        #[arg(long, value_name = "EPOCHS", requires = "draws_out")]
        draws: Option<u32>,
        /// Seed of the draws.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Draw uniformly instead of by weight.
        #[arg(long)]
        uniform: bool,
        /// Where the draws go (epoch, position, clip_id); the exposure goes beside it.
        #[arg(long, value_name = "FILE.parquet", requires = "draws")]
        draws_out: Option<PathBuf>,
    },

    /// A balanced subset (at least K clips per class) split into train/val by iterative stratification.
    #[command(
        long_about = "Build a balanced subset of a large labeled set, the way AudioSet's balanced set was built: \
                      classes from the rarest up, each topped up to --min-per-class clips drawn at random (seeded) \
                      among those carrying it; classes with fewer clips get all of theirs. The subset is then split \
                      into train and validation by iterative stratification (Sechidis et al. 2011), which keeps \
                      every label's share in both parts close to --val-fraction. Writes (clip_id, split)."
    )]
    Subset {
        /// Labels: Parquet with columns clip_id, mid.
        #[arg(long, value_name = "FILE.parquet")]
        labels: PathBuf,
        /// The class vocabulary, class_labels_indices.csv.
        #[arg(long, value_name = "CSV")]
        classes: String,
        /// Clips per class to reach where the class has them.
        #[arg(long, default_value_t = 60, value_name = "K")]
        min_per_class: usize,
        /// Fraction of the subset for validation.
        #[arg(long, default_value_t = 0.1, value_name = "F")]
        val_fraction: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The subset to write (clip_id, split = train | val).
        #[arg(long, value_name = "FILE.parquet")]
        out: PathBuf,
    },

    /// Per-class AP and AUC, mAP, mean AUC and d-prime of predictions against labels (as PSLA/sklearn).
    #[command(
        long_about = "Evaluate predictions against labels the way PSLA reports it: per class, scikit-learn's \
                      average_precision_score and roc_auc_score; mAP and mean AUC as unweighted means over the \
                      classes that have both positives and negatives (the others are listed, not averaged); \
                      d' = sqrt(2) * Phi^-1(mean AUC).\n\n\
                      The clips evaluated are the labeled clips that have predictions. Labeled clips without \
                      predictions and predictions for clips outside the labels are counted and reported; a \
                      missing (clip, class) score of an evaluated clip is an error naming an example. Writes \
                      OUT (mid, display_name, positives, ap, auc) and OUT.summary.parquet."
    )]
    Evaluate {
        /// Predictions: Parquet with columns clip_id, mid, score.
        #[arg(long, value_name = "FILE.parquet")]
        predictions: PathBuf,
        /// Labels (positives): Parquet with columns clip_id, mid.
        #[arg(long, value_name = "FILE.parquet")]
        labels: PathBuf,
        /// The class vocabulary, class_labels_indices.csv.
        #[arg(long, value_name = "CSV")]
        classes: String,
        /// Per-class metrics to write.
        #[arg(long, value_name = "FILE.parquet")]
        out: PathBuf,
    },

    /// Train PSLA's model on a run root's features and labels (resumable; CPU or CUDA).
    #[command(
        long_about = "Train PSLA's EfficientNet + attention model with PSLA's recipe on a run root's tables.\n\n\
                      Reads features, the training labels (--labels, e.g. labels_enhanced), the evaluation labels \
                      (--eval-labels), classes, clips (for the splits), feature_stats (normalize = \"stats\") and \
                      epoch_draws (sampling = \"draws\"). The recipe (--config) is a file of configs/ by name or a \
                      TOML path: model, target frames, SpecAugment, mixup, Adam, warm-up and lr decay.\n\n\
                      After every epoch: evaluation on the eval splits (mAP, mean AUC, d', and the checkpoint \
                      ensemble's mAP), models/NAME/epoch-NN.safetensors and its optimizer state. At the end: the \
                      train_metrics table. A killed run resumes from its last complete epoch when rerun with the \
                      same arguments, and ends with the same weights as an uninterrupted run (CPU, same seed).",
        after_help = "Examples:\n  psla train --root R --config demo_cpu --name teacher\n  \
                      psla train --root R --config psla_audioset_balanced --name b2 --labels labels_enhanced \\\n    \
                      --eval-labels labels --init efficientnet-b2-imagenet.safetensors --device cuda:0"
    )]
    Train {
        /// Run root holding the input tables; checkpoints go to ROOT/models/NAME/.
        #[arg(long)]
        root: String,
        /// Recipe: a name of configs/ (demo_cpu, psla_audioset_balanced, psla_audioset_full, psla_fsd50k) or a TOML file.
        #[arg(long, value_name = "NAME|FILE.toml")]
        config: String,
        /// The model's name (its folder under models/).
        #[arg(long)]
        name: String,
        /// The table of training labels.
        #[arg(long, default_value = "labels", value_name = "TABLE")]
        labels: String,
        /// The table of evaluation labels.
        #[arg(long, default_value = "labels", value_name = "TABLE")]
        eval_labels: String,
        /// Splits to train on, comma-separated [default: every split not evaluated].
        #[arg(long, value_name = "SPLITS", value_delimiter = ',')]
        train_splits: Option<Vec<String>>,
        /// Splits to evaluate after every epoch, comma-separated.
        #[arg(long, default_value = "eval", value_name = "SPLITS", value_delimiter = ',')]
        eval_splits: Vec<String>,
        /// auto (CUDA when available), cpu or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Override the recipe's number of epochs.
        #[arg(long, value_name = "N")]
        epochs: Option<u32>,
        /// An efficientnet_pytorch ImageNet state dict (safetensors) to initialise from.
        #[arg(long, value_name = "FILE.safetensors")]
        init: Option<String>,
        /// libtorch threads [default: libtorch's choice].
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
    },

    /// Score audio or a features table with one or more checkpoints: eval-mode forward, predictions out.
    #[command(
        long_about = "Score audio (files, folders, file:// URLs) or a features table (psla features) with PSLA model \
                      checkpoints.\n\n\
                      Audio is decoded and featurised exactly as psla features does (16 kHz, PSLA's fbank); files \
                      that cannot be read go to --rejects with the reason and the rest are scored. Each clip's fbank \
                      is padded with zeros at the end or cut to the target frames, normalised, and run through the \
                      model in eval mode, in batches. With several --checkpoint files the score is the mean of their \
                      probabilities (all must share one class vocabulary). Writes OUT with one row per (clip, class): \
                      clip_id, class_index, mid, score; mid is the class id from the checkpoint's metadata, or the \
                      class index as text for a file without one.\n\n\
                      Long recordings: --window SECONDS [--hop SECONDS] scores sliding windows (the last one ends at \
                      the clip's end) and writes one row per (clip, window, class) to --windows-out (clip_id, start_s, \
                      end_s, class_index, mid, score); OUT then holds each clip's max over its windows as score, plus \
                      score_mean and windows. --top K and --min-score X keep only the K best classes of each clip \
                      (and window) and the scores >= X.\n\n\
                      psla's checkpoints carry their architecture, heads, classes, normalisation and target \
                      frames. PSLA's own state dicts (converted to safetensors; a `module.` prefix and `_fc` \
                      keys are accepted) carry none: the model is told from the tensor shapes (--arch and \
                      --heads, when given, are checked against it), and PSLA's constants and 1056 frames are \
                      the defaults.",
        after_help = "Examples:\n  psla score --checkpoint run/models/teacher/epoch-30.safetensors my_audio/ --out predictions.parquet\n  \
                      psla score --checkpoint run/models/teacher/epoch-30.safetensors features.parquet --out predictions.parquet\n  \
                      psla score --checkpoint a.safetensors --checkpoint b.safetensors eval_features.parquet \\\n    \
                      --out ensemble.parquet --device cuda:0 --batch-size 64\n  \
                      psla score --checkpoint wa.safetensors recordings/ --window 10 --hop 5 --top 5 \\\n    \
                      --out clips.parquet --windows-out windows.parquet\n  \
                      psla score --checkpoint psla_as_b2.safetensors --arch efficientnet-b2 --heads 4 features.parquet \\\n    \
                      --normalize psla --target-frames 1056 --out p.parquet"
    )]
    Score {
        /// A checkpoint (safetensors); repeat for an ensemble (mean of probabilities).
        #[arg(long = "checkpoint", value_name = "FILE.safetensors", required = true)]
        checkpoints: Vec<String>,
        /// Audio files, folders or file:// URLs; or one features table (a .parquet file from psla features).
        #[arg(value_name = "INPUT", required = true)]
        inputs: Vec<String>,
        /// The predictions to write.
        #[arg(long, value_name = "FILE.parquet")]
        out: PathBuf,
        /// For audio input: the clips that could not be scored, with the reason [default: OUT's name + .rejects.parquet].
        #[arg(long, value_name = "FILE.parquet")]
        rejects: Option<PathBuf>,
        /// For audio input: keep the computed features here (a rerun reuses the clips already in it).
        #[arg(long, value_name = "FILE.parquet")]
        features_out: Option<PathBuf>,
        /// For audio input: decoding and fbank threads (default: all cores).
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        /// Score sliding windows of this many seconds (see --windows-out).
        #[arg(long, value_name = "SECONDS")]
        window: Option<f64>,
        /// Seconds between window starts [default: the window].
        #[arg(long, value_name = "SECONDS", requires = "window")]
        hop: Option<f64>,
        /// With --window: the per-window rows [default: OUT's name + .windows.parquet].
        #[arg(long, value_name = "FILE.parquet", requires = "window")]
        windows_out: Option<PathBuf>,
        /// Keep only the K highest-scoring classes of each clip (and window).
        #[arg(long, value_name = "K")]
        top: Option<usize>,
        /// Keep only scores at or above X.
        #[arg(long, value_name = "X")]
        min_score: Option<f32>,
        /// checkpoint (what it was trained with), none, psla (-4.6476,4.5699), stats (needs --stats) or MEAN,STD.
        #[arg(long, default_value = "checkpoint", value_name = "HOW", allow_hyphen_values = true)]
        normalize: String,
        /// A feature_stats table (psla features --stats) for --normalize stats: its PSLA norm stats are used.
        #[arg(long, value_name = "FILE.parquet")]
        stats: Option<PathBuf>,
        /// Frames per clip (default: the checkpoint's; 1056 for a file without metadata).
        #[arg(long, value_name = "N")]
        target_frames: Option<i64>,
        /// Clips per forward [default: 16 on CUDA, 2 on the CPU, where larger batches are slower].
        #[arg(long, value_name = "N")]
        batch_size: Option<usize>,
        /// auto (CUDA when available), cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
        /// For a file without metadata: efficientnet-b0 .. efficientnet-b7 (checked against the file).
        #[arg(long, value_name = "ARCH")]
        arch: Option<String>,
        /// For a file without metadata: 0 (mean pooling), 1 (attention), N > 1 (multi-head).
        #[arg(long, value_name = "N")]
        heads: Option<usize>,
    },

    /// Query a run root's tables with SQL (read-only; DataFusion).
    #[command(
        long_about = "Query a run root's tables with SQL (DataFusion dialect).\n\n\
                      Every table of the run root is registered under its name. The session is read-only: \
                      CREATE, DROP, INSERT, UPDATE, DELETE, COPY, CREATE EXTERNAL TABLE and SET are refused \
                      with a non-zero exit, and file paths cannot be queried. Ready-made audits are in sql/audit/.",
        after_help = "Examples:\n  psla sql \"SELECT count(*) FROM labels\" --root R --format csv\n  \
                      psla sql --file sql/audit/labels_per_class.sql --root R\n  \
                      psla sql \"SELECT * FROM clips\" --root R --out clips.parquet"
    )]
    Sql {
        /// The query (or use --file).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        query: Option<String>,
        /// Read the query from a .sql file.
        #[arg(long, value_name = "SQL_FILE")]
        file: Option<PathBuf>,
        /// Run root whose tables to query.
        #[arg(long)]
        root: String,
        /// Output format on stdout.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Write the result to this Parquet file instead of printing it.
        #[arg(long, value_name = "FILE.parquet")]
        out: Option<PathBuf>,
        /// Where the query runs: `local` or `ballista://HOST:PORT` (a cluster started with `psla cluster`).
        #[arg(long, value_name = "ENGINE", default_value = "local")]
        engine: String,
    },

    /// List a run root's tables (rows, size, version, schema, files) or drop some (--drop).
    #[command(after_help = "Examples:\n  \
        psla tables --root runs/full\n  \
        psla tables --root runs/full --drop 'features_shard_*'   # shard tables a rerun left unmerged\n  \
        psla tables --root s3://bucket/runs/full --drop labels_enhanced --drop label_changes")]
    Tables {
        /// The run root.
        #[arg(long)]
        root: String,
        /// Remove this table (`*` matches any characters; repeatable), with the records of the stages
        /// that wrote it, so that `psla run` writes it again. One commit; the files are deleted.
        #[arg(long, value_name = "NAME")]
        drop: Vec<String>,
    },

    /// Run the demo pipeline (pipelines/demo.toml) on generated known-truth data.
    #[command(
        long_about = "Run the demo pipeline on generated known-truth data.\n\n\
                      Generates a small AudioSet-like dataset (ontology, vocabulary, segment CSVs, wav audio, \
                      hidden true labels and noisy observed labels) deterministically from a seed, then runs \
                      the pipeline stages over it. Rerunning does nothing unless something changed."
    )]
    Demo {
        /// Run root for the demo.
        #[arg(long, default_value = "psla-demo")]
        root: String,
        /// Print the plan and what would run, then stop.
        #[arg(long)]
        dry_run: bool,
        /// Rerun every stage.
        #[arg(long)]
        force: bool,
    },

    /// PSLA's aggregation: average the predictions of several models (checkpoints, seeds, settings).
    #[command(subcommand)]
    Ensemble(EnsembleCommand),

    /// Start a Ballista scheduler or executor: a cluster for the SQL stages (`--engine ballista://...`).
    #[command(
        subcommand,
        long_about = "Start a Ballista cluster for the SQL stages (label, ensemble, sql) with the same binary.\n\n\
                      `psla cluster scheduler` runs Ballista's scheduler, `psla cluster executor` one of its \
                      executors; both run until stopped (Ctrl-C). Start the scheduler first, then any number of \
                      executors on any machines that reach it, then run pipelines with `--engine \
                      ballista://SCHEDULER_HOST:PORT`. Every process reads object-store tables with its own \
                      credentials (AWS_*, GOOGLE_*, AZURE_* variables, --storage-option); a local run root must be \
                      a folder every executor sees at the same path. docs/cluster.md has a multi-machine setup.",
        after_help = "Examples:\n  psla cluster scheduler --bind 0.0.0.0:50050 --external-host sched.example\n  \
                      psla cluster executor --scheduler sched.example:50050 --bind 0.0.0.0 --work-dir /scratch/psla\n  \
                      psla run pipelines/audioset_full.toml --root s3://bucket/run --engine ballista://sched.example:50050"
    )]
    Cluster(ClusterCommand),

    /// Write report.html: pipeline, label enhancement, sampling, training and evaluation of a run root.
    #[command(
        long_about = "Write one self-contained HTML report of a run root (inline SVG, no scripts, nothing loaded \
                      from the network): the stages and tables, label enhancement (additions per class and rule, \
                      top parent/child pairs, labels per class before and after), sampling (share of clips vs \
                      share of draws per class), training curves of every model (loss, mAP, learning rate per \
                      epoch) and evaluation (mAP, mean AUC, d' of every metrics table; per-class AP; AP vs \
                      training clips). Each figure shows the SQL behind it (sql/report/, sql/audit/). A section \
                      whose tables are missing says so."
    )]
    Report {
        /// The run root.
        #[arg(long)]
        root: String,
        /// Where to write (default: report.html in the run root).
        #[arg(long, value_name = "FILE.html")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Run a Ballista scheduler: it plans jobs into stages and hands their tasks to executors.
    Scheduler {
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
        bind: std::net::SocketAddr,
        /// The name executors reach this machine by [default: the --bind address].
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
        /// Seconds without a heartbeat after which an executor is dead and its tasks rerun elsewhere.
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        executor_timeout: u64,
    },
    /// Run a Ballista executor: it runs the tasks its scheduler gives it.
    Executor {
        /// The scheduler to join.
        #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
        scheduler: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
        bind: String,
        /// The name the scheduler and clients reach this executor by [default: the --bind address].
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
        /// Arrow Flight port (shuffle data and query results).
        #[arg(long, default_value_t = 50051, value_name = "PORT")]
        flight_port: u16,
        /// gRPC port the scheduler sends tasks to.
        #[arg(long, default_value_t = 50052, value_name = "PORT")]
        grpc_port: u16,
        /// Tasks run at once [default: one per core].
        #[arg(long, default_value_t = 0, value_name = "N")]
        slots: usize,
        /// Folder for shuffle files and spills.
        #[arg(long, value_name = "DIR")]
        work_dir: PathBuf,
        /// Seconds between heartbeats to the scheduler.
        #[arg(long, default_value_t = 2, value_name = "SECONDS")]
        heartbeat: u64,
    },
}

#[derive(Subcommand)]
enum EnsembleCommand {
    /// Average predictions tables: PSLA's prediction ensemble, as sql/ensemble/average_predictions.sql.
    #[command(
        long_about = "Average several predictions tables (clip_id, mid, score) into one: PSLA's ensemble of \
                      checkpoints, seeds and settings, run as sql/ensemble/average_predictions.sql by DataFusion.\n\n\
                      The mean is unweighted unless --weights is given. Every member must score the same \
                      (clip, class) pairs once: a pair missing from a member, or scored twice, is an error naming \
                      it. The output is a predictions table like any other (evaluate and label read it)."
    )]
    AveragePredictions {
        /// A predictions Parquet file (clip_id, mid, score); give two or more.
        #[arg(long = "predictions", required = true, value_name = "FILE.parquet")]
        predictions: Vec<PathBuf>,
        /// One positive weight per --predictions, comma-separated (default: all equal).
        #[arg(long, value_delimiter = ',', value_name = "W,W,...")]
        weights: Option<Vec<f64>>,
        /// The averaged predictions to write (clip_id, mid, score).
        #[arg(long, value_name = "FILE.parquet")]
        out: PathBuf,
    },

    /// Average checkpoints' weights into one checkpoint: PSLA's weight averaging.
    #[command(
        long_about = "Average the weights of several checkpoints (safetensors) into one: PSLA's weight averaging \
                      (usually the last epochs of one run). Every tensor is averaged arithmetically, BatchNorm \
                      running statistics included; the checkpoints must have the same keys, shapes and dtypes. \
                      Integer tensors (num_batches_tracked) get the mean truncated toward zero.\n\n\
                      PSLA's own code counts the first checkpoint twice and divides by N + 1; --psla-compat \
                      reproduces that figure. The default is the true mean. The metadata is the last \
                      checkpoint's, plus averaged_from and average.",
        after_help = "Example:\n  psla ensemble average-weights --checkpoints runs/r/models/student/epoch-{04..06}.safetensors --out wa.safetensors"
    )]
    AverageWeights {
        /// The checkpoints to average (two or more).
        #[arg(long, required = true, num_args = 1.., value_name = "FILE.safetensors")]
        checkpoints: Vec<PathBuf>,
        /// Reproduce PSLA's figure: the first checkpoint counted twice, the sum divided by N + 1.
        #[arg(long)]
        psla_compat: bool,
        /// The averaged checkpoint to write.
        #[arg(long, value_name = "FILE.safetensors")]
        out: PathBuf,
    },
}

#[derive(Copy, Clone, ValueEnum)]
enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    psla::table::storage::set_options(&cli.storage_options)?;
    let progress = psla::progress::enabled();
    let mut err = std::io::stderr();
    match cli.command {
        Command::Run { pipeline, root, dry_run, only, from, force, engine, shard } => {
            let engine = engine.as_deref().map(psla::cluster::Engine::parse).transpose()?;
            let shard = shard.as_deref().map(psla::stages::features::parse_shard).transpose()?;
            let root = RunRoot::open(&root)?;
            let opts = RunOptions { dry_run, only, from, force, progress, engine, shard };
            pipeline::run_file(&pipeline, &root, &opts, &mut err)?;
        }
        Command::Ingest { segments, classes, ontology, audio, audio_manifest, out } => {
            let params = IngestParams { segments, classes, ontology, audio, audio_manifest };
            let table = toml::Table::try_from(&params).map_err(|e| Error::invalid(e))?;
            let spec = PipelineSpec::single("psla ingest", "ingest", table);
            let root = RunRoot::open(&out)?;
            let opts = RunOptions { force: true, progress, ..Default::default() };
            pipeline::run_spec(&spec, &root, &opts, &mut err)?;
        }
        Command::Features { inputs, out, rejects, stats, sample_rate, native_rate, threads, shard, dtype, keep_truncated } => {
            let params = FeaturesParams { inputs, sample_rate, native_rate, dtype, keep_truncated, shard, threads };
            let rejects = rejects.unwrap_or_else(|| sibling(&out, "rejects"));
            let line = psla::stages::features::run_to_files(&params, &out, &rejects, stats.as_deref(), progress)?;
            writeln!(err, "{line}")?;
        }
        Command::Label { labels, teacher, ontology, classes, threshold, rules, min_support, check, out, engine } => {
            let started = std::time::Instant::now();
            let params = LabelParams { threshold, rules, min_support, splits: None, check };
            params.rules().map_err(Error::invalid)?;
            let engine = psla::cluster::Engine::parse(&engine)?;
            let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let scratch = std::path::absolute(out.with_file_name(format!("{stem}.scratch"))).map_err(|e| Error::file(&out, None, e))?;
            let scratch = url::Url::from_directory_path(&scratch)
                .map_err(|_| Error::invalid(format!("cannot turn {} into a URL", scratch.display())))?;
            let mut session = psla::sql::Session::empty_on(&engine, Some(&scratch))?;
            session.register_parquet("labels", &labels)?;
            session.register_parquet("teacher_scores", &teacher)?;
            for (name, data) in psla::stages::ingest::vocabulary_tables(&classes, &ontology)? {
                session.register_batches(name, &data)?;
            }
            let result = psla::stages::label::enhance(&mut session, &params)?;
            write_parquet(&out, &result.enhanced)?;
            write_parquet(&sibling(&out, "thresholds"), &result.thresholds)?;
            write_parquet(&sibling(&out, "changes"), &result.changes)?;
            writeln!(err, "label: {} in {:.2} s", result.summary(&params), started.elapsed().as_secs_f64())?;
            writeln!(err, "label steps: {}", result.steps_line())?;
        }
        Command::Sample { labels, classes, out, draws, seed, uniform, draws_out } => {
            let params = psla::stages::sample::SampleParams { epochs: draws.unwrap_or(0), seed, uniform, splits: None };
            let line = psla::stages::sample::run_to_files(&params, &labels, &classes, &out, draws_out.as_deref())?;
            writeln!(err, "{line}")?;
        }
        Command::Subset { labels, classes, min_per_class, val_fraction, seed, out } => {
            let line = psla::stages::sample::subset_to_file(&labels, &classes, min_per_class, val_fraction, seed, &out)?;
            writeln!(err, "{line}")?;
        }
        Command::Evaluate { predictions, labels, classes, out } => {
            let line = psla::stages::evaluate::run_to_files(&predictions, &labels, &classes, &out)?;
            writeln!(err, "{line}")?;
        }
        Command::Train { root, config, name, labels, eval_labels, train_splits, eval_splits, device, seed, epochs, init, threads } => {
            let params = psla::stages::train::TrainParams { config, name, seed, device, train_splits, eval_splits, init, epochs, heads: None, sampling: None, threads };
            let table = toml::Table::try_from(&params).map_err(|e| Error::invalid(e))?;
            let mut spec = PipelineSpec::single("psla train", "train", table);
            spec.stages[0].tables.insert("labels".into(), labels);
            spec.stages[0].tables.insert("eval_labels".into(), eval_labels);
            let root = RunRoot::open(&root)?;
            // The stage reads tables earlier commands wrote into this run root.
            spec.inputs = root.manifest()?.tables.keys().cloned().collect();
            let opts = RunOptions { force: true, progress, ..Default::default() };
            pipeline::run_spec(&spec, &root, &opts, &mut err)?;
        }
        Command::Score {
            checkpoints,
            inputs,
            out,
            rejects,
            features_out,
            threads,
            window,
            hop,
            windows_out,
            top,
            min_score,
            normalize,
            stats,
            target_frames,
            batch_size,
            device,
            arch,
            heads,
        } => {
            use psla::stages::score::{ScoreInput, ScoreParams};
            let params = ScoreParams { checkpoint: checkpoints, normalize, target_frames, batch_size, device, arch, heads, window, hop, top, min_score, splits: None };
            let tables: Vec<&String> = inputs.iter().filter(|i| i.ends_with(".parquet")).collect();
            let input = match (tables.len(), inputs.len()) {
                (0, _) => ScoreInput::Audio {
                    inputs,
                    features_out,
                    rejects_out: rejects.unwrap_or_else(|| sibling(&out, "rejects")),
                    threads,
                },
                (1, 1) => {
                    if rejects.is_some() || features_out.is_some() || threads.is_some() {
                        return Err(Error::invalid(
                            "--rejects, --features-out and --threads are for audio input; the input is a features table",
                        ));
                    }
                    ScoreInput::Features(PathBuf::from(&inputs[0]))
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "give audio inputs or one features table, not both: {} is a Parquet file",
                        tables[0]
                    )))
                }
            };
            let windows_out = window.map(|_| windows_out.unwrap_or_else(|| sibling(&out, "windows")));
            let line = psla::stages::score::run_to_files(&params, &input, stats.as_deref(), &out, windows_out.as_deref(), progress)?;
            writeln!(err, "{line}")?;
        }
        Command::Sql { query, file, root, format, out, engine } => {
            let engine = psla::cluster::Engine::parse(&engine)?;
            let sql = match (query, file) {
                (Some(q), _) => q,
                (None, Some(f)) => std::fs::read_to_string(&f).map_err(|e| Error::file(&f, None, e))?,
                (None, None) => unreachable!("clap requires one"),
            };
            let root = RunRoot::open(&root)?;
            let session = psla::sql::Session::open_tables_on(&root, None, &engine)?;
            let result = session.query_read_only(&sql)?;
            match out {
                Some(path) => write_parquet(&path, &result)?,
                None => print_result(&result, format)?,
            }
        }
        Command::Tables { root, drop } if !drop.is_empty() => {
            let root = RunRoot::open(&root)?;
            let (tables, stages) = root.drop_tables(&drop)?;
            let bytes: u64 = tables.iter().map(|(_, e)| e.bytes).sum();
            let names: Vec<&str> = tables.iter().map(|(n, _)| n.as_str()).collect();
            writeln!(err, "dropped {} tables ({} bytes) from {}: {}", tables.len(), psla::progress::group(bytes), root.location(), names.join(", "))?;
            if !stages.is_empty() {
                writeln!(err, "removed the records of stages {}: `psla run` runs them again", stages.join(", "))?;
            }
        }
        Command::Tables { root, .. } => {
            let root = RunRoot::open(&root)?;
            print_tables(&root)?;
        }
        Command::Demo { root, dry_run, force } => {
            let spec = PipelineSpec::parse(std::path::Path::new("pipelines/demo.toml"), DEMO_PIPELINE)?;
            let root = RunRoot::open(&root)?;
            let opts = RunOptions { dry_run, force, progress, ..Default::default() };
            pipeline::run_spec(&spec, &root, &opts, &mut err)?;
            if !dry_run {
                writeln!(err, "\n{}", psla::stages::demo_data::summary(&root)?)?;
                writeln!(
                    err,
                    "report: {}\ndemo run root: {} (try `psla tables --root {}`)",
                    root.url_of("report.html"),
                    root.location(),
                    root.location()
                )?;
            }
        }
        Command::Report { root, out } => {
            let root = RunRoot::open(&root)?;
            let line = psla::stages::report::write_report(&root, out.as_deref())?;
            writeln!(err, "{line}")?;
        }
        Command::Cluster(ClusterCommand::Scheduler { bind, external_host, executor_timeout }) => {
            let timing = psla::cluster::Timing { executor_timeout, ..Default::default() };
            psla::cluster::run_scheduler(bind, external_host, &timing)?;
        }
        Command::Cluster(ClusterCommand::Executor {
            scheduler,
            bind,
            external_host,
            flight_port,
            grpc_port,
            slots,
            work_dir,
            heartbeat,
        }) => {
            let timing = psla::cluster::Timing { heartbeat, ..Default::default() };
            psla::cluster::run_executor(psla::cluster::ExecutorOptions {
                scheduler,
                bind_host: bind,
                external_host,
                flight_port,
                grpc_port,
                slots,
                work_dir,
                timing,
            })?;
        }
        Command::Ensemble(EnsembleCommand::AveragePredictions { predictions, weights, out }) => {
            let line = psla::stages::ensemble::average_files(&predictions, weights.as_deref(), &out)?;
            writeln!(err, "{line}")?;
        }
        Command::Ensemble(EnsembleCommand::AverageWeights { checkpoints, psla_compat, out }) => {
            use psla::stages::ensemble::{WeightMean, average_checkpoints};
            let how = if psla_compat { WeightMean::PslaCompat } else { WeightMean::Mean };
            writeln!(err, "{}", average_checkpoints(&checkpoints, &out, how)?)?;
        }
    }
    Ok(())
}

/// `dir/x.parquet` -> `dir/x.<what>.parquet`.
fn sibling(path: &std::path::Path, what: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}.{what}.parquet"))
}

fn print_result(result: &TableData, format: Format) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Table => {
            let table = if result.batches.is_empty() {
                arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(result.schema.clone())])?
            } else {
                arrow::util::pretty::pretty_format_batches(&result.batches)?
            };
            writeln!(stdout, "{table}")?;
        }
        Format::Csv => {
            // The header comes from the schema, so an empty result still prints it.
            let names: Vec<_> = result.schema.fields().iter().map(|f| f.name().clone()).collect();
            writeln!(stdout, "{}", names.join(","))?;
            let mut w = arrow::csv::WriterBuilder::new().with_header(false).build(&mut stdout);
            for b in &result.batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut stdout);
            let refs: Vec<_> = result.batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            drop(w);
            writeln!(stdout)?;
        }
    }
    Ok(())
}

/// Write a query result to a Parquet file (via a temporary file, so a failed write leaves no half file).
fn write_parquet(path: &std::path::Path, result: &TableData) -> Result<()> {
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| Error::file(&tmp, None, e))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, result.schema.clone(), None)?;
    for b in &result.batches {
        w.write(b)?;
    }
    w.close()?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, None, e))?;
    eprintln!("wrote {} rows to {}", result.num_rows(), path.display());
    Ok(())
}

fn print_tables(root: &RunRoot) -> Result<()> {
    let manifest = root.manifest()?;
    let mut out = std::io::stdout().lock();
    if manifest.tables.is_empty() {
        writeln!(out, "run root {} has no tables yet", root.location())?;
        return Ok(());
    }
    writeln!(out, "{:<20} {:>12} {:>12} {:>8}  {:<16} path", "table", "rows", "bytes", "version", "written by")?;
    for (name, t) in &manifest.tables {
        writeln!(
            out,
            "{name:<20} {:>12} {:>12} {:>8}  {:<16} {}",
            psla::progress::group(t.rows),
            psla::progress::group(t.bytes),
            t.version,
            t.written_by,
            root.url_of(&format!("{}/", t.dir))
        )?;
        for col in &t.schema {
            writeln!(out, "    {col}")?;
        }
    }
    Ok(())
}
