//! `fleetsim cleanup`: removes what a run left in the hub (and, when asked, at the CA). The
//! run's identities are found by run id (a registry query on the `fleetsim.run` tag), or read
//! from its report or `--state` file; each one is checked to carry the run's tag before it is
//! deleted, so an identity without it is never touched. Deletes go in bulk calls of 100,
//! paced below the registry throttle; progress is written to a journal file next to the
//! source, so a killed cleanup resumes where it stopped and says what is left.

pub mod tag;
