//! The `crm-marts` binary: a thin layer over the library. `main` calls `run`, prints
//! the error chain and exits 0 (success), 1 (a run failed) or 2 (bad config or usage).

mod cli;

// DataFusion allocates and frees many buffers across threads; mimalloc keeps the
// resident size close to what is really in use, which glibc's arenas do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
