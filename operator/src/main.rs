//! The `meshop` binary: everything lives in [`meshop::cli`].

fn main() -> std::process::ExitCode {
    meshop::cli::main()
}
