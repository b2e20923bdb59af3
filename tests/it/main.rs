//! Every integration test in one binary, one module per feature, so the suite links once instead
//! of once per file. Tests run in parallel threads of this one process: none may change
//! process-wide state (environment, working directory, resource limits, a global subscriber);
//! a test that needs that runs the `fleetsim` binary as a child process with its own settings.
//! Helpers shared by the modules live in [`common`]; fixtures stay in `tests/fixtures`.

mod common;

mod aad_tokens;
mod amqp;
mod amqp_clients;
mod arrivals;
mod backend_run;
mod c2d_delivery;
mod c2d_fleetsim_sender;
mod c2d_sdk;
mod ca_ownership;
mod cloud_devices;
mod cloud_scenarios;
mod cohorts;
mod dps;
mod dps_fleet;
mod emulate_remote;
mod emulate_state;
mod ezca_capacity;
mod ezca_emulator;
mod ezca_endpoints;
mod ezca_renewal;
mod ezca_wire;
mod html_report;
mod hub_connect;
mod hub_methods;
mod hub_presence;
mod hub_query;
mod hub_registry;
mod hub_service_sdk;
mod hub_service_throttle;
mod hub_throttle;
mod hub_topics;
mod hub_twins;
mod hub_websocket;
mod interop_mosquitto;
mod key_pool;
mod keys_command;
mod kubernetes;
mod lifecycle;
mod limits;
mod operator;
mod panics;
mod peers;
mod plan_cleanup;
mod progress_lines;
mod prometheus;
mod properties;
mod renewal_schedule;
mod renewal_swap;
mod report_merge;
mod resume;
mod revocation;
mod run_command;
mod server_limits;
mod service_client;
mod shard;
mod telemetry;
mod validate;
