//! `deploy/kubernetes`: the manifests validate offline against the Kubernetes schemas and agree
//! with each other and with `BENCHMARKS.md` (`manifests`), and their pods' command lines, as
//! rendered, run as local processes against `fleetsim emulate` give one merged report and one
//! verdict (`pods`).

mod manifests;
mod pods;
