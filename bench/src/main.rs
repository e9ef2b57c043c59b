//! basalt-bench: the command line around the suite (see lib.rs).

use basalt_bench::cli::{self, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprint!("basalt-bench: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            Ok(())
        }
        Command::Run(opts) => basalt_bench::suite::run(&opts),
        Command::Boot(opts) => basalt_bench::suite::boot_one(&opts),
        Command::Render(opts) => basalt_bench::suite::render(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("basalt-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
