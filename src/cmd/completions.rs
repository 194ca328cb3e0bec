//! `completions SHELL` and `man`: the shell completion script and the manual page,
//! generated from the command line's own definition (clap), so they never disagree with
//! it. Both print to stdout and exit 0.

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, Shell};

/// Prints the completion script for `shell`.
pub(crate) fn completions(shell: Shell) -> Result<i32> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
    Ok(0)
}

/// Prints the manual page (roff): the command, its options, its subcommands and the exit
/// codes; `tangoe-ingest help COMMAND` has each command's options.
pub(crate) fn man() -> Result<i32> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    std::io::Write::write_all(&mut std::io::stdout(), &out)?;
    Ok(0)
}
