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
            let mut text = String::new();
            for p in &all {
                let extends = if p.extends.is_empty() {
                    String::new()
                } else {
                    format!(" (extends {})", p.extends.join(", "))
                };
                text.push_str(&format!("{:<width$}  {}{extends}\n", p.name, p.description));
            }
            text.push_str("\n--profile auto (the default) picks base, the distro's profile from /etc/os-release,\n");
            text.push_str("and the runtimes it finds; --profile none strips nothing.\n");
            super::out(&text)?;
        }
        Some(Action::Show { name }) => {
            let p = profile::load(&name)?;
            super::out(&p.text)?;
        }
    }
    Ok(0)
}
