//! `fleetsim schema`: prints the scenario format's JSON Schema ([`crate::scenario::schema`]) for
//! editors; `scenarios/fleetsim.schema.json` is its committed copy.

use std::path::PathBuf;

use anyhow::Context;

use crate::scenario::schema;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Write the schema to FILE instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Prints the schema, or writes it to `--out`.
pub fn main(args: &SchemaArgs) -> anyhow::Result<()> {
    let text = schema::to_pretty_json();
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("{}: cannot write the schema", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
