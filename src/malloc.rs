//! glibc malloc tuning, per stage: psla's stages free memory in two opposite patterns.
//!
//! - **Keep** ([`keep_freed_memory`]; features, train, score): large buffers allocated and freed
//!   over and over (a clip's samples and fbank, Parquet pages, and in training and scoring
//!   libtorch's activations: tens to hundreds of MB per forward pass). By default glibc serves
//!   every block above its mmap threshold (at most 32 MB) with a fresh `mmap`, returns it with
//!   `munmap` when freed, and trims the heap top back to the OS; the next block of that size is
//!   then faulted in again, page by page. Measured here: over 1,000 page faults per clip in
//!   `psla features`, and 35-49% of the CPU time of a B2 training step or a batch-16 eval forward
//!   spent in the kernel handling them (PyTorch suffers the same). Keep turns `mmap` for
//!   allocations off and raises the trim threshold to 512 MB, so freed memory stays in the process
//!   and is reused: peak memory is that of the largest working set, as before, but it is not
//!   handed back between steps. `bench/train.sh` and `bench/score.sh` print the effect.
//! - **Return** ([`return_freed_memory`]; label): a few steps, each building large tables
//!   (millions of rows at AudioSet scale: DataFusion's hash tables, query results) and freeing
//!   the previous step's. There, memory kept by the allocator adds to the next step's peak:
//!   Return serves every block above 1 MiB with `mmap` (a fixed threshold: glibc's default
//!   raises it up to 32 MB as blocks are freed, after which freed blocks of up to that size stay
//!   in the heap) and trims the heap at 1 MiB; [`release`] also hands back what is free now.
//!   Measured at AudioSet scale (one run each, 3 Dec): the label job's peak RSS 2638 MB against
//!   ~2716 with glibc's defaults and ~2912 with Keep; a 128 KiB threshold gave ~2490 MB but made
//!   the score pass ~40% slower (an mmap per Parquet batch), 1 MiB kept its time (26.6 s).
//!
//! The last call wins (a pipeline runs its stages one after the other in one process).
//! `PSLA_MALLOC=default` keeps glibc's defaults throughout (for comparisons).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    const M_MMAP_MAX: std::ffi::c_int = -4;
    /// glibc's default M_MMAP_MAX.
    const MMAP_MAX_DEFAULT: std::ffi::c_int = 65536;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }

    fn enabled() -> bool {
        !std::env::var("PSLA_MALLOC").is_ok_and(|v| v == "default")
    }

    pub fn keep() {
        if enabled() {
            // SAFETY: mallopt only changes malloc's tuning; glibc makes it safe to call at any time.
            unsafe {
                mallopt(M_MMAP_MAX, 0);
                mallopt(M_TRIM_THRESHOLD, 512 << 20);
            }
        }
    }

    pub fn give_back() {
        if enabled() {
            // SAFETY: as above.
            unsafe {
                mallopt(M_MMAP_MAX, MMAP_MAX_DEFAULT);
                mallopt(M_MMAP_THRESHOLD, 1 << 20);
                mallopt(M_TRIM_THRESHOLD, 1 << 20);
            }
            release();
        }
    }

    pub fn release() {
        if enabled() {
            // SAFETY: malloc_trim only returns free memory to the OS.
            unsafe {
                malloc_trim(0);
            }
        }
    }
}

/// Keep freed memory in the process for reuse (the stages that allocate and free large buffers
/// over and over: features, train, score).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::keep();
}

/// Return freed memory to the OS as it is freed (the label stage: a few steps, each freeing the
/// previous one's large tables), and what is free now.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::give_back();
}

/// Hand the memory that is free now back to the OS (`malloc_trim`), between steps.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::release();
}
