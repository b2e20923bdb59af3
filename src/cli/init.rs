//! `fleetsim init`: writes a commented starting scenario from a template
//! ([`crate::scenario::templates`]) and the JSON Schema beside it, so that an editor completes
//! and checks the file from the first keystroke.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::builder::PossibleValuesParser;

use crate::scenario::schema;
use crate::scenario::templates::{TEMPLATES, Template};

#[derive(Debug, clap::Args)]
#[command(after_help = template_list())]
pub struct InitArgs {
    /// The starting scenario (see the list below).
    #[arg(long, default_value = "quickstart", value_parser = PossibleValuesParser::new(TEMPLATES.map(|t| t.name)))]
    pub template: String,
    /// Where to write it; fleetsim.schema.json is written beside it.
    #[arg(default_value = "scenario.yaml")]
    pub file: PathBuf,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

fn template_list() -> String {
    let mut out = String::from("Templates:\n");
    for t in TEMPLATES {
        out.push_str(&format!("  {:<16}{}\n", t.name, t.summary));
    }
    out
}

/// Writes the scenario (refusing to overwrite one without `--force`) and the schema beside it
/// (always: it is generated, and must match this fleetsim).
pub fn main(args: &InitArgs) -> anyhow::Result<()> {
    let template = Template::named(&args.template)
        .with_context(|| format!("no template {:?}", args.template))?;
    write_scenario(&args.file, &template.scenario_text(), args.force)?;
    let dir = args.file.parent().unwrap_or(Path::new(""));
    let schema_path = dir.join(schema::FILE_NAME);
    std::fs::write(&schema_path, schema::to_pretty_json())
        .with_context(|| format!("{}: cannot write the schema", schema_path.display()))?;
    println!(
        "wrote {} (template {}) and {}\nnext: fleetsim validate {0}, then fleetsim run {0}",
        args.file.display(),
        template.name,
        schema_path.display()
    );
    Ok(())
}

fn write_scenario(path: &Path, text: &str, force: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    // create_new refuses an existing file atomically (no check-then-write race).
    match force {
        true => options.create(true).truncate(true),
        false => options.create_new(true),
    };
    let mut file = match options.open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} exists: choose another file, or give --force to overwrite it",
            path.display()
        ),
        other => other.with_context(|| format!("{}: cannot create", path.display()))?,
    };
    file.write_all(text.as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))
}
