//! glibc malloc tuning for psla's allocation pattern: large buffers allocated and freed over and
//! over (a clip's samples and fbank, Parquet pages, and in training and scoring libtorch's
//! activations: tens to hundreds of MB per forward pass).
//!
//! By default glibc serves every block above its mmap threshold (at most 32 MB) with a fresh
//! `mmap`, returns it with `munmap` when freed, and trims the heap top back to the OS; the next
//! block of that size is then faulted in again, page by page. Measured here: over 1,000 page faults
//! per clip in `psla features`, and 35-49% of the CPU time of a B2 training step or a batch-16 eval
//! forward spent in the kernel handling them (PyTorch suffers the same). [`keep_freed_memory`]
//! turns `mmap` for allocations off and raises the trim threshold to 512 MB, so freed memory stays
//! in the process and is reused: peak memory is that of the largest working set, as before, but
//! it is not handed back between steps. `bench/train.sh` and `bench/score.sh` print the effect;
//! `PSLA_MALLOC=default` keeps glibc's defaults (for such comparisons).

/// Applies the tuning once per process (a no-op with other C libraries or `PSLA_MALLOC=default`).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_MAX: std::ffi::c_int = -4;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var("PSLA_MALLOC").is_ok_and(|v| v == "default") {
                return;
            }
            // SAFETY: mallopt only changes malloc's tuning; glibc makes it safe to call at any time.
            unsafe {
                mallopt(M_MMAP_MAX, 0);
                mallopt(M_TRIM_THRESHOLD, 512 << 20);
            }
        });
    }
}
