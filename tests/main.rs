//! The one integration-test binary: every file under tests/ is a module of it (one link, not one per file).

mod common;

mod atomic;
mod cli;
mod demo_data;
mod ingest;
mod pipeline;
mod readers;
mod sql;
