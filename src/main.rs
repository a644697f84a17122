//! The `slim` binary: parse arguments, set up logging, run, print the error
//! chain and exit with a documented code (0 ok, 1 failure, 2 usage, 3
//! threshold not met).

use std::process::ExitCode;

fn main() -> ExitCode {
    slim::cli::main()
}
