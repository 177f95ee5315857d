//! The `crm-marts` binary: a thin layer over the library. `main` calls `run`, prints
//! the error chain and exits 0 (success), 1 (a run failed) or 2 (bad config or usage).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
