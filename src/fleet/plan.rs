//! The fleet this process runs: the scenario's devices ([`super::cohorts`]) in this shard
//! ([`super::shard`]), queued in their arrival processes ([`super::arrivals`]), counted per
//! cohort; and, in a resumed soak, the devices an earlier part started, which come back at once
//! instead of waiting for their arrival slots.

use std::collections::HashMap;
use std::sync::Arc;

use super::arrivals::{self, Model, Queued};
use super::cohorts;
use super::error::FleetError;
use super::shard::Shard;
use crate::device::DeviceSpec;
use crate::scenario::Scenario;
use crate::state::StoredDevice;

pub(super) struct Fleet {
    /// Cohort names, in scenario order.
    pub names: Vec<String>,
    /// Devices of this shard per cohort.
    pub planned_per_cohort: Vec<u64>,
    pub planned: u64,
    /// The arrival processes with the devices still to arrive.
    processes: Vec<(Model, Vec<Queued>)>,
    /// Devices an earlier part of a resumed soak started, with their cohorts.
    known: Vec<(usize, DeviceSpec)>,
}

impl Fleet {
    /// The fleet of `scenario` in `shard`; a shard without a device is an error.
    pub fn plan(scenario: &Scenario, shard: Shard) -> Result<Self, FleetError> {
        let plan = cohorts::plan(scenario);
        shard.check_devices(plan.devices.len() as u64)?;
        let names = plan.names.clone();
        let processes = arrivals::processes(scenario.fleet.arrival().as_ref(), plan, shard)?;
        let mut planned_per_cohort = vec![0u64; names.len()];
        for q in processes.iter().flat_map(|(_, queue)| queue) {
            planned_per_cohort[q.cohort] += 1;
        }
        let planned: u64 = planned_per_cohort.iter().sum();
        if planned == 0 {
            return Err(FleetError::Setup(format!(
                "--shard {shard}: no device of the fleet falls in this shard"
            )));
        }
        Ok(Self {
            names,
            planned_per_cohort,
            planned,
            processes,
            known: Vec::new(),
        })
    }

    /// Takes the devices the soak's state knows (`stored`, by id) out of their arrival
    /// processes: they come back at once, with what the state holds for them; the others keep
    /// their arrival slots.
    pub fn bring_back(&mut self, stored: &HashMap<String, StoredDevice>) {
        for (_, queue) in self.processes.iter_mut() {
            let (back, fresh): (Vec<_>, Vec<_>) = std::mem::take(queue)
                .into_iter()
                .map(|mut q| {
                    q.spec.resume = stored.get(&q.spec.id).cloned().map(Arc::new);
                    q
                })
                .partition(|q| q.spec.resume.is_some());
            *queue = fresh;
            self.known
                .extend(back.into_iter().map(|q| (q.cohort, q.spec)));
        }
    }

    /// Every device's spec: those still to arrive, then those coming back.
    pub fn specs_mut(&mut self) -> impl Iterator<Item = &mut DeviceSpec> {
        self.processes
            .iter_mut()
            .flat_map(|(_, queue)| queue.iter_mut().map(|q| &mut q.spec))
            .chain(self.known.iter_mut().map(|(_, spec)| spec))
    }

    /// Every device as the fleet board lays it out: (index, id, cohort).
    pub fn board_devices(&self) -> Vec<(u64, String, usize)> {
        let arriving = self.processes.iter().flat_map(|(_, queue)| {
            queue
                .iter()
                .map(|q| (q.spec.index, q.spec.id.clone(), q.cohort))
        });
        let known = self
            .known
            .iter()
            .map(|(c, spec)| (spec.index, spec.id.clone(), *c));
        arriving.chain(known).collect()
    }

    /// The ids of the devices still to arrive.
    pub fn arriving_ids(&self) -> Vec<String> {
        self.processes
            .iter()
            .flat_map(|(_, queue)| queue.iter().map(|q| q.spec.id.clone()))
            .collect()
    }

    /// The arrival processes, to start them (once).
    pub fn take_processes(&mut self) -> Vec<(Model, Vec<Queued>)> {
        std::mem::take(&mut self.processes)
    }

    /// The devices coming back, to start them (once).
    pub fn take_known(&mut self) -> Vec<(usize, DeviceSpec)> {
        std::mem::take(&mut self.known)
    }
}
