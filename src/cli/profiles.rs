//! `slim profiles` (list the built-ins) and `slim profiles show NAME`.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::profile;

#[derive(Args, Debug)]
pub struct ProfilesArgs {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Print a profile (built-in name or file) as TOML.
    Show { name: String },
}

pub fn run(args: ProfilesArgs) -> Result<u8> {
    match args.action {
        None => {
            let all = profile::builtins();
            let width = all.iter().map(|p| p.name.len()).max().unwrap_or(0);
            for p in &all {
                let extends = if p.extends.is_empty() {
                    String::new()
                } else {
                    format!(" (extends {})", p.extends.join(", "))
                };
                println!("{:<width$}  {}{extends}", p.name, p.description);
            }
            println!();
            println!(
                "--profile auto (the default) picks base, the distro's profile from /etc/os-release,"
            );
            println!("and the runtimes it finds; --profile none strips nothing.");
        }
        Some(Action::Show { name }) => {
            let p = profile::load(&name)?;
            print!("{}", p.text);
        }
    }
    Ok(0)
}
