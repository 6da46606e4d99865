//! The `perseus` daemon entry point: parse the command line and hand off to the library.

fn main() {
    println!("perseus {}", env!("CARGO_PKG_VERSION"));
}
