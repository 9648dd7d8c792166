//! The `heartsim` binary: the command line over every registered model.

use std::process::ExitCode;

fn main() -> ExitCode {
    heartsim::cli::main(heartsim::models::ALL)
}
