//! The `studio-relay` binary: everything lives in the library; see `cli`.
fn main() -> std::process::ExitCode {
    studio_relay::cli::main()
}
