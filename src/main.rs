//! The `crm-marts` binary: a thin layer over the library. `main` calls `run`, prints
//! the error chain and exits 0 (success), 1 (a run failed) or 2 (bad config or usage).

mod cli;

// The allocator DataFusion's own CLI uses: fast with many threads allocating and
// freeing Arrow buffers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
