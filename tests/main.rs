//! The one integration-test binary: every file under tests/ is a module of it (one link, not one per file).

mod common;

mod atomic;
mod audio_decode;
mod audio_fbank;
mod audio_golden;
mod audio_resample;
mod audio_simd;
mod cli;
mod cluster;
mod demo_data;
mod ensemble;
mod evaluate;
mod features;
mod ingest;
mod label;
mod model;
mod pipeline;
mod recipes;
mod readers;
mod report;
mod s3;
mod sample;
mod score;
mod shards;
mod sql;
mod train;
