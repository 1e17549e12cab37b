//! The `studio-relay` binary: everything lives in the library; see `cli`.

/// jemalloc rather than the system allocator: the relay allocates on one
/// runtime thread and frees on another (a frame's buffers are read by its
/// socket task and dropped when the broker acks), which glibc's malloc
/// serves with arena locks and chunk consolidation, about a quarter of the
/// relay's CPU. Measured in docs/benchmarks.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    studio_relay::cli::main()
}
