//! `fleetsim plan SCENARIO`: what a run will ask of the CA and the hub, against the hub tier's
//! throttles and quota ([`crate::plan`]); and the check `fleetsim run` makes before a remote
//! run, which refuses a plan that exceeds a quota unless `--accept-plan`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::plan::{self, HubTier, Plan};
use crate::scenario::{self, Scenario, Target};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The scenario file (YAML).
    pub scenario: PathBuf,
    /// Ask the hub for its SKU and units (through `iothub.management_url`) and EZCA for its CA
    /// list, instead of taking the tier from the scenario. Without it, nothing goes on the
    /// network.
    #[arg(long)]
    pub check: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the plan; exit status 1 when a line exceeds a quota or cap.
pub async fn plan_command(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let scenario = scenario::load(&args.scenario)?;
    let (tier, source) = match args.check {
        true => checked_tier(&scenario).await?,
        false => scenario_tier(&scenario),
    };
    let plan = plan::plan(&scenario, tier, &source);
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&plan)?),
        false => print!("{}", plan.to_text()),
    }
    Ok(match plan.exceeding().next() {
        Some(_) => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
    })
}

fn scenario_tier(scenario: &Scenario) -> (Option<HubTier>, String) {
    match plan::scenario_tier(scenario) {
        Some(t) => (Some(t), "from the scenario".into()),
        None => (None, "the scenario names no tier".into()),
    }
}

/// The tier as the hub states it, and EZCA's CA list printed; an embedded target has nothing
/// to ask.
async fn checked_tier(scenario: &Scenario) -> anyhow::Result<(Option<HubTier>, String)> {
    let Target::Remote(remote) = &scenario.target.value else {
        let (tier, _) = scenario_tier(scenario);
        return Ok((tier, "embedded hub, as the scenario sets it".into()));
    };
    let cas = crate::fleet::target::ezca_client(remote)?
        .get_available_ssl_cas()
        .await
        .context("--check: EZCA's CA list")?;
    println!(
        "EZCA {}: {} SSL CA(s) available",
        remote.ezca.url,
        cas.len()
    );
    for ca in &cas {
        println!(
            "  {} ({}, {}, at most {} days)",
            ca.ca_id.as_deref().unwrap_or("?"),
            ca.friendly_name.as_deref().unwrap_or(""),
            ca.key_type.as_deref().unwrap_or("key type unknown"),
            ca.max_cert_life_days
        );
    }
    let admin = crate::fleet::target::hub_admin(&remote.iothub)?;
    let management = admin.management.as_ref().context(
        "--check reads the hub's tier from its Azure resource: set iothub.management_url in the scenario",
    )?;
    let sku = management.sku().await.context("--check: the hub's SKU")?;
    let tier = HubTier {
        sku: sku.sku,
        units: sku.units,
    };
    if let Some(named) = plan::scenario_tier(scenario).filter(|t| *t != tier) {
        eprintln!(
            "fleetsim: warning: the scenario says {} x {}, the hub says {} x {}: planning with the hub's",
            named.sku, named.units, tier.sku, tier.units
        );
    }
    Ok((Some(tier), format!("from the hub {}", admin.host_name)))
}

/// Before a remote run: plans it with the scenario's tier and refuses it when a line exceeds a
/// quota or cap, unless `accept_plan`. Embedded targets pass without a word.
pub fn gate(scenario: &Scenario, scenario_path: &Path, accept_plan: bool) -> anyhow::Result<()> {
    if !matches!(scenario.target.value, Target::Remote(_)) {
        return Ok(());
    }
    let (tier, source) = scenario_tier(scenario);
    let plan = plan::plan(scenario, tier, &source);
    if tier.is_none() {
        eprintln!(
            "fleetsim: warning: the hub's tier is unknown, so its quotas are not checked; set iothub.sku and iothub.units (or run `fleetsim plan --check {}`)",
            scenario_path.display()
        );
        return Ok(());
    }
    refuse_exceeding(&plan, scenario_path, accept_plan)
}

fn refuse_exceeding(plan: &Plan, scenario_path: &Path, accept_plan: bool) -> anyhow::Result<()> {
    let exceeding: Vec<String> = plan
        .exceeding()
        .map(|l| format!("{} ({}; limit {})", l.what, l.note, l.limit))
        .collect();
    if exceeding.is_empty() {
        return Ok(());
    }
    if accept_plan {
        eprintln!(
            "fleetsim: warning: running a plan that exceeds (--accept-plan): {}",
            exceeding.join("; ")
        );
        return Ok(());
    }
    anyhow::bail!(
        "the plan exceeds the hub's limits: {}; see `fleetsim plan {}`, and pass --accept-plan to run it anyway",
        exceeding.join("; "),
        scenario_path.display()
    )
}
