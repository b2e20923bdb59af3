//! Distributed runs and `deploy/kubernetes`: the manifests validate offline against the
//! Kubernetes schemas and agree with each other and with `BENCHMARKS.md` (`manifests`); their
//! pods' command lines, as rendered, run as local processes against `fleetsim emulate` give one
//! merged report and one verdict (`pods`); the start barrier (`barrier`) and the collector
//! (`collector`) on their own.

mod barrier;
mod collector;
mod manifests;
mod pods;
