//! The `perseus` daemon entry point: everything lives in the library so it can be tested.

fn main() -> std::process::ExitCode {
    perseus::cli::main()
}
