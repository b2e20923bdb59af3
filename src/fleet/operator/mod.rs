//! fleetsim as IoT Hub's operator, driven by the scenario's events ([`iothub::service`] is the
//! client): a `method` event invokes a direct method on its devices ([`method`]), a `desired`
//! event patches desired properties and waits for the devices' acknowledgements ([`desired`]),
//! a `query` event runs a registry query, once or on a schedule ([`query`]), a `c2d` event
//! sends a cloud-to-device message to each of its devices over AMQP ([`c2d`]). Each event runs as
//! its own task, so a slow one never holds the run or the next event up; all of them stop with
//! the run. What they did is counted for the report's operator section
//! ([`crate::report::operator`]); their latencies are the phases `method.invoke`,
//! `twin.desired`, `registry.query` and `c2d.send`.
//!
//! [`iothub::service`]: crate::iothub::service

mod c2d;
mod context;
mod desired;
mod method;
mod query;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use context::Context;
pub use context::Targets;

use super::target::{C2dTarget, FleetServices};
use crate::iothub::service::ServiceClient;
use crate::metrics::Phase;
use crate::report::operator::{
    C2dCounts, DesiredCounts, MethodCounts, OperatorReport, QueryCounts,
};
use crate::scenario::events::{C2dEvent, DesiredEvent, MethodEvent, QueryEvent};
use crate::sync::lock;

/// How long the operator's tasks get to finish once the run has stopped.
const DRAIN: Duration = Duration::from_secs(5);

pub struct Operator {
    ctx: Arc<Context>,
    tasks: JoinSet<()>,
    /// The phase each task measures, to name where a panic happened.
    phases: HashMap<tokio::task::Id, Phase>,
    /// Tasks that panicked, by phase (caught and counted as `phase/panic` errors).
    pub panicked: Vec<Phase>,
}

impl Operator {
    /// An operator using `client`, waiting on the gate and recording into the recorder of
    /// `services`, with `rate_share` of each event's rate (1/n with n shards), until `stop`.
    pub fn new(
        client: Arc<ServiceClient>,
        c2d: Option<C2dTarget>,
        services: Arc<FleetServices>,
        rate_share: f64,
        stop: &CancellationToken,
    ) -> Self {
        Self {
            ctx: Arc::new(Context {
                client,
                c2d,
                services,
                report: Mutex::new(OperatorReport::default()),
                stop: stop.clone(),
                rate_share,
            }),
            tasks: JoinSet::new(),
            phases: HashMap::new(),
            panicked: Vec::new(),
        }
    }

    /// Starts `event` (fired `at` into the run) on `targets`.
    pub fn method(&mut self, event: &MethodEvent, at: Duration, targets: Targets) {
        let slot = {
            let mut report = lock(&self.ctx.report);
            report.methods.push(MethodCounts {
                name: event.name.clone(),
                at_seconds: at.as_secs_f64(),
                ..MethodCounts::default()
            });
            report.methods.len() - 1
        };
        tracing::info!(method = %event.name, "method event");
        let ctx = self.ctx.clone();
        let task = self
            .tasks
            .spawn(method::run(ctx, event.clone(), targets, slot));
        self.phases.insert(task.id(), Phase::MethodInvoke);
    }

    /// Starts `event` (fired `at` into the run) on `targets`.
    pub fn desired(&mut self, event: &DesiredEvent, at: Duration, targets: Targets) {
        let slot = {
            let mut report = lock(&self.ctx.report);
            report.desired.push(DesiredCounts {
                properties: event.patch.keys().cloned().collect(),
                at_seconds: at.as_secs_f64(),
                ..DesiredCounts::default()
            });
            report.desired.len() - 1
        };
        tracing::info!(properties = event.patch.len(), "desired event");
        let ctx = self.ctx.clone();
        let task = self
            .tasks
            .spawn(desired::run(ctx, event.clone(), targets, slot));
        self.phases.insert(task.id(), Phase::TwinDesired);
    }

    /// Starts `event` (fired `at` into the run) on `targets`.
    pub fn c2d(&mut self, event: &C2dEvent, at: Duration, targets: Targets) {
        let slot = {
            let mut report = lock(&self.ctx.report);
            report.c2d.push(C2dCounts {
                at_seconds: at.as_secs_f64(),
                ..C2dCounts::default()
            });
            report.c2d.len() - 1
        };
        tracing::info!("c2d event");
        let ctx = self.ctx.clone();
        let task = self
            .tasks
            .spawn(c2d::run(ctx, event.clone(), targets, slot));
        self.phases.insert(task.id(), Phase::C2dSend);
    }

    /// Starts `event` (fired `at` into the run).
    pub fn query(&mut self, event: &QueryEvent, at: Duration) {
        let slot = {
            let mut report = lock(&self.ctx.report);
            report.queries.push(QueryCounts {
                text: event.text.clone(),
                at_seconds: at.as_secs_f64(),
                every_seconds: event.every.map(|e| e.0.as_secs_f64()),
                ..QueryCounts::default()
            });
            report.queries.len() - 1
        };
        let ctx = self.ctx.clone();
        let task = self.tasks.spawn(query::run(ctx, event.clone(), slot));
        self.phases.insert(task.id(), Phase::RegistryQuery);
    }

    /// Once the run has stopped: waits up to [`DRAIN`] for the tasks, then aborts the rest.
    /// A task that panicked is counted as an error of its phase.
    pub async fn finish(&mut self) {
        let drained = tokio::time::timeout(DRAIN, async {
            while let Some(joined) = self.tasks.join_next().await {
                self.count_panic(joined);
            }
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
            while let Some(joined) = self.tasks.join_next().await {
                self.count_panic(joined);
            }
        }
    }

    fn count_panic(&mut self, joined: Result<(), tokio::task::JoinError>) {
        if let Err(e) = joined
            && e.is_panic()
        {
            let phase = self
                .phases
                .get(&e.id())
                .copied()
                .unwrap_or(Phase::MethodInvoke);
            tracing::error!(phase = phase.name(), error = %e, "an operator task panicked");
            self.ctx.services.recorder.error(phase, "panic");
            self.panicked.push(phase);
        }
    }

    /// What the operator did, for the report.
    pub fn report(&self) -> OperatorReport {
        lock(&self.ctx.report).clone()
    }
}
